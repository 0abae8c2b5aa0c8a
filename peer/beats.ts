// Direct beats: the fast liveness signal from a peer to its few watchers (see peer/membership.ts).
// One long-lived libp2p stream per watcher carries fixed 13-byte frames (the sender's incarnation as a float64,
// its Lifeguard health score as a byte, so a watcher gives a struggling peer more time at once, and the beat's
// sequence number), so a beat costs no stream negotiation, no peer-store write and no signature: the connection
// is Noise-authenticated (and pnet-encrypted in a private swarm), so the stream's remote peer is the sender.
// The watcher answers on the same stream with the newest sequence number it read (4 bytes): the sender learns
// when each peer last heard it, by the sender's own clock. A primary's fencing lease counts from that
// (peer/missions/service.ts), not from when it last heard them: what it reads after a stall of its own may have been
// sent before a cut, by peers that stopped hearing it long ago.
import { peerIdFromString } from '@libp2p/peer-id'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'

export const BEAT_PROTOCOL = '/tandem/beat/2.0.0'
const FRAME_BYTES = 13
const ACK_BYTES = 4
/** Send times of this many recent beats are kept: an acknowledgement of an older one is ignored (it counts for less). */
const SENT_KEPT = 256
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
  /** Monotonic milliseconds (performance.now by default): the clock of acknowledgedAt. */
  now?: () => number
  /**
   * The peers named by requireAcks are beaten this often as well (default: half intervalMs). A lease counts from the
   * newest beat acknowledged, so it is up to one such interval staler than the moment it is renewed: CI's loaded
   * host lost leases of 650 ms to 200 ms beats plus the members' delays in answering.
   */
  ackIntervalMs?: number
  /** A beat from `peerId`; returns whether it counted as a sign of life (not: unknown peer, old incarnation): only those are acknowledged. */
  onBeat: (peerId: string, incarnation: number, healthScore: number) => boolean
  /** `peerId` stopped beating us (closed its stream, or the connection went away). */
  onEnd: (peerId: string) => void
  log?: (line: string) => void
}

/** A beat frame: the incarnation (float64, big-endian), the health score (one byte) and the beat's number (uint32). */
export function encodeBeat (incarnation: number, healthScore = 0, seq = 0): Uint8Array {
  const frame = new Uint8Array(FRAME_BYTES)
  const view = new DataView(frame.buffer)
  view.setFloat64(0, incarnation)
  view.setUint8(8, Math.max(0, Math.min(255, Math.round(healthScore))))
  view.setUint32(9, seq >>> 0)
  return frame
}

function encodeAck (seq: number): Uint8Array {
  const frame = new Uint8Array(ACK_BYTES)
  new DataView(frame.buffer).setUint32(0, seq >>> 0)
  return frame
}

export class BeatLink {
  readonly #options: BeatLinkOptions
  readonly #log: (line: string) => void
  /** Our outbound beat streams, by watcher. `null` while the stream is being opened. */
  readonly #out = new Map<string, Stream | null>()
  /** Inbound beat streams, by sender: a sender may replace its stream, only the newest one counts. */
  readonly #in = new Map<string, Stream>()
  readonly #now: () => number
  /** Send time of beat `seq` at `seq % SENT_KEPT` (with its number: the slot may hold a newer beat by now). */
  readonly #sent: Array<{ seq: number, at: number }> = []
  /** Per peer: when we sent the newest beat it acknowledged (our clock). */
  readonly #acked = new Map<string, number>()
  #requireAcks: () => string[] = () => []
  #seq = 0
  #timer: NodeJS.Timeout | undefined
  #ackTimer: NodeJS.Timeout | undefined
  #stopped = false

  constructor (options: BeatLinkOptions) {
    this.#options = options
    this.#log = options.log ?? (() => {})
    this.#now = options.now ?? (() => performance.now())
  }

  async start (): Promise<void> {
    await this.#options.libp2p.handle(BEAT_PROTOCOL, (stream, connection) => { this.#receive(stream, connection) }, { maxInboundStreams: 4 })
    this.#timer = setInterval(() => { this.beat() }, this.#options.intervalMs)
    this.#ackTimer = setInterval(() => { this.#beatForAcks() }, this.#options.ackIntervalMs ?? this.#options.intervalMs / 2)
  }

