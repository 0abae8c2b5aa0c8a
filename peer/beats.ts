// Direct beats: the fast liveness signal from a peer to its few watchers (see peer/membership.ts).
// One long-lived libp2p stream per watcher carries fixed 9-byte frames (the sender's incarnation as a float64
// and its Lifeguard health score as a byte, so a watcher gives a struggling peer more time at once),
// so a beat costs no stream negotiation, no peer-store write and no signature: the connection is Noise-
// authenticated (and pnet-encrypted in a private swarm), so the stream's remote peer is the sender.
import { peerIdFromString } from '@libp2p/peer-id'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'

export const BEAT_PROTOCOL = '/tandem/beat/1.0.0'
const FRAME_BYTES = 9
/** A watcher that does not read (frozen) is not sent more than this many unsent bytes. */
const MAX_BUFFERED_BYTES = 64 * FRAME_BYTES

export interface BeatLinkOptions {
  libp2p: Libp2p
  intervalMs: number
  /** This peer's current incarnation, read for every beat. */
  incarnation: () => number
  /** This peer's Lifeguard health score (0 = healthy), read for every beat. */
  healthScore?: () => number
  /** The peers that should receive our beats now (our watchers), read for every beat. */
  watchers: () => string[]
  /** A beat from `peerId`. */
  onBeat: (peerId: string, incarnation: number, healthScore: number) => void
  /** `peerId` stopped beating us (closed its stream, or the connection went away). */
  onEnd: (peerId: string) => void
  log?: (line: string) => void
}

/** A beat frame: the incarnation (float64, big-endian) and the health score (one byte). */
export function encodeBeat (incarnation: number, healthScore = 0): Uint8Array {
  const frame = new Uint8Array(FRAME_BYTES)
  const view = new DataView(frame.buffer)
  view.setFloat64(0, incarnation)
  view.setUint8(8, Math.max(0, Math.min(255, Math.round(healthScore))))
  return frame
}

export class BeatLink {
  readonly #options: BeatLinkOptions
  readonly #log: (line: string) => void
  /** Our outbound beat streams, by watcher. `null` while the stream is being opened. */
  readonly #out = new Map<string, Stream | null>()
  /** Inbound beat streams, by sender: a sender may replace its stream, only the newest one counts. */
  readonly #in = new Map<string, Stream>()
  #timer: NodeJS.Timeout | undefined
  #stopped = false

  constructor (options: BeatLinkOptions) {
    this.#options = options
    this.#log = options.log ?? (() => {})
  }

  async start (): Promise<void> {
    await this.#options.libp2p.handle(BEAT_PROTOCOL, (stream, connection) => { this.#receive(stream, connection) }, { maxInboundStreams: 4 })
    this.#timer = setInterval(() => { this.beat() }, this.#options.intervalMs)
  }

  /** Peers we send beats to now. */
  targets (): string[] { return [...this.#out.keys()] }

  /** Sends one beat to each watcher, opening streams to new watchers and closing those to former ones. */
  beat (): void {
    if (this.#stopped) return
    const wanted = new Set(this.#options.watchers())
    for (const [peerId, stream] of this.#out) {
      if (wanted.has(peerId)) continue
      this.#out.delete(peerId)
      void stream?.close().catch(() => { stream.abort(new Error('no longer a watcher')) })
    }
    const frame = encodeBeat(this.#options.incarnation(), this.#options.healthScore?.() ?? 0)
    for (const peerId of wanted) {
      const stream = this.#out.get(peerId)
      if (stream === undefined) { this.#open(peerId, frame); continue }
      if (stream === null || stream.writeBufferLength > MAX_BUFFERED_BYTES) continue
      try {
        stream.send(frame)
      } catch {
        this.#out.delete(peerId)
        stream.abort(new Error('beat send failed'))
      }
    }
  }

  #open (peerId: string, frame: Uint8Array): void {
    const libp2p = this.#options.libp2p
    const id = peerIdFromString(peerId)
    // Only over an existing connection: the daemon keeps one to every member; a dial here would race it.
    if (libp2p.getConnections(id).length === 0) return
    this.#out.set(peerId, null)
    libp2p.dialProtocol(id, BEAT_PROTOCOL, { signal: AbortSignal.timeout(Math.max(1000, 5 * this.#options.intervalMs)) }).then(stream => {
      if (this.#stopped || this.#out.get(peerId) !== null) { stream.abort(new Error('not wanted')); return }
      this.#out.set(peerId, stream)
      stream.addEventListener('close', () => { if (this.#out.get(peerId) === stream) this.#out.delete(peerId) })
      // Nothing comes back on this stream; let its read side end without buffering.
      stream.addEventListener('message', () => {})
      try {
        stream.send(frame)
      } catch {
        this.#out.delete(peerId)
        stream.abort(new Error('beat send failed'))
      }
    }, (err: unknown) => {
      if (this.#out.get(peerId) === null) this.#out.delete(peerId)
      this.#log(`beats: cannot open a beat stream to ${peerId}: ${(err as Error | undefined)?.message ?? String(err)}`)
    })
  }

  #receive (stream: Stream, connection: Connection): void {
    const peerId = connection.remotePeer.toString()
    const previous = this.#in.get(peerId)
    this.#in.set(peerId, stream)
    if (previous != null) previous.abort(new Error('replaced by a newer beat stream'))
    let pending = new Uint8Array(0)
    stream.addEventListener('message', event => {
      const chunk = event.data.subarray()
      const bytes = pending.byteLength === 0 ? chunk : concat(pending, chunk)
      let offset = 0
      let incarnation = -1
      let healthScore = 0
      for (; offset + FRAME_BYTES <= bytes.byteLength; offset += FRAME_BYTES) {
        const view = new DataView(bytes.buffer, bytes.byteOffset + offset, FRAME_BYTES)
        incarnation = view.getFloat64(0)
        healthScore = view.getUint8(8)
      }
      pending = bytes.slice(offset)
      if (incarnation === -1) return
      if (!Number.isSafeInteger(incarnation) || incarnation < 0) {
        stream.abort(new Error('malformed beat'))
        return
      }
      if (this.#in.get(peerId) === stream) this.#options.onBeat(peerId, incarnation, healthScore)
    })
    const ended = (): void => {
      if (this.#in.get(peerId) !== stream) return
      this.#in.delete(peerId)
      this.#options.onEnd(peerId)
    }
    // The sender closes its side when we stop being its watcher: close ours too (or the stream stays half open).
    stream.addEventListener('remoteCloseWrite', () => {
      ended()
      void stream.close().catch(() => { stream.abort(new Error('beat stream ended')) })
    })
    stream.addEventListener('close', ended)
  }

  async stop (): Promise<void> {
    this.#stopped = true
    clearInterval(this.#timer)
    await this.#options.libp2p.unhandle(BEAT_PROTOCOL).catch(() => {})
    for (const stream of [...this.#out.values(), ...this.#in.values()]) stream?.abort(new Error('peer stopping'))
    this.#out.clear()
    this.#in.clear()
  }
}

function concat (a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength)
  out.set(a, 0)
  out.set(b, a.byteLength)
  return out
}
