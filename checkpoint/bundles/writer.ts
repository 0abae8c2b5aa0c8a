// Writing bundles: directories as chunked DAGs (pages chunked at the page size, so unchanged pages keep their CID),
// byte streams, nodes, and images from their `docker save` stream, one file DAG per layer.
import { createReadStream } from 'node:fs'
import { createHash } from 'node:crypto'
import { lstat, readdir, readlink } from 'node:fs/promises'
import type { Stats } from 'node:fs'
import { join, basename } from 'node:path'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import * as raw from 'multiformats/codecs/raw'
import type { BlockPair, BundleBackend } from '../backend.ts'
import { IMAGE_FORMAT, type CheckpointManifest, type DockerManifestEntry, type FileEntry, type ImageLayer, type ImageManifest, type TreeEntry, type TreeNode } from '../format.ts'
import { CheckpointError } from '../errors.ts'
import { readTar, readSmall, drain } from '../tar.ts'
import type { ContentKey } from '../sealing.ts'
import type { Blocks } from './blocks.ts'
import type { StoreLock } from './store-lock.ts'
import type { Retention } from './retention.ts'

/** CRIU page images are chunked at the page size, aligned to the file start: unchanged pages keep their CID. */
export const PAGE_CHUNK_SIZE = 4096
export const FILE_CHUNK_SIZE = 64 * 1024
export const INLINE_LIMIT = 1024
/** Image layers travel whole or not at all (a layer is deduplicated by its diffId, not by chunk): big chunks. */
export const LAYER_CHUNK_SIZE = 1024 * 1024
/** Chunks per chunk list: every list but a file's last holds this many. */
export const LIST_FANOUT = 4096
const PART_ENTRIES = 1000
const WRITE_BATCH = 512
/** Bytes of blocks buffered before a write to the backend (1 MiB layer chunks would otherwise gather 512 MiB). */
const WRITE_BATCH_LIMIT_BYTES = 8 * 1024 * 1024
const READ_BUFFER = 1024 * 1024
/** Entries of the sealed-chunk cache (~100 bytes each): the pages of a 1 GiB mission. */
const SEAL_CACHE_ENTRIES = 262_144
/** Largest image config / manifest.json accepted from `docker save`. */
const IMAGE_METADATA_LIMIT = 8 * 1024 * 1024

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

export type StoredStream = Pick<FileEntry, 'size' | 'inline' | 'chunkSize' | 'lists' | 'sealedWith'>

export interface BundleWriter {
  putTree: (dir: string) => Promise<StoredTree>
  putStream: (source: AsyncIterable<Uint8Array>, chunkSize: number) => Promise<StoredStream>
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

export interface ImageInput { imageId: string, tags: string[], arch: string }

export interface StoredImage extends WriteCounters {
  cid: CID
  manifest: ImageManifest
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

/** Batches blocks into the backend and counts which of them are new to it. */
class BlockBatch implements WriteCounters {
  blocks = 0
  bytes = 0
  newBlocks = 0
  newBytes = 0
  #batch: BlockPair[] = []
  #batchBytes = 0
  readonly #seen = new Set<string>()
  readonly #backend: BundleBackend
  readonly #signal: AbortSignal | undefined
  readonly #known: Set<string>
  /** Key every block of this write is sealed under (null: clear). */
  readonly seal: ContentKey | null

  constructor (backend: BundleBackend, signal: AbortSignal | undefined, known: Set<string>, seal: ContentKey | null) {
    this.#backend = backend
    this.#signal = signal
    this.#known = known
    this.seal = seal
  }

