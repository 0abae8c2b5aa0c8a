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
