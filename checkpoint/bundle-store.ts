// Content-addressed checkpoint bundles over a BundleBackend (Helia by default): a facade over the writer (directories
// as chunked DAGs, images), the fetcher (whole bundles from the swarm), the materializer (back to disk) and retention
// (the last K per mission), which share one block reader and one store lock.
import type { CID } from 'multiformats/cid'
import type { BundleBackend } from './backend.ts'
import type { BlockSource } from './block-exchange.ts'
import type { CheckpointManifest, FileEntry, ImageLayer, ImageManifest, TreeEntry } from './format.ts'
import type { UnsafeTreeReason } from './errors.ts'
import { CheckpointError } from './errors.ts'
import { MissionKeys, type ContentKey, type KeyEnvelope, type SealIdentity } from './sealing.ts'
import type { SetIdEntry, TreeRole } from './tree-safety.ts'
import { Blocks, type BlockReadOptions } from './bundles/blocks.ts'
import { StoreLock } from './bundles/store-lock.ts'
import { BundleWriting, type BundleWriter, type ImageInput, type StoredImage } from './bundles/writer.ts'
import { Fetcher, HELD_RECHECK_MS, type FetchOptions, type FetchResult, type ImageFetchOptions, type ImageFetchResult } from './bundles/fetcher.ts'
import { Materializer, type MaterializeOptions } from './bundles/materializer.ts'
import { Retention, type PruneResult, type RetainedCheckpoint } from './bundles/retention.ts'
import { TreeGuard } from './bundles/tree-guard.ts'

export { SEALED_CHECKPOINT_FORMAT, type SealedRoot, type BlockReadOptions } from './bundles/blocks.ts'
export {
  PAGE_CHUNK_SIZE, FILE_CHUNK_SIZE, INLINE_LIMIT, LAYER_CHUNK_SIZE, chunkSizeFor, encodeNode,
  type WriteCounters, type StoredTree, type StoredStream, type BundleWriter, type ImageInput, type StoredImage
} from './bundles/writer.ts'
export { pool, type FetchProgress, type FetchOptions, type FetchResult, type ImageFetchProgress, type ImageFetchResult, type ImageFetchOptions } from './bundles/fetcher.ts'
export type { MaterializeOptions } from './bundles/materializer.ts'
export { assertMissionName, type RetainedCheckpoint, type PruneResult } from './bundles/retention.ts'

export interface BundleStoreOptions {
  backend: BundleBackend
  /** Checkpoints kept per mission (older ones are collected). Default 3. */
  keep?: number
  /** Blocks requested from the swarm at once. Default 256. */
  fetchConcurrency?: number
  /** A fetch reads and hashes again each block it already holds that it has not hashed this recently. Default HELD_RECHECK_MS (0: every fetch). */
  heldRecheckMs?: number
  /** How long one block may take to arrive from the swarm before the fetch fails. Default 30 s. */
  blockTimeoutMs?: number
  /** Batched transfer from peers (bitswap remains the fallback for what it does not deliver). */
  exchange?: BlockSource
  /**
   * Checkpoints (root CIDs) collection must keep however old: what the board holds and may restore. (Fetches whose
   * success its consensus machine never took, newer ones superseding them, pushed the checkpoint it held out of the
   * last `keep`: its takeover found a block gone, 494 ticks were lost.)
   */
  pinned?: () => Iterable<string>
  /** This board's identity: opens the keys of sealed checkpoints wrapped for it. */
  identity?: SealIdentity
}

export class BundleStore {
  readonly backend: BundleBackend
  readonly keep: number
  /** Opens the envelopes of sealed checkpoints wrapped for this board (none: it reads only clear ones). */
  readonly identity: SealIdentity | null
  /** Content keys this store may open blocks with, by id (hex): made here, or unwrapped from an envelope. */
  readonly keyring: Map<string, ContentKey>
  /** The primary's per-mission keys, made anew when a view's members change. */
  readonly missionKeys = new MissionKeys()
  /** Refusals of unsafe trees (fetch and materialize), by reason, since this store opened. */
  readonly unsafeTreesRefused: Map<UnsafeTreeReason, number>
  readonly #blocks: Blocks
  readonly #writing: BundleWriting
  readonly #fetcher: Fetcher
  readonly #materializer: Materializer
  readonly #retention: Retention
  readonly #guard = new TreeGuard()

