// The four Docker Engine API calls the watchdog makes (list a peer's containers, inspect, kill, remove), over
// node:http. Everything else talks to Docker through dockerode (checkpoint/runtime.ts).
//
// Why not dockerode here: the watchdog is a second process on every board, and loading dockerode (with its SSH,
// gRPC and protobuf dependencies) costs ~31 MB of RSS in it (idle watchdog 117 MB with dockerode, `npm run
// bench:footprint`); these calls are plain JSON requests.
import { request } from 'node:http'

export const LABEL_PEER = 'tandem.peer'

export interface EngineContainerState { Running: boolean, Pid: number }

export class EngineApi {
  readonly #target: { socketPath: string } | { host: string, port: number }

  constructor (dockerHost: string) {
    const url = new URL(dockerHost)
    if (url.protocol === 'unix:') this.#target = { socketPath: url.pathname }
    else if ((url.protocol === 'tcp:' || url.protocol === 'http:') && /^(127\.|localhost$|\[::1\]$)/.test(url.hostname)) this.#target = { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 2375) }
    else throw new Error(`unsupported dockerHost ${dockerHost}: use unix:///path or tcp://127.0.0.1:port`)
  }

  /** Ids of the running containers labelled as this peer's. */
  async containersOf (peerId: string, signal?: AbortSignal): Promise<string[]> {
    const filters = encodeURIComponent(JSON.stringify({ label: [`${LABEL_PEER}=${peerId}`] }))
    const list = await this.#call('GET', `/containers/json?filters=${filters}`, signal) as Array<{ Id: string }>
    return list.map(c => c.Id)
  }

  async state (id: string, signal?: AbortSignal): Promise<EngineContainerState> {
    const info = await this.#call('GET', `/containers/${encodeURIComponent(id)}/json`, signal) as { State: EngineContainerState }
    return info.State
  }

  async kill (id: string, signal?: AbortSignal): Promise<void> {
    await this.#call('POST', `/containers/${encodeURIComponent(id)}/kill?signal=SIGKILL`, signal)
  }

  async removeForce (id: string, signal?: AbortSignal): Promise<void> {
    await this.#call('DELETE', `/containers/${encodeURIComponent(id)}?force=true`, signal)
  }

  async #call (method: string, path: string, signal?: AbortSignal): Promise<unknown> {
    return await new Promise((resolve, reject) => {
      const req = request({ ...this.#target, method, path, signal }, res => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('error', reject)
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8')
          const status = res.statusCode ?? 0
          if (status >= 400) { reject(new Error(`Docker ${method} ${path.split('?')[0]}: ${status} ${body.trim().slice(0, 200)}`)); return }
          try { resolve(body === '' ? null : JSON.parse(body)) } catch (err) { reject(err) }
        })
      })
      req.on('error', reject)
      req.end()
    })
  }
}
