// The JSON API, authenticated by the session cookie (same origin; the API checks Origin on writes).
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`)
    this.status = status
    this.code = problem?.code || 'HTTP_ERROR'
    this.problem = problem || {}
  }
}

export async function api(path, { method = 'GET', body, signal, headers = {} } = {}) {
  const init = { method, credentials: 'same-origin', signal, headers: { ...headers } }
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  const resp = await fetch(`/api/v1${path}`, init)
  if (resp.status === 204) return null
  const type = resp.headers.get('content-type') || ''
  const data = type.includes('json') ? await resp.json() : null
  if (!resp.ok) throw new ApiError(resp.status, data)
  return data
}

export async function listAll(path) {
  const items = []
  let cursor = null
  do {
    const sep = path.includes('?') ? '&' : '?'
    const page = await api(`${path}${sep}limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
    items.push(...page.items)
    cursor = page.next_cursor
  } while (cursor)
  return items
}

export const MiB = 1024 * 1024

export function formatBytes(n) {
  if (n == null) return '—'
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  let v = n
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++ }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '—'
  if (seconds < 1) return 'under a second'
  if (seconds < 60) return `${Math.round(seconds)} s`
  const m = Math.floor(seconds / 60)
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`
  return `${Math.floor(m / 60)} h ${m % 60} min`
}
