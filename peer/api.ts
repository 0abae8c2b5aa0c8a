// The control API: HTTP on loopback, every request must carry the data dir's token (Bearer).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { timingSafeEqual } from 'node:crypto'
import type { AddressInfo } from 'node:net'
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

interface Route { method: HttpMethod, segments: string[], handler: RouteHandler }

const MAX_BODY_BYTES = 1024 * 1024

export class ControlApi {
  #token: Buffer
  readonly #routes: Route[] = []
  readonly #log: LogLine
  #server: Server | undefined
  #address: ApiAddress | undefined

  constructor (options: { token: string, log?: LogLine }) {
    this.#token = Buffer.from(options.token)
    this.#log = options.log ?? (() => {})
  }

  /** Replaces the token every request must carry (the data dir's token once read, or a rotated one). */
  useToken (token: string): void { this.#token = Buffer.from(token) }

  /** Registers a route; `path` may hold `:name` segments, e.g. `/v1/missions/:id`. */
  route (method: HttpMethod, path: string, handler: RouteHandler): void {
    const segments = path.split('/').filter(Boolean)
    if (this.#routes.some(r => r.method === method && r.segments.join('/') === segments.join('/'))) {
      throw new Error(`route ${method} ${path} is already registered`)
    }
    this.#routes.push({ method, segments, handler })
  }

  /** The bound address (the real port when 0 was asked for). */
  get address (): ApiAddress {
    if (this.#address == null) throw new Error('control API is not started')
    return this.#address
  }

  async start (listen: ApiAddress): Promise<void> {
    const server = createServer((req, res) => { void this.#serve(req, res) })
    server.headersTimeout = 10_000
    server.requestTimeout = 30_000
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
      if (!this.#authorized(req)) throw new ApiError(401, 'missing or wrong API token (see <data-dir>/api-token)')
      const url = new URL(req.url ?? '/', 'http://api')
      const segments = url.pathname.split('/').filter(Boolean)
      const matching = this.#routes.filter(route => route.segments.length === segments.length &&
        route.segments.every((s, i) => s.startsWith(':') || s === segments[i]))
      if (matching.length === 0) throw new ApiError(404, `no route for ${url.pathname}`)
      const route = matching.find(r => r.method === req.method)
      if (route == null) throw new ApiError(405, `${req.method ?? '?'} not allowed on ${url.pathname}`)
      const params: Record<string, string> = {}
      route.segments.forEach((s, i) => { if (s.startsWith(':')) params[s.slice(1)] = decodeURIComponent(segments[i] as string) })
      const body = await readJsonBody(req)
      const response = await route.handler({ method: route.method, path: url.pathname, params, query: url.searchParams, body, signal: abort.signal })
      if (response.text != null) sendText(res, response.status ?? 200, response.text.contentType, response.text.content)
      else send(res, response.status ?? 200, response.body ?? {})
    } catch (err) {
      if (err instanceof ApiError) {
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
