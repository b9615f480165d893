// The web demo: sign in, cases and logs, drag and drop, transfers, resume, the log's files.
import { api, ApiError, formatBytes, formatDuration, listAll } from './api.js'
import { Transfer, firstPartHashes, records } from './uploader.js'
import { BATCH_FILES, Batch, SMALL_FILE } from './batch.js'
import { flagged, processingBadges, processingPending, thumbCell, wireFilePanel } from './filepanel.js'

const $ = (sel) => document.querySelector(sel)
const FILES_AT_ONCE = 2
const PARTS_AT_ONCE = 4
const BATCH_FROM = 10 // small files added at once from which they go in batches

const ICONS = {
  folder: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" aria-hidden="true"><path d="M3 7a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2z"/></svg>',
  log: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" aria-hidden="true"><path d="M4 6h16M4 12h16M4 18h10"/></svg>',
  pause: '<svg viewBox="0 0 24 24" fill="currentColor" aria-hidden="true"><rect x="6" y="5" width="4" height="14" rx="1"/><rect x="14" y="5" width="4" height="14" rx="1"/></svg>',
  play: '<svg viewBox="0 0 24 24" fill="currentColor" aria-hidden="true"><path d="M7 5v14l12-7z"/></svg>',
  x: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.4" aria-hidden="true"><path d="M6 6l12 12M18 6 6 18"/></svg>',
  check: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="3" aria-hidden="true"><path d="M5 12.5l4.5 4.5L19 7"/></svg>',
  down: '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" aria-hidden="true"><path d="M12 4v12M7 11l5 5 5-5M5 20h14"/></svg>',
}

const state = {
  me: null,
  cases: [],
  logs: new Map(), // case id -> logs
  open: new Set(), // expanded case ids
  log: null, // selected log
  caseOf: new Map(), // log id -> case
  roles: new Map(), // case id -> my role
  transfers: [],
}

// Progress bars get their width through the CSSOM: the Content-Security-Policy refuses style
// attributes in markup.
function setWidths(root) {
  for (const bar of root.querySelectorAll('[data-width]')) bar.style.width = `${bar.dataset.width}%`
}

function esc(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c])
}
function announce(text) { $('#announce').textContent = text }
let toastTimer
function toast(text) {
  const el = $('#toast')
  el.textContent = text
  el.hidden = false
  clearTimeout(toastTimer)
  toastTimer = setTimeout(() => { el.hidden = true }, 4000)
}

// -- sign in --------------------------------------------------------------------------------------

async function boot() {
  try {
    state.me = await api('/me')
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return showSignIn()
    throw err
  }
  $('#signin-view').hidden = true
  $('#app-view').hidden = false
  $('#who').hidden = false
  $('#who').textContent = `Signed in as ${state.me.username}`
  $('#signout').hidden = false
  await loadCases()
  const wanted = /^#\/logs\/(.+)$/.exec(location.hash)
  if (wanted) await selectLog(decodeURIComponent(wanted[1]))
}

function showSignIn() {
  $('#app-view').hidden = true
  $('#signin-view').hidden = false
  $('#who').hidden = true
  $('#signout').hidden = true
  $('#username').focus()
}

$('#signin-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  const error = $('#signin-error')
  error.hidden = true
  try {
    await api('/auth/login', { method: 'POST', body: { username: $('#username').value, password: $('#password').value } })
    $('#password').value = ''
    await boot()
  } catch (err) {
    error.textContent = err instanceof ApiError && err.status === 401 ? 'Wrong username or password.' : err.message
    error.hidden = false
    $('#password').focus()
  }
})

$('#signout').addEventListener('click', async () => {
  try { await api('/auth/logout', { method: 'POST', body: {} }) } finally { location.hash = ''; location.reload() }
})

// -- cases and logs -------------------------------------------------------------------------------

