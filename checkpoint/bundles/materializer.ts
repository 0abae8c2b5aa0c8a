// Writing stored trees back to disk (only what changed since a previous tree, never outside the destination nor
// through a symlink), checking files on disk against their digests, and image tars for `docker load`.
import { lstat, mkdir, readlink, symlink, rm, type FileHandle } from 'node:fs/promises'
import { spawn } from 'node:child_process'
import type { CID } from 'multiformats/cid'
import { equals } from 'uint8arrays/equals'
import { asChunkList, asLayerFile, asTreeNode, asTreePart, type FileEntry, type ImageLayer, type ImageManifest, type TreeEntry } from '../format.ts'
import { BundleFormatError, CheckpointError } from '../errors.ts'
import { tarFileHeader, tarPadding, TAR_END } from '../tar.ts'
import { beneath, existingBeneath, openDirNoFollow, openNoFollow, type SetIdEntry, type TreeRole } from '../tree-safety.ts'
import { verifies, type Blocks } from './blocks.ts'
import type { TreeGuard } from './tree-guard.ts'
import { LIST_FANOUT } from './writer.ts'

/** Bytes gathered before one write when a bundle's files are written back to disk. */
const WRITE_BATCH_BYTES = 1024 * 1024

export interface MaterializeOptions {
  signal?: AbortSignal
  previous?: CID
  /** Which checkpoint directory the tree fills (what it may hold, see checkTreeEntries). Default rootfs. */
  role?: TreeRole
  /** Throws when entries with set-id bits are not the mission image's own (see setIdInImage); without it they are refused. */
  allowSetId?: (entries: SetIdEntry[]) => Promise<void>
}

export interface MaterializerComponents { blocks: Blocks, guard: TreeGuard }

export class Materializer {
  readonly #blocks: Blocks
  readonly #guard: TreeGuard

  constructor (components: MaterializerComponents) {
    this.#blocks = components.blocks
    this.#guard = components.guard
  }

