// The control API: HTTP on loopback, every request must carry the data dir's token (Bearer).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { timingSafeEqual } from 'node:crypto'
import type { AddressInfo, Socket } from 'node:net'
import type { ApiAddress } from './config.ts'
import type { LogLine } from './logger.ts'

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE'

export interface ApiRequest {
  method: HttpMethod
  path: string
  /** Values of `:name` segments of the route. */
  params: Record<string, string>
  query: URLSearchParams
  /** Parsed JSON body (undefined when empty). */
  body: unknown
  signal: AbortSignal
}

export interface ApiResponse {
  status?: number
  body?: unknown
  /** A non-JSON answer (e.g. the Prometheus text format of /metrics): sent as is, with this content type. */
  text?: { contentType: string, content: string }
  /** Extra response headers (e.g. the dashboard's content security policy). */
  headers?: Record<string, string>
}

export type RouteHandler = (request: ApiRequest) => ApiResponse | Promise<ApiResponse>

/** Throw from a handler to answer with that status and message (e.g. 400 for bad input, 404). */
export class ApiError extends Error {
  readonly status: number
  constructor (status: number, message: string) {
    super(message)
    this.status = status
  }
}

/**
 * `public`: served without the token (GET only, no body read): for static files that hold nothing secret, such as
 * the dashboard's page, which then sends the token with every API call it makes.
 */
export interface RouteOptions { public?: boolean }

interface Route { method: HttpMethod, segments: string[], handler: RouteHandler, public: boolean }

const MAX_BODY_BYTES = 1024 * 1024
/**
 * Open connections at most. A local user without the token opened 21k idle connections and the peer ran out of file
 * descriptors (and was declared dead). At the cap a new connection closes the oldest idle one (no request in
 * flight), so idle or slow-header connections cannot lock out the token holder; with every one busy it is refused.
 */
export const MAX_API_CONNECTIONS = 128
/** A connection with no request in flight for this long is closed (a fresh one that sends nothing, too). */
const IDLE_CONNECTION_MS = 5_000

/** Connection figures of the control API, for status. */
export interface ApiConnectionFigures { open: number, max: number, evictedIdle: number, refusedBusy: number, closedIdle: number }

interface TrackedConnection { socket: Socket, requests: number, idleTimer: NodeJS.Timeout | undefined }

export class ControlApi {
  #token: Buffer
  readonly #routes: Route[] = []
  readonly #log: LogLine
  #server: Server | undefined
  #address: ApiAddress | undefined
  /** Open connections, oldest first (a Map keeps insertion order). */
  readonly #connections = new Map<Socket, TrackedConnection>()
  readonly #figures = { evictedIdle: 0, refusedBusy: 0, closedIdle: 0 }

  constructor (options: { token: string, log?: LogLine }) {
    this.#token = Buffer.from(options.token)
    this.#log = options.log ?? (() => {})
  }

