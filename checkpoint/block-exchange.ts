// Batched block transfer between boards over the swarm's libp2p node. Bitswap pays a round of bookkeeping
// per block, which dominates with 4 KiB page chunks (~6 MB/s measured); here one request names up to
// BATCH_SIZE CIDs and the peer streams the blocks back from its local store. Receivers verify every block
// against its CID, so a peer can at worst withhold blocks (bitswap then serves as fallback). Serving is
// bounded whatever the reader does: a private swarm's cipher (xsalsa20, 64 MiB of WASM memory) throws
// RangeError, uncaught, on a connection that has buffered tens of MB.
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import type { BundleBackend } from './backend.ts'

/** The CIDs a request asks for (entries that are no CID are answered null); throws on anything but a request. */
export function decodeBlockRequest (bytes: Uint8Array): unknown[] {
  const request = dagCbor.decode(bytes) as { cids?: unknown } | null
  if (request === null || typeof request !== 'object' || !Array.isArray(request.cids) || request.cids.length > BATCH_SIZE) throw new Error('bad block request')
  return request.cids
}

/** One reply frame: 1 to `remaining` entries, each a block's bytes or null (entries of another type count as absent). */
export function decodeBlockReply (bytes: Uint8Array, remaining: number, provider: string): unknown[] {
  const group = dagCbor.decode(bytes)
  if (!Array.isArray(group) || group.length === 0 || group.length > remaining) throw new Error(`malformed block reply from ${provider}`)
  return group
}

export const BLOCKS_PROTOCOL = '/tandem/blocks/1.0.0'
export const BATCH_SIZE = 1024
const MAX_BLOCK_BYTES = 4 * 1024 * 1024
const MAX_REQUEST_BYTES = BATCH_SIZE * 64 + 1024
const GROUP_BYTES = 256 * 1024
const READ_AHEAD = 64
/**
 * One peer's share of serving: concurrent requests, and reply bytes in stream buffers. An insider asking on 32 streams
 * and reading none could otherwise hold the whole budget (and before it, grew the connection past the cipher's
 * memory): it now waits on its own share while other peers are served from the rest. Streams past the request limit
 * wait holding only their request (libp2p caps a connection's streams of this protocol at 32).
 */
export const MAX_REQUESTS_PER_PEER = 8
export const MAX_SERVED_BYTES_PER_PEER = 4 * 1024 * 1024

export interface BlockSource {
  /** Asks peers for blocks; returns those delivered (unverified: the caller checks them against their CIDs). */
  fetchBlocks (cids: CID[], options: { signal?: AbortSignal, providers?: string[] }): Promise<Map<string, Uint8Array>>
}

export interface BlockExchangeOptions {
  libp2p: Pick<Libp2p, 'handle' | 'unhandle' | 'dialProtocol' | 'getPeers'>
  /** The local store that serves requests (read offline only: serving never triggers fetches). */
  backend: BundleBackend
  /** Per-request time limit, ms. Default 30 s. */
  requestTimeoutMs?: number
  /** A reply that waits this long for the reader to take its bytes aborts its stream, ms. Default 5 s. */
  stallTimeoutMs?: number
  /**
   * Reply bytes handed to streams and not yet taken by their connections, across all streams. Default 16 MiB: what
   * a connection buffers is encrypted in one piece by the private swarm's cipher, which has 64 MiB.
   */
  maxServedBytes?: number
  /** Concurrent requests served to one peer; more wait for one of them to end. Default MAX_REQUESTS_PER_PEER. */
  maxRequestsPerPeer?: number
  /** Reply bytes in stream buffers for one peer. Default MAX_SERVED_BYTES_PER_PEER. */
  maxServedBytesPerPeer?: number
}

/** Serving figures, for status and tests. */
export interface ServingFigures { served: number, waitedForPeerSlot: number, failed: number, peersServed: number }

/**
 * Bytes that replies may hold in stream buffers at once, across streams. A stream's bytes count from its write
 * until the stream could pass them on (its send buffer drained). FIFO, so a big reply is not starved. Counts a
 * peer's request slots too (one unit each).
 */
class ByteBudget {
  private used = 0
  private readonly waiters: Array<{ bytes: number, grant: () => void }> = []
  readonly limit: number

