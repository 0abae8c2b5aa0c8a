// Batched block transfer between boards over the swarm's libp2p node. Bitswap pays a round of bookkeeping
// per block, which dominates with 4 KiB page chunks (~6 MB/s measured); here one request names up to
// BATCH_SIZE CIDs and the peer streams the blocks back from its local store. Receivers verify every block
// against its CID, so a peer can at worst withhold blocks (bitswap then serves as fallback).
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Libp2p, Stream } from '@libp2p/interface'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import type { BundleBackend } from './backend.ts'

export const BLOCKS_PROTOCOL = '/tandem/blocks/1.0.0'
export const BATCH_SIZE = 1024
const MAX_BLOCK_BYTES = 4 * 1024 * 1024
const MAX_REQUEST_BYTES = BATCH_SIZE * 64 + 1024
const GROUP_BYTES = 256 * 1024
const READ_AHEAD = 64

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
}

export class BlockExchange implements BlockSource {
  private readonly libp2p: BlockExchangeOptions['libp2p']
  private readonly backend: BundleBackend
  private readonly requestTimeoutMs: number

  constructor (options: BlockExchangeOptions) {
    this.libp2p = options.libp2p
    this.backend = options.backend
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000
  }

  async start (): Promise<void> {
    await this.libp2p.handle(BLOCKS_PROTOCOL, async (stream) => { await this.serve(stream) }, { maxInboundStreams: 32 })
  }

  async stop (): Promise<void> {
    await this.libp2p.unhandle(BLOCKS_PROTOCOL).catch(() => {})
  }

  private async serve (stream: Stream): Promise<void> {
    const signal = AbortSignal.timeout(this.requestTimeoutMs)
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_REQUEST_BYTES })
      const request = dagCbor.decode((await lp.read({ signal })).subarray()) as { cids?: unknown }
      if (!Array.isArray(request.cids) || request.cids.length > BATCH_SIZE) throw new Error('bad block request')
      // Replies come in groups (one frame each) so small blocks do not cost a write each.
      let group: Array<Uint8Array | null> = []
      let groupBytes = 0
      const read = async (value: unknown): Promise<Uint8Array | null> => {
        const cid = CID.asCID(value)
        if (cid == null) return null
        try { return await this.backend.get(cid, { offline: true, signal }) } catch { return null }
      }
      for (let i = 0; i < request.cids.length; i += READ_AHEAD) {
        for (const bytes of await Promise.all(request.cids.slice(i, i + READ_AHEAD).map(read))) {
          group.push(bytes)
          groupBytes += bytes?.byteLength ?? 0
          if (groupBytes >= GROUP_BYTES) {
            await lp.write(dagCbor.encode(group), { signal })
            group = []
            groupBytes = 0
          }
        }
      }
      if (group.length > 0) await lp.write(dagCbor.encode(group), { signal })
      await stream.close({ signal }).catch(() => {})
    } catch {
      stream.abort(new Error('block request failed'))
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
        const group = dagCbor.decode((await lp.read({ signal })).subarray())
        if (!Array.isArray(group) || group.length === 0 || next + group.length > cids.length) throw new Error(`malformed block reply from ${provider}`)
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