async function loadCases() {
  state.cases = await listAll('/cases')
  if (state.cases.length && !state.open.size) state.open.add(state.cases[0].id)
  for (const id of state.open) await loadLogs(id)
  renderTree()
}

async function loadLogs(caseId) {
  const logs = await listAll(`/cases/${caseId}/logs`)
  state.logs.set(caseId, logs)
  const c = state.cases.find((x) => x.id === caseId)
  for (const lg of logs) state.caseOf.set(lg.id, c)
}

function renderTree() {
  const tree = $('#tree')
  if (!state.cases.length) {
    tree.innerHTML = '<li class="empty">No cases yet. Create the first one.</li>'
    return
  }
  tree.innerHTML = state.cases.map((c) => {
    const open = state.open.has(c.id)
    const logs = state.logs.get(c.id) || []
    return `<li class="case">
      <button type="button" data-case="${esc(c.id)}" aria-expanded="${open}">${ICONS.folder}<span>${esc(c.title)}</span>${c.reference ? `<span class="ref">${esc(c.reference)}</span>` : ''}</button>
      ${open ? `<ul>${logs.map((lg) => `<li class="log"><button type="button" data-log="${esc(lg.id)}" aria-current="${state.log?.id === lg.id}">${ICONS.log}<span>${esc(lg.name)}</span></button></li>`).join('')}
        <li class="log"><button type="button" class="add" data-new-log="${esc(c.id)}">+ New log</button></li></ul>` : ''}
    </li>`
  }).join('')
}

$('#tree').addEventListener('click', async (e) => {
  const button = e.target.closest('button')
  if (!button) return
  if (button.dataset.case) {
    const id = button.dataset.case
    if (state.open.has(id)) state.open.delete(id)
    else { state.open.add(id); await loadLogs(id) }
    renderTree()
    $(`[data-case="${CSS.escape(id)}"]`)?.focus()
  } else if (button.dataset.log) {
    await selectLog(button.dataset.log)
  } else if (button.dataset.newLog) {
    const name = await ask('New log', 'Log name (e.g. bodycam, phone extraction)')
    if (!name) return
    try {
      const lg = await api(`/cases/${button.dataset.newLog}/logs`, { method: 'POST', body: { name } })
      await loadLogs(button.dataset.newLog)
      await selectLog(lg.id)
    } catch (err) { toast(err.message) }
  }
})

$('#new-case').addEventListener('click', async () => {
  const title = await ask('New case', 'Case title')
  if (!title) return
  try {
    const c = await api('/cases', { method: 'POST', body: { title } })
    state.open.add(c.id)
    await loadCases()
    $(`[data-case="${CSS.escape(c.id)}"]`)?.focus()
  } catch (err) { toast(err.message) }
})

function ask(title, label) {
  const dialog = $('#prompt')
  $('#prompt-title').textContent = title
  $('#prompt-label').textContent = label
  $('#prompt-input').value = ''
  dialog.showModal()
  $('#prompt-input').focus()
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok' ? $('#prompt-input').value.trim() : null), { once: true })
  })
}

async function selectLog(logId) {
  let lg
  try { lg = await api(`/logs/${logId}`) } catch (err) { toast(err.message); return }
  state.log = lg
  let c = state.cases.find((x) => x.id === lg.case_id)
  if (!state.logs.has(lg.case_id)) await loadLogs(lg.case_id)
  state.open.add(lg.case_id)
  renderTree()
  location.hash = `#/logs/${lg.id}`
  $('#welcome').hidden = true
  $('#log-view').hidden = false
  $('#files-panel').hidden = false
  $('#crumbs').textContent = c ? `${c.title}${c.reference ? ` · ${c.reference}` : ''}` : ''
  $('#log-title').textContent = lg.name
  $('#link-result').hidden = true
  $('#make-link').hidden = !(await isManager(lg.case_id))
  await Promise.all([loadFiles(), loadResumable()])
}

