// What a tree from another board may hold, and how it is written without leaving its directory.
//
// A tree is data from the swarm, written to disk as root: a forged one must not make that write follow a symlink
// (an entry `a -> /etc`, then a file `a/passwd`), leave its directory, or leave a set-id program or a device node
// behind. Trees are checked twice: as a whole when fetched (before the board acknowledges the checkpoint), and
// component by component while written (the disk may hold what no tree said, e.g. a symlink a previous tree left).
import { lstat, mkdir, open, type FileHandle } from 'node:fs/promises'
import { constants } from 'node:fs'
import { join } from 'node:path'
import { UnsafeTreeError } from './errors.ts'
import { isSafeRelativePath, type TreeEntry } from './format.ts'

/** Which directory of a checkpoint a tree fills. */
export type TreeRole = 'criu' | 'rootfs' | 'data'

export const SET_ID_BITS = 0o6000

/** An entry with a setuid or setgid bit: allowed only in the rootfs changes, where the image has it too. */
export interface SetIdEntry { path: string, kind: 'file' | 'dir', mode: number, uid: number, gid: number }

/**
 * Refuses a tree that no board's container could have produced in a directory of `role`; returns its entries with
 * set-id bits (rootfs only), which the caller must match against the mission's image (see setIdInImage).
 */
export function checkTreeEntries (role: TreeRole, entries: Iterable<TreeEntry>, where: string): SetIdEntry[] {
  const kinds = new Map<string, TreeEntry['kind']>()
  const setId: SetIdEntry[] = []
  for (const e of entries) {
    if (typeof e.path !== 'string' || !isSafeRelativePath(e.path)) throw new UnsafeTreeError('path escapes', String(e.path), `${where}: entry path ${JSON.stringify(e.path)}`)
    if (kinds.has(e.path)) throw new UnsafeTreeError('duplicate path', e.path, `${where}: ${e.path} appears twice`)
    kinds.set(e.path, e.kind)
    if (e.kind === 'whiteout' && role !== 'rootfs') throw new UnsafeTreeError('device node', e.path, `${where}: ${e.path} is a device node in the ${role} tree`)
    if ((e.kind === 'file' || e.kind === 'dir') && (e.mode & SET_ID_BITS) !== 0) {
      if (role !== 'rootfs') throw new UnsafeTreeError('set-id bit', e.path, `${where}: ${e.path} has mode ${e.mode.toString(8)} in the ${role} tree`)
      setId.push({ path: e.path, kind: e.kind, mode: e.mode, uid: e.uid, gid: e.gid })
    }
  }
  for (const path of kinds.keys()) {
    for (let at = path.indexOf('/'); at !== -1; at = path.indexOf('/', at + 1)) {
      const parent = path.slice(0, at)
      const kind = kinds.get(parent)
      if (kind != null && kind !== 'dir') throw new UnsafeTreeError('below a non-directory', path, `${where}: ${path} is below ${parent}, a ${kind}`)
    }
  }
  return setId
}

/**
 * Whether the image's layers (top first, overlay2 diff dirs) hold `e.path` as the same kind with the same owner
 * and at least its set-id bits: the copy-up of an image file, which is what a legitimate upper dir holds. The
 * first layer that has the path decides. Opaque directories are not followed (a lower layer's file they hide still
 * counts: the image shipped it).
 */
export async function setIdInImage (layers: string[], e: SetIdEntry): Promise<boolean> {
  for (const layer of layers) {
    const path = await existingBeneath(layer, e.path)
    if (path == null) continue
    const st = await lstat(path).catch(() => null)
    if (st == null) continue
    if (st.isCharacterDevice() && st.rdev === 0) return false
    const kindOk = e.kind === 'dir' ? st.isDirectory() : st.isFile()
    return kindOk && st.uid === e.uid && st.gid === e.gid && (e.mode & SET_ID_BITS & ~st.mode) === 0
  }
  return false
}

/**
 * The absolute path of `rel` under `root` once every directory on the way is a real directory: missing ones are
 * created, a symlink or a non-directory is refused. `verified` caches directories checked during one write.
 */
export async function beneath (root: string, rel: string, verified: Set<string>): Promise<string> {
  const segments = rel.split('/')
  let at = root
  for (let i = 0; i < segments.length - 1; i++) {
    at = join(at, segments[i] as string)
    if (verified.has(at)) continue
    let st = await lstat(at).catch((err: NodeJS.ErrnoException) => { if (err.code === 'ENOENT') return null; throw err })
    if (st == null) {
      await mkdir(at).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'EEXIST') throw err })
      st = await lstat(at)
    }
    if (!st.isDirectory()) {
      throw new UnsafeTreeError('symlink on disk', rel, `${rel}: ${segments.slice(0, i + 1).join('/')} under ${root} is ${st.isSymbolicLink() ? 'a symlink' : 'not a directory'}`)
    }
    verified.add(at)
  }
  return join(root, ...segments)
}

/** As `beneath`, but creates nothing: null when a directory on the way is missing, a symlink or not a directory. */
export async function existingBeneath (root: string, rel: string): Promise<string | null> {
  const segments = rel.split('/')
  let at = root
  for (let i = 0; i < segments.length - 1; i++) {
    at = join(at, segments[i] as string)
    const st = await lstat(at).catch(() => null)
    if (st == null || !st.isDirectory()) return null
  }
  return join(root, ...segments)
}

const NOFOLLOW = constants.O_NOFOLLOW

/** Opens a regular file without following a symlink at its last component (whose parents `beneath` checked). */
export async function openNoFollow (path: string, how: 'create' | 'update' | 'read', mode = 0o600): Promise<FileHandle> {
  const flags = how === 'create'
    ? constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | NOFOLLOW
    : how === 'update' ? constants.O_RDWR | NOFOLLOW : constants.O_RDONLY | NOFOLLOW
  const fh = await open(path, flags, mode)
  try {
    if (!(await fh.stat()).isFile()) throw new UnsafeTreeError('symlink on disk', path, `${path} is not a regular file`)
  } catch (err) { await fh.close(); throw err }
  return fh
}

/** Opens a directory (not a symlink to one) to change its owner and mode through the descriptor. */
export async function openDirNoFollow (path: string): Promise<FileHandle> {
  return await open(path, constants.O_RDONLY | constants.O_DIRECTORY | NOFOLLOW)
}
