// What processing found about a file: its thumbnail in the file list, badges for its hashes and
// type (a mismatch in red, impossible to miss), and the file panel with the preview and every fact.
import { api, formatBytes } from './api.js'

export function esc(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c])
}

const previewUrl = (f) => `/api/v1/files/${encodeURIComponent(f.id)}/preview`

// Whether the file's bytes contradict what was declared: a wrong SHA-256, or another type.
export function flagged(f) {
  return f.sha256_verified === false || f.type_matches === false
}

export function processingPending(f) {
  return f.status === 'available' && (!f.processing || ['pending', 'running'].includes(f.processing.status))
}

export function thumbCell(f) {
  const inner = f.has_preview
    ? `<img src="${previewUrl(f)}" alt="" loading="lazy" width="48" height="48">`
    : `<span class="thumb-none" aria-hidden="true">${esc(shortType(f.detected_type || f.content_type))}</span>`
  return `<td class="thumb"><button class="thumb-btn" type="button" data-details="${esc(f.id)}" aria-label="Details of ${esc(f.filename)}">${inner}</button></td>`
}

function shortType(type) {
  const sub = String(type || '').split('/')[1] || 'file'
  return sub.replace(/^(x-|vnd\.)/, '').split(/[.+;-]/)[0].slice(0, 4).toUpperCase()
}

// The badges of the checksums cell: processing state, then the verdicts.
export function processingBadges(f) {
  if (f.status !== 'available') return ''
  const out = []
  const p = f.processing
  if (!p || p.status === 'pending' || p.status === 'running') out.push('<span class="badge info">processing…</span>')
  else if (p.status === 'failed') out.push(`<span class="badge warn" title="${esc(p.error || '')}">processing failed</span>`)
  if (f.sha256_verified === false) out.push('<span class="badge bad mismatch">SHA-256 mismatch</span>')
  else if (f.sha256_verified === true) out.push('<span class="badge ok" title="The stored bytes have the declared SHA-256">SHA-256 verified</span>')
  else if (f.sha256_source === 'server') out.push('<span class="badge" title="No SHA-256 was declared; the server computed it from the stored bytes">SHA-256 by server</span>')
  if (f.type_matches === false) {
    out.push(`<span class="badge bad mismatch" title="Declared ${esc(f.content_type)}, the bytes are ${esc(f.detected_type)}">type mismatch: ${esc(f.detected_type)}</span>`)
  }
  return out.join(' ')
}

function row(label, value, cls = '') {
  return `<tr class="${cls}"><th scope="row">${esc(label)}</th><td>${value}</td></tr>`
}

function mediaRows(m) {
  if (!m) return ''
  const rows = []
  if (m.width && m.height) rows.push(row(m.pages ? 'First page' : 'Dimensions', `${m.width} × ${m.height}${m.pages ? ' pt' : ' px'}`))
  if (m.duration_seconds != null) rows.push(row('Duration', `${m.duration_seconds.toFixed(1)} s`))
  if (m.codec) rows.push(row('Codec', esc(m.codec)))
  if (m.pages != null) rows.push(row('Pages', String(m.pages)))
  if (m.taken_at) rows.push(row('Taken at', esc(m.taken_at)))
  if (m.camera) rows.push(row('Camera', esc(m.camera)))
  if (m.gps) rows.push(row('GPS', `<code>${m.gps.latitude.toFixed(6)}, ${m.gps.longitude.toFixed(6)}</code>${m.gps.altitude != null ? ` · ${m.gps.altitude} m` : ''}`))
  if (m.orientation && m.orientation !== 1) rows.push(row('EXIF orientation', `${m.orientation} (applied to the preview)`))
  return rows.join('')
}

function sha256Rows(f) {
  const rows = []
  if (f.sha256_source === 'client') {
    const cls = f.sha256_verified === false ? 'mismatch-row' : ''
    const verdict = f.sha256_verified === true ? '<span class="badge ok">matches the stored bytes</span>'
      : f.sha256_verified === false ? '<span class="badge bad mismatch">DOES NOT MATCH the stored bytes</span>'
        : '<span class="badge">not checked yet</span>'
    rows.push(row('SHA-256 declared', `<code class="hash">${esc(f.sha256)}</code> ${verdict}`, cls))
    if (f.sha256_server) rows.push(row('SHA-256 of the stored bytes', `<code class="hash">${esc(f.sha256_server)}</code>`, cls))
  } else if (f.sha256) {
    rows.push(row('SHA-256', `<code class="hash">${esc(f.sha256)}</code> <span class="badge">computed by the server</span>`))
  } else {
    rows.push(row('SHA-256', '<span class="hint">not known yet</span>'))
  }
  const crc = f.verified_by === 'store' ? ' <span class="badge ok">checked by the store</span>' : ''
  rows.push(row('CRC64NVME', `<code>${esc(f.crc64nvme || '—')}</code>${f.crc64nvme ? crc : ''}`))
  return rows.join('')
}

function typeRows(f) {
  const cls = f.type_matches === false ? 'mismatch-row' : ''
  const verdict = f.type_matches === false ? ' <span class="badge bad mismatch">DOES NOT MATCH</span>'
    : f.type_matches === true ? ' <span class="badge ok">matches</span>' : ''
  return row('Declared type', `<code>${esc(f.content_type)}</code>`, cls)
    + row('Detected type', f.detected_type ? `<code>${esc(f.detected_type)}</code>${verdict}` : '<span class="hint">not known yet</span>', cls)
}

export async function openFilePanel(fileId) {
  const dialog = document.querySelector('#file-dialog')
  const f = await api(`/files/${encodeURIComponent(fileId)}`)
  const p = f.processing
  const status = !p ? 'not processed' : p.status === 'failed' ? `failed: ${esc(p.error || '')}` : esc(p.status)
  dialog.querySelector('#file-dialog-title').textContent = f.filename
  dialog.querySelector('#file-dialog-body').innerHTML = `
    ${flagged(f) ? '<p class="alarm" role="alert"><strong>Mismatch.</strong> The stored bytes are not what was declared for this file. It is kept as evidence; see the red lines below.</p>' : ''}
    <div class="file-detail">
      <div class="preview">${f.has_preview ? `<img src="${previewUrl(f)}" alt="Preview of ${esc(f.filename)}">` : `<div class="thumb-none big" aria-hidden="true">${esc(shortType(f.detected_type || f.content_type))}</div><p class="hint">No preview</p>`}</div>
      <table class="facts"><tbody>
        ${row('Size', formatBytes(f.size))}
        ${typeRows(f)}
        ${sha256Rows(f)}
        ${mediaRows(f.media)}
        ${row('Processing', status, p && p.status === 'failed' ? 'warn-row' : '')}
      </tbody></table>
    </div>`
  if (!dialog.open) dialog.showModal()
}

export function wireFilePanel(table) {
  const dialog = document.querySelector('#file-dialog')
  dialog.querySelector('#file-dialog-close').addEventListener('click', () => dialog.close())
  table.addEventListener('click', (e) => {
    const button = e.target.closest('[data-details]')
    if (button) openFilePanel(button.dataset.details).catch(() => {})
  })
}
