// Content-addressed checkpoint bundles over a BundleBackend (Helia by default): store directories as
// chunked DAGs, fetch whole bundles from the swarm, materialize them, keep the last K per mission.
import { createReadStream } from 'node:fs'
import { createHash } from 'node:crypto'
import { lstat, mkdir, readdir, readlink, symlink, rm, type FileHandle } from 'node:fs/promises'
import { spawn } from 'node:child_process'
import type { Stats } from 'node:fs'
import { join, basename } from 'node:path'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import * as raw from 'multiformats/codecs/raw'
import { equals } from 'uint8arrays/equals'
import type { BlockPair, BundleBackend } from './backend.ts'
import {
  asChunkList, asImageManifest, asLayerFile, asManifest, asTreeNode, asTreePart, IMAGE_FORMAT,
  type CheckpointManifest, type DockerManifestEntry, type FileEntry, type ImageLayer, type ImageManifest, type TreeEntry, type TreeNode
} from './format.ts'
import { BlockCorruptError, BlockUnavailableError, BundleFormatError, CheckpointError, UnsafeTreeError, type UnsafeTreeReason } from './errors.ts'
import { StorageError } from './storage-health.ts'
import { SharedExclusiveLock } from './lock.ts'
import { BATCH_SIZE, type BlockSource } from './block-exchange.ts'
import { readTar, readSmall, drain, tarFileHeader, tarPadding, TAR_END } from './tar.ts'
import { ContentKey, MissionKeys, SealError, asEnvelope, isSealed, sealedKeyId, type KeyEnvelope, type SealIdentity } from './sealing.ts'
import { beneath, checkTreeEntries, existingBeneath, openDirNoFollow, openNoFollow, type SetIdEntry, type TreeRole } from './tree-safety.ts'

/** CRIU page images are chunked at the page size, aligned to the file start: unchanged pages keep their CID. */
export const PAGE_CHUNK_SIZE = 4096
export const FILE_CHUNK_SIZE = 64 * 1024
export const INLINE_LIMIT = 1024
/** Image layers travel whole or not at all (a layer is deduplicated by its diffId, not by chunk): big chunks. */
export const LAYER_CHUNK_SIZE = 1024 * 1024
/** Bytes gathered before one write when a bundle's files are written back to disk. */
const WRITE_BATCH_BYTES = 1024 * 1024
const LIST_FANOUT = 4096
const PART_ENTRIES = 1000
const WRITE_BATCH = 512
/** Bytes of blocks buffered before a write to the backend (1 MiB layer chunks would otherwise gather 512 MiB). */
const WRITE_BATCH_LIMIT_BYTES = 8 * 1024 * 1024
/** One request of the block exchange asks for at most this many bytes (and BATCH_SIZE blocks). */
const REQUEST_BYTES = 4 * 1024 * 1024
/** Requests in flight per fetch. */
const REQUESTS_IN_FLIGHT = 4
const READ_BUFFER = 1024 * 1024
/** Entries of the sealed-chunk cache (~100 bytes each): the pages of a 1 GiB mission. */
const SEAL_CACHE_ENTRIES = 262_144

export function chunkSizeFor (relativePath: string): number {
  return /^pages-\d+\.img$/.test(basename(relativePath)) ? PAGE_CHUNK_SIZE : FILE_CHUNK_SIZE
}

export interface WriteCounters {
  /** Distinct blocks in the stored DAG(s). */
  blocks: number
  /** Bytes of all distinct blocks. */
  bytes: number
  /** Blocks and bytes that the store did not hold before. */
  newBlocks: number
  newBytes: number
}

export interface StoredTree extends WriteCounters { cid: CID, files: number, fileBytes: number }

export interface BundleWriter {
  putTree: (dir: string) => Promise<StoredTree>
  putStream: (source: AsyncIterable<Uint8Array>, chunkSize: number) => Promise<Pick<FileEntry, 'size' | 'inline' | 'chunkSize' | 'lists' | 'sealedWith'>>
  /** Sealed under the write's key, if any, unless `clear`. */
  putNode: (value: unknown, options?: { clear?: boolean }) => Promise<CID>
  /** Writes buffered blocks now (they are also written when `write` returns). */
  flush: () => Promise<void>
  /**
   * Records a flushed checkpoint as retained, while the write still holds off pruning: a prune between the write
   * and the record would delete blocks the write found present and linked to without writing them again.
   */
  record: (cid: CID, manifest: CheckpointManifest) => Promise<void>
  readonly counters: WriteCounters
}

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
   * Also read and hash every block of the checkpoint this store already holds (default true): a corrupt one is
   * deleted and fetched again, so what is acknowledged can be restored.
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

export interface MaterializeOptions {
  signal?: AbortSignal
  previous?: CID
  /** Which checkpoint directory the tree fills (what it may hold, see checkTreeEntries). Default rootfs. */
  role?: TreeRole
  /** Throws when entries with set-id bits are not the mission image's own (see setIdInImage); without it they are refused. */
  allowSetId?: (entries: SetIdEntry[]) => Promise<void>
}

export interface RetainedCheckpoint { mission: string, epoch: number, seq: number, cid: CID }

export interface BundleStoreOptions {
  backend: BundleBackend
  /** Checkpoints kept per mission (older ones are collected). Default 3. */
  keep?: number
  /** Blocks requested from the swarm at once. Default 256. */
  fetchConcurrency?: number
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

const MISSION_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/
export function assertMissionName (mission: string): void {
  if (!MISSION_NAME.test(mission)) throw new CheckpointError(`invalid mission name ${JSON.stringify(mission)}: use letters, digits, '.', '_' or '-'`)
}

/** A dag-cbor node; sealed under `seal` when given (its CID keeps the dag-cbor code and hashes the sealed bytes). */
export async function encodeNode (value: unknown, seal?: ContentKey | null): Promise<BlockPair> {
  const plain = dagCbor.encode(value)
  const bytes = seal != null ? seal.seal(plain) : plain
  return { cid: CID.createV1(dagCbor.code, await sha256.digest(bytes)), bytes }
}

async function rawBlock (plain: Uint8Array, seal?: ContentKey | null): Promise<BlockPair> {
  const bytes = seal != null ? seal.seal(plain) : plain
  return { cid: CID.createV1(raw.code, await sha256.digest(bytes)), bytes }
}

/** The clear root of a sealed checkpoint: the content key wrapped for the view, and the sealed manifest. */
export const SEALED_CHECKPOINT_FORMAT = 'tandem/sealed-checkpoint/1'
export interface SealedRoot { format: typeof SEALED_CHECKPOINT_FORMAT, keys: KeyEnvelope, manifest: CID }

function asSealedRoot (v: unknown): SealedRoot | null {
  if (v == null || typeof v !== 'object' || (v as { format?: unknown }).format !== SEALED_CHECKPOINT_FORMAT) return null
  const o = v as Partial<SealedRoot>
  if (CID.asCID(o.manifest) == null) throw new BundleFormatError('sealed checkpoint root without a manifest link')
  return { format: SEALED_CHECKPOINT_FORMAT, keys: asEnvelope(o.keys), manifest: CID.asCID(o.manifest) as CID }
}

/** Batches blocks into the backend and counts which of them are new to it. */
class BlockWriter implements WriteCounters {
  blocks = 0
  bytes = 0
  newBlocks = 0
  newBytes = 0
  private batch: BlockPair[] = []
  private batchBytes = 0
  private readonly seen = new Set<string>()
  private readonly backend: BundleBackend
  private readonly signal: AbortSignal | undefined
  private readonly known: Set<string>
  /** Key every block of this write is sealed under (null: clear). */
  readonly seal: ContentKey | null

