// A mirror of a directory tree kept from one checkpoint to the next, so that the copy made while the mission is
// frozen touches only what changed since the last one.
//
// What a bundle records of a tree (bundle-store's storeTree) is: directories (mode, owner), regular files (content,
// mode, owner), symlinks (target, owner) and overlay whiteouts (character devices 0:0); no times, xattrs or hard
// links. The mirror keeps exactly that, in the same shape, so storing from it gives the same tree as storing from a
// full `cp -a` of the source.
//
// An entry is unchanged when its lstat (inode, size, mode, owner, mtime and ctime in nanoseconds) equals the one
// recorded at the previous sync. ctime moves on every write, chmod, chown, link or xattr change of the inode, and an
// atomic rename brings a new inode; the source is frozen while it is read, and a freeze lasts far longer than the
// kernel's timestamp granularity, so a write after the thaw never carries the timestamps seen before it.
// Changed files are copied in this process (no `cp` to start while the mission is frozen); only a new whiteout
// needs `mknod`. When anything fails, the mirror is dropped and the next sync copies everything.
import { chmod, copyFile, constants, lchown, lstat, mkdir, readdir, readlink, rename, rm, symlink, chown } from 'node:fs/promises'
import { execFile } from 'node:child_process'
import type { BigIntStats } from 'node:fs'
import { join } from 'node:path'

/** Under a runtime's state dir: per container and checkpointer, the mirrors of its rootfs changes and data dir. */
export const MIRRORS_DIR = 'checkpoint-mirrors'

type Kind = 'dir' | 'file' | 'symlink' | 'whiteout' | 'other'

interface Seen { kind: Kind, ino: bigint, size: bigint, mode: bigint, uid: bigint, gid: bigint, mtimeNs: bigint, ctimeNs: bigint }

export interface SyncStats {
  /** Entries in the source tree. */
  entries: number
  /** Entries written (created, replaced or their metadata updated) in the mirror. */
  changed: number
  /** Entries removed from the mirror (gone from the source). */
  removed: number
  /** Bytes of regular files copied. */
  bytes: number
  /** Whether the mirror was (re)built from scratch. */
  full: boolean
}

function kindOf (st: BigIntStats): Kind {
  if (st.isDirectory()) return 'dir'
  if (st.isFile()) return 'file'
  if (st.isSymbolicLink()) return 'symlink'
  if (st.isCharacterDevice() && st.rdev === 0n) return 'whiteout'
  return 'other'
}

function same (a: Seen, b: Seen): boolean {
  return a.kind === b.kind && a.ino === b.ino && a.size === b.size && a.mode === b.mode && a.uid === b.uid && a.gid === b.gid &&
    a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs
}

export class TreeMirror {
  readonly dir: string
  private seen: Map<string, Seen> | null = null

  constructor (dir: string) { this.dir = dir }

  /** Makes the mirror equal `source` (as far as a bundle records it); only what changed since the last sync is written. */
  async sync (source: string): Promise<SyncStats> {
    const previous = this.seen
    this.seen = null
    const full = previous == null
    try {
      if (full) await rm(this.dir, { recursive: true, force: true })
      const stats = await this.#sync(source, previous ?? new Map())
      return { ...stats, full }
    } catch (err) {
      await rm(this.dir, { recursive: true, force: true }).catch(() => {})
      throw err
    }
  }

  /** Forgets the mirror (the next sync copies everything) and deletes it. */
  async drop (): Promise<void> {
    this.seen = null
    await rm(this.dir, { recursive: true, force: true })
  }

  async #sync (source: string, previous: Map<string, Seen>): Promise<Omit<SyncStats, 'full'>> {
    const now = new Map<string, Seen>()
    let changed = 0
    let removed = 0
    let bytes = 0
    const root = await lstat(source, { bigint: true })
    if (!root.isDirectory()) throw new Error(`${source} is not a directory`)
    const visit = async (rel: string, st: BigIntStats): Promise<void> => {
      const seen: Seen = { kind: kindOf(st), ino: st.ino, size: st.size, mode: st.mode, uid: st.uid, gid: st.gid, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs }
      if (seen.kind === 'other') return // sockets, fifos, devices: not stored in a bundle
      now.set(rel, seen)
      const before = previous.get(rel)
      const src = join(source, rel)
      const dst = join(this.dir, rel)
      const unchanged = before != null && same(before, seen)
      if (!unchanged) {
        changed++
        const mode = Number(seen.mode & 0o7777n)
        const uid = Number(seen.uid)
        const gid = Number(seen.gid)
        if (before != null && before.kind !== seen.kind) {
          await rm(dst, { recursive: true, force: true })
          // Whatever was under a directory that is no longer one is gone from the mirror too.
          for (const k of previous.keys()) if (k.startsWith(`${rel}/`)) previous.delete(k)
        }
        switch (seen.kind) {
          case 'dir':
            await mkdir(dst, { recursive: true })
            await chown(dst, uid, gid)
            await chmod(dst, mode)
            break
          case 'file': {
            const tmp = `${dst}.tandem-mirror-tmp`
            await copyFile(src, tmp, constants.COPYFILE_FICLONE)
            await chown(tmp, uid, gid)
            await chmod(tmp, mode)
            await rename(tmp, dst)
            bytes += Number(seen.size)
            break
          }
          case 'symlink':
            await rm(dst, { force: true })
            await symlink(await readlink(src), dst)
            await lchown(dst, uid, gid)
            break
          case 'whiteout':
            await rm(dst, { force: true })
            await new Promise<void>((resolve, reject) => {
              execFile('mknod', [dst, 'c', '0', '0'], err => { err != null ? reject(err) : resolve() })
            })
            await chown(dst, uid, gid)
            break
        }
      }
      if (seen.kind === 'dir') {
        const names = await readdir(src)
        for (const name of names) {
          const childRel = rel === '' ? name : `${rel}/${name}`
          await visit(childRel, await lstat(join(source, childRel), { bigint: true }))
        }
      }
    }
    await visit('', root)
    // Gone from the source: deepest first is not needed, a removed directory takes its children with it.
    for (const rel of previous.keys()) {
      if (now.has(rel)) continue
      removed++
      await rm(join(this.dir, rel), { recursive: true, force: true })
    }
    this.seen = now
    return { entries: now.size, changed, removed, bytes }
  }
}