async function isManager(caseId) {
  if (state.me.role === 'admin') return true
  if (!state.roles.has(caseId)) {
    try {
      const members = await api(`/cases/${caseId}/members`)
      state.roles.set(caseId, members.find((m) => m.username === state.me.username)?.role || null)
    } catch { state.roles.set(caseId, null) }
  }
  return state.roles.get(caseId) === 'manager'
}

$('#make-link').addEventListener('click', async () => {
  try {
    const link = await api(`/logs/${state.log.id}/upload-links`, { method: 'POST', body: { expires_in: 7 * 24 * 3600 } })
    const box = $('#link-result')
    box.hidden = false
    box.innerHTML = `<div class="notice"><strong>Upload link created.</strong> Anyone with this link can upload into
      “${esc(state.log.name)}” until ${esc(new Date(link.expires_at).toLocaleString())}. It is shown only once.
      <div class="linkbox"><label class="sr-only" for="link-url">Upload link</label><input id="link-url" type="text" readonly value="${esc(link.url)}">
      <button class="btn small" type="button" id="copy-link">Copy</button></div></div>`
    $('#copy-link').addEventListener('click', async () => {
      $('#link-url').select()
      try { await navigator.clipboard.writeText(link.url); toast('Link copied') } catch { toast('Select the link and copy it') }
    })
    $('#link-url').focus()
  } catch (err) { toast(err.message) }
})

// -- files ----------------------------------------------------------------------------------------

async function loadFiles() {
  if (!state.log) return
  const files = await listAll(`/logs/${state.log.id}/files`)
  const shown = files.filter((f) => f.status !== 'failed')
  $('#files-count').textContent = `${shown.length} file${shown.length === 1 ? '' : 's'}`
  $('#files-empty').hidden = shown.length > 0
  $('#files').innerHTML = shown.map((f) => {
    const verified = f.verified_by === 'store'
      ? `<span class="badge ok" title="The store checked the whole file's CRC64NVME">${ICONS.check}verified</span>`
      : f.status === 'available' ? '<span class="badge">not store-verified</span>' : `<span class="badge warn">${esc(f.status)}</span>`
    const by = f.upload_link_id ? `${esc(f.uploaded_by)} <span class="badge info">via link</span>` : esc(f.uploaded_by || '—')
    return `<tr data-file="${esc(f.id)}" data-status="${esc(f.status)}" data-verified="${esc(f.verified_by || '')}" data-processing="${esc(f.processing?.status || '')}" class="${flagged(f) ? 'flagged' : ''}">
      ${thumbCell(f)}
      <td class="fname" data-label="">${esc(f.filename)}<div class="hint">${esc(new Date(f.created_at).toLocaleString())}</div></td>
      <td class="num" data-label="Size">${formatBytes(f.size)}</td>
      <td class="sum" data-label="">${verified} ${processingBadges(f)}${f.status === 'available' ? `
        <div title="SHA-256 ${esc(f.sha256 || '')}">SHA-256 <code class="sha256">${esc(f.sha256 ? `${f.sha256.slice(0, 16)}…` : '—')}</code></div>
        <div>CRC64NVME <code>${esc(f.crc64nvme || '—')}</code></div>` : ''}</td>
      <td data-label="By">${by}</td>
      <td class="num">${f.status === 'available' ? `<a class="btn small" href="/api/v1/files/${esc(f.id)}/download" download aria-label="Download ${esc(f.filename)}">${ICONS.down}Download</a>` : ''}</td>
    </tr>`
  }).join('')
  // Processing runs after the upload: look again until every file has its results.
  if (shown.some(processingPending)) { clearTimeout(filesTimer); filesTimer = setTimeout(loadFiles, 2000) }
}

let filesTimer
function refreshFilesSoon() { clearTimeout(filesTimer); filesTimer = setTimeout(loadFiles, 300) }
wireFilePanel($('#files'))

// -- resumable uploads ----------------------------------------------------------------------------

let resuming = null