  constructor (backend: BundleBackend, signal: AbortSignal | undefined, known: Set<string>, seal: ContentKey | null = null) {
    this.backend = backend
    this.signal = signal
    this.known = known
    this.seal = seal
  }

  /** A block the store holds already (see SealCache): counted, not written again. */
  addKnown (cid: CID, byteLength: number): boolean {
    const key = cid.toString()
    if (!this.known.has(key)) return false
    if (this.seen.has(key)) return true
    this.seen.add(key)
    this.blocks++
    this.bytes += byteLength
    return true
  }

  async add (block: BlockPair): Promise<void> {
    const key = block.cid.toString()
    if (this.seen.has(key)) return
    this.seen.add(key)
    this.blocks++
    this.bytes += block.bytes.byteLength
    this.batch.push(block)
    this.batchBytes += block.bytes.byteLength
    if (this.batch.length >= WRITE_BATCH || this.batchBytes >= WRITE_BATCH_LIMIT_BYTES) await this.flush()
  }

  async flush (): Promise<void> {
    this.signal?.throwIfAborted()
    const batch = this.batch.filter(b => !this.known.has(b.cid.toString()))
    this.batch = []
    this.batchBytes = 0
    const present = await Promise.all(batch.map(async b => await this.backend.has(b.cid)))
    const fresh = batch.filter((_, i) => present[i] !== true)
    for (const b of fresh) { this.newBlocks++; this.newBytes += b.bytes.byteLength }
    if (fresh.length > 0) await this.backend.putMany(fresh, { signal: this.signal })
    for (const b of batch) this.known.add(b.cid.toString())
  }
}

function padded (n: number): string { return n.toString().padStart(12, '0') }
const CHECKPOINT_PREFIX = '/tandem/checkpoints'
const IMAGE_PREFIX = '/tandem/images'
const LAYER_PREFIX = '/tandem/layers'
/** Largest image config / manifest.json accepted from `docker save`. */
const IMAGE_METADATA_LIMIT = 8 * 1024 * 1024

export interface ImageInput { imageId: string, tags: string[], arch: string }

export interface StoredImage extends WriteCounters {
  cid: CID
  manifest: ImageManifest
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

/** A missing chunk and the bytes it holds (known from its file's size and chunking, so requests are sized by bytes). */
interface WantedChunk { cid: CID, bytes: number }

export class BundleStore {
  readonly backend: BundleBackend
  readonly keep: number
  private readonly fetchConcurrency: number
  private readonly blockTimeoutMs: number
  private readonly lock = new SharedExclusiveLock()
  /**
   * Raw chunk CIDs this store wrote or fetched and has not deleted: spares a store lookup per 4 KiB page
   * on every checkpoint. (The store owns its blocks: nothing else may delete them, e.g. Helia's gc.)
   */
  private readonly known = new Set<string>()
  /** Link sets of complete retained DAGs, by root CID (see linksOf). */
  private readonly linkSets = new Map<string, Set<string>>()
  private collecting: Promise<void> = Promise.resolve()
  private readonly exchange: BlockSource | undefined
  private readonly pinned: () => Iterable<string>
  /** Opens the envelopes of sealed checkpoints wrapped for this board (none: it reads only clear ones). */
  readonly identity: SealIdentity | null
  /** Content keys this store may open blocks with, by id (hex): made here, or unwrapped from an envelope. */
  readonly keyring = new Map<string, ContentKey>()
  /** The primary's per-mission keys, made anew when a view's members change. */
  readonly missionKeys = new MissionKeys()
  /** Sealed chunk CIDs by key and plaintext hash (in memory only): unchanged pages are not sealed again. */
  private readonly sealCache = new Map<string, { cid: CID, bytes: number }>()

  constructor (options: BundleStoreOptions) {
    if (options.keep != null && (!Number.isInteger(options.keep) || options.keep < 1)) throw new CheckpointError('keep must be an integer >= 1')
    this.backend = options.backend
    this.keep = options.keep ?? 3
    this.fetchConcurrency = options.fetchConcurrency ?? 256
    this.blockTimeoutMs = options.blockTimeoutMs ?? 30_000
    this.exchange = options.exchange
    this.pinned = options.pinned ?? (() => [])
    this.identity = options.identity ?? null
  }

  // ---- writing -------------------------------------------------------------------------------------------

  /**
   * Runs `fn` with a writer; blocks it adds stay safe from pruning until `fn` resolves. With `seal`, every block
   * the writer makes is sealed under that key (nodes given `clear` excepted).
   */
  async write<T> (fn: (w: BundleWriter) => Promise<T>, signal?: AbortSignal, seal?: ContentKey): Promise<T> {
    if (seal != null) this.keyring.set(seal.idHex, seal)
    return await this.lock.withShared(async () => {
      const writer = new BlockWriter(this.backend, signal, this.known, seal ?? null)
      const result = await fn({
        putTree: async (dir) => await this.storeTree(dir, writer, signal),
        putStream: async (source, chunkSize) => await this.storeStream(source, chunkSize, writer, signal),
        putNode: async (value, options) => { const b = await encodeNode(value, options?.clear === true ? null : writer.seal); await writer.add(b); return b.cid },
        flush: async () => { await writer.flush() },
        record: async (cid, manifest) => { await this.record(cid, manifest) },
        counters: writer
      })
      await writer.flush()
      return result
    })
  }

  private async storeTree (dir: string, writer: BlockWriter, signal?: AbortSignal): Promise<StoredTree> {
    const before = { ...snapshot(writer) }
    const entries: TreeEntry[] = []
    let fileBytes = 0
    for await (const { rel, abs, st } of walk(dir, '')) {
      signal?.throwIfAborted()
      const owner = { uid: st.uid, gid: st.gid }
      if (st.isDirectory()) {
        entries.push({ kind: 'dir', path: rel, mode: st.mode & 0o7777, ...owner })
      } else if (st.isSymbolicLink()) {
        entries.push({ kind: 'symlink', path: rel, target: await readlink(abs), ...owner })
      } else if (st.isCharacterDevice() && st.rdev === 0) {
        entries.push({ kind: 'whiteout', path: rel })
      } else if (st.isFile()) {
        const stored = await this.storeStream(createReadStream(abs, { highWaterMark: READ_BUFFER }), chunkSizeFor(rel), writer, signal)
        entries.push({ kind: 'file', path: rel, mode: st.mode & 0o7777, ...owner, ...stored })
        fileBytes += stored.size
      }
      // Sockets, fifos and devices are not state a mission can carry: skipped.
    }
    const parts: CID[] = []
    for (let i = 0; i < entries.length; i += PART_ENTRIES) {
      const part = await encodeNode({ entries: entries.slice(i, i + PART_ENTRIES) }, writer.seal)
      await writer.add(part)
      parts.push(part.cid)
    }
    const files = entries.filter(e => e.kind === 'file').length
    const node: TreeNode = { parts, files, bytes: fileBytes }
    const root = await encodeNode(node, writer.seal)
    await writer.add(root)
    const after = snapshot(writer)
    return {
      cid: root.cid,
      files,
      fileBytes,
      blocks: after.blocks - before.blocks,
      bytes: after.bytes - before.bytes,
      newBlocks: after.newBlocks - before.newBlocks,
      newBytes: after.newBytes - before.newBytes
    }
  }