  constructor (limit: number) { this.limit = limit }

  /** Takes `bytes` if they fit now, without waiting. */
  tryAcquire (bytes: number): boolean {
    if (this.waiters.length > 0 || !this.fits(bytes)) return false
    this.used += bytes
    return true
  }

  async acquire (bytes: number, signal: AbortSignal): Promise<void> {
    if (this.tryAcquire(bytes)) return
    await new Promise<void>((resolve, reject) => {
      const waiter = { bytes, grant: () => { signal.removeEventListener('abort', onAbort); resolve() } }
      const onAbort = (): void => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1)
        reject(signal.reason)
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(waiter)
    })
  }

  release (bytes: number): void {
    this.used -= bytes
    while (this.waiters.length > 0 && this.fits((this.waiters[0] as { bytes: number }).bytes)) {
      const next = this.waiters.shift() as { bytes: number, grant: () => void }
      this.used += next.bytes
      next.grant()
    }
  }

  /** A reply larger than the whole budget still goes, alone. */
  private fits (bytes: number): boolean { return this.used === 0 || this.used + bytes <= this.limit }
}

export class BlockExchange implements BlockSource {
  private readonly libp2p: BlockExchangeOptions['libp2p']
  private readonly backend: BundleBackend
  private readonly requestTimeoutMs: number
  private readonly stallTimeoutMs: number
  private readonly budget: ByteBudget
  private readonly maxRequestsPerPeer: number
  private readonly maxServedBytesPerPeer: number
  /** Requests in flight and the byte budget of each peer being served (dropped when its last request ends). */
  private readonly perPeer = new Map<string, { requests: number, budget: ByteBudget, slots: ByteBudget }>()
  readonly figures: Omit<ServingFigures, 'peersServed'> = { served: 0, waitedForPeerSlot: 0, failed: 0 }

  constructor (options: BlockExchangeOptions) {
    this.libp2p = options.libp2p
    this.backend = options.backend
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000
    this.stallTimeoutMs = options.stallTimeoutMs ?? 5_000
    this.budget = new ByteBudget(options.maxServedBytes ?? 16 * 1024 * 1024)
    this.maxRequestsPerPeer = options.maxRequestsPerPeer ?? MAX_REQUESTS_PER_PEER
    this.maxServedBytesPerPeer = options.maxServedBytesPerPeer ?? MAX_SERVED_BYTES_PER_PEER
  }

  servingFigures (): ServingFigures { return { ...this.figures, peersServed: this.perPeer.size } }

  async start (): Promise<void> {
    await this.libp2p.handle(BLOCKS_PROTOCOL, async (stream, connection) => { await this.serveFor(stream, connection) }, { maxInboundStreams: 32 })
  }

  async stop (): Promise<void> {
    await this.libp2p.unhandle(BLOCKS_PROTOCOL).catch(() => {})
  }

  /**
   * Serves one request within its peer's share: past the peer's limit it waits for one of the peer's own requests to
   * end (a peer's store fetch asks for many single blocks at once; bitswap would be the slow fallback), never longer
   * than the request's time limit.
   */
  private async serveFor (stream: Stream, connection: Connection): Promise<void> {
    const signal = AbortSignal.timeout(this.requestTimeoutMs)
    const peer = connection.remotePeer.toString()
    let share = this.perPeer.get(peer)
    if (share == null) {
      share = { requests: 0, budget: new ByteBudget(this.maxServedBytesPerPeer), slots: new ByteBudget(this.maxRequestsPerPeer) }
      this.perPeer.set(peer, share)
    }
    share.requests++
    try {
      if (!share.slots.tryAcquire(1)) {
        this.figures.waitedForPeerSlot++
        try {
          await share.slots.acquire(1, signal)
        } catch {
          try { stream.abort(new Error('block request timed out waiting behind the peer\'s other requests')) } catch {}
          this.figures.failed++
          return
        }
      }
      try {
        await this.serve(stream, share.budget, signal)
      } finally {
        share.slots.release(1)
      }
    } finally {
      if (--share.requests === 0) this.perPeer.delete(peer)
    }
  }