  /** Replaces the token every request must carry (the data dir's token once read, or a rotated one). */
  useToken (token: string): void { this.#token = Buffer.from(token) }

  /** Registers a route; `path` may hold `:name` segments, e.g. `/v1/missions/:id`. */
  route (method: HttpMethod, path: string, handler: RouteHandler, options: RouteOptions = {}): void {
    const segments = path.split('/').filter(Boolean)
    if (options.public === true && method !== 'GET') throw new Error(`public route ${method} ${path}: only GET may go without the token`)
    if (this.#routes.some(r => r.method === method && r.segments.join('/') === segments.join('/'))) {
      throw new Error(`route ${method} ${path} is already registered`)
    }
    this.#routes.push({ method, segments, handler, public: options.public === true })
  }

  /** The bound address (the real port when 0 was asked for). */
  get address (): ApiAddress {
    if (this.#address == null) throw new Error('control API is not started')
    return this.#address
  }

  async start (listen: ApiAddress): Promise<void> {
    const server = createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
      const tracked = this.#connections.get(req.socket)
      if (tracked != null) {
        tracked.requests++
        clearTimeout(tracked.idleTimer)
        res.on('close', () => { tracked.requests--; this.#armIdle(tracked) })
      }
      void this.#serve(req, res)
    })
    server.headersTimeout = 10_000
    server.requestTimeout = 30_000
    server.keepAliveTimeout = IDLE_CONNECTION_MS
    server.on('connection', (socket: Socket) => { this.#admit(socket) })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(listen.port, listen.host, () => { server.off('error', reject); resolve() })
    })
    const bound = server.address() as AddressInfo
    this.#address = { host: listen.host, port: bound.port }
    this.#server = server
  }

  async stop (): Promise<void> {
    const server = this.#server
    this.#server = undefined
    if (server == null) return
    server.closeAllConnections()
    await new Promise<void>(resolve => server.close(() => resolve()))
  }

  connectionFigures (): ApiConnectionFigures {
    return { open: this.#connections.size, max: MAX_API_CONNECTIONS, ...this.#figures }
  }

  #admit (socket: Socket): void {
    if (this.#connections.size >= MAX_API_CONNECTIONS) {
      const idle = [...this.#connections.values()].find(c => c.requests === 0)
      if (idle == null) { this.#figures.refusedBusy++; socket.destroy(); return }
      this.#figures.evictedIdle++
      this.#drop(idle)
    }
    const tracked: TrackedConnection = { socket, requests: 0, idleTimer: undefined }
    this.#connections.set(socket, tracked)
    socket.once('close', () => { clearTimeout(tracked.idleTimer); this.#connections.delete(socket) })
    this.#armIdle(tracked)
  }

  #armIdle (tracked: TrackedConnection): void {
    clearTimeout(tracked.idleTimer)
    if (tracked.requests > 0 || tracked.socket.destroyed) return
    tracked.idleTimer = setTimeout(() => { this.#figures.closedIdle++; this.#drop(tracked) }, IDLE_CONNECTION_MS)
    tracked.idleTimer.unref()
  }

  #drop (tracked: TrackedConnection): void {
    clearTimeout(tracked.idleTimer)
    this.#connections.delete(tracked.socket)
    tracked.socket.destroy()
  }

  #authorized (req: IncomingMessage): boolean {
    const header = req.headers.authorization ?? ''
    const match = /^Bearer (\S+)$/.exec(header)
    if (match == null) return false
    const given = Buffer.from(match[1] as string)
    return given.length === this.#token.length && timingSafeEqual(given, this.#token)
  }

  async #serve (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const abort = new AbortController()
    res.on('close', () => abort.abort())
    try {
      const url = new URL(req.url ?? '/', 'http://api')
      const segments = url.pathname.split('/').filter(Boolean)
      const matching = this.#routes.filter(route => route.segments.length === segments.length &&
        route.segments.every((s, i) => s.startsWith(':') || s === segments[i]))
      const route = matching.find(r => r.method === req.method)
      // Without the token a caller learns nothing about the routes, except that the public ones exist.
      if (route?.public !== true && !this.#authorized(req)) throw new ApiError(401, 'missing or wrong API token (see <data-dir>/api-token)')
      if (matching.length === 0) throw new ApiError(404, `no route for ${url.pathname}`)
      if (route == null) throw new ApiError(405, `${req.method ?? '?'} not allowed on ${url.pathname}`)
      const params: Record<string, string> = {}
      route.segments.forEach((s, i) => { if (s.startsWith(':')) params[s.slice(1)] = decodeURIComponent(segments[i] as string) })
      const body = route.public ? undefined : await readJsonBody(req)
      const response = await route.handler({ method: route.method, path: url.pathname, params, query: url.searchParams, body, signal: abort.signal })
      for (const [name, value] of Object.entries(response.headers ?? {})) res.setHeader(name, value)
      if (response.text != null) sendText(res, response.status ?? 200, response.text.contentType, response.text.content)
      else send(res, response.status ?? 200, response.body ?? {})
    } catch (err) {
      if (err instanceof ApiError) {
        // A caller without the token keeps no connection open.
        if (err.status === 401 && !res.headersSent) res.setHeader('connection', 'close')
        send(res, err.status, { error: err.message })
      } else {
        this.#log(`api: ${req.method ?? '?'} ${req.url ?? '?'} failed: ${(err as Error).stack ?? String(err)}`, { level: 'error' })
        send(res, 500, { error: (err as Error).message })
      }
    }
  }
}

function send (res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent || res.destroyed) return
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

function sendText (res: ServerResponse, status: number, contentType: string, text: string): void {
  if (res.headersSent || res.destroyed) return
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

async function readJsonBody (req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > MAX_BODY_BYTES) throw new ApiError(413, `request body larger than ${MAX_BODY_BYTES} bytes`)
    chunks.push(chunk as Buffer)
  }
  if (size === 0) return undefined
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    throw new ApiError(400, 'request body is not valid JSON')
  }
}
