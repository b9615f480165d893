// Many small files at once: one Batch per group of up to BATCH_FILES files of at most SMALL_FILE
// bytes (one part on any server). It looks like a Transfer to the page (state, loaded, total, rate,
// start/pause/resume/cancel), but:
//
// start -> a Web Worker reads each file once for its SHA-256 and CRC64NVME -> one request starts
// them all (POST /logs/{id}/uploads/batch, with an Idempotency-Key: sent again, it answers the same
// uploads) -> each file goes straight to the store in one PUT, `parallel` at a time, with exactly
// the headers its URL signed (its length, type, SHA-256 and If-None-Match: *, so the store checks
// the bytes and never writes over a file) -> one request completes them all
// (POST /uploads/batch/complete). Each file answers alone: a refused one is reported, the others go on.
import { api, ApiError } from './api.js'
import { Sending } from './sending.js'

export const SMALL_FILE = 5 * 1024 * 1024
export const BATCH_FILES = 100
const MAX_RETRIES = 6

/** SHA-256 (hex) and CRC64NVME (base64) of each of `files`, read once each, in order. */
function hashAll(files, onEach) {
  return new Promise((resolve, reject) => {
    const worker = new Worker('/assets/hash-worker.js', { type: 'module' })
    const out = []
    const next = () => {
      if (out.length === files.length) { worker.terminate(); resolve(out); return }
      const file = files[out.length]
      worker.postMessage({ file, partSize: Math.max(1, file.size), partCount: 1 })
    }
    worker.onmessage = ({ data }) => {
      if (data.type === 'error') { worker.terminate(); reject(new Error(data.message)); return }
      if (data.type === 'done') { out.push({ sha256: data.sha256, crc64nvme: data.crc64nvme }); onEach(out.length); next() }
    }
    worker.onerror = (e) => { worker.terminate(); reject(new Error(e.message || 'hashing failed')) }
    next()
  })
}

export class Batch extends Sending {
  constructor({ items, logId, parallel = 6 }) {
    super(items.reduce((n, { file }) => n + file.size, 0))
    this.items = items // [{ file, name }]
    this.files = items.length
    this.name = `${items.length} files (${items[0].name}${items.length > 1 ? ', …' : ''})`
    this.logId = logId
    this.parallel = parallel
    this.key = crypto.randomUUID()
    this.upload = null
    this.counted = new Set() // files whose bytes are in `confirmed`
    this.landed = new Set() // files the store holds, to complete
    this.started = [] // the batch start's answer, per file
    this.outcome = new Map() // index -> 'done' | an Error
  }

  async start() {
    this.setState('preparing')
    try {
      const sums = await hashAll(this.items.map((i) => i.file), () => this.emit())
      this.entries = this.items.map(({ file, name }, n) => ({
        filename: name, size: file.size, sha256: sums[n].sha256, crc64nvme: sums[n].crc64nvme,
        ...(file.type ? { content_type: file.type } : {}),
      }))
      await this.begin()
    } catch (err) {
      this.setState('error', err)
    }
  }

  /** Start the batch (again: the same key answers the same uploads, with fresh URLs). */
  async begin() {
    const answer = await api(`/logs/${this.logId}/uploads/batch`, {
      method: 'POST', body: { files: this.entries }, headers: { 'Idempotency-Key': this.key },
    })
    this.started = answer.items
    this.ready = []
    for (const item of answer.items) {
      const i = item.index
      if (this.outcome.has(i) || this.landed.has(i)) continue
      const status = item.upload?.status
      if (item.status === 'refused') this.outcome.set(i, new ApiError(item.error.status, item.error))
      else if (status === 'completed' || status === 'completing') this.land(i) // complete answers it
      else if (status === 'uploading' && item.put) this.ready.push(i)
      else this.outcome.set(i, new Error(`the upload is ${status}`))
    }
    this.setState('uploading')
    this.pump()
    this.maybeComplete()
  }

  /** The store holds file ``index`` (its PUT landed, or an earlier one): complete it. */
  land(index) {
    this.landed.add(index)
    if (!this.counted.has(index)) {
      this.counted.add(index)
      this.confirmed += this.items[index].file.size
    }
  }

  pump() {
    if (this.state !== 'uploading') return
    while (this.inflight.size < this.parallel && this.ready.length) this.send(this.ready.shift())
  }

  async send(index) {
    const slot = { xhr: null, loaded: 0 }
    this.inflight.set(index, slot)
    const { put } = this.started[index]
    try {
      const status = await this.put(slot, put, this.items[index].file)
      this.inflight.delete(index)
      if (status === 412) this.land(index) // the store holds it already
      else if (status >= 200 && status < 300) { this.sentParts++; this.land(index) }
      else throw new Error(`the store answered ${status}`)
    } catch (err) {
      if (this.inflight.get(index) !== slot) return // paused or cancelled meanwhile
      this.inflight.delete(index)
      const tries = (this.retries.get(index) || 0) + 1
      this.retries.set(index, tries)
      if (tries > MAX_RETRIES) { this.outcome.set(index, err); this.maybeComplete(); return }
      setTimeout(() => { this.ready.push(index); this.pump() }, Math.min(8000, 250 * 2 ** tries))
    }
    this.emit()
    this.pump()
    this.maybeComplete()
  }

  async maybeComplete() {
    if (this.state !== 'uploading' || this.inflight.size || this.ready.length || this.completing) return
    const landed = [...this.landed].filter((i) => !this.outcome.has(i))
    this.completing = true
    this.setState('completing')
    try {
      if (landed.length) {
        const answer = await api('/uploads/batch/complete', {
          method: 'POST', body: { uploads: landed.map((i) => ({ id: this.started[i].upload.id })) },
        })
        answer.items.forEach((item, n) => {
          const index = landed[n]
          if (item.status === 'done') this.outcome.set(index, 'done')
          else if (item.status === 'refused') this.outcome.set(index, new ApiError(item.error.status, item.error))
          else this.landed.delete(index) // not in the store yet: sent again below
        })
      }
      this.completing = false
      const failed = [...this.outcome.values()].filter((o) => o !== 'done')
      if (this.outcome.size === this.items.length) {
        this.result = { files: this.items.length - failed.length, failed: failed.length }
        if (failed.length) this.setState('error', new Error(`${failed.length} of ${this.items.length} files failed: ${failed[0].message}`))
        else this.setState('done')
      } else {
        await this.begin() // what is left, with fresh URLs
      }
    } catch (err) {
      this.completing = false
      this.fail(err)
    }
  }

  async cancel() {
    const active = !['done', 'canceled'].includes(this.state)
    this.abortInflight()
    this.setState('canceled')
    if (!active) return
    for (const item of this.started) {
      if (item.upload && item.upload.status === 'uploading' && !this.outcome.has(item.index)) {
        try { await api(`/uploads/${item.upload.id}`, { method: 'DELETE' }) } catch { /* it expires anyway */ }
      }
    }
  }

  fail(err) {
    this.abortInflight()
    this.setState('error', err)
  }
}
