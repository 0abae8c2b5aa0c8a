// A simulated board's own small disk: a size-limited tmpfs mounted on the board's directory (its Docker data root,
// the peer's data dir, the staged checkpoints), so a test can fill it for real (ENOSPC) or flip bytes in what the
// board stored. Mounts of a run that died without cleaning up are found by their owner file and unmounted.
import { spawnSync } from 'node:child_process'
import { createHash, randomInt } from 'node:crypto'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { mkdir, open, readdir, readFile, rm, stat, statfs, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { orphanedEntries, processIdentity, readOrEmpty } from './ownership.ts'
import { onOwnerExit } from './exit-hooks.ts'

const DISK_ROOT = '/run/tandem-board-disks'
const FILLER = 'filler'
/** Bytes written per call while filling, then single pages for the last bytes. */
const FILL_CHUNK = 4 * 1024 * 1024

export class BoardDiskError extends Error {
  override name = 'BoardDiskError'
}

/** Disks this process mounted and has not unmounted: lazily unmounted on exit, even after a crash. */
const liveDisks = new Set<BoardDisk>()
let exitHookInstalled = false

export class BoardDisk {
  readonly path: string
  readonly sizeBytes: number
  readonly #registry: string

  private constructor (path: string, sizeBytes: number) {
    this.path = path
    this.sizeBytes = sizeBytes
    this.#registry = join(DISK_ROOT, createHash('sha256').update(path).digest('hex').slice(0, 12))
  }

  /** Mounts a tmpfs of `sizeBytes` on `path` (created if missing; it must be empty). */
  static async mount (path: string, sizeBytes: number): Promise<BoardDisk> {
    reapOrphanDisks()
    const disk = new BoardDisk(path, sizeBytes)
    await mkdir(path, { recursive: true })
    if ((await readdir(path)).length > 0) throw new BoardDiskError(`${path} is not empty: a board's disk is mounted on an empty directory`)
    mkdirSync(disk.#registry, { recursive: true })
    writeFileSync(join(disk.#registry, 'owner'), `${processIdentity(process.pid) ?? process.pid}\n`)
    writeFileSync(join(disk.#registry, 'mount'), `${path}\n`)
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0755`, 'tandem-board-disk', path], { encoding: 'utf8' })
    if (mounted.status !== 0) {
      rmSync(disk.#registry, { recursive: true, force: true })
      throw new BoardDiskError(`mounting a ${sizeBytes}-byte tmpfs on ${path} failed: ${mounted.stderr.trim()}`)
    }
    liveDisks.add(disk)
    if (!exitHookInstalled) {
      exitHookInstalled = true
      onOwnerExit(() => { for (const d of [...liveDisks]) d.unmountSync() })
    }
    return disk
  }

  /** Free bytes of the disk now. */
  async freeBytes (): Promise<number> {
    const fs = await statfs(this.path)
    return fs.bavail * fs.bsize
  }

  /**
   * Writes a filler file until the disk is full (ENOSPC); returns its size. `free` deletes it. Never more than the
   * disk's size, and only on the disk itself: a fill that began after the disk was unmounted (a test stopped by a
   * signal went on running) wrote 72 GB into the host's /tmp.
   */
  async fill (): Promise<number> {
    if (!liveDisks.has(this)) throw new BoardDiskError(`${this.path}: the board's disk is unmounted`)
    const fh = await open(join(this.path, FILLER), 'a')
    let written = (await fh.stat()).size
    try {
      const fs = await statfs(this.path)
      if (fs.blocks * fs.bsize > this.sizeBytes * 1.01) {
        throw new BoardDiskError(`${this.path} is not the board's ${this.sizeBytes}-byte disk: not filled`)
      }
      for (const size of [FILL_CHUNK, 4096, 1]) {
        const chunk = Buffer.alloc(size, 0xa5)
        for (;;) {
          if (written > this.sizeBytes) throw new BoardDiskError(`${this.path}: filled past the disk's ${this.sizeBytes} bytes`)
          try {
            written += (await fh.write(chunk)).bytesWritten
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break
            throw err
          }
        }
      }
    } finally { await fh.close() }
    return written
  }

  /** Deletes the filler: the disk has room again. */
  async free (): Promise<void> {
    await rm(join(this.path, FILLER), { force: true })
  }

  /** Whether the filler is there. */
  async isFull (): Promise<boolean> {
    return await stat(join(this.path, FILLER)).then(() => true, () => false)
  }

  /** Lazily unmounts the disk (its content is gone) once nothing of the board uses it. */
  unmountSync (): void {
    spawnSync('umount', ['-l', this.path], { stdio: 'ignore' })
    rmSync(this.#registry, { recursive: true, force: true })
    liveDisks.delete(this)
  }
}

/** Unmounts the board disks of runs whose owner process is gone. */
export function reapOrphanDisks (): number {
  let reaped = 0
  for (const token of orphanedEntries(DISK_ROOT)) {
    const path = readOrEmpty(join(DISK_ROOT, token, 'mount')).trim()
    if (path !== '') spawnSync('umount', ['-l', path], { stdio: 'ignore' })
    rmSync(join(DISK_ROOT, token), { recursive: true, force: true })
    reaped++
  }
  return reaped
}

async function flipByteAt (fh: FileHandle, at: number): Promise<void> {
  const byte = Buffer.alloc(1)
  await fh.read(byte, 0, 1, at)
  byte[0] = (byte[0] as number) ^ 0xff
  await fh.write(byte, 0, 1, at)
}

/**
 * Flips bytes at random offsets of each file (not in its last `tailBytes`, where LevelDB keeps a table's index and
 * footer); returns how many bytes were flipped.
 */
export async function flipBytes (files: string[], options: { perFile?: number, tailBytes?: number } = {}): Promise<number> {
  let flipped = 0
  for (const file of files) {
    const fh = await open(file, 'r+').catch(() => null)
    if (fh == null) continue
    try {
      const size = (await fh.stat()).size - (options.tailBytes ?? 0)
      if (size <= 0) continue
      for (let i = 0; i < (options.perFile ?? 16); i++) {
        await flipByteAt(fh, randomInt(size))
        flipped++
      }
    } finally { await fh.close() }
  }
  return flipped
}

function varint (buf: Buffer, at: number): [value: number, next: number] {
  let value = 0
  let shift = 0
  for (let i = at; i < buf.length && shift < 64; i++) {
    const b = buf[i] as number
    value += (b & 0x7f) * 2 ** shift
    shift += 7
    if ((b & 0x80) === 0) return [value, i + 1]
  }
  throw new BoardDiskError(`bad varint at ${at}`)
}

/** The entries of one LevelDB block (key bytes are skipped): where each value starts and how long it is. */
function blockEntries (buf: Buffer, offset: number, size: number): Array<{ value: number, length: number }> {
  const restarts = buf.readUInt32LE(offset + size - 4)
  const end = offset + size - 4 * (restarts + 1)
  const entries: Array<{ value: number, length: number }> = []
  for (let at = offset; at < end;) {
    const [, a] = varint(buf, at)
    const [unshared, b] = varint(buf, a)
    const [length, c] = varint(buf, b)
    entries.push({ value: c + unshared, length })
    at = c + unshared + length
  }
  return entries
}

/**
 * Where the values of a LevelDB table file (`.ldb`, uncompressed as blockstore-level writes them) lie: found through
 * its footer and index block, so that a flip can hit a stored block's bytes and never a key (LevelDB aborts the
 * process on keys out of order in a compaction: a corruption no store can survive).
 */
export function tableValues (table: Buffer): Array<{ value: number, length: number }> {
  const FOOTER = 48
  if (table.length < FOOTER || table.readUInt32LE(table.length - 8) !== 0x8b80fb57 || table.readUInt32LE(table.length - 4) !== 0xdb477524) {
    throw new BoardDiskError('not a LevelDB table (no footer magic)')
  }
  const footer = table.length - FOOTER
  const [, m] = varint(table, footer)
  const [, i] = varint(table, m)
  const [indexOffset, j] = varint(table, i)
  const [indexSize] = varint(table, j)
  const values: Array<{ value: number, length: number }> = []
  for (const handle of blockEntries(table, indexOffset, indexSize)) {
    const [offset, k] = varint(table, handle.value)
    const [size] = varint(table, k)
    // Block type byte 0: not compressed (a compressed block's values are not where they look).
    if (table[offset + size] !== 0) continue
    values.push(...blockEntries(table, offset, size))
  }
  return values
}

/** Flips one byte in each of `count` random values of the LevelDB table files; returns how many were flipped. */
export async function flipTableValues (files: string[], count: number): Promise<number> {
  const candidates: Array<{ file: string, at: number }> = []
  for (const file of files) {
    let table: Buffer
    try { table = await readFile(file) } catch { continue }
    let values: Array<{ value: number, length: number }>
    try { values = tableValues(table) } catch { continue }
    for (const v of values) if (v.length >= 256) candidates.push({ file, at: v.value + randomInt(v.length) })
  }
  const chosen = new Set<number>()
  while (chosen.size < Math.min(count, candidates.length)) chosen.add(randomInt(candidates.length))
  let flipped = 0
  for (const index of chosen) {
    const { file, at } = candidates[index] as { file: string, at: number }
    const fh = await open(file, 'r+').catch(() => null)
    if (fh == null) continue
    try {
      await flipByteAt(fh, at)
      flipped++
    } finally { await fh.close() }
  }
  return flipped
}