  /** Peers we send beats to now. */
  targets (): string[] { return [...this.#out.keys()] }

  /**
   * Peers beaten as well as our watchers, for their acknowledgements: a primary's view members (its lease counts
   * their acknowledgements, and on a large swarm they need not be its watchers). Read for every beat.
   */
  requireAcks (peers: () => string[]): void { this.#requireAcks = peers }

  /**
   * When we sent the newest beat `peerId` acknowledged, by this link's clock (-Infinity: none): the peer heard us
   * at that time or later, so its silence clock for us started no earlier.
   */
  acknowledgedAt (peerId: string): number { return this.#acked.get(peerId) ?? -Infinity }

  /** Sends one beat to each watcher, opening streams to new watchers and closing those to former ones. */
  beat (): void {
    if (this.#stopped) return
    const wanted = new Set([...this.#options.watchers(), ...this.#requireAcks()])
    for (const [peerId, stream] of this.#out) {
      if (wanted.has(peerId)) continue
      this.#out.delete(peerId)
      void stream?.close().catch(() => { stream.abort(new Error('no longer a watcher')) })
    }
    const frame = this.#nextFrame()
    for (const peerId of wanted) {
      const stream = this.#out.get(peerId)
      if (stream === undefined) { this.#open(peerId, frame); continue }
      this.#send(peerId, stream, frame)
    }
  }

  /** A beat between the regular ones, to the peers whose acknowledgements a lease counts (over open streams only). */
  #beatForAcks (): void {
    if (this.#stopped) return
    const peers = this.#requireAcks().filter(p => this.#out.get(p) != null)
    if (peers.length === 0) return
    const frame = this.#nextFrame()
    for (const peerId of peers) this.#send(peerId, this.#out.get(peerId) ?? null, frame)
  }

  #nextFrame (): Uint8Array {
    const seq = this.#seq = (this.#seq + 1) >>> 0
    this.#sent[seq % SENT_KEPT] = { seq, at: this.#now() }
    return encodeBeat(this.#options.incarnation(), this.#options.healthScore?.() ?? 0, seq)
  }

  #send (peerId: string, stream: Stream | null, frame: Uint8Array): void {
    if (stream === null || stream.writeBufferLength > MAX_BUFFERED_BYTES) return
    try {
      stream.send(frame)
    } catch {
      this.#out.delete(peerId)
      stream.abort(new Error('beat send failed'))
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
      // The watcher's acknowledgements: the newest beat number it read.
      let pending = new Uint8Array(0)
      stream.addEventListener('message', event => {
        const chunk = event.data.subarray()
        const bytes = pending.byteLength === 0 ? chunk : concat(pending, chunk)
        const whole = bytes.byteLength - (bytes.byteLength % ACK_BYTES)
        pending = bytes.slice(whole)
        if (whole === 0) return
        this.#acknowledged(peerId, new DataView(bytes.buffer, bytes.byteOffset + whole - ACK_BYTES, ACK_BYTES).getUint32(0))
      })
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
      let seq = 0
      for (; offset + FRAME_BYTES <= bytes.byteLength; offset += FRAME_BYTES) {
        const view = new DataView(bytes.buffer, bytes.byteOffset + offset, FRAME_BYTES)
        incarnation = view.getFloat64(0)
        healthScore = view.getUint8(8)
        seq = view.getUint32(9)
      }
      pending = bytes.slice(offset)
      if (incarnation === -1) return
      if (!Number.isSafeInteger(incarnation) || incarnation < 0) {
        stream.abort(new Error('malformed beat'))
        return
      }
      if (this.#in.get(peerId) !== stream) return
      if (!this.#options.onBeat(peerId, incarnation, healthScore)) return
      // Acknowledged once read, not when it arrived: a frozen watcher acknowledges nothing. A sender that does not
      // read (frozen) is not sent more than a buffer's worth.
      if (stream.writeBufferLength > MAX_BUFFERED_BYTES) return
      try { stream.send(encodeAck(seq)) } catch { /* the stream is closing: its end is reported by 'close' */ }
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

  #acknowledged (peerId: string, seq: number): void {
    const sent = this.#sent[seq % SENT_KEPT]
    if (sent?.seq !== seq) return
    if (sent.at > this.acknowledgedAt(peerId)) this.#acked.set(peerId, sent.at)
  }

  async stop (): Promise<void> {
    this.#stopped = true
    clearInterval(this.#timer)
    clearInterval(this.#ackTimer)
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