async function loadResumable() {
  if (!state.log) return
  const active = new Set(state.transfers.filter((t) => t.upload).map((t) => t.upload.id))
  // A small file's one PUT (kind put) is not resumed by parts: it is sent again as a new file.
  const open = (await listAll(`/uploads?status=uploading&log_id=${state.log.id}`))
    .filter((u) => !active.has(u.id) && u.kind !== 'put')
  $('#resumable').hidden = open.length === 0
  const details = await Promise.all(open.slice(0, 20).map((u) => api(`/uploads/${u.id}`).catch(() => null)))
  $('#resumable-list').innerHTML = open.slice(0, 20).map((u, i) => {
    const d = details[i]
    const got = d ? d.parts.bytes_uploaded : 0
    const pct = u.size ? Math.round((got * 100) / u.size) : 0
    return `<li class="transfer" data-resumable="${esc(u.id)}">
      <div class="name">${esc(u.filename)}</div>
      <div class="controls">
        <button class="btn small primary" type="button" data-resume="${esc(u.id)}" aria-label="Resume ${esc(u.filename)}: pick the file again">Resume…</button>
        <button class="btn small icon danger" type="button" data-discard="${esc(u.id)}" aria-label="Discard ${esc(u.filename)}">${ICONS.x}</button>
      </div>
      <div class="meta">${formatBytes(got)} of ${formatBytes(u.size)} in the store · started ${esc(new Date(u.created_at).toLocaleString())}</div>
      <div class="bar paused" aria-hidden="true"><span data-width="${pct}"></span></div>
    </li>`
  }).join('')
  setWidths($('#resumable-list'))
}

$('#resumable-list').addEventListener('click', async (e) => {
  const button = e.target.closest('button')
  if (!button) return
  if (button.dataset.resume) {
    resuming = button.dataset.resume
    $('#resume-input').value = ''
    $('#resume-input').click()
  } else if (button.dataset.discard) {
    try { await api(`/uploads/${button.dataset.discard}`, { method: 'DELETE' }) } catch (err) { toast(err.message) }
    await loadResumable()
  }
})

$('#resume-input').addEventListener('change', async () => {
  const file = $('#resume-input').files[0]
  const id = resuming
  resuming = null
  if (!file || !id) return
  try {
    const upload = await api(`/uploads/${id}`)
    const baseName = upload.filename.split('/').pop()
    if (file.name !== baseName || file.size !== upload.size) {
      toast(`That is not the same file: expected “${baseName}” of ${formatBytes(upload.size)}.`)
      return
    }
    const first = await firstPartHashes(file, upload.part_size)
    const record = records()[id]
    const storedFirst = upload.parts.uploaded.find((p) => p.part_number === 1)
    const same = record?.firstSha256 ? record.firstSha256 === first.sha256
      : storedFirst?.checksum_crc64nvme ? storedFirst.checksum_crc64nvme === first.crc64nvme : true
    if (!same) {
      toast('That file has the same name and size, but different content: it cannot continue this upload.')
      return
    }
    addTransfer(new Transfer({ file, name: upload.filename, logId: upload.log_id, parallel: PARTS_AT_ONCE, resumeFrom: upload }))
    announce(`Resuming ${upload.filename}`)
    await loadResumable()
  } catch (err) { toast(err.message) }
})

// -- adding files ---------------------------------------------------------------------------------

