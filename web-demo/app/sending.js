// What every transfer of the page shares: bytes held by the store plus bytes in flight, the speed
// over the last seconds, state changes as events, PUTs straight to the store that can be aborted
// (pause, cancel), and pause/resume of what is in flight.
export class Sending extends EventTarget {
  constructor(total) {
    super()
    this.state = 'queued'
    this.error = null
    this.result = null
    this.total = total
    this.confirmed = 0 // bytes the store holds
    this.inflight = new Map() // part or file -> { xhr, loaded }
    this.ready = [] // parts or files waiting to be sent
    this.retries = new Map()
    this.sentParts = 0
    this.samples = []
  }

  get loaded() {
    let n = this.confirmed
    for (const p of this.inflight.values()) n += p.loaded
    return Math.min(n, this.total)
  }

  /** Bytes per second over the last few seconds. */
  get rate() {
    const now = performance.now()
    this.samples.push([now, this.loaded])
    while (this.samples.length > 2 && now - this.samples[0][0] > 4000) this.samples.shift()
    const [t0, b0] = this.samples[0]
    return now - t0 > 250 ? ((this.loaded - b0) * 1000) / (now - t0) : 0
  }

  emit() { this.dispatchEvent(new Event('change')) }

  setState(state, error = null) {
    this.state = state
    this.error = error
    this.emit()
  }

  /** PUT `blob` to a presigned URL with exactly the headers it signed; resolves with the status. */
  put(slot, signed, blob) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest()
      slot.xhr = xhr
      xhr.open('PUT', signed.url)
      for (const [name, value] of Object.entries(signed.headers)) {
        if (name.toLowerCase() !== 'content-length') xhr.setRequestHeader(name, value) // the browser sets it
      }
      xhr.upload.onprogress = (e) => { slot.loaded = e.loaded; this.emit() }
      xhr.onload = () => resolve(xhr.status)
      xhr.onerror = () => reject(new Error('the connection to the store failed'))
      xhr.onabort = () => reject(new Error('aborted'))
      xhr.send(blob)
    })
  }

  abortInflight() {
    const keys = [...this.inflight.keys()]
    const slots = [...this.inflight.values()]
    this.inflight.clear()
    for (const slot of slots) slot.xhr?.abort()
    return keys
  }

  pause() {
    if (this.state !== 'uploading') return
    this.ready.unshift(...this.abortInflight())
    this.setState('paused')
  }

  resume() {
    if (this.state !== 'paused') return
    this.setState('uploading')
    this.pump()
    this.maybeComplete()
  }
}