  /** Serves one request. Never throws: whatever goes wrong (a bad request, a stalled or vanished reader) aborts the stream. */
  private async serve (stream: Stream, peerBudget: ByteBudget, signal: AbortSignal): Promise<void> {
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_REQUEST_BYTES })
      const cids = decodeBlockRequest((await lp.read({ signal })).subarray())
      const read = async (value: unknown): Promise<Uint8Array | null> => {
        const cid = CID.asCID(value)
        if (cid == null) return null
        // A block this store lacks is answered as null; past the request's time limit the request fails instead (every
        // read then failed, and a stalled request was answered 1,024 nulls and counted as served).
        try { return await this.backend.get(cid, { offline: true, signal }) } catch (err) { if (signal.aborted) throw err; return null }
      }
      // Each reply frame waits for its stream to take it (drain) before the next is read from the store: one
      // stream holds at most about one frame, and the budget bounds the frames of all streams together.
      let group: Array<Uint8Array | null> = []
      let groupBytes = 0
      const sendGroup = async (): Promise<void> => {
        // The blocks are garbage once encoded: a stream waiting for the budget holds one frame, nothing more.
        const frame = dagCbor.encode(group)
        group = []
        groupBytes = 0
        // The peer's share first: a peer that does not read waits on its own bytes, not on everyone's.
        await peerBudget.acquire(frame.byteLength, signal)
        try {
          await this.budget.acquire(frame.byteLength, signal)
          try {
            await lp.write(frame, { signal: AbortSignal.any([signal, AbortSignal.timeout(this.stallTimeoutMs)]) })
          } finally {
            this.budget.release(frame.byteLength)
          }
        } finally {
          peerBudget.release(frame.byteLength)
        }
      }
      // Blocks range from 4 KiB pages to 1 MiB layer chunks: read ahead by bytes, as far as the last block sizes suggest.
      let readAhead = 1
      for (let i = 0; i < cids.length;) {
        signal.throwIfAborted()
        const batch = cids.slice(i, i + readAhead)
        i += batch.length
        let largest = 1
        for (const bytes of await Promise.all(batch.map(read))) {
          largest = Math.max(largest, bytes?.byteLength ?? 0)
          group.push(bytes)
          groupBytes += bytes?.byteLength ?? 0
          if (groupBytes >= GROUP_BYTES) await sendGroup()
        }
        readAhead = Math.max(1, Math.min(READ_AHEAD, Math.floor(GROUP_BYTES / largest)))
      }
      if (group.length > 0) await sendGroup()
      await stream.close({ signal })
      this.figures.served++
    } catch {
      this.figures.failed++
      try { stream.abort(new Error('block request failed')) } catch {}
    }
  }

  async fetchBlocks (cids: CID[], options: { signal?: AbortSignal, providers?: string[] } = {}): Promise<Map<string, Uint8Array>> {
    const found = new Map<string, Uint8Array>()
    const providers = options.providers ?? this.libp2p.getPeers().map(p => p.toString())
    let wanted = cids
    for (const provider of providers) {
      if (wanted.length === 0) break
      for (let i = 0; i < wanted.length; i += BATCH_SIZE) {
        try {
          await this.request(provider, wanted.slice(i, i + BATCH_SIZE), found, options.signal)
        } catch {
          if (options.signal?.aborted === true) throw options.signal.reason
          break
        }
      }
      wanted = wanted.filter(c => !found.has(c.toString()))
    }
    return found
  }

  private async request (provider: string, cids: CID[], into: Map<string, Uint8Array>, callerSignal?: AbortSignal): Promise<void> {
    const timeout = AbortSignal.timeout(this.requestTimeoutMs)
    const signal = callerSignal != null ? AbortSignal.any([callerSignal, timeout]) : timeout
    const stream = await this.libp2p.dialProtocol(peerIdFromString(provider), BLOCKS_PROTOCOL, { signal })
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_BLOCK_BYTES + GROUP_BYTES + 1024 })
      await lp.write(dagCbor.encode({ cids }), { signal })
      let next = 0
      while (next < cids.length) {
        const group = decodeBlockReply((await lp.read({ signal })).subarray(), cids.length - next, provider)
        for (const bytes of group) {
          const cid = cids[next++] as CID
          if (bytes instanceof Uint8Array) into.set(cid.toString(), bytes)
        }
      }
      await stream.close({ signal }).catch(() => {})
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
      throw err
    }
  }
}
