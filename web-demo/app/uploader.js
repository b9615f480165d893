// The upload engine of the web demo: one Transfer per file.
//
// start -> a Web Worker reads the file once, front to back, and reports each part's CRC64NVME as it
// goes (then the whole file's SHA-256 and CRC64NVME) -> each part is signed with its CRC64NVME and
// PUT straight to the store, `parallel` at a time, as soon as its checksum is known -> complete with
// the whole-file checksums, which the store verifies. Bytes never pass through the API.
//
// Pause aborts the parts in flight (they are sent again on resume); cancel aborts the upload.
// A page reload loses nothing the store holds: the upload is listed again (GET /uploads), the user
// picks the file again, and only the parts the store is missing are sent.
import { api, ApiError } from './api.js'
import { Sending } from './sending.js'

const RECORDS = 'upload-plane:uploads'
const MAX_RETRIES = 6

export function records() {
  try { return JSON.parse(localStorage.getItem(RECORDS) || '{}') } catch { return {} }
}
function saveRecord(id, value) {
  const all = records()
  if (value == null) delete all[id]
  else all[id] = { ...(all[id] || {}), ...value }
  localStorage.setItem(RECORDS, JSON.stringify(all))
}

/** The first part's SHA-256 and CRC64NVME of `file` with parts of `partSize` bytes. */
export function firstPartHashes(file, partSize) {
  return new Promise((resolve, reject) => {
    const worker = new Worker('/assets/hash-worker.js', { type: 'module' })
    worker.onmessage = ({ data }) => {
      if (data.type === 'part') resolve({ sha256: data.firstSha256, crc64nvme: data.crc64nvme })
      else if (data.type === 'error') reject(new Error(data.message))
      worker.terminate()
    }
    worker.onerror = (e) => { reject(new Error(e.message || 'hashing failed')); worker.terminate() }
    worker.postMessage({ file, partSize, partCount: Math.max(1, Math.ceil(file.size / partSize)), firstPartOnly: true })
  })
}

export class Transfer extends Sending {
  constructor({ file, name, logId, parallel = 4, resumeFrom = null }) {
    super(file.size)
    this.file = file
    this.name = name || file.name
    this.logId = logId
    this.parallel = parallel
    this.resumeFrom = resumeFrom // an upload with live part state (GET /uploads/{id}), to resume
    this.upload = null
    this.crcs = new Map()
    this.remaining = new Set()
    this.whole = null
  }

  async start() {
    this.setState('preparing')
    try {
      if (this.resumeFrom) {
        this.upload = this.resumeFrom
        const held = new Set(this.upload.parts.uploaded.map((p) => p.part_number))
        for (const p of this.upload.parts.uploaded) this.confirmed += p.size
        for (let n = 1; n <= this.upload.part_count; n++) if (!held.has(n)) this.remaining.add(n)
      } else {
        const body = { filename: this.name, size: this.total }
        if (this.file.type) body.content_type = this.file.type
        if (this.total > 0) body.checksum_algorithm = 'CRC64NVME'
        this.upload = await api(`/logs/${this.logId}/uploads`, { method: 'POST', body })
        for (let n = 1; n <= this.upload.part_count; n++) this.remaining.add(n)
        saveRecord(this.upload.id, {
          name: this.name, size: this.total, lastModified: this.file.lastModified, logId: this.logId,
          partSize: this.upload.part_size,
        })
      }
    } catch (err) {
      this.setState('error', err)
      return
    }
    this.setState('uploading')
    this.worker = new Worker('/assets/hash-worker.js', { type: 'module' })
    this.worker.onmessage = ({ data }) => this.onHashed(data)
    this.worker.onerror = (e) => this.fail(new Error(e.message || 'hashing failed'))
    this.worker.postMessage({ file: this.file, partSize: this.upload.part_size, partCount: this.upload.part_count })
  }

  onHashed(data) {
    if (data.type === 'error') return this.fail(new Error(data.message))
    if (data.type === 'part') {
      this.crcs.set(data.n, data.crc64nvme)
      if (data.firstSha256 && !this.resumeFrom) saveRecord(this.upload.id, { firstSha256: data.firstSha256 })
      if (this.remaining.has(data.n)) this.ready.push(data.n)
      this.pump()
    } else if (data.type === 'done') {
      this.whole = data
      this.worker.terminate()
      this.maybeComplete()
    }
  }

  pump() {
    if (this.state !== 'uploading') return
    while (this.inflight.size < this.parallel && this.ready.length) this.send(this.ready.shift())
  }

  async send(n) {
    const slot = { xhr: null, loaded: 0 }
    this.inflight.set(n, slot)
    try {
      const body = { part_numbers: [n] }
      if (this.upload.checksum_algorithm === 'CRC64NVME') body.checksums_crc64nvme = { [n]: this.crcs.get(n) }
      const signed = (await api(`/uploads/${this.upload.id}/parts`, { method: 'POST', body })).parts[0]
      if (this.inflight.get(n) !== slot) return // paused or cancelled meanwhile
      const start = (n - 1) * this.upload.part_size
      const status = await this.put(slot, signed, this.file.slice(start, start + signed.size))
      if (status < 200 || status >= 300) throw new Error(`the store answered ${status}`)
      this.inflight.delete(n)
      this.remaining.delete(n)
      this.confirmed += signed.size
      this.sentParts++
      this.emit()
      this.pump()
      this.maybeComplete()
    } catch (err) {
      if (this.inflight.get(n) !== slot) return // aborted on purpose
      this.inflight.delete(n)
      const tries = (this.retries.get(n) || 0) + 1
      this.retries.set(n, tries)
      const fatal = err instanceof ApiError && err.status < 500 && err.status !== 429
      if (fatal || tries > MAX_RETRIES) return this.fail(err)
      setTimeout(() => { if (this.remaining.has(n)) { this.ready.unshift(n); this.pump() } }, Math.min(8000, 250 * 2 ** tries))
    }
  }

  async maybeComplete() {
    if (this.state !== 'uploading' || this.remaining.size || !this.whole || this.completing) return
    this.completing = true
    this.setState('completing')
    try {
      const body = { sha256: this.whole.sha256 }
      if (this.upload.checksum_algorithm === 'CRC64NVME') body.crc64nvme = this.whole.crc64nvme
      this.result = await api(`/uploads/${this.upload.id}/complete`, { method: 'POST', body })
      saveRecord(this.upload.id, null)
      this.setState('done')
    } catch (err) {
      this.completing = false
      this.fail(err)
    }
  }

  async cancel() {
    const wasActive = this.upload && !['done', 'canceled'].includes(this.state)
    this.abortInflight()
    this.worker?.terminate()
    this.setState('canceled')
    if (wasActive) {
      try { await api(`/uploads/${this.upload.id}`, { method: 'DELETE' }) } catch { /* it expires anyway */ }
      saveRecord(this.upload.id, null)
    }
  }

  fail(err) {
    this.abortInflight()
    this.worker?.terminate()
    this.setState('error', err)
  }
}