  constructor (options: BundleStoreOptions) {
    if (options.keep != null && (!Number.isInteger(options.keep) || options.keep < 1)) throw new CheckpointError('keep must be an integer >= 1')
    this.backend = options.backend
    this.keep = options.keep ?? 3
    this.identity = options.identity ?? null
    const lock = new StoreLock()
    const blocks = new Blocks({ backend: options.backend, exchange: options.exchange, blockTimeoutMs: options.blockTimeoutMs ?? 30_000, identity: this.identity })
    const retention = new Retention({ blocks, lock, pinned: options.pinned ?? (() => []) })
    this.#blocks = blocks
    this.#retention = retention
    this.#writing = new BundleWriting({ blocks, lock, retention })
    this.#fetcher = new Fetcher({ blocks, lock, guard: this.#guard, retention, fetchConcurrency: options.fetchConcurrency ?? 256, heldRecheckMs: options.heldRecheckMs ?? HELD_RECHECK_MS })
    this.#materializer = new Materializer({ blocks, guard: this.#guard })
    this.keyring = blocks.keyring
    this.unsafeTreesRefused = this.#guard.refused
  }

  /** Corrupt blocks found in this store (and deleted, to be fetched again) since it opened. */
  get repairedBlocks (): number { return this.#blocks.repairedBlocks }

  // ---- writing -------------------------------------------------------------------------------------------

  /**
   * Runs `fn` with a writer; blocks it adds stay safe from pruning until `fn` resolves. With `seal`, every block
   * the writer makes is sealed under that key (nodes given `clear` excepted).
   */
  async write<T> (fn: (w: BundleWriter) => Promise<T>, signal?: AbortSignal, seal?: ContentKey): Promise<T> {
    return await this.#writing.write(fn, signal, seal)
  }

  /** Stores an image from its `docker save` stream, one file DAG per layer (a layer already held costs no write). */
  async putImage (save: AsyncIterable<Uint8Array>, info: ImageInput, signal?: AbortSignal): Promise<StoredImage> {
    return await this.#writing.putImage(save, info, signal)
  }

  /** The CID under which this store holds an image with all its layers, if it does. */
  async imageCid (imageId: string): Promise<CID | null> { return await this.#retention.imageCid(imageId) }

  /** Whether this store holds the whole tar of a layer. */
  async hasLayer (diffId: string): Promise<boolean> { return await this.#retention.hasLayer(diffId) }

  // ---- reading -------------------------------------------------------------------------------------------

  /** One block, verified against its CID; from the swarm unless `offline`. */
  async getBlock (cid: CID, options: BlockReadOptions = {}): Promise<Uint8Array> { return await this.#blocks.getBlock(cid, options) }

  /** Whether this store holds the block intact: read and hashed; a corrupt one is deleted, to be fetched again. */
  async holdsIntact (cid: CID): Promise<boolean> { return await this.#blocks.holdsIntact(cid) }

  async getNode (cid: CID, options: BlockReadOptions = {}): Promise<unknown> { return await this.#blocks.getNode(cid, options) }

  /** The manifest of a checkpoint; a sealed one is opened (NotARecipientError when this board is not a recipient). */
  async getManifest (cid: CID, options: BlockReadOptions = {}): Promise<CheckpointManifest> { return await this.#blocks.getManifest(cid, options) }

  /** The key envelope of a sealed checkpoint (who may read it), or null for a clear one. */
  async envelopeOf (cid: CID, options: BlockReadOptions = {}): Promise<KeyEnvelope | null> { return await this.#blocks.envelopeOf(cid, options) }

  async getImageManifest (cid: CID, options: BlockReadOptions = {}): Promise<ImageManifest> { return await this.#blocks.getImageManifest(cid, options) }

  /** Verified content of a file entry, chunk by chunk, from the local store. */
  readFile (entry: FileEntry, options: { signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> { return this.#blocks.readFile(entry, options) }

  // ---- fetching ------------------------------------------------------------------------------------------

  /** Brings every block of a checkpoint into the local store; only missing blocks cross the network. Images are not fetched (see fetchImageLayers). */
  async fetch (cid: CID, options: FetchOptions = {}): Promise<FetchResult> { return await this.#fetcher.fetch(cid, options) }

  /** Brings the given layers of an image into the local store (blocks already here are not fetched). */
  async fetchImageLayers (imageCid: CID, manifest: ImageManifest, layers: ImageLayer[], options: ImageFetchOptions = {}): Promise<ImageFetchResult> {
    return await this.#fetcher.fetchImageLayers(imageCid, manifest, layers, options)
  }

  /** Remembers fetched layers, and the image once all its layers are here (only after Docker loaded them). */
  async recordImageLayers (imageCid: CID, manifest: ImageManifest, layers: ImageLayer[]): Promise<void> {
    await this.#retention.recordImageLayers(imageCid, manifest, layers)
  }

  // ---- materializing -------------------------------------------------------------------------------------

  /** A tar for `docker load` of the layers from `fromLayer` on, assembled from the local store while it is read. */
  imageArchive (manifest: ImageManifest, fromLayer: number, options: { signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
    return this.#materializer.imageArchive(manifest, fromLayer, options)
  }

  /** Writes a stored tree under `dest`; with `previous`, only what differs from that tree (see Materializer). */
  async materializeTree (treeCid: CID, dest: string, options: MaterializeOptions = {}): Promise<{ files: number, bytes: number }> {
    return await this.#materializer.materializeTree(treeCid, dest, options)
  }

  /** Throws an UnsafeTreeError for a tree a container could not have produced; see checkTreeEntries. */
  async checkTree (role: TreeRole, entries: Iterable<TreeEntry>, treeCid: CID, allowSetId?: (entries: SetIdEntry[]) => Promise<void>): Promise<void> {
    await this.#guard.check(role, entries, treeCid, allowSetId)
  }

  /** Checks files written by materializeTree against the tree's digests; the first difference found, or null. */
  async verifyTreeOnDisk (treeCid: CID, dir: string, signal?: AbortSignal): Promise<string | null> {
    return await this.#materializer.verifyTreeOnDisk(treeCid, dir, signal)
  }

  // ---- retention -----------------------------------------------------------------------------------------

  /** Records a checkpoint as retained for its mission, then collects checkpoints beyond the last `keep`. */
  async retain (cid: CID, manifest: CheckpointManifest): Promise<PruneResult> {
    await this.#retention.record(cid, manifest)
    // Collection never holds up a checkpoint: while a long write runs (an image upload, a fetch), the surplus
    // stays until a later retain finds the store idle.
    return await this.#retention.prune(manifest.mission, this.keep, { wait: false })
  }

  /**
   * Collects a mission's checkpoints beyond the last `keep` after this returns (storing and fetching record a
   * checkpoint themselves), so a checkpoint is announced or acknowledged without waiting for older ones to be
   * deleted. `idle()` waits for the collection.
   */
  collectInBackground (mission: string): void { this.#retention.collectInBackground(mission, this.keep) }

  /** Resolves once background collection has finished. */
  async idle (): Promise<void> { await this.#retention.idle() }

  /** Retained checkpoints of a mission, oldest first (by epoch, then sequence number). */
  async checkpoints (mission: string): Promise<RetainedCheckpoint[]> { return await this.#retention.checkpoints(mission) }

  async latest (mission: string): Promise<RetainedCheckpoint | null> {
    return (await this.checkpoints(mission)).at(-1) ?? null
  }

  /** Drops all but the newest `keep` checkpoints of a mission and deletes blocks nothing retained links to. */
  async prune (mission: string, keep: number, options: { wait?: boolean } = {}): Promise<PruneResult> {
    return await this.#retention.prune(mission, keep, options)
  }
}
