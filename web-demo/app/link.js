// The page behind an upload link (/u/{token}): Uppy's Dashboard with its S3 plugin pointed at this
// service's Companion-compatible routes for the link. Uppy comes from npm, served by the API.
import { Uppy, Dashboard, AwsS3 } from '/vendor/uppy/uppy.min.mjs'
import { formatBytes } from './api.js'

const MiB = 1024 * 1024
const token = decodeURIComponent(location.pathname.split('/').pop())
const endpoint = `${location.origin}/links/${encodeURIComponent(token)}`

function problem(text) {
  const el = document.querySelector('#problem')
  el.textContent = text
  el.hidden = false
}

async function main() {
  const resp = await fetch(endpoint, { credentials: 'omit' })
  const info = resp.headers.get('content-type')?.includes('json') ? await resp.json() : {}
  if (!resp.ok) {
    document.querySelector('#title').textContent = 'This link cannot be used'
    problem(resp.status === 410 ? `${info.detail} ` : 'The link is not valid. Check that you copied all of it, or ask for a new one.')
    return
  }
  document.querySelector('#title').textContent = `Upload to “${info.log_name}”`
  const limits = [`Open until ${new Date(info.expires_at).toLocaleString()}`]
  if (info.files_left != null) limits.push(`${info.files_left} more file${info.files_left === 1 ? '' : 's'}`)
  if (info.bytes_left != null) limits.push(`up to ${formatBytes(info.bytes_left)} in total`)
  document.querySelector('#limits').textContent = limits.join(' · ')

  const uppy = new Uppy({
    autoProceed: false,
    restrictions: {
      maxNumberOfFiles: info.files_left ?? null,
      maxTotalFileSize: info.bytes_left ?? null,
    },
  })
    .use(Dashboard, {
      inline: true,
      target: '#uploader',
      width: '100%',
      height: 420,
      proudlyDisplayPoweredByUppy: false,
      showProgressDetails: true,
      note: 'Files are checked for size and recorded with this link.',
    })
    .use(AwsS3, {
      companionEndpoint: endpoint,
      // Small files in one form POST, larger ones in 5 MiB parts (this service plans Uppy's own chunks).
      shouldUseMultipart: (file) => (file.size || 0) > 16 * MiB,
    })
  // Uppy does not send the size; this service plans the upload from it.
  uppy.on('file-added', (file) => uppy.setFileMeta(file.id, { size: file.size }))
  // A form upload is promoted when its object exists: say so now rather than wait for the reaper.
  uppy.on('upload-success', async (file, response) => {
    if (uppy.getFile(file.id)?.s3Multipart) return
    const key = response?.body?.key
    if (key) await fetch(`${endpoint}/s3/settle?key=${encodeURIComponent(key)}`, { method: 'POST', credentials: 'omit' })
  })
  uppy.on('complete', (result) => {
    const ok = result.successful?.length || 0
    const bad = result.failed?.length || 0
    document.querySelector('#done').textContent = bad
      ? `${ok} uploaded, ${bad} failed. You can retry the failed ones.`
      : `${ok} file${ok === 1 ? '' : 's'} uploaded. Thank you — you can close this page.`
  })
  window.uppy = uppy
}

main().catch((err) => problem(err.message))
