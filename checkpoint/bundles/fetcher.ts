// Bringing whole bundles and image layers into the local store from the swarm: only missing blocks cross the
// network, in byte-sized requests through the batched exchange first, bitswap for what it does not deliver.
import * as dagCbor from '@ipld/dag-cbor'
import type { CID } from 'multiformats/cid'
import type { BlockPair } from '../backend.ts'
import { BATCH_SIZE } from '../block-exchange.ts'
import { asChunkList, asLayerFile, asTreeNode, asTreePart, type CheckpointManifest, type FileEntry, type ImageLayer, type ImageManifest } from '../format.ts'
import { BlockCorruptError, BlockUnavailableError, BundleFormatError } from '../errors.ts'
import type { SetIdEntry, TreeRole } from '../tree-safety.ts'
import { asSealedRoot, verifies, type Blocks } from './blocks.ts'
import type { Retention } from './retention.ts'
import type { StoreLock } from './store-lock.ts'
import type { TreeGuard } from './tree-guard.ts'
import { LIST_FANOUT } from './writer.ts'

/** One request of the block exchange asks for at most this many bytes (and BATCH_SIZE blocks). */
const REQUEST_BYTES = 4 * 1024 * 1024
/** Requests in flight per fetch. */
const REQUESTS_IN_FLIGHT = 4
/** Chunks whose presence is looked up at once. */
const PRESENCE_BATCH = 512
/**
 * A held block hashed this recently is not read and hashed again by the next fetch (BundleStore's `heldRecheckMs`);
 * any corrupt block found drops every mark (Blocks.distrustAll), so the next fetch hashes everything again. The
 * default stays 0 (every fetch hashes every held block it lists): since the check reads its batches with one native
 * getMany, a fetch of a 12 MiB checkpoint the backup holds takes a median 94 ms instead of 334 ms
 * (`node .scratch/refetch.ts`-style measurement, 7 fetches each, shared 2-core host), which leaves too little to
 * trade for up to a window of unverified acks.
 */
export const HELD_RECHECK_MS = 0

export interface FetchProgress {
  blocksDone: number
  blocksTotal: number
  /** Bytes that crossed the network so far. */
  fetchedBytes: number
  fetchedBlocks: number
}

export interface FetchOptions {
  signal?: AbortSignal
  onProgress?: (progress: FetchProgress) => void
  /** Called with the decoded manifest before anything else is fetched; throw to refuse the bundle. */
  accept?: (manifest: CheckpointManifest) => void
  /** Peer ids to ask first for batched blocks (default: every connected peer). */
  providers?: string[]
  /** Throws when set-id entries of the rootfs tree are not the image's (see setIdInImage); without it they are refused. */
  allowSetId?: (manifest: CheckpointManifest, entries: SetIdEntry[]) => Promise<void>
  /**
   * Also read and hash every block of the checkpoint this store already holds and has not hashed within
   * `heldRecheckMs` (default true): a corrupt one is deleted and fetched again, so what is acknowledged can be restored.
   */
  verifyHeld?: boolean
}

export interface FetchResult {
  cid: CID
  manifest: CheckpointManifest
  blocks: number
  fetchedBlocks: number
  fetchedBytes: number
  /** Blocks this store held corrupt (their bytes do not match their CID, or the store could not read them), fetched again. */
  repairedBlocks: number
  ms: number
}

export interface ImageFetchProgress {
  /** Layer bytes that crossed the network so far. */
  fetchedBytes: number
  /** Layer bytes that had to come (those of missing layers not already in the local store). */
  totalBytes: number
}

export interface ImageFetchResult extends ImageFetchProgress {
  /** Every byte that crossed the network, the layers' chunk lists and nodes included. */
  networkBytes: number
}

export interface ImageFetchOptions {
  signal?: AbortSignal
  providers?: string[]
  onProgress?: (progress: ImageFetchProgress) => void
}

/** A missing chunk and the bytes it holds (known from its file's size and chunking, so requests are sized by bytes). */
interface WantedChunk { cid: CID, bytes: number }

interface ChunkFetchOptions { signal?: AbortSignal, providers?: string[], ensure: (c: CID) => Promise<void>, verifyHeld?: boolean }

interface ChunkFetchEvents {
  listed: (lists: number, chunks: number) => void
  present: (chunks: number) => void
  missing?: (bytes: number) => void
  fetched: (blocks: number, bytes: number) => void
}

export interface FetcherComponents {
  blocks: Blocks
  lock: StoreLock
  guard: TreeGuard
  retention: Retention
  /** Blocks requested from the swarm at once. */
  fetchConcurrency: number
  /** See HELD_RECHECK_MS. */
  heldRecheckMs: number
}

export class Fetcher {
  readonly #blocks: Blocks
  readonly #lock: StoreLock
  readonly #guard: TreeGuard
  readonly #retention: Retention
  readonly #fetchConcurrency: number
  readonly #heldRecheckMs: number

