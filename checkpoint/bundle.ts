// Assembling a checkpoint bundle from directories on disk (no Docker here: the Checkpointer produces the dirs).
import type { CID } from 'multiformats/cid'
import type { BundleStore } from './bundle-store.ts'
import { assertMissionName, SEALED_CHECKPOINT_FORMAT } from './bundle-store.ts'
import type { ContentKey, KeyEnvelope } from './sealing.ts'
import { CHECKPOINT_FORMAT, type CheckpointManifest, type CheckpointStats, type ContainerSpecRecord } from './format.ts'
import { CheckpointError } from './errors.ts'

export interface BundleInput {
  mission: string
  epoch: number
  seq: number
  parent: CID | null
  arch: string
  criuVersion: string
  spec: ContainerSpecRecord
  stats: Omit<CheckpointStats, 'totalWallMs'>
  /** CRIU image directory, the container's upper (rw) layer, and the mission data directory. */
  dirs: { criu: string, rootfs: string, data: string }
  /** Start of the checkpoint (performance.now()), to report total wall time. */
  startedAt: number
  signal?: AbortSignal
  /**
   * Seal every block under `key`; the checkpoint's root is then a clear node holding `envelope` (the key wrapped for
   * the view's members) and a link to the sealed manifest.
   */
  seal?: { key: ContentKey, envelope: KeyEnvelope }
}

export async function storeBundle (store: BundleStore, input: BundleInput): Promise<{ cid: CID, manifest: CheckpointManifest }> {
  assertMissionName(input.mission)
  for (const [name, v] of [['epoch', input.epoch], ['seq', input.seq]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw new CheckpointError(`${name} must be a non-negative integer, got ${String(v)}`)
  }
  return await store.write(async (w) => {
    const criu = await w.putTree(input.dirs.criu)
    const rootfs = await w.putTree(input.dirs.rootfs)
    const data = await w.putTree(input.dirs.data)
    const manifest: CheckpointManifest = {
      format: CHECKPOINT_FORMAT,
      mission: input.mission,
      epoch: input.epoch,
      seq: input.seq,
      parent: input.parent,
      createdAt: Date.now(),
      arch: input.arch,
      criuVersion: input.criuVersion,
      spec: input.spec,
      stats: { ...input.stats, totalWallMs: 0 },
      sizes: {
        criuBytes: criu.fileBytes,
        rootfsBytes: rootfs.fileBytes,
        dataBytes: data.fileBytes,
        totalBytes: criu.fileBytes + rootfs.fileBytes + data.fileBytes,
        blocks: 0,
        newBytes: 0,
        newBlocks: 0
      },
      trees: { criu: criu.cid, rootfs: rootfs.cid, data: data.cid }
    }
    await w.flush()
    const c = w.counters
    manifest.sizes.blocks = c.blocks + 1
    manifest.sizes.newBlocks = c.newBlocks + 1
    manifest.sizes.newBytes = c.newBytes
    manifest.stats.totalWallMs = Math.round(performance.now() - input.startedAt)
    let cid = await w.putNode(manifest)
    if (input.seal != null) cid = await w.putNode({ format: SEALED_CHECKPOINT_FORMAT, keys: input.seal.envelope, manifest: cid }, { clear: true })
    await w.flush()
    await w.record(cid, manifest)
    return { cid, manifest }
  }, input.signal, input.seal?.key)
}