  /** Chunks a byte stream at fixed offsets; small content is inlined. */
  private async storeStream (source: AsyncIterable<Uint8Array>, chunkSize: number, writer: BlockWriter, signal?: AbortSignal): Promise<Pick<FileEntry, 'size' | 'inline' | 'chunkSize' | 'lists' | 'sealedWith'>> {
    const chunks: CID[] = []
    let size = 0
    let pending: Uint8Array[] = []
    let pendingBytes = 0
    let chunking = false
    const emit = async (bytes: Uint8Array): Promise<void> => {
      // A sealed chunk's CID needs the chunk sealed (HMAC, AES-GCM, then SHA-256): for the pages that did not change
      // since the last checkpoint, the CID is looked up by the plaintext's hash instead.
      const seal = writer.seal
      const plainKey = seal != null ? `${seal.idHex}:${createHash('sha256').update(bytes).digest('base64')}` : null
      const cached = plainKey != null ? this.sealCache.get(plainKey) : undefined
      if (cached != null && writer.addKnown(cached.cid, cached.bytes)) { chunks.push(cached.cid); return }
      const block = await rawBlock(bytes, seal)
      await writer.add(block)
      chunks.push(block.cid)
      if (plainKey != null) {
        if (this.sealCache.size >= SEAL_CACHE_ENTRIES) this.sealCache.clear()
        this.sealCache.set(plainKey, { cid: block.cid, bytes: block.bytes.byteLength })
      }
    }
    for await (const data of source) {
      signal?.throwIfAborted()
      size += data.byteLength
      pending.push(data)
      pendingBytes += data.byteLength
      if (!chunking && size <= INLINE_LIMIT) continue
      chunking = true
      if (pendingBytes < chunkSize) continue
      const buf = Buffer.concat(pending)
      let offset = 0
      for (; offset + chunkSize <= buf.byteLength; offset += chunkSize) await emit(buf.subarray(offset, offset + chunkSize))
      const rest = buf.subarray(offset)
      pending = rest.byteLength > 0 ? [Uint8Array.from(rest)] : []
      pendingBytes = rest.byteLength
    }
    if (!chunking) return { size, inline: new Uint8Array(Buffer.concat(pending)), chunkSize, lists: [] }
    if (pendingBytes > 0) await emit(new Uint8Array(Buffer.concat(pending)))
    const lists: CID[] = []
    for (let i = 0; i < chunks.length; i += LIST_FANOUT) {
      const list = await encodeNode({ chunks: chunks.slice(i, i + LIST_FANOUT) }, writer.seal)
      await writer.add(list)
      lists.push(list.cid)
    }
    return { size, inline: null, chunkSize, lists, ...(writer.seal != null ? { sealedWith: writer.seal.id } : {}) }
  }

  /**
   * Stores an image from its `docker save` stream, one file DAG per layer tar, remembered under its diffId: a layer
   * this store already holds (from another image on the same base) costs a read of the stream but no write.
   */
  async putImage (save: AsyncIterable<Uint8Array>, info: ImageInput, signal?: AbortSignal): Promise<StoredImage> {
    return await this.write(async (w) => {
      const layersByPath = new Map<string, { diffId: string, file: FileEntry }>()
      const jsonFiles = new Map<string, Uint8Array>()
      let dockerManifest: DockerManifestEntry | null = null
      for await (const entry of readTar(save)) {
        signal?.throwIfAborted()
        if (entry.type !== '0') { await drain(entry.body); continue }
        if (entry.name === 'manifest.json') {
          dockerManifest = parseDockerManifest(await readSmall(entry, IMAGE_METADATA_LIMIT), info.imageId)
        } else if (/^[0-9a-f]{64}\.json$/.test(entry.name)) {
          jsonFiles.set(entry.name, await readSmall(entry, IMAGE_METADATA_LIMIT))
        } else if (entry.name.endsWith('/layer.tar')) {
          const hash = createHash('sha256')
          const hashed = (async function * () { for await (const part of entry.body) { hash.update(part); yield part } })()
          const stored = await w.putStream(hashed, LAYER_CHUNK_SIZE)
          layersByPath.set(entry.name, { diffId: `sha256:${hash.digest('hex')}`, file: { kind: 'file', path: 'layer.tar', mode: 0o644, uid: 0, gid: 0, ...stored } })
        } else {
          await drain(entry.body)
        }
      }
      if (dockerManifest == null) throw new CheckpointError(`docker save of ${info.imageId} has no manifest.json entry for it`)
      const config = jsonFiles.get(dockerManifest.Config)
      if (config == null) throw new CheckpointError(`docker save of ${info.imageId} lacks its config ${dockerManifest.Config}`)
      const diffIds = configDiffIds(config, info.imageId)
      if (diffIds.length !== dockerManifest.Layers.length) throw new CheckpointError(`image ${info.imageId}: config lists ${diffIds.length} layers, manifest.json ${dockerManifest.Layers.length}`)
      const layers: ImageLayer[] = []
      const stored = new Map<string, CID>()
      for (const [i, path] of dockerManifest.Layers.entries()) {
        const layer = layersByPath.get(path)
        if (layer == null) throw new CheckpointError(`docker save of ${info.imageId} lacks layer ${path}`)
        if (layer.diffId !== diffIds[i]) throw new CheckpointError(`image ${info.imageId}: layer ${path} hashes to ${layer.diffId}, its config says ${String(diffIds[i])}`)
        const cid = stored.get(layer.diffId) ?? await w.putNode(layer.file)
        stored.set(layer.diffId, cid)
        layers.push({ diffId: layer.diffId, cid, bytes: layer.file.size })
      }
      const manifest: ImageManifest = {
        format: IMAGE_FORMAT,
        imageId: info.imageId,
        tags: info.tags,
        arch: info.arch,
        config,
        dockerManifest,
        layers,
        totalBytes: layers.reduce((sum, l) => sum + l.bytes, 0)
      }
      const cid = await w.putNode(manifest)
      await w.flush()
      for (const [diffId, layerCid] of stored) await this.backend.writeRecord(layerKey(diffId), layerCid.bytes)
      await this.backend.writeRecord(`${IMAGE_PREFIX}/${imageKey(info.imageId)}`, cid.bytes)
      return { cid, manifest, ...snapshot(w.counters) }
    }, signal)
  }

  /** The CID under which this store holds an image with all its layers, if it does. */
  async imageCid (imageId: string): Promise<CID | null> {
    const rec = await this.backend.readRecord(`${IMAGE_PREFIX}/${imageKey(imageId)}`)
    if (rec == null) return null
    const cid = CID.decode(rec)
    try {
      // A record of an older image format (one archive) does not count: the image is stored again per layer.
      await this.getImageManifest(cid, { offline: true })
      return cid
    } catch { return null }
  }

  /** Whether this store holds the whole tar of a layer. */
  async hasLayer (diffId: string): Promise<boolean> {
    return (await this.backend.readRecord(layerKey(diffId))) != null
  }

