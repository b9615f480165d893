// Module worker: reads one file front to back, part by part, and computes
//  - each part's CRC64NVME (signed into that part's URL, so the store checks the part),
//  - the whole file's SHA-256 and CRC64NVME (declared at complete, so the store checks the file),
//  - the first part's SHA-256 (to recognise the same file when an upload is resumed).
// The page stays responsive: all of it runs here. Libraries come from npm, served by the API.
import { createSHA256 } from '/vendor/hash-wasm/index.esm.min.js'
import { Crc64NvmeJs } from '/vendor/crc64nvme/Crc64NvmeJs.js'

const READ = 4 * 1024 * 1024 // read granularity inside a part

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
const b64 = (bytes) => btoa(String.fromCharCode(...bytes))

async function hashFile({ file, partSize, partCount, firstPartOnly }) {
  const sha = await createSHA256()
  const whole = new Crc64NvmeJs()
  sha.init()
  for (let n = 1; n <= partCount; n++) {
    const start = (n - 1) * partSize
    const end = Math.min(start + partSize, file.size)
    const part = new Crc64NvmeJs()
    const first = n === 1 ? await createSHA256() : null
    if (first) first.init()
    for (let off = start; off < end; off += READ) {
      const bytes = new Uint8Array(await file.slice(off, Math.min(off + READ, end)).arrayBuffer())
      part.update(bytes)
      whole.update(bytes)
      sha.update(bytes)
      if (first) first.update(bytes)
    }
    const message = { type: 'part', n, crc64nvme: b64(await part.digest()) }
    if (first) message.firstSha256 = first.digest('hex')
    self.postMessage(message)
    if (firstPartOnly) return
  }
  self.postMessage({ type: 'done', sha256: sha.digest('hex'), crc64nvme: b64(await whole.digest()), crcHex: hex(await whole.digest()) })
}

self.onmessage = ({ data }) => {
  hashFile(data).catch((err) => self.postMessage({ type: 'error', message: String(err && err.message || err) }))
}