  /**
   * Writes a stored tree under `dest` (which may exist). Everything is read from the local store. With `previous`,
   * `dest` must hold exactly that tree (as written by this method): only what differs is written, e.g. the changed
   * 4 KiB pages of a page image, and what the new tree lacks is removed. Nothing is written outside `dest` and no
   * symlink is followed (see tree-safety.ts); set-id bits need `allowSetId` (the mission's image has them too).
   */
  async materializeTree (treeCid: CID, dest: string, options: MaterializeOptions = {}): Promise<{ files: number, bytes: number }> {
    try {
      return await this.#writeTree(treeCid, dest, options)
    } catch (err) { throw this.#guard.counted(err) }
  }

  async #writeTree (treeCid: CID, dest: string, options: MaterializeOptions): Promise<{ files: number, bytes: number }> {
    const tree = asTreeNode(await this.#blocks.getNode(treeCid, { ...options, offline: true }), treeCid)
    const entries = await this.treeEntryList(treeCid, options.signal)
    await this.#guard.check(options.role ?? 'rootfs', entries, treeCid, options.allowSetId)
    const before = options.previous != null ? await this.#treeEntries(options.previous, options.signal) : new Map<string, TreeEntry>()
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
            await this.#patchFile(target, old, e, options.signal)
          } else {
            await this.#writeFile(target, e, options.signal)
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

  /** A tree's entries in order, duplicates included (the guard refuses them). */
  async treeEntryList (treeCid: CID, signal?: AbortSignal): Promise<TreeEntry[]> {
    const tree = asTreeNode(await this.#blocks.getNode(treeCid, { signal, offline: true }), treeCid)
    const entries: TreeEntry[] = []
    for (const p of tree.parts) entries.push(...asTreePart(await this.#blocks.getNode(p, { signal, offline: true }), p).entries)
    return entries
  }

  async #treeEntries (treeCid: CID, signal?: AbortSignal): Promise<Map<string, TreeEntry>> {
    return new Map((await this.treeEntryList(treeCid, signal)).map(e => [e.path, e]))
  }

  async #writeFile (target: string, e: FileEntry, signal?: AbortSignal): Promise<void> {
    // A symlink or directory where the file goes is replaced, never followed.
    const st = await lstat(target).catch(() => null)
    if (st != null && !st.isFile()) await rm(target, { recursive: true, force: true })
    const fh = await openNoFollow(target, 'create')
    try {
      // Page files come in 4 KiB chunks: write them in batches, not one system call per page.
      let pending: Uint8Array[] = []
      let pendingBytes = 0
      for await (const chunk of this.#blocks.readFile(e, { signal })) {
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
  async #patchFile (target: string, old: FileEntry, e: FileEntry, signal?: AbortSignal): Promise<void> {
    const fh = await openNoFollow(target, 'update')
    try {
      for (let li = 0; li < e.lists.length; li++) {
        signal?.throwIfAborted()
        const listCid = e.lists[li] as CID
        const oldCid = old.lists[li]
        if (oldCid?.equals(listCid) === true) continue
        const chunks = asChunkList(await this.#blocks.getNode(listCid, { signal, offline: true }), listCid).chunks
        const oldChunks = oldCid != null ? asChunkList(await this.#blocks.getNode(oldCid, { signal, offline: true }), oldCid).chunks : []
        const first = li * LIST_FANOUT
        const changed = chunks.map((c, i) => ({ c, at: first + i })).filter(({ c }, i) => oldChunks[i]?.equals(c) !== true)
        for (let i = 0; i < changed.length; i += 64) {
          const batch = changed.slice(i, i + 64)
          const blocks = await Promise.all(batch.map(async ({ c }) => this.#blocks.openChunk(e, await this.#blocks.getBlock(c, { signal, offline: true }))))
          for (let k = 0; k < batch.length; k++) {
            const block = blocks[k] as Uint8Array
            await fh.write(block, 0, block.byteLength, (batch[k] as { at: number }).at * e.chunkSize)
          }
        }
      }
      await setOwnerAndMode(fh, e)
    } finally { await fh.close() }
  }

  /**
   * Checks files written by materializeTree against the tree's digests: every file's size and every chunk's hash
   * (a CID is the chunk's sha256), every directory and symlink. The first difference found, or null.
   */
  async verifyTreeOnDisk (treeCid: CID, dir: string, signal?: AbortSignal): Promise<string | null> {
    for (const e of (await this.#treeEntries(treeCid, signal)).values()) {
      signal?.throwIfAborted()
      if (e.kind === 'whiteout') continue
      const target = await existingBeneath(dir, e.path)
      const st = target == null ? null : await lstat(target).catch(() => null)
      if (target == null || st == null) return `${e.path}: missing`
      if (e.kind === 'dir') { if (!st.isDirectory()) return `${e.path}: not a directory`; continue }
      if (e.kind === 'symlink') { if (!st.isSymbolicLink() || await readlink(target) !== e.target) return `${e.path}: not the symlink it was`; continue }
      if (!st.isFile() || st.size !== e.size) return `${e.path}: ${st.isFile() ? `${st.size} bytes, the checkpoint says ${e.size}` : 'not a file'}`
      const problem = await this.#verifyFileOnDisk(target, e, signal)
      if (problem != null) {
        // A disk that flipped a staged file may have flipped stored blocks too.
        this.#blocks.distrustAll()
        return `${e.path}: ${problem}`
      }
    }
    return null
  }

  async #verifyFileOnDisk (target: string, e: FileEntry, signal?: AbortSignal): Promise<string | null> {
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
        const chunks = asChunkList(await this.#blocks.getNode(l, { signal, offline: true }), l).chunks
        for (let i = 0; i < chunks.length; i += 64) {
          signal?.throwIfAborted()
          const batch = chunks.slice(i, i + 64)
          const { bytesRead } = await fh.read(buf, 0, buf.byteLength, index * e.chunkSize)
          for (let k = 0; k < batch.length; k++) {
            const chunk = buf.subarray(k * e.chunkSize, Math.min(bytesRead, (k + 1) * e.chunkSize))
            const stored = e.sealedWith != null ? this.#blocks.keyOf(Buffer.from(e.sealedWith).toString('hex')).seal(chunk) : chunk
            if (!(await verifies(batch[k] as CID, stored))) return `chunk ${index + k} (at byte ${(index + k) * e.chunkSize}) does not match its digest`
          }
          index += batch.length
        }
      }
      return null
    } finally { await fh.close() }
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
      const file = asLayerFile(await this.#blocks.getNode(layer.cid, { ...options, offline: true }), layer.cid)
      yield tarFileHeader(entry.Layers[i] as string, file.size)
      yield * this.#blocks.readFile(file, options)
      yield tarPadding(file.size)
    }
    const json = new TextEncoder().encode(JSON.stringify([{ Config: entry.Config, RepoTags: manifest.tags.length > 0 ? manifest.tags : null, Layers: entry.Layers }]))
    yield tarFileHeader('manifest.json', json.byteLength)
    yield json
    yield tarPadding(json.byteLength)
    yield TAR_END
  }
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