  // ---- reading -------------------------------------------------------------------------------------------

  /** One block, verified against its CID; from the swarm unless `offline`. */
  async getBlock (cid: CID, options: { signal?: AbortSignal, offline?: boolean, providers?: string[] } = {}): Promise<Uint8Array> {
    options.signal?.throwIfAborted()
    if (cid.multihash.code !== sha256.code) throw new BundleFormatError(`${cid.toString()}: unsupported hash 0x${cid.multihash.code.toString(16)}`)
    if (options.offline !== true && this.exchange != null && !(await this.backend.has(cid))) {
      // Straight from the providers' stores first: bitswap's want bookkeeping is the slow path (see fetch).
      const bytes = (await this.exchange.fetchBlocks([cid], { signal: options.signal, providers: options.providers }).catch(() => null))?.get(cid.toString())
      if (bytes != null && await verifies(cid, bytes)) {
        await this.backend.putMany([{ cid, bytes }], { signal: options.signal })
        return bytes
      }
    }
    // A local read waits on no peer: it needs no timer (thousands of page chunks are read per restore).
    const timeout = options.offline === true ? undefined : AbortSignal.timeout(this.blockTimeoutMs)
    const signal = timeout == null ? options.signal : options.signal != null ? AbortSignal.any([options.signal, timeout]) : timeout
    let bytes: Uint8Array
    try {
      bytes = await this.backend.get(cid, { signal, offline: options.offline })
    } catch (err: any) {
      if (options.signal?.aborted === true) throw options.signal.reason ?? err
      if (err instanceof StorageError) throw err.problem === 'store corrupt' ? new BlockCorruptError(cid) : err
      if (timeout?.aborted === true) throw new BlockUnavailableError(cid, `no peer delivered it within ${this.blockTimeoutMs} ms`)
      if (options.offline === true) throw new BlockUnavailableError(cid, 'not in the local store')
      throw new BlockUnavailableError(cid, err?.message ?? String(err))
    }
    if (!(await verifies(cid, bytes))) throw new BlockCorruptError(cid)
    return bytes
  }

  /** Corrupt blocks found in this store (and deleted, to be fetched again) since it opened. */
  repairedBlocks = 0

  /**
   * Whether this store holds the block intact: read and hashed. A block whose bytes do not match its CID (or that
   * the store reports corrupt) is deleted, so that it is fetched again.
   */
  async holdsIntact (cid: CID): Promise<boolean> {
    let intact: boolean
    try {
      // One read, no `has` first: a missing block throws NotFoundError.
      intact = await verifies(cid, await this.backend.get(cid, { offline: true }))
    } catch (err) {
      if ((err as Error).name === 'NotFoundError') return false
      if (!(err instanceof StorageError && err.problem === 'store corrupt')) throw err
      intact = false
    }
    if (!intact) {
      this.repairedBlocks++
      this.known.delete(cid.toString())
      await this.backend.deleteMany([cid])
    }
    return intact
  }

  async getNode (cid: CID, options: { signal?: AbortSignal, offline?: boolean, providers?: string[] } = {}): Promise<unknown> {
    if (cid.code !== dagCbor.code) throw new BundleFormatError(`${cid.toString()}: expected a dag-cbor node`)
    return this.decodeNode(cid, await this.getBlock(cid, options))
  }

  /** A node's value; a sealed node is opened with the keyring's key (a SealError without it). */
  private decodeNode (cid: CID, bytes: Uint8Array): unknown {
    const plain = isSealed(bytes) ? this.keyOf(sealedKeyId(bytes), cid).open(bytes) : bytes
    try { return dagCbor.decode(plain) } catch (err: any) { throw new BundleFormatError(`${cid.toString()}: undecodable dag-cbor (${err.message})`) }
  }

  private keyOf (id: string, cid?: CID): ContentKey {
    const key = this.keyring.get(id)
    if (key == null) throw new SealError(`${cid?.toString() ?? 'block'} is sealed with key ${id}, which this board does not hold (it was not among the checkpoint's recipients)`)
    return key
  }

  /** Opens a sealed checkpoint root's envelope with this board's identity and keeps its key. */
  private openEnvelope (envelope: KeyEnvelope): ContentKey {
    const id = Buffer.from(envelope.key).toString('hex')
    const held = this.keyring.get(id)
    if (held != null) return held
    if (this.identity == null) throw new SealError(`checkpoint of ${envelope.mission} is sealed and this store has no identity to open it`)
    const key = this.identity.open(envelope)
    this.keyring.set(key.idHex, key)
    return key
  }

  /** A chunk's plaintext: opened when its file was sealed. */
  private openChunk (entry: FileEntry, bytes: Uint8Array): Uint8Array {
    if (entry.sealedWith == null) return bytes
    const id = Buffer.from(entry.sealedWith).toString('hex')
    if (!isSealed(bytes) || sealedKeyId(bytes) !== id) throw new SealError(`${entry.path}: a chunk is not sealed with the file's key ${id}`)
    return this.keyOf(id).open(bytes)
  }

  /** The manifest of a checkpoint; a sealed one is opened (NotARecipientError when this board is not a recipient). */
  async getManifest (cid: CID, options: { signal?: AbortSignal, offline?: boolean, providers?: string[] } = {}): Promise<CheckpointManifest> {
    const node = await this.getNode(cid, options)
    const sealed = asSealedRoot(node)
    if (sealed == null) return asManifest(node, cid)
    this.openEnvelope(sealed.keys)
    const manifest = asManifest(await this.getNode(sealed.manifest, options), sealed.manifest)
    if (manifest.mission !== sealed.keys.mission) throw new BundleFormatError(`${cid.toString()}: envelope of ${sealed.keys.mission} around a manifest of ${manifest.mission}`)
    return manifest
  }

  /** The key envelope of a sealed checkpoint (who may read it), or null for a clear one. */
  async envelopeOf (cid: CID, options: { signal?: AbortSignal, offline?: boolean, providers?: string[] } = {}): Promise<KeyEnvelope | null> {
    return asSealedRoot(await this.getNode(cid, options))?.keys ?? null
  }

  async getImageManifest (cid: CID, options: { signal?: AbortSignal, offline?: boolean, providers?: string[] } = {}): Promise<ImageManifest> {
    return asImageManifest(await this.getNode(cid, options), cid)
  }

