// Probes over libp2p for the failure detector: a direct ping, and SWIM's indirect probe through another peer.
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Libp2p, Stream } from '@libp2p/interface'
import type { Ping as PingService } from '@libp2p/ping'
import type { ProbeOutcome, Prober } from './membership.ts'

export const PROBE_PROTOCOL = '/tandem/probe/1.0.0'
const MAX_REQUEST_BYTES = 512

type ProbeNode = Libp2p<{ ping: PingService }>

/** True when the error (or any error it wraps) is a refused TCP connection. */
export function isConnectionRefused (err: unknown, depth = 0): boolean {
  if (err == null || typeof err !== 'object' || depth > 6) return false
  const e = err as { code?: unknown, message?: unknown, errors?: unknown, cause?: unknown }
  if (e.code === 'ECONNREFUSED') return true
  if (typeof e.message === 'string' && e.message.includes('ECONNREFUSED')) return true
  if (Array.isArray(e.errors) && e.errors.length > 0 && e.errors.every(inner => isConnectionRefused(inner, depth + 1))) return true
  return isConnectionRefused(e.cause, depth + 1)
}

export class Libp2pProber implements Prober {
  readonly #node: ProbeNode
  readonly #probeTimeoutMs: number

  constructor (node: ProbeNode, probeTimeoutMs: number) {
    this.#node = node
    this.#probeTimeoutMs = probeTimeoutMs
  }

  async direct (peerId: string, timeoutMs: number): Promise<ProbeOutcome> {
    try {
      await this.#node.services.ping.ping(peerIdFromString(peerId), { signal: AbortSignal.timeout(Math.max(1, timeoutMs)) })
      return 'ack'
    } catch (err) {
      return isConnectionRefused(err) ? 'refused' : 'timeout'
    }
  }

  async indirect (via: string, target: string, timeoutMs: number): Promise<ProbeOutcome> {
    const signal = AbortSignal.timeout(Math.max(1, timeoutMs))
    let stream: Stream | undefined
    try {
      stream = await this.#node.dialProtocol(peerIdFromString(via), PROBE_PROTOCOL, { signal })
      const lp = lpStream(stream, { maxDataLength: MAX_REQUEST_BYTES })
      const budget = Math.max(1, Math.min(this.#probeTimeoutMs, timeoutMs - 50))
      await lp.write(new TextEncoder().encode(JSON.stringify({ target, timeoutMs: budget })), { signal })
      const reply = JSON.parse(new TextDecoder().decode((await lp.read({ signal })).subarray())) as { ok?: unknown }
      await stream.close({ signal }).catch(() => {})
      return reply.ok === true ? 'ack' : 'timeout'
    } catch {
      stream?.abort(new Error('indirect probe failed'))
      return 'timeout'
    }
  }

  /** Serves indirect probe requests from other peers. */
  async start (): Promise<void> {
    await this.#node.handle(PROBE_PROTOCOL, async (stream) => {
      const signal = AbortSignal.timeout(this.#probeTimeoutMs * 4)
      try {
        const lp = lpStream(stream, { maxDataLength: MAX_REQUEST_BYTES })
        const request = JSON.parse(new TextDecoder().decode((await lp.read({ signal })).subarray())) as { target?: unknown, timeoutMs?: unknown }
        if (typeof request.target !== 'string' || typeof request.timeoutMs !== 'number') throw new Error('bad probe request')
        let ok = false
        try {
          peerIdFromString(request.target)
          ok = (await this.direct(request.target, Math.min(this.#probeTimeoutMs, Math.max(1, request.timeoutMs)))) === 'ack'
        } catch {}
        await lp.write(new TextEncoder().encode(JSON.stringify({ ok })), { signal })
        await stream.close({ signal }).catch(() => {})
      } catch {
        stream.abort(new Error('bad probe request'))
      }
    }, { maxInboundStreams: 64 })
  }

  async stop (): Promise<void> {
    await this.#node.unhandle(PROBE_PROTOCOL).catch(() => {})
  }
}