  /** A block the store holds already (see the seal cache): counted, not written again. */
  addKnown (cid: CID, byteLength: number): boolean {
    const key = cid.toString()
    if (!this.#known.has(key)) return false
    if (this.#seen.has(key)) return true
    this.#seen.add(key)
    this.blocks++
    this.bytes += byteLength
    return true
  }

  async add (block: BlockPair): Promise<void> {
    const key = block.cid.toString()
    if (this.#seen.has(key)) return
    this.#seen.add(key)
    this.blocks++
    this.bytes += block.bytes.byteLength
    this.#batch.push(block)
    this.#batchBytes += block.bytes.byteLength
    if (this.#batch.length >= WRITE_BATCH || this.#batchBytes >= WRITE_BATCH_LIMIT_BYTES) await this.flush()
  }

  async flush (): Promise<void> {
    this.#signal?.throwIfAborted()
    const batch = this.#batch.filter(b => !this.#known.has(b.cid.toString()))
    this.#batch = []
    this.#batchBytes = 0
    const present = await Promise.all(batch.map(async b => await this.#backend.has(b.cid)))
    const fresh = batch.filter((_, i) => present[i] !== true)
    for (const b of fresh) { this.newBlocks++; this.newBytes += b.bytes.byteLength }
    if (fresh.length > 0) await this.#backend.putMany(fresh, { signal: this.#signal })
    for (const b of batch) this.#known.add(b.cid.toString())
  }
}

export interface BundleWritingComponents {
  blocks: Blocks
  lock: StoreLock
  retention: Retention
}

export class BundleWriting {
  readonly #blocks: Blocks
  readonly #lock: StoreLock
  readonly #retention: Retention
  /** Sealed chunk CIDs by key and plaintext hash (in memory only): unchanged pages are not sealed again. */
  readonly #sealCache = new Map<string, { cid: CID, bytes: number }>()

  constructor (components: BundleWritingComponents) {
    this.#blocks = components.blocks
    this.#lock = components.lock
    this.#retention = components.retention
  }

  /**
   * Runs `fn` with a writer; blocks it adds stay safe from pruning until `fn` resolves. With `seal`, every block
   * the writer makes is sealed under that key (nodes given `clear` excepted).
   */
  async write<T> (fn: (w: BundleWriter) => Promise<T>, signal?: AbortSignal, seal?: ContentKey): Promise<T> {
    if (seal != null) this.#blocks.keyring.set(seal.idHex, seal)
    return await this.#lock.shared(async () => {
      const batch = new BlockBatch(this.#blocks.backend, signal, this.#blocks.known, seal ?? null)
      const result = await fn({
        putTree: async (dir) => await this.#storeTree(dir, batch, signal),
        putStream: async (source, chunkSize) => await this.#storeStream(source, chunkSize, batch, signal),
        putNode: async (value, options) => { const b = await encodeNode(value, options?.clear === true ? null : batch.seal); await batch.add(b); return b.cid },
        flush: async () => { await batch.flush() },
        record: async (cid, manifest) => { await this.#retention.record(cid, manifest) },
        counters: batch
      })
      await batch.flush()
      return result
    })
  }

  async #storeTree (dir: string, batch: BlockBatch, signal?: AbortSignal): Promise<StoredTree> {
    const before = snapshot(batch)
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
        const stored = await this.#storeStream(createReadStream(abs, { highWaterMark: READ_BUFFER }), chunkSizeFor(rel), batch, signal)
        entries.push({ kind: 'file', path: rel, mode: st.mode & 0o7777, ...owner, ...stored })
        fileBytes += stored.size
      }
      // Sockets, fifos and devices are not state a mission can carry: skipped.
    }
    const parts: CID[] = []
    for (let i = 0; i < entries.length; i += PART_ENTRIES) {
      const part = await encodeNode({ entries: entries.slice(i, i + PART_ENTRIES) }, batch.seal)
      await batch.add(part)
      parts.push(part.cid)
    }
    const files = entries.filter(e => e.kind === 'file').length
    const node: TreeNode = { parts, files, bytes: fileBytes }
    const root = await encodeNode(node, batch.seal)
    await batch.add(root)
    const after = snapshot(batch)
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
  async #storeStream (source: AsyncIterable<Uint8Array>, chunkSize: number, batch: BlockBatch, signal?: AbortSignal): Promise<StoredStream> {
    const chunks: CID[] = []
    let size = 0
    let pending: Uint8Array[] = []
    let pendingBytes = 0
    let chunking = false
    const emit = async (bytes: Uint8Array): Promise<void> => {
      // A sealed chunk's CID needs the chunk sealed (HMAC, AES-GCM, then SHA-256): for the pages that did not change
      // since the last checkpoint, the CID is looked up by the plaintext's hash instead.
      const seal = batch.seal
      const plainKey = seal != null ? `${seal.idHex}:${createHash('sha256').update(bytes).digest('base64')}` : null
      const cached = plainKey != null ? this.#sealCache.get(plainKey) : undefined
      if (cached != null && batch.addKnown(cached.cid, cached.bytes)) { chunks.push(cached.cid); return }
      const block = await rawBlock(bytes, seal)
      await batch.add(block)
      chunks.push(block.cid)
      if (plainKey != null) {
        if (this.#sealCache.size >= SEAL_CACHE_ENTRIES) this.#sealCache.clear()
        this.#sealCache.set(plainKey, { cid: block.cid, bytes: block.bytes.byteLength })
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
      const list = await encodeNode({ chunks: chunks.slice(i, i + LIST_FANOUT) }, batch.seal)
      await batch.add(list)
      lists.push(list.cid)
    }
    return { size, inline: null, chunkSize, lists, ...(batch.seal != null ? { sealedWith: batch.seal.id } : {}) }
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
      await this.#retention.recordImage(cid, info.imageId, stored)
      return { cid, manifest, ...snapshot(w.counters) }
    }, signal)
  }
}

function snapshot (w: WriteCounters): WriteCounters {
  return { blocks: w.blocks, bytes: w.bytes, newBlocks: w.newBlocks, newBytes: w.newBytes }
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