  /** Brings every block of a checkpoint into the local store; only missing blocks cross the network. Images are not fetched (see fetchImageLayers). */
  async fetch (cid: CID, options: FetchOptions = {}): Promise<FetchResult> {
    return await this.lock.withShared(async () => {
      const started = performance.now()
      const { signal } = options
      const progress: FetchProgress = { blocksDone: 0, blocksTotal: 0, fetchedBytes: 0, fetchedBlocks: 0 }
      const report = (): void => options.onProgress?.({ ...progress })
      const verifyHeld = options.verifyHeld !== false
      const repairsBefore = this.repairedBlocks
      const ensure = async (c: CID): Promise<void> => {
        if (!(verifyHeld ? await this.holdsIntact(c) : await this.backend.has(c))) {
          const bytes = await this.getBlock(c, { signal, providers: options.providers })
          progress.fetchedBlocks++
          progress.fetchedBytes += bytes.byteLength
        }
        progress.blocksDone++
      }
      const rootWasLocal = verifyHeld ? await this.holdsIntact(cid) : await this.backend.has(cid)
      // A sealed root links to its sealed manifest: that block is checked (and fetched again if corrupt) like the rest.
      const sealedRoot = asSealedRoot(await this.getNode(cid, { signal, providers: options.providers }))
      if (sealedRoot != null && verifyHeld) await this.holdsIntact(sealedRoot.manifest)
      const manifest = await this.getManifest(cid, { signal, providers: options.providers })
      if (!rootWasLocal) { progress.fetchedBlocks++; progress.fetchedBytes += dagCbor.encode(manifest).byteLength }
      options.accept?.(manifest)
      progress.blocksDone = progress.blocksTotal = 1
      const files: FileEntry[] = []
      const structure = async (role: TreeRole): Promise<void> => {
        const node = manifest.trees[role]
        progress.blocksTotal++
        await ensure(node)
        const tree = asTreeNode(await this.getNode(node, { signal, offline: true }), node)
        progress.blocksTotal += tree.parts.length
        const parts = await Promise.all(tree.parts.map(async p => {
          await ensure(p)
          return asTreePart(await this.getNode(p, { signal, offline: true }), p).entries
        }))
        // Before any chunk is fetched and before the checkpoint is recorded (and so acknowledged).
        await this.checkTree(role, parts.flat(), node, options.allowSetId != null ? async (e) => { await options.allowSetId?.(manifest, e) } : undefined)
        for (const e of parts.flat()) if (e.kind === 'file' && e.inline === null) files.push(e)
      }
      await Promise.all((['criu', 'rootfs', 'data'] as const).map(structure)).catch((err: unknown) => { this.countRefusal(err); throw err })
      await this.fetchFileChunks(files, { signal, providers: options.providers, ensure, verifyHeld }, {
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
      await this.record(cid, manifest)
      return {
        cid, manifest, blocks: progress.blocksDone, fetchedBlocks: progress.fetchedBlocks, fetchedBytes: progress.fetchedBytes,
        repairedBlocks: this.repairedBlocks - repairsBefore, ms: performance.now() - started
      }
    })
  }

  /**
   * Brings the given layers of an image into the local store (blocks already here are not fetched). `totalBytes`
   * counts the layer bytes that must come.
   */
  async fetchImageLayers (imageCid: CID, manifest: ImageManifest, layers: ImageLayer[], options: {
    signal?: AbortSignal
    providers?: string[]
    onProgress?: (progress: ImageFetchProgress) => void
  } = {}): Promise<ImageFetchResult> {
    return await this.lock.withShared(async () => {
      const { signal, providers } = options
      const result: ImageFetchResult = { fetchedBytes: 0, totalBytes: 0, networkBytes: 0 }
      const report = (): void => options.onProgress?.({ fetchedBytes: result.fetchedBytes, totalBytes: result.totalBytes })
      const ensure = async (c: CID): Promise<void> => {
        if (!(await this.backend.has(c))) result.networkBytes += (await this.getBlock(c, { signal, providers })).byteLength
      }
      const unique = [...new Map(layers.map(l => [l.diffId, l])).values()]
      const files: FileEntry[] = []
      for (const layer of unique) {
        await ensure(layer.cid)
        const file = asLayerFile(await this.getNode(layer.cid, { signal, offline: true }), layer.cid)
        if (file.size !== layer.bytes) throw new BundleFormatError(`${layer.cid.toString()}: layer ${layer.diffId} is ${file.size} bytes, its image says ${layer.bytes}`)
        if (file.inline === null) files.push(file)
      }
      await this.fetchFileChunks(files, { signal, providers, ensure }, {
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
   * Remembers fetched layers under their diffIds, and the image once all its layers are here. Only after Docker
   * loaded them: Docker checks each layer's diffId, this store does not hash whole layers.
   */
  async recordImageLayers (imageCid: CID, manifest: ImageManifest, layers: ImageLayer[]): Promise<void> {
    for (const layer of layers) await this.backend.writeRecord(layerKey(layer.diffId), layer.cid.bytes)
    const all = await Promise.all(manifest.layers.map(async l => await this.hasLayer(l.diffId)))
    if (all.every(Boolean)) await this.backend.writeRecord(`${IMAGE_PREFIX}/${imageKey(manifest.imageId)}`, imageCid.bytes)
  }

  /**
   * The chunks of `files` that this store lacks, fetched: chunk lists first (through `ensure`), then the missing
   * chunks in requests of at most REQUEST_BYTES, from the providers' stores and then bitswap for what they withheld.
   */
  private async fetchFileChunks (files: FileEntry[], options: { signal?: AbortSignal, providers?: string[], ensure: (c: CID) => Promise<void>, verifyHeld?: boolean }, on: {
    listed: (lists: number, chunks: number) => void
    present: (chunks: number) => void
    missing?: (bytes: number) => void
    fetched: (blocks: number, bytes: number) => void
  }): Promise<void> {
    const { signal, providers } = options
    const chunks: WantedChunk[] = []
    const lists = files.flatMap(f => f.lists.map((cid, index) => ({ cid, index, file: f })))
    await pool(lists, this.fetchConcurrency, async ({ cid, index, file }) => {
      await options.ensure(cid)
      const first = index * LIST_FANOUT
      asChunkList(await this.getNode(cid, { signal, offline: true }), cid).chunks.forEach((c, i) => {
        chunks.push({ cid: c, bytes: Math.max(0, Math.min(file.chunkSize, file.size - (first + i) * file.chunkSize)) })
      })
    }, signal)
    on.listed(lists.length, chunks.length)
    const missing: WantedChunk[] = []
    const queued = new Set<string>()
    for (let i = 0; i < chunks.length; i += WRITE_BATCH) {
      const batch = chunks.slice(i, i + WRITE_BATCH)
      const present = await Promise.all(batch.map(async c => options.verifyHeld === true
        ? await this.holdsIntact(c.cid)
        : this.known.has(c.cid.toString()) || await this.backend.has(c.cid)))
      batch.forEach((c, j) => {
        const key = c.cid.toString()
        if (present[j] !== true && !queued.has(key)) { missing.push(c); queued.add(key) }
      })
    }
    on.present(chunks.length - missing.length)
    on.missing?.(missing.reduce((sum, c) => sum + c.bytes, 0))
    let viaBitswap = missing
    const corrupt = new Set<string>()
    const exchange = this.exchange
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
        await this.backend.putMany(verified, { signal })
        for (const v of verified) this.known.add(v.cid.toString())
        on.fetched(verified.length, bytes)
      }, signal)
    }
    await pool(viaBitswap, this.fetchConcurrency, async ({ cid }) => {
      let bytes: Uint8Array
      try {
        bytes = await this.getBlock(cid, { signal, providers })
      } catch (err) {
        if (corrupt.has(cid.toString()) && err instanceof BlockUnavailableError) throw new BlockCorruptError(cid)
        throw err
      }
      this.known.add(cid.toString())
      on.fetched(1, bytes.byteLength)
    }, signal)
  }

  /**
   * A tar for `docker load`, assembled from the local store while it is read: the config, the layers from index
   * `fromLayer` on (Docker looks up the chain of each layer and opens a layer's file only when that chain is
   * missing), and manifest.json.
   */
  async * imageArchive (manifest: ImageManifest, fromLayer: number, options: { signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
    const entry = manifest.dockerManifest
    yield tarFileHeader(entry.Config, manifest.config.byteLength)
    yield manifest.config
    yield tarPadding(manifest.config.byteLength)
    for (let i = fromLayer; i < manifest.layers.length; i++) {
      const layer = manifest.layers[i] as ImageLayer
      const file = asLayerFile(await this.getNode(layer.cid, { ...options, offline: true }), layer.cid)
      yield tarFileHeader(entry.Layers[i] as string, file.size)
      yield * this.readFile(file, options)
      yield tarPadding(file.size)
    }
    const json = new TextEncoder().encode(JSON.stringify([{ Config: entry.Config, RepoTags: manifest.tags.length > 0 ? manifest.tags : null, Layers: entry.Layers }]))
    yield tarFileHeader('manifest.json', json.byteLength)
    yield json
    yield tarPadding(json.byteLength)
    yield TAR_END
  }

  /** Verified content of a file entry, chunk by chunk, from the local store. */
  async * readFile (entry: FileEntry, options: { signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
    if (entry.inline !== null) { yield entry.inline; return }
    let size = 0
    for (const l of entry.lists) {
      const list = asChunkList(await this.getNode(l, { ...options, offline: true }), l)
      // Read ahead a few chunks: level reads are cheap but sequential awaits are not.
      for (let i = 0; i < list.chunks.length; i += 64) {
        const blocks = await Promise.all(list.chunks.slice(i, i + 64).map(async c => this.openChunk(entry, await this.getBlock(c, { ...options, offline: true }))))
        for (const b of blocks) { size += b.byteLength; yield b }
      }
    }
    if (size !== entry.size) throw new BundleFormatError(`${entry.path}: content is ${size} bytes, manifest says ${entry.size}`)
  }

  /**
   * Writes a stored tree under `dest` (which may exist). Everything is read from the local store. With `previous`,
   * `dest` must hold exactly that tree (as written by this method): only what differs is written, e.g. the changed
   * 4 KiB pages of a page image, and what the new tree lacks is removed. Nothing is written outside `dest` and no
   * symlink is followed (see tree-safety.ts); set-id bits need `allowSetId` (the mission's image has them too).
   */
  async materializeTree (treeCid: CID, dest: string, options: MaterializeOptions = {}): Promise<{ files: number, bytes: number }> {
    try {
      return await this.writeTree(treeCid, dest, options)
    } catch (err) { this.countRefusal(err); throw err }
  }

  private async writeTree (treeCid: CID, dest: string, options: MaterializeOptions): Promise<{ files: number, bytes: number }> {
    const tree = asTreeNode(await this.getNode(treeCid, { ...options, offline: true }), treeCid)
    const entries = await this.treeEntryList(treeCid, options.signal)
    await this.checkTree(options.role ?? 'rootfs', entries, treeCid, options.allowSetId)
    const before = options.previous != null ? await this.treeEntries(options.previous, options.signal) : new Map<string, TreeEntry>()
    await mkdir(dest, { recursive: true })
    let files = 0
    let bytes = 0
    const dirModes: Array<{ rel: string, mode: number }> = []
    const verified = new Set<string>()
    for (const e of entries) {
      options.signal?.throwIfAborted()
      const target = await beneath(dest, e.path, verified)
      const old = before.get(e.path)
      before.delete(e.path)
      if (old != null && old.kind !== e.kind) await rm(target, { recursive: true, force: true })
      // A directory this write checked may be replaced below by something else: check again from here on.
      if (e.kind !== 'dir' && verified.has(target)) verified.clear()
      switch (e.kind) {
        case 'dir': {
          const st = await lstat(target).catch(() => null)
          if (st != null && !st.isDirectory()) await rm(target, { force: true })
          if (st == null || !st.isDirectory()) await mkdir(target)
          const fh = await openDirNoFollow(target)
          try { await fh.chown(e.uid, e.gid) } finally { await fh.close() }
          dirModes.push({ rel: e.path, mode: e.mode })
          break
        }
        case 'symlink':
          await rm(target, { force: true })
          await symlink(e.target, target)
          break
        case 'whiteout':
          await rm(target, { force: true, recursive: true })
          await mknodWhiteout(target)
          break
        case 'file': {
          if (old?.kind === 'file' && old.inline == null && e.inline == null && old.size === e.size && old.chunkSize === e.chunkSize) {
            await this.patchFile(target, old, e, options.signal)
          } else {
            await this.writeFile(target, e, options.signal)
          }
          files++
          bytes += e.size
          break
        }
      }
    }
    // Whatever the previous tree had and this one lacks, deepest first; gone already when a directory on its way is.
    for (const path of [...before.keys()].sort((a, b) => b.length - a.length)) {
      const target = await existingBeneath(dest, path)
      if (target != null) await rm(target, { recursive: true, force: true })
    }
    for (const d of dirModes.reverse()) {
      const fh = await openDirNoFollow(await beneath(dest, d.rel, new Set()))
      try { await fh.chmod(d.mode) } finally { await fh.close() }
    }
    if (files !== tree.files || bytes !== tree.bytes) {
      throw new BundleFormatError(`${treeCid.toString()}: materialized ${files} files / ${bytes} bytes, tree says ${tree.files} / ${tree.bytes}`)
    }
    return { files, bytes }
  }

  /** Refusals of unsafe trees (fetch and materialize), by reason, since this store opened. */
  readonly unsafeTreesRefused = new Map<UnsafeTreeReason, number>()

  /** Throws an UnsafeTreeError for a tree a container could not have produced; see checkTreeEntries. */
  async checkTree (role: TreeRole, entries: Iterable<TreeEntry>, treeCid: CID, allowSetId?: (entries: SetIdEntry[]) => Promise<void>): Promise<void> {
    const setId = checkTreeEntries(role, entries, `${role} tree ${treeCid.toString()}`)
    if (setId.length === 0) return
    if (allowSetId == null) {
      const first = setId[0] as SetIdEntry
      throw new UnsafeTreeError('set-id bit', first.path, `${role} tree ${treeCid.toString()}: ${first.path} has mode ${first.mode.toString(8)} and no image to compare with`)
    }
    await allowSetId(setId)
  }

  private countRefusal (err: unknown): void {
    if (err instanceof UnsafeTreeError) this.unsafeTreesRefused.set(err.reason, (this.unsafeTreesRefused.get(err.reason) ?? 0) + 1)
  }

  /**
   * Checks files written by materializeTree against the tree's digests: every file's size and every chunk's hash
   * (a CID is the chunk's sha256), every directory and symlink. The first difference found, or null.
   */
  async verifyTreeOnDisk (treeCid: CID, dir: string, signal?: AbortSignal): Promise<string | null> {
    for (const e of (await this.treeEntries(treeCid, signal)).values()) {
      signal?.throwIfAborted()
      if (e.kind === 'whiteout') continue
      const target = await existingBeneath(dir, e.path)
      const st = target == null ? null : await lstat(target).catch(() => null)
      if (target == null || st == null) return `${e.path}: missing`
      if (e.kind === 'dir') { if (!st.isDirectory()) return `${e.path}: not a directory`; continue }
      if (e.kind === 'symlink') { if (!st.isSymbolicLink() || await readlink(target) !== e.target) return `${e.path}: not the symlink it was`; continue }
      if (!st.isFile() || st.size !== e.size) return `${e.path}: ${st.isFile() ? `${st.size} bytes, the checkpoint says ${e.size}` : 'not a file'}`
      const problem = await this.verifyFileOnDisk(target, e, signal)
      if (problem != null) return `${e.path}: ${problem}`
    }
    return null
  }

  private async verifyFileOnDisk (target: string, e: FileEntry, signal?: AbortSignal): Promise<string | null> {
    const fh = await openNoFollow(target, 'read')
    try {
      if (e.inline !== null) {
        const bytes = Buffer.alloc(e.size)
        await fh.read(bytes, 0, e.size, 0)
        return equals(bytes, e.inline) ? null : 'content differs from the checkpoint'
      }
      const buf = Buffer.alloc(e.chunkSize * 64)
      let index = 0
      for (const l of e.lists) {
        const chunks = asChunkList(await this.getNode(l, { signal, offline: true }), l).chunks
        for (let i = 0; i < chunks.length; i += 64) {
          signal?.throwIfAborted()
          const batch = chunks.slice(i, i + 64)
          const { bytesRead } = await fh.read(buf, 0, buf.byteLength, index * e.chunkSize)
          for (let k = 0; k < batch.length; k++) {
            const chunk = buf.subarray(k * e.chunkSize, Math.min(bytesRead, (k + 1) * e.chunkSize))
            if (!(await verifies(batch[k] as CID, e.sealedWith != null ? this.keyOf(Buffer.from(e.sealedWith).toString('hex')).seal(chunk) : chunk))) return `chunk ${index + k} (at byte ${(index + k) * e.chunkSize}) does not match its digest`
          }
          index += batch.length
        }
      }
      return null
    } finally { await fh.close() }
  }

  private async treeEntries (treeCid: CID, signal?: AbortSignal): Promise<Map<string, TreeEntry>> {
    return new Map((await this.treeEntryList(treeCid, signal)).map(e => [e.path, e]))
  }

  /** A tree's entries in order, duplicates included (checkTree refuses them). */
  private async treeEntryList (treeCid: CID, signal?: AbortSignal): Promise<TreeEntry[]> {
    const tree = asTreeNode(await this.getNode(treeCid, { signal, offline: true }), treeCid)
    const entries: TreeEntry[] = []
    for (const p of tree.parts) entries.push(...asTreePart(await this.getNode(p, { signal, offline: true }), p).entries)
    return entries
  }

  private async writeFile (target: string, e: FileEntry, signal?: AbortSignal): Promise<void> {
    // A symlink or directory where the file goes is replaced, never followed.
    const st = await lstat(target).catch(() => null)
    if (st != null && !st.isFile()) await rm(target, { recursive: true, force: true })
    const fh = await openNoFollow(target, 'create')
    try {
      // Page files come in 4 KiB chunks: write them in batches, not one system call per page.
      let pending: Uint8Array[] = []
      let pendingBytes = 0
      for await (const chunk of this.readFile(e, { signal })) {
        pending.push(chunk)
        pendingBytes += chunk.byteLength
        if (pendingBytes >= WRITE_BATCH_BYTES) {
          await fh.writev(pending)
          pending = []
          pendingBytes = 0
        }
      }
      if (pending.length > 0) await fh.writev(pending)
      await setOwnerAndMode(fh, e)
    } finally { await fh.close() }
  }

  /** Rewrites the chunks of `target` (holding `old`) that differ in `e`: same size and chunking, so offsets align. */
  private async patchFile (target: string, old: FileEntry, e: FileEntry, signal?: AbortSignal): Promise<void> {
    const fh = await openNoFollow(target, 'update')
    try {
      for (let li = 0; li < e.lists.length; li++) {
        signal?.throwIfAborted()
        const listCid = e.lists[li] as CID
        const oldCid = old.lists[li]
        if (oldCid?.equals(listCid) === true) continue
        const chunks = asChunkList(await this.getNode(listCid, { signal, offline: true }), listCid).chunks
        const oldChunks = oldCid != null ? asChunkList(await this.getNode(oldCid, { signal, offline: true }), oldCid).chunks : []
        // Every list but a file's last holds LIST_FANOUT chunks.
        const first = li * LIST_FANOUT
        const changed = chunks.map((c, i) => ({ c, at: first + i })).filter(({ c }, i) => oldChunks[i]?.equals(c) !== true)
        for (let i = 0; i < changed.length; i += 64) {
          const batch = changed.slice(i, i + 64)
          const blocks = await Promise.all(batch.map(async ({ c }) => this.openChunk(e, await this.getBlock(c, { signal, offline: true }))))
          for (let k = 0; k < batch.length; k++) {
            const block = blocks[k] as Uint8Array
            await fh.write(block, 0, block.byteLength, (batch[k] as { at: number }).at * e.chunkSize)
          }
        }
      }
      await setOwnerAndMode(fh, e)
    } finally { await fh.close() }
  }

  // ---- retention -----------------------------------------------------------------------------------------

  /** Records a checkpoint as retained for its mission, then collects checkpoints beyond the last `keep`. */
  async retain (cid: CID, manifest: CheckpointManifest): Promise<{ pruned: RetainedCheckpoint[], deletedBlocks: number }> {
    await this.record(cid, manifest)
    // Collection never holds up a checkpoint: while a long write runs (an image upload, a fetch), the surplus
    // stays until a later retain finds the store idle.
    return await this.prune(manifest.mission, this.keep, { wait: false })
  }

  /**
   * Collects a mission's checkpoints beyond the last `keep` after this returns (storing and fetching record a
   * checkpoint themselves), so a checkpoint is announced or acknowledged without waiting for older ones to be
   * deleted. `idle()` waits for the collection.
   */
  collectInBackground (mission: string): void {
    // A failed collection loses nothing: the surplus stays until the next one.
    this.collecting = this.collecting.then(async () => { await this.prune(mission, this.keep, { wait: false }) }).catch(() => {})
  }

  /** Resolves once background collection has finished. */
  async idle (): Promise<void> { await this.collecting }

  private async record (cid: CID, manifest: CheckpointManifest): Promise<void> {
    assertMissionName(manifest.mission)
    await this.backend.writeRecord(`${CHECKPOINT_PREFIX}/${manifest.mission}/${padded(manifest.epoch)}-${padded(manifest.seq)}`, cid.bytes)
  }

  /** Retained checkpoints of a mission, oldest first (by epoch, then sequence number). */
  async checkpoints (mission: string): Promise<RetainedCheckpoint[]> {
    assertMissionName(mission)
    const out: RetainedCheckpoint[] = []
    for await (const { key, value } of this.backend.listRecords(`${CHECKPOINT_PREFIX}/${mission}/`)) {
      const m = /\/(\d+)-(\d+)$/.exec(key)
      if (m?.[1] == null || m[2] == null) continue
      out.push({ mission, epoch: Number(m[1]), seq: Number(m[2]), cid: CID.decode(value) })
    }
    return out.sort((a, b) => a.epoch - b.epoch || a.seq - b.seq)
  }

  async latest (mission: string): Promise<RetainedCheckpoint | null> {
    return (await this.checkpoints(mission)).at(-1) ?? null
  }

  /** Drops all but the newest `keep` checkpoints of a mission and deletes blocks nothing retained links to. */
  async prune (mission: string, keep: number, options: { wait?: boolean } = {}): Promise<{ pruned: RetainedCheckpoint[], deletedBlocks: number }> {
    const nothing = { pruned: [], deletedBlocks: 0 }
    if ((await this.checkpoints(mission)).length <= keep) return nothing
    const run = options.wait === false ? this.lock.tryExclusive.bind(this.lock) : this.lock.withExclusive.bind(this.lock)
    return await run(async () => {
      const all = await this.checkpoints(mission)
      const pinned = new Set(this.pinned())
      const pruned = all.slice(0, Math.max(0, all.length - keep)).filter(p => !pinned.has(p.cid.toString()))
      if (pruned.length === 0) return { pruned, deletedBlocks: 0 }
      for (const p of pruned) await this.backend.deleteRecord(`${CHECKPOINT_PREFIX}/${mission}/${padded(p.epoch)}-${padded(p.seq)}`)
      const liveRoots: CID[] = []
      for await (const { value } of this.backend.listRecords(`${CHECKPOINT_PREFIX}/`)) liveRoots.push(CID.decode(value))
      for await (const { value } of this.backend.listRecords(`${IMAGE_PREFIX}/`)) liveRoots.push(CID.decode(value))
      for await (const { value } of this.backend.listRecords(`${LAYER_PREFIX}/`)) liveRoots.push(CID.decode(value))
      const live = await Promise.all(liveRoots.map(async root => await this.linksOf(root)))
      const dead = new Set<string>()
      for (const p of pruned) {
        for (const c of await this.linksOf(p.cid)) dead.add(c)
        this.linkSets.delete(p.cid.toString())
      }
      const doomed = [...dead].filter(c => !live.some(links => links.has(c))).map(c => CID.parse(c))
      for (const c of doomed) this.known.delete(c.toString())
      await this.backend.deleteMany(doomed)
      return { pruned, deletedBlocks: doomed.length }
    }) ?? nothing
  }

  /**
   * The blocks a retained DAG links to. A DAG found complete is immutable, so its set is kept for the next prune
   * (a mission image alone is ~35k blocks: walking it on every checkpoint would cost ~0.1-0.5 s).
   */
  private async linksOf (root: CID): Promise<Set<string>> {
    const key = root.toString()
    const kept = this.linkSets.get(key)
    if (kept != null) return kept
    const links = new Set<string>()
    if (await this.collectLinks(root, links)) this.linkSets.set(key, links)
    return links
  }

  /**
   * Every block a DAG links to that is present locally, not following `parent` (history is not retained) nor a
   * checkpoint's `imageCid` (images are retained by their own records). Returns whether no linked node was missing.
   */
  private async collectLinks (root: CID, into: Set<string>): Promise<boolean> {
    let complete = true
    const stack = [root]
    while (stack.length > 0) {
      const cid = stack.pop() as CID
      const key = cid.toString()
      if (into.has(key)) continue
      if (cid.code !== dagCbor.code) { into.add(key); continue }
      let node: unknown
      try { node = this.decodeNode(cid, await this.backend.get(cid, { offline: true })) } catch { complete = false; continue }
      try { const sealed = asSealedRoot(node); if (sealed != null) this.openEnvelope(sealed.keys) } catch {}
      into.add(key)
      forEachLink(node, c => stack.push(c))
    }
    return complete
  }
}

async function verifies (cid: CID, bytes: Uint8Array): Promise<boolean> {
  if (cid.multihash.code !== sha256.code) return false
  return equals((await sha256.digest(bytes)).digest, cid.multihash.digest)
}

function forEachLink (value: unknown, visit: (cid: CID) => void): void {
  const cid = CID.asCID(value)
  if (cid != null) { visit(cid); return }
  if (value instanceof Uint8Array || value === null || typeof value !== 'object') return
  if (Array.isArray(value)) { for (const v of value) forEachLink(v, visit); return }
  for (const [k, v] of Object.entries(value)) if (k !== 'parent' && k !== 'imageCid') forEachLink(v, visit)
}

function snapshot (w: WriteCounters): WriteCounters {
  return { blocks: w.blocks, bytes: w.bytes, newBlocks: w.newBlocks, newBytes: w.newBytes }
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

/** Docker's manifest.json entry for the saved image (one image per save). */
function parseDockerManifest (bytes: Uint8Array, imageId: string): DockerManifestEntry {
  let entries: unknown
  try { entries = JSON.parse(new TextDecoder().decode(bytes)) } catch { entries = null }
  const entry = Array.isArray(entries) && entries.length === 1 ? entries[0] as Partial<DockerManifestEntry> : null
  if (entry == null || typeof entry.Config !== 'string' || !Array.isArray(entry.Layers) || !entry.Layers.every(l => typeof l === 'string')) {
    throw new CheckpointError(`docker save of ${imageId}: unexpected manifest.json`)
  }
  return { Config: entry.Config, RepoTags: Array.isArray(entry.RepoTags) ? entry.RepoTags : null, Layers: entry.Layers }
}

/** The image's layer diffIds from its config (RootFS order); the config's sha256 must be the image id. */
function configDiffIds (config: Uint8Array, imageId: string): string[] {
  const digest = `sha256:${createHash('sha256').update(config).digest('hex')}`
  if (digest !== imageId) throw new CheckpointError(`docker save: config hashes to ${digest}, not image id ${imageId}`)
  const parsed = JSON.parse(new TextDecoder().decode(config)) as { rootfs?: { diff_ids?: unknown } }
  const ids = parsed.rootfs?.diff_ids
  if (!Array.isArray(ids) || !ids.every(id => typeof id === 'string')) throw new CheckpointError(`image ${imageId}: config has no rootfs.diff_ids`)
  return ids
}

function layerKey (diffId: string): string {
  return `${LAYER_PREFIX}/${diffId.replace(/^sha256:/, '').replace(/[^A-Za-z0-9]/g, '_')}`
}

function imageKey (imageId: string): string {
  return imageId.replace(/^sha256:/, '').replace(/[^A-Za-z0-9]/g, '_')
}

async function * walk (root: string, rel: string): AsyncGenerator<{ rel: string, abs: string, st: Stats }> {
  const names = (await readdir(join(root, rel))).sort()
  for (const name of names) {
    const r = rel === '' ? name : `${rel}/${name}`
    const abs = join(root, r)
    const st = await lstat(abs)
    yield { rel: r, abs, st }
    if (st.isDirectory()) yield * walk(root, r)
  }
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

/** Owner, then mode (a chown clears set-id bits), through the open file: nothing is looked up by path again. */
async function setOwnerAndMode (fh: FileHandle, e: FileEntry): Promise<void> {
  await fh.chown(e.uid, e.gid)
  await fh.chmod(e.mode)
}

async function mknodWhiteout (path: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn('mknod', [path, 'c', '0', '0'], { stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    p.stderr.on('data', (d: Buffer) => { err += d.toString() })
    p.on('error', reject)
    p.on('close', code => { code === 0 ? resolve() : reject(new CheckpointError(`mknod ${path}: ${err.trim()}`)) })
  })
}