  constructor (components: FetcherComponents) {
    this.#blocks = components.blocks
    this.#lock = components.lock
    this.#guard = components.guard
    this.#retention = components.retention
    this.#fetchConcurrency = components.fetchConcurrency
    this.#heldRecheckMs = components.heldRecheckMs
  }

  /** Brings every block of a checkpoint into the local store; only missing blocks cross the network. Images are not fetched (see fetchImageLayers). */
  async fetch (cid: CID, options: FetchOptions = {}): Promise<FetchResult> {
    const blocks = this.#blocks
    return await this.#lock.shared(async () => {
      const started = performance.now()
      const { signal } = options
      const progress: FetchProgress = { blocksDone: 0, blocksTotal: 0, fetchedBytes: 0, fetchedBlocks: 0 }
      const report = (): void => options.onProgress?.({ ...progress })
      const verifyHeld = options.verifyHeld !== false
      const repairsBefore = blocks.repairedBlocks
      const ensure = async (c: CID): Promise<void> => {
        if (!(verifyHeld ? await blocks.holdsIntact(c, { hashedWithinMs: this.#heldRecheckMs }) : await blocks.backend.has(c))) {
          const bytes = await blocks.getBlock(c, { signal, providers: options.providers })
          progress.fetchedBlocks++
          progress.fetchedBytes += bytes.byteLength
        }
        progress.blocksDone++
      }
      const rootWasLocal = verifyHeld ? await blocks.holdsIntact(cid, { hashedWithinMs: this.#heldRecheckMs }) : await blocks.backend.has(cid)
      // A sealed root links to its sealed manifest: that block is checked (and fetched again if corrupt) like the rest.
      const sealedRoot = asSealedRoot(await blocks.getNode(cid, { signal, providers: options.providers }))
      if (sealedRoot != null && verifyHeld) await blocks.holdsIntact(sealedRoot.manifest, { hashedWithinMs: this.#heldRecheckMs })
      const manifest = await blocks.getManifest(cid, { signal, providers: options.providers })
      if (!rootWasLocal) { progress.fetchedBlocks++; progress.fetchedBytes += dagCbor.encode(manifest).byteLength }
      options.accept?.(manifest)
      progress.blocksDone = progress.blocksTotal = 1
      const files: FileEntry[] = []
      const structure = async (role: TreeRole): Promise<void> => {
        const node = manifest.trees[role]
        progress.blocksTotal++
        await ensure(node)
        const tree = asTreeNode(await blocks.getNode(node, { signal, offline: true }), node)
        progress.blocksTotal += tree.parts.length
        const parts = await Promise.all(tree.parts.map(async p => {
          await ensure(p)
          return asTreePart(await blocks.getNode(p, { signal, offline: true }), p).entries
        }))
        // Before any chunk is fetched and before the checkpoint is recorded (and so acknowledged).
        await this.#guard.check(role, parts.flat(), node, options.allowSetId != null ? async (e) => { await options.allowSetId?.(manifest, e) } : undefined)
        for (const e of parts.flat()) if (e.kind === 'file' && e.inline === null) files.push(e)
      }
      await Promise.all((['criu', 'rootfs', 'data'] as const).map(structure)).catch((err: unknown) => { throw this.#guard.counted(err) })
      await this.#fetchFileChunks(files, { signal, providers: options.providers, ensure, verifyHeld }, {
        listed: (lists, chunks) => { progress.blocksTotal += lists + chunks; report() },
        present: (chunks) => { progress.blocksDone += chunks; report() },
        fetched: (blocks, bytes) => {
          progress.fetchedBlocks += blocks
          progress.fetchedBytes += bytes
          progress.blocksDone += blocks
          report()
        }
      })
      report()
      // Recorded before the lock is released, for the reason given at BundleWriter.record.
      await this.#retention.record(cid, manifest)
      return {
        cid,
        manifest,
        blocks: progress.blocksDone,
        fetchedBlocks: progress.fetchedBlocks,
        fetchedBytes: progress.fetchedBytes,
        repairedBlocks: blocks.repairedBlocks - repairsBefore,
        ms: performance.now() - started
      }
    })
  }

  /**
   * Brings the given layers of an image into the local store (blocks already here are not fetched). `totalBytes`
   * counts the layer bytes that must come.
   */
  async fetchImageLayers (imageCid: CID, manifest: ImageManifest, layers: ImageLayer[], options: ImageFetchOptions = {}): Promise<ImageFetchResult> {
    const blocks = this.#blocks
    return await this.#lock.shared(async () => {
      const { signal, providers } = options
      const result: ImageFetchResult = { fetchedBytes: 0, totalBytes: 0, networkBytes: 0 }
      const report = (): void => options.onProgress?.({ fetchedBytes: result.fetchedBytes, totalBytes: result.totalBytes })
      const ensure = async (c: CID): Promise<void> => {
        if (!(await blocks.backend.has(c))) result.networkBytes += (await blocks.getBlock(c, { signal, providers })).byteLength
      }
      const unique = [...new Map(layers.map(l => [l.diffId, l])).values()]
      const files: FileEntry[] = []
      for (const layer of unique) {
        await ensure(layer.cid)
        const file = asLayerFile(await blocks.getNode(layer.cid, { signal, offline: true }), layer.cid)
        if (file.size !== layer.bytes) throw new BundleFormatError(`${layer.cid.toString()}: layer ${layer.diffId} is ${file.size} bytes, its image says ${layer.bytes}`)
        if (file.inline === null) files.push(file)
      }
      await this.#fetchFileChunks(files, { signal, providers, ensure }, {
        listed: () => {},
        present: () => {},
        missing: (bytes) => { result.totalBytes = bytes; report() },
        fetched: (_blocks, bytes) => { result.fetchedBytes += bytes; result.networkBytes += bytes; report() }
      })
      report()
      return result
    })
  }

  /**
   * The chunks of `files` that this store lacks, fetched: chunk lists first (through `ensure`), then the missing
   * chunks in requests of at most REQUEST_BYTES, from the providers' stores and then bitswap for what they withheld.
   */
  async #fetchFileChunks (files: FileEntry[], options: ChunkFetchOptions, on: ChunkFetchEvents): Promise<void> {
    const blocks = this.#blocks
    const { signal, providers } = options
    const chunks: WantedChunk[] = []
    const lists = files.flatMap(f => f.lists.map((cid, index) => ({ cid, index, file: f })))
    await pool(lists, this.#fetchConcurrency, async ({ cid, index, file }) => {
      await options.ensure(cid)
      const first = index * LIST_FANOUT
      asChunkList(await blocks.getNode(cid, { signal, offline: true }), cid).chunks.forEach((c, i) => {
        chunks.push({ cid: c, bytes: Math.max(0, Math.min(file.chunkSize, file.size - (first + i) * file.chunkSize)) })
      })
    }, signal)
    on.listed(lists.length, chunks.length)
    const missing: WantedChunk[] = []
    const queued = new Set<string>()
    for (let i = 0; i < chunks.length; i += PRESENCE_BATCH) {
      const batch = chunks.slice(i, i + PRESENCE_BATCH)
      const present = options.verifyHeld === true
        ? await blocks.holdIntactMany(batch.map(c => c.cid), { hashedWithinMs: this.#heldRecheckMs })
        : await Promise.all(batch.map(async c => blocks.known.has(c.cid.toString()) || await blocks.backend.has(c.cid)))
      batch.forEach((c, j) => {
        const key = c.cid.toString()
        if (present[j] !== true && !queued.has(key)) { missing.push(c); queued.add(key) }
      })
    }
    on.present(chunks.length - missing.length)
    on.missing?.(missing.reduce((sum, c) => sum + c.bytes, 0))
    let viaBitswap = missing
    const corrupt = new Set<string>()
    const exchange = blocks.exchange
    if (exchange != null && missing.length > 0) {
      viaBitswap = []
      await pool(requestsOf(missing), REQUESTS_IN_FLIGHT, async (request) => {
        const got = await exchange.fetchBlocks(request.map(c => c.cid), { signal, providers })
        const verified: BlockPair[] = []
        let bytes = 0
        for (const c of request) {
          const block = got.get(c.cid.toString())
          if (block == null) { viaBitswap.push(c); continue }
          if (!(await verifies(c.cid, block))) { corrupt.add(c.cid.toString()); viaBitswap.push(c); continue }
          verified.push({ cid: c.cid, bytes: block })
          bytes += block.byteLength
        }
        await blocks.backend.putMany(verified, { signal })
        for (const v of verified) blocks.noteFetched(v.cid)
        on.fetched(verified.length, bytes)
      }, signal)
    }
    await pool(viaBitswap, this.#fetchConcurrency, async ({ cid }) => {
      let bytes: Uint8Array
      try {
        bytes = await blocks.getBlock(cid, { signal, providers })
      } catch (err) {
        if (corrupt.has(cid.toString()) && err instanceof BlockUnavailableError) throw new BlockCorruptError(cid)
        throw err
      }
      blocks.noteFetched(cid)
      on.fetched(1, bytes.byteLength)
    }, signal)
  }
}

/** Requests of at most BATCH_SIZE blocks and REQUEST_BYTES bytes (a single bigger block goes alone). */
function requestsOf (chunks: WantedChunk[]): WantedChunk[][] {
  const requests: WantedChunk[][] = []
  let current: WantedChunk[] = []
  let bytes = 0
  for (const c of chunks) {
    if (current.length > 0 && (current.length >= BATCH_SIZE || bytes + c.bytes > REQUEST_BYTES)) {
      requests.push(current)
      current = []
      bytes = 0
    }
    current.push(c)
    bytes += c.bytes
  }
  if (current.length > 0) requests.push(current)
  return requests
}

/** Runs `fn` over items with at most `limit` in flight; the first failure stops the rest. */
export async function pool<T> (items: T[], limit: number, fn: (item: T) => Promise<void>, signal?: AbortSignal): Promise<void> {
  let next = 0
  let failed = false
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      signal?.throwIfAborted()
      const item = items[next++] as T
      try { await fn(item) } catch (err) { failed = true; throw err }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}