const drop = $('#drop')
for (const type of ['dragenter', 'dragover']) drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add('over') })
for (const type of ['dragleave', 'drop']) drop.addEventListener(type, () => drop.classList.remove('over'))
drop.addEventListener('drop', async (e) => {
  e.preventDefault()
  const entries = [...e.dataTransfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean)
  const files = entries.length ? (await Promise.all(entries.map((en) => walk(en, '')))).flat()
    : [...e.dataTransfer.files].map((f) => ({ file: f, name: f.name }))
  enqueue(files)
})
drop.addEventListener('keydown', (e) => {
  if ((e.key === 'Enter' || e.key === ' ') && e.target === drop) { e.preventDefault(); $('#file-input').click() }
})
$('#pick-files').addEventListener('click', () => $('#file-input').click())
$('#pick-folder').addEventListener('click', () => $('#folder-input').click())
for (const id of ['#file-input', '#folder-input']) {
  $(id).addEventListener('change', () => {
    enqueue([...$(id).files].map((f) => ({ file: f, name: f.webkitRelativePath || f.name })))
    $(id).value = ''
  })
}

async function walk(entry, prefix) {
  if (entry.isFile) return [{ file: await new Promise((res, rej) => entry.file(res, rej)), name: prefix + entry.name }]
  const reader = entry.createReader()
  const children = []
  for (;;) {
    const batch = await new Promise((res, rej) => reader.readEntries(res, rej))
    if (!batch.length) break
    children.push(...batch)
  }
  return (await Promise.all(children.map((c) => walk(c, `${prefix}${entry.name}/`)))).flat()
}

function enqueue(items) {
  if (!state.log || !items.length) return
  const small = items.filter(({ file }) => file.size <= SMALL_FILE)
  const batched = small.length >= BATCH_FROM ? small : []
  for (let i = 0; i < batched.length; i += BATCH_FILES) {
    addTransfer(new Batch({ items: batched.slice(i, i + BATCH_FILES), logId: state.log.id }))
  }
  for (const { file, name } of items) {
    if (!batched.length || file.size > SMALL_FILE) addTransfer(new Transfer({ file, name, logId: state.log.id, parallel: PARTS_AT_ONCE }))
  }
  announce(`${items.length} file${items.length === 1 ? '' : 's'} added`)
}

function addTransfer(t) {
  state.transfers.push(t)
  t.addEventListener('change', () => {
    scheduleRender()
    if (['done', 'error', 'canceled'].includes(t.state)) {
      if (t.state === 'done') { announce(`${t.name} uploaded`); refreshFilesSoon() }
      if (t.state === 'error') announce(`${t.name} failed: ${t.error?.message}`)
      startMore()
    }
  })
  $('#transfers-panel').hidden = false
  startMore()
  scheduleRender()
}

function startMore() {
  const busy = state.transfers.filter((t) => ['preparing', 'uploading', 'paused', 'completing'].includes(t.state)).length
  let room = FILES_AT_ONCE - busy
  for (const t of state.transfers) {
    if (room <= 0) break
    if (t.state === 'queued') { t.start(); room-- }
  }
}

$('#pause-all').addEventListener('click', () => state.transfers.forEach((t) => t.pause()))
$('#resume-all').addEventListener('click', () => state.transfers.forEach((t) => t.resume()))

// -- transfers ------------------------------------------------------------------------------------

let frame = 0
function scheduleRender() { if (!frame) frame = requestAnimationFrame(() => { frame = 0; renderTransfers() }) }
setInterval(() => { if (state.transfers.some((t) => t.state === 'uploading')) scheduleRender() }, 1000)

const LABELS = {
  queued: ['Waiting', ''], preparing: ['Starting', 'info'], uploading: ['Uploading', 'info'], paused: ['Paused', 'warn'],
  completing: ['Verifying', 'info'], done: ['Done', 'ok'], error: ['Failed', 'bad'], canceled: ['Cancelled', ''],
}

