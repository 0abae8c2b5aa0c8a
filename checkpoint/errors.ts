// Errors of the checkpoint layer: each names what failed so the daemon can log it and carry on.
import type { CID } from 'multiformats/cid'

export class CheckpointError extends Error {
  override name = 'CheckpointError'
}

/** A block could not be obtained: absent locally and not delivered by the swarm in time. */
export class BlockUnavailableError extends CheckpointError {
  override name = 'BlockUnavailableError'
  readonly cid: string
  constructor (cid: CID, reason: string) {
    super(`block ${cid.toString()} unavailable: ${reason}`)
    this.cid = cid.toString()
  }
}

/** A block's bytes do not hash to its CID (local corruption or a lying peer). */
export class BlockCorruptError extends CheckpointError {
  override name = 'BlockCorruptError'
  readonly cid: string
  constructor (cid: CID, detail?: string) {
    super(`block ${cid.toString()} is corrupt: its content does not match its CID${detail != null ? `; ${detail}` : ''}`)
    this.cid = cid.toString()
  }
}

/** A bundle or image DAG node does not have the expected shape or sizes. */
export class BundleFormatError extends CheckpointError {
  override name = 'BundleFormatError'
}

/** Why a tree from the swarm was refused (see tree-safety.ts). */
export type UnsafeTreeReason =
  /** Absolute, `..`, `.` or empty components. */
  | 'path escapes'
  | 'duplicate path'
  /** An entry below a symlink, file or whiteout of the same tree. */
  | 'below a non-directory'
  /** A directory on disk on the way to an entry is a symlink or not a directory. */
  | 'symlink on disk'
  /** Setuid or setgid bit the mission's image does not have at that path. */
  | 'set-id bit'
  /** A device node (a whiteout is one) outside the rootfs changes. */
  | 'device node'

/** A tree that would write outside its directory, follow a symlink or leave a set-id program or device node. */
export class UnsafeTreeError extends BundleFormatError {
  override name = 'UnsafeTreeError'
  readonly reason: UnsafeTreeReason
  readonly path: string
  constructor (reason: UnsafeTreeReason, path: string, detail: string) {
    super(`${detail}: refused (${reason})`)
    this.reason = reason
    this.path = path
  }
}

/** The checkpoint was taken on another CPU architecture: its process images cannot run here. */
export class ArchitectureMismatchError extends CheckpointError {
  override name = 'ArchitectureMismatchError'
  readonly bundleArch: string
  readonly localArch: string
  constructor (bundleArch: string, localArch: string, cid: string) {
    super(`checkpoint ${cid} was taken on ${bundleArch}; this board is ${localArch}: refused`)
    this.bundleArch = bundleArch
    this.localArch = localArch
  }
}

/** The mission's image is not on this board and no IPFS copy of it is known. */
export class ImageMissingError extends CheckpointError {
  override name = 'ImageMissingError'
}

/** CRIU (through runc/Docker) failed; `criuLog` holds the relevant lines of dump.log / restore.log. */
export class CriuError extends CheckpointError {
  override name = 'CriuError'
  readonly criuLog: string[]
  constructor (message: string, criuLog: string[]) {
    super(criuLog.length > 0 ? `${message}\nCRIU log:\n${criuLog.join('\n')}` : message)
    this.criuLog = criuLog
  }
}
