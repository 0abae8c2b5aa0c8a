// Client of a peer's control API, shared by the CLI commands, tests, bench and demo.
import { readApiToken } from './api-token.ts'
import { formatApiAddress, parseApiAddress, type ApiAddress } from './config.ts'
import type { PeerStatus } from './daemon.ts'
import type { MembershipEvent } from './membership.ts'

export class ApiRequestError extends Error {
  readonly status: number
  constructor (status: number, message: string) {
    super(message)
    this.status = status
  }
}

export class ApiClient {
  readonly address: ApiAddress
  readonly #token: string

  constructor (address: ApiAddress | string, token: string) {
    this.address = typeof address === 'string' ? parseApiAddress(address) : address
    this.#token = token
  }

  /** The bearer token it sends (`tandem ui` puts it in the dashboard's URL). */
  get token (): string { return this.#token }

  /**
   * A client whose token comes from `--data-dir` (file `api-token`) or else TANDEM_API_TOKEN.
   */
  static async connect (address: ApiAddress | string, options: { dataDir?: string, env?: NodeJS.ProcessEnv } = {}): Promise<ApiClient> {
    const env = options.env ?? process.env
    let token: string | undefined
    if (options.dataDir != null) {
      try {
        token = await readApiToken(options.dataDir)
      } catch (err) {
        throw new Error(`cannot read the API token in ${options.dataDir}: ${(err as Error).message}`)
      }
    } else if (env.TANDEM_API_TOKEN != null && env.TANDEM_API_TOKEN !== '') {
      token = env.TANDEM_API_TOKEN
    }
    if (token == null) throw new Error('no API token: pass --data-dir of the peer or set TANDEM_API_TOKEN')
    return new ApiClient(address, token)
  }

  async request<T = unknown> (method: string, path: string, body?: unknown, options: { signal?: AbortSignal, timeoutMs?: number } = {}): Promise<T> {
    const signal = options.signal ?? AbortSignal.timeout(options.timeoutMs ?? 10_000)
    let response: Response
    try {
      response = await fetch(`http://${formatApiAddress(this.address)}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.#token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal
      })
    } catch (err) {
      throw new Error(`cannot reach the peer's API at ${formatApiAddress(this.address)}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`)
    }
    const text = await response.text()
    let parsed: unknown
    try {
      parsed = text === '' ? undefined : JSON.parse(text)
    } catch {
      throw new ApiRequestError(response.status, `API answered ${response.status} with non-JSON: ${text.slice(0, 200)}`)
    }
    if (!response.ok) {
      const message = typeof (parsed as { error?: unknown })?.error === 'string' ? (parsed as { error: string }).error : text
      throw new ApiRequestError(response.status, `API ${method} ${path}: ${response.status} ${message}`)
    }
    return parsed as T
  }

  /** Recent membership changes seen by this peer (oldest first, wall-clock `at`). */
  async membershipEvents (options: { signal?: AbortSignal } = {}): Promise<MembershipEvent[]> {
    return (await this.request<{ events: MembershipEvent[] }>('GET', '/v1/membership/events', undefined, options)).events
  }

  async status (options: { signal?: AbortSignal } = {}): Promise<PeerStatus> {
    return await this.request<PeerStatus>('GET', '/v1/status', undefined, options)
  }
}
