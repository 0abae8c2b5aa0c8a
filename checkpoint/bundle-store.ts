// Content-addressed checkpoint bundles over a BundleBackend (Helia by default): store directories as
// chunked DAGs, fetch whole bundles from the swarm, materialize them, keep the last K per mission.
import { createReadStream } from 'node:fs'
import { lstat, mkdir, open, readdir, readlink, symlink, chown, chmod, rm } from 'node:fs/promises'
import { spawn } from 'node:child_process'
import type { Stats } from 'node:fs'
import { join, posix, basename } from 'node:path'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import * as raw from 'multiformats/codecs/raw'
import { equals } from 'uint8arrays/equals'
import type { BlockPair, BundleBackend } from './backend.ts'
import {
  asChunkList, asImageManifest, asManifest, asTreeNode, asTreePart,
  type CheckpointManifest, type FileEntry, type ImageManifest, type TreeEntry, type TreeNode
} from './format.ts'
import { BlockCorruptError, BlockUnavailableError, BundleFormatError, CheckpointError } from './errors.ts'
import { SharedExclusiveLock } from './lock.ts'
import { BATCH_SIZE, type BlockSource } from './block-exchange.ts'

/** CRIU page images are chunked at the page size, aligned to the file start: unchanged pages keep their CID. */
export const PAGE_CHUNK_SIZE = 4096
export const FILE_CHUNK_SIZE = 64 * 1024
export const INLINE_LIMIT = 1024
/** Bytes gathered before one write when a bundle's files are written back to disk. */
const WRITE_BATCH_BYTES = 1024 * 1024
const LIST_FANOUT = 4096
const PART_ENTRIES = 1000
const WRITE_BATCH = 512
const READ_BUFFER = 1024 * 1024

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
  putStream: (source: AsyncIterable<Uint8Array>, chunkSize: number) => Promise<Pick<FileEntry, 'size' | 'inline' | 'chunkSize' | 'lists'>>
  putNode: (value: unknown) => Promise<CID>
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
  /** Also fetch the mission image the manifest links to (default true). */
  includeImage?: boolean
  /** Peer ids to ask first for batched blocks (default: every connected peer). */
  providers?: string[]
}

export interface FetchResult {
  cid: CID
  manifest: CheckpointManifest
  blocks: number
  fetchedBlocks: number
  fetchedBytes: number
  ms: number
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
}

const MISSION_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/
export function assertMissionName (mission: string): void {
  if (!MISSION_NAME.test(mission)) throw new CheckpointError(`invalid mission name ${JSON.stringify(mission)}: use letters, digits, '.', '_' or '-'`)
}

export async function encodeNode (value: unknown): Promise<BlockPair> {
  const bytes = dagCbor.encode(value)
  return { cid: CID.createV1(dagCbor.code, await sha256.digest(bytes)), bytes }
}

async function rawBlock (bytes: Uint8Array): Promise<BlockPair> {
  return { cid: CID.createV1(raw.code, await sha256.digest(bytes)), bytes }
}

/** Batches blocks into the backend and counts which of them are new to it. */
class BlockWriter implements WriteCounters {
  blocks = 0
  bytes = 0
  newBlocks = 0
  newBytes = 0
  private batch: BlockPair[] = []
  private readonly seen = new Set<string>()
  private readonly backend: BundleBackend
  private readonly signal: AbortSignal | undefined
  private readonly known: Set<string>

  constructor (backend: BundleBackend, signal: AbortSignal | undefined, known: Set<string>) {
    this.backend = backend
    this.signal = signal
    this.known = known
  }

  async add (block: BlockPair): Promise<void> {
    const key = block.cid.toString()
    if (this.seen.has(key)) return
    this.seen.add(key)
    this.blocks++
    this.bytes += block.bytes.byteLength
    this.batch.push(block)
    if (this.batch.length >= WRITE_BATCH) await this.flush()
  }