function renderTransfers() {
  const list = $('#transfers')
  const ts = state.transfers
  let loaded = 0, total = 0, rate = 0
  for (const t of ts) {
    if (t.state === 'canceled') continue
    loaded += t.state === 'done' ? t.total : t.loaded
    total += t.total
  }
  const focused = document.activeElement?.dataset?.action ? [document.activeElement.dataset.action, document.activeElement.dataset.index] : null
  list.innerHTML = ts.map((t, i) => {
    const r = t.state === 'uploading' ? t.rate : 0
    rate += r
    const pct = t.total ? Math.floor((100 * (t.state === 'done' ? t.total : t.loaded)) / t.total) : t.state === 'done' ? 100 : 0
    const [label, tone] = LABELS[t.state]
    let meta = `${formatBytes(t.state === 'done' ? t.total : t.loaded)} of ${formatBytes(t.total)}`
    if (t.state === 'uploading' && r > 0) meta += ` · ${formatBytes(r)}/s · ${formatDuration((t.total - t.loaded) / r)} left`
    if (t.state === 'done' && t.result) meta += t.result.verified_by === 'store' ? ' · verified by the store' : ''
    if (t.state === 'error') meta += ` · ${esc(t.error?.message || 'failed')}`
    const canPause = t.state === 'uploading', canResume = t.state === 'paused'
    const active = !['done', 'canceled', 'error'].includes(t.state)
    return `<li class="transfer" data-state="${t.state}" data-name="${esc(t.name)}" data-upload-id="${esc(t.upload?.id || '')}" data-sent-parts="${t.sentParts}">
      <div class="name" title="${esc(t.name)}">${esc(t.name)}</div>
      <div class="controls">
        <span class="badge ${tone}">${label}</span>
        ${canPause ? `<button class="btn small icon" type="button" data-action="pause" data-index="${i}" aria-label="Pause ${esc(t.name)}">${ICONS.pause}</button>` : ''}
        ${canResume ? `<button class="btn small icon" type="button" data-action="resume" data-index="${i}" aria-label="Resume ${esc(t.name)}">${ICONS.play}</button>` : ''}
        ${active ? `<button class="btn small icon danger" type="button" data-action="cancel" data-index="${i}" aria-label="Cancel ${esc(t.name)}">${ICONS.x}</button>` : ''}
      </div>
      <div class="meta">${meta}</div>
      <div class="bar ${t.state === 'done' ? 'done' : t.state === 'error' ? 'bad' : t.state === 'paused' ? 'paused' : ''}" role="progressbar" aria-label="${esc(t.name)}" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${pct}"><span data-width="${pct}"></span></div>
    </li>`
  }).join('')
  setWidths(list)
  if (focused) list.querySelector(`[data-action="${focused[0]}"][data-index="${focused[1]}"]`)?.focus()
  const files = (t) => t.files || 1 // a batch stands for many files
  const done = ts.filter((t) => t.state === 'done').reduce((n, t) => n + files(t), 0)
  const counted = ts.filter((t) => t.state !== 'canceled').reduce((n, t) => n + files(t), 0)
  $('#overall-label').textContent = `${done} of ${counted} file${counted === 1 ? '' : 's'} uploaded`
  const pct = total ? Math.floor((100 * loaded) / total) : 0
  $('#overall-bar').setAttribute('aria-valuenow', String(pct))
  $('#overall-bar').firstElementChild.style.width = `${pct}%`
  $('#overall-bar').classList.toggle('done', counted > 0 && done === counted)
  $('#overall-stats').textContent = rate > 0
    ? `${formatBytes(loaded)} of ${formatBytes(total)} · ${formatBytes(rate)}/s · ${formatDuration((total - loaded) / rate)} left`
    : `${formatBytes(loaded)} of ${formatBytes(total)}`
}

$('#transfers').addEventListener('click', (e) => {
  const button = e.target.closest('button[data-action]')
  if (!button) return
  const t = state.transfers[Number(button.dataset.index)]
  if (button.dataset.action === 'pause') t.pause()
  else if (button.dataset.action === 'resume') t.resume()
  else if (button.dataset.action === 'cancel') t.cancel().then(loadResumable)
})

window.addEventListener('beforeunload', (e) => {
  if (state.transfers.some((t) => ['uploading', 'preparing', 'completing'].includes(t.state))) e.preventDefault()
})

boot().catch((err) => toast(err.message))