  async flush (): Promise<void> {
    this.signal?.throwIfAborted()
    const batch = this.batch.filter(b => !this.known.has(b.cid.toString()))
    this.batch = []
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

  constructor (options: BundleStoreOptions) {
    if (options.keep != null && (!Number.isInteger(options.keep) || options.keep < 1)) throw new CheckpointError('keep must be an integer >= 1')
    this.backend = options.backend
    this.keep = options.keep ?? 3
    this.fetchConcurrency = options.fetchConcurrency ?? 256
    this.blockTimeoutMs = options.blockTimeoutMs ?? 30_000
    this.exchange = options.exchange
  }

  // ---- writing -------------------------------------------------------------------------------------------

  /** Runs `fn` with a writer; blocks it adds stay safe from pruning until `fn` resolves. */
  async write<T> (fn: (w: BundleWriter) => Promise<T>, signal?: AbortSignal): Promise<T> {
    return await this.lock.withShared(async () => {
      const writer = new BlockWriter(this.backend, signal, this.known)
      const result = await fn({
        putTree: async (dir) => await this.storeTree(dir, writer, signal),
        putStream: async (source, chunkSize) => await this.storeStream(source, chunkSize, writer, signal),
        putNode: async (value) => { const b = await encodeNode(value); await writer.add(b); return b.cid },
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
      const part = await encodeNode({ entries: entries.slice(i, i + PART_ENTRIES) })
      await writer.add(part)
      parts.push(part.cid)
    }
    const files = entries.filter(e => e.kind === 'file').length
    const node: TreeNode = { parts, files, bytes: fileBytes }
    const root = await encodeNode(node)
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
  private async storeStream (source: AsyncIterable<Uint8Array>, chunkSize: number, writer: BlockWriter, signal?: AbortSignal): Promise<Pick<FileEntry, 'size' | 'inline' | 'chunkSize' | 'lists'>> {
    const chunks: CID[] = []
    let size = 0
    let pending: Uint8Array[] = []
    let pendingBytes = 0
    let chunking = false
    const emit = async (bytes: Uint8Array): Promise<void> => {
      const block = await rawBlock(bytes)
      await writer.add(block)
      chunks.push(block.cid)
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
      const list = await encodeNode({ chunks: chunks.slice(i, i + LIST_FANOUT) })
      await writer.add(list)
      lists.push(list.cid)
    }
    return { size, inline: null, chunkSize, lists }
  }

  /** Stores an image archive (`docker save` output) and remembers it under its image id. */
  async putImage (archive: AsyncIterable<Uint8Array>, info: { imageId: string, tags: string[], arch: string }, signal?: AbortSignal): Promise<{ cid: CID } & WriteCounters> {
    return await this.write(async (w) => {
      const stored = await w.putStream(archive, FILE_CHUNK_SIZE)
      const manifest: ImageManifest = {
        format: 'tandem/image/1',
        imageId: info.imageId,
        tags: info.tags,
        arch: info.arch,
        size: stored.size,
        archive: { kind: 'file', path: 'image.tar', mode: 0o644, uid: 0, gid: 0, ...stored }
      }
      const cid = await w.putNode(manifest)
      await w.flush()
      await this.backend.writeRecord(`${IMAGE_PREFIX}/${imageKey(info.imageId)}`, cid.bytes)
      return { cid, ...snapshot(w.counters) }
    }, signal)
  }

  private async hasCompleteImage (imageId: string, cid: CID): Promise<boolean> {
    return (await this.imageCid(imageId))?.equals(cid) === true
  }

  /** The CID under which this store holds an image, if its whole DAG is present. */
  async imageCid (imageId: string): Promise<CID | null> {
    const rec = await this.backend.readRecord(`${IMAGE_PREFIX}/${imageKey(imageId)}`)
    if (rec == null) return null
    const cid = CID.decode(rec)
    return (await this.backend.has(cid)) ? cid : null
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
      if (timeout?.aborted === true) throw new BlockUnavailableError(cid, `no peer delivered it within ${this.blockTimeoutMs} ms`)
      if (options.offline === true) throw new BlockUnavailableError(cid, 'not in the local store')
      throw new BlockUnavailableError(cid, err?.message ?? String(err))
    }
    if (!(await verifies(cid, bytes))) throw new BlockCorruptError(cid)
    return bytes
  }

  async getNode (cid: CID, options: { signal?: AbortSignal, offline?: boolean, providers?: string[] } = {}): Promise<unknown> {
    if (cid.code !== dagCbor.code) throw new BundleFormatError(`${cid.toString()}: expected a dag-cbor node`)
    const bytes = await this.getBlock(cid, options)
    try { return dagCbor.decode(bytes) } catch (err: any) { throw new BundleFormatError(`${cid.toString()}: undecodable dag-cbor (${err.message})`) }
  }

  async getManifest (cid: CID, options: { signal?: AbortSignal, offline?: boolean, providers?: string[] } = {}): Promise<CheckpointManifest> {
    return asManifest(await this.getNode(cid, options), cid)
  }

  async getImageManifest (cid: CID, options: { signal?: AbortSignal, offline?: boolean } = {}): Promise<ImageManifest> {
    return asImageManifest(await this.getNode(cid, options), cid)
  }

  /** Brings every block of a checkpoint (and its image) into the local store; only missing blocks cross the network. */
  async fetch (cid: CID, options: FetchOptions = {}): Promise<FetchResult> {
    return await this.lock.withShared(async () => {
      const started = performance.now()
      const { signal } = options
      const progress: FetchProgress = { blocksDone: 0, blocksTotal: 0, fetchedBytes: 0, fetchedBlocks: 0 }
      const report = (): void => options.onProgress?.({ ...progress })
      const ensure = async (c: CID): Promise<void> => {
        if (!(await this.backend.has(c))) {
          const bytes = await this.getBlock(c, { signal, providers: options.providers })
          progress.fetchedBlocks++
          progress.fetchedBytes += bytes.byteLength
        }
        progress.blocksDone++
      }
      const rootWasLocal = await this.backend.has(cid)
      const manifest = await this.getManifest(cid, { signal, providers: options.providers })
      if (!rootWasLocal) { progress.fetchedBlocks++; progress.fetchedBytes += dagCbor.encode(manifest).byteLength }
      options.accept?.(manifest)
      progress.blocksDone = progress.blocksTotal = 1
      const files: FileEntry[] = []
      const structure = async (node: CID): Promise<void> => {
        progress.blocksTotal++
        await ensure(node)
        const tree = asTreeNode(await this.getNode(node, { signal, offline: true }), node)
        progress.blocksTotal += tree.parts.length
        await Promise.all(tree.parts.map(async p => {
          await ensure(p)
          const part = asTreePart(await this.getNode(p, { signal, offline: true }), p)
          for (const e of part.entries) if (e.kind === 'file' && e.inline === null) files.push(e)
        }))
      }
      await Promise.all([manifest.trees.criu, manifest.trees.rootfs, manifest.trees.data].map(structure))
      let image: ImageManifest | null = null
      const imageCid = manifest.spec.imageCid
      if (options.includeImage !== false && imageCid != null && !(await this.hasCompleteImage(manifest.spec.imageId, imageCid))) {
        progress.blocksTotal++
        await ensure(imageCid)
        image = asImageManifest(await this.getNode(imageCid, { signal, offline: true }), imageCid)
        files.push(image.archive)
      }
      const lists = files.flatMap(f => f.lists)
      progress.blocksTotal += lists.length
      report()
      const chunkCids: CID[] = []
      await pool(lists, this.fetchConcurrency, async (l) => {
        await ensure(l)
        chunkCids.push(...asChunkList(await this.getNode(l, { signal, offline: true }), l).chunks)
      }, signal)
      progress.blocksTotal += chunkCids.length
      const missing: CID[] = []
      for (let i = 0; i < chunkCids.length; i += WRITE_BATCH) {
        const batch = chunkCids.slice(i, i + WRITE_BATCH)
        const present = await Promise.all(batch.map(async c => this.known.has(c.toString()) || await this.backend.has(c)))
        batch.forEach((c, j) => { if (present[j] !== true) missing.push(c) })
      }
      progress.blocksDone += chunkCids.length - missing.length
      report()
      let viaBitswap = missing
      const corrupt = new Set<string>()
      const exchange = this.exchange
      if (exchange != null && missing.length > 0) {
        viaBitswap = []
        const batches: CID[][] = []
        for (let i = 0; i < missing.length; i += BATCH_SIZE) batches.push(missing.slice(i, i + BATCH_SIZE))
        await pool(batches, 4, async (batch) => {
          const got = await exchange.fetchBlocks(batch, { signal, providers: options.providers })
          const verified: BlockPair[] = []
          for (const c of batch) {
            const bytes = got.get(c.toString())
            if (bytes == null) { viaBitswap.push(c); continue }
            if (!(await verifies(c, bytes))) { corrupt.add(c.toString()); viaBitswap.push(c); continue }
            verified.push({ cid: c, bytes })
            progress.fetchedBlocks++
            progress.fetchedBytes += bytes.byteLength
          }
          await this.backend.putMany(verified, { signal })
          for (const v of verified) this.known.add(v.cid.toString())
          progress.blocksDone += verified.length
          report()
        }, signal)
      }
      let sinceReport = 0
      await pool(viaBitswap, this.fetchConcurrency, async (c) => {
        try {
          await ensure(c)
        } catch (err) {
          if (corrupt.has(c.toString()) && err instanceof BlockUnavailableError) throw new BlockCorruptError(c)
          throw err
        }
        if (++sinceReport >= 256) { sinceReport = 0; report() }
      }, signal)
      report()
      // The image DAG is complete now: later checkpoints of the mission skip walking it.
      if (image != null && imageCid != null) await this.backend.writeRecord(`${IMAGE_PREFIX}/${imageKey(manifest.spec.imageId)}`, imageCid.bytes)
      // Recorded before the lock is released, for the reason given at BundleWriter.record.
      await this.record(cid, manifest)
      return { cid, manifest, blocks: progress.blocksDone, fetchedBlocks: progress.fetchedBlocks, fetchedBytes: progress.fetchedBytes, ms: performance.now() - started }
    })
  }

  /** Verified content of a file entry, chunk by chunk, from the local store. */
  async * readFile (entry: FileEntry, options: { signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
    if (entry.inline !== null) { yield entry.inline; return }
    let size = 0
    for (const l of entry.lists) {
      const list = asChunkList(await this.getNode(l, { ...options, offline: true }), l)
      // Read ahead a few chunks: level reads are cheap but sequential awaits are not.
      for (let i = 0; i < list.chunks.length; i += 64) {
        const blocks = await Promise.all(list.chunks.slice(i, i + 64).map(async c => await this.getBlock(c, { ...options, offline: true })))
        for (const b of blocks) { size += b.byteLength; yield b }
      }
    }
    if (size !== entry.size) throw new BundleFormatError(`${entry.path}: content is ${size} bytes, manifest says ${entry.size}`)
  }

  /**
   * Writes a stored tree under `dest` (which may exist). Everything is read from the local store. With `previous`,
   * `dest` must hold exactly that tree (as written by this method): only what differs is written, e.g. the changed
   * 4 KiB pages of a page image, and what the new tree lacks is removed.
   */
  async materializeTree (treeCid: CID, dest: string, options: { signal?: AbortSignal, previous?: CID } = {}): Promise<{ files: number, bytes: number }> {
    const tree = asTreeNode(await this.getNode(treeCid, { ...options, offline: true }), treeCid)
    const before = options.previous != null ? await this.treeEntries(options.previous, options.signal) : new Map<string, TreeEntry>()
    await mkdir(dest, { recursive: true })
    let files = 0
    let bytes = 0
    const dirModes: Array<{ path: string, mode: number }> = []
    for (const p of tree.parts) {
      const part = asTreePart(await this.getNode(p, { ...options, offline: true }), p)
      for (const e of part.entries) {
        options.signal?.throwIfAborted()
        const target = join(dest, ...e.path.split(posix.sep))
        const old = before.get(e.path)
        before.delete(e.path)
        if (old != null && old.kind !== e.kind) await rm(target, { recursive: true, force: true })
        switch (e.kind) {
          case 'dir':
            await mkdir(target, { recursive: true })
            await chown(target, e.uid, e.gid)
            dirModes.push({ path: target, mode: e.mode })
            break
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
            await chown(target, e.uid, e.gid)
            await chmod(target, e.mode)
            files++
            bytes += e.size
            break
          }
        }
      }
    }
    // Whatever the previous tree had and this one lacks, deepest first.
    for (const path of [...before.keys()].sort((a, b) => b.length - a.length)) await rm(join(dest, ...path.split(posix.sep)), { recursive: true, force: true })
    for (const d of dirModes.reverse()) await chmod(d.path, d.mode)
    if (files !== tree.files || bytes !== tree.bytes) {
      throw new BundleFormatError(`${treeCid.toString()}: materialized ${files} files / ${bytes} bytes, tree says ${tree.files} / ${tree.bytes}`)
    }
    return { files, bytes }
  }

  private async treeEntries (treeCid: CID, signal?: AbortSignal): Promise<Map<string, TreeEntry>> {
    const tree = asTreeNode(await this.getNode(treeCid, { signal, offline: true }), treeCid)
    const entries = new Map<string, TreeEntry>()
    for (const p of tree.parts) for (const e of asTreePart(await this.getNode(p, { signal, offline: true }), p).entries) entries.set(e.path, e)
    return entries
  }

  private async writeFile (target: string, e: FileEntry, signal?: AbortSignal): Promise<void> {
    const fh = await open(target, 'w', 0o600)
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
    } finally { await fh.close() }
  }

  /** Rewrites the chunks of `target` (holding `old`) that differ in `e`: same size and chunking, so offsets align. */
  private async patchFile (target: string, old: FileEntry, e: FileEntry, signal?: AbortSignal): Promise<void> {
    const fh = await open(target, 'r+')
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
          const blocks = await Promise.all(batch.map(async ({ c }) => await this.getBlock(c, { signal, offline: true })))
          for (let k = 0; k < batch.length; k++) {
            const block = blocks[k] as Uint8Array
            await fh.write(block, 0, block.byteLength, (batch[k] as { at: number }).at * e.chunkSize)
          }
        }
      }
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
      const pruned = all.slice(0, Math.max(0, all.length - keep))
      if (pruned.length === 0) return { pruned, deletedBlocks: 0 }
      for (const p of pruned) await this.backend.deleteRecord(`${CHECKPOINT_PREFIX}/${mission}/${padded(p.epoch)}-${padded(p.seq)}`)
      const liveRoots: CID[] = []
      for await (const { value } of this.backend.listRecords(`${CHECKPOINT_PREFIX}/`)) liveRoots.push(CID.decode(value))
      for await (const { value } of this.backend.listRecords(`${IMAGE_PREFIX}/`)) liveRoots.push(CID.decode(value))
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
      try { node = dagCbor.decode(await this.backend.get(cid, { offline: true })) } catch { complete = false; continue }
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

async function mknodWhiteout (path: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn('mknod', [path, 'c', '0', '0'], { stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    p.stderr.on('data', (d: Buffer) => { err += d.toString() })
    p.on('error', reject)
    p.on('close', code => { code === 0 ? resolve() : reject(new CheckpointError(`mknod ${path}: ${err.trim()}`)) })
  })
}
