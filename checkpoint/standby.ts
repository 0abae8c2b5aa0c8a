// The standby area: a backup's CRIU images and rootfs changes of a mission's latest fetched checkpoint, written ahead
// of a takeover under Docker's data root, so a restore moves them into place (a rename) instead of writing them then.
import { chmod, chown, mkdir, rename, rm, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { CID } from 'multiformats/cid'
import type { BundleStore } from './bundle-store.ts'
import { assertMissionName } from './bundle-store.ts'
import type { CheckpointManifest } from './format.ts'
import type { SetIdEntry } from './tree-safety.ts'

export const STANDBY_DIR = 'tandem-standby'

export interface StandbyComponents {
  store: Pick<BundleStore, 'materializeTree' | 'verifyTreeOnDisk'>
  /** Docker's data root (known once the runtime started). */
  dockerRootDir: () => string
}

export interface StageOptions {
  signal?: AbortSignal
  /** Throws when set-id entries of the rootfs changes are not the mission image's own. */
  allowSetId: (entries: SetIdEntry[]) => Promise<void>
}

export interface StagedUse {
  /** Whether the staged files were moved into place. */
  used: boolean
  /** Why staged files of this very checkpoint were not used (they did not match its digests), else null. */
  rejected: string | null
}

export class StandbyArea {
  readonly #store: StandbyComponents['store']
  readonly #dockerRootDir: () => string
  /** Per mission: the checkpoint whose CRIU images and rootfs changes sit ready in its standby dir. */
  readonly #staged = new Map<string, { cid: string, manifest: CheckpointManifest }>()
  /** Per mission: staging and restores take turns on the standby dir. */
  readonly #lanes = new Map<string, Promise<unknown>>()

  constructor (components: StandbyComponents) {
    this.#store = components.store
    this.#dockerRootDir = components.dockerRootDir
  }

  /**
   * Deletes the whole standby area: whatever a previous run staged is unknown to this one. The area belongs to the
   * Docker daemon, so this also deletes what other checkpointers on the same daemon staged: their next restore finds
   * the files missing (RestoreResult.stagedRejected) and writes them in full.
   */
  async clear (): Promise<void> {
    await rm(join(this.#dockerRootDir(), STANDBY_DIR), { recursive: true, force: true })
  }

  /**
   * Writes a fetched checkpoint's CRIU images and rootfs changes into its mission's standby dir. Only what changed
   * since the checkpoint staged before is written (typically the few hundred KB of changed pages).
   */
  async stage (cid: CID, manifest: CheckpointManifest, options: StageOptions): Promise<void> {
    await this.#inLane(manifest.mission, async () => {
      const base = this.#staged.get(manifest.mission)
      if (base?.cid === cid.toString()) return
      this.#staged.delete(manifest.mission)
      const dir = this.#dirOf(manifest.mission)
      if (base == null) await rm(dir, { recursive: true, force: true })
      // Only root's: the rootfs changes may hold the image's set-id programs.
      await mkdir(dir, { recursive: true, mode: 0o700 })
      await chmod(dir, 0o700)
      await this.#store.materializeTree(manifest.trees.criu, join(dir, 'criu'), { signal: options.signal, previous: base?.manifest.trees.criu, role: 'criu' })
      await this.#store.materializeTree(manifest.trees.rootfs, join(dir, 'rootfs'), {
        signal: options.signal, previous: base?.manifest.trees.rootfs, role: 'rootfs', allowSetId: options.allowSetId
      })
      this.#staged.set(manifest.mission, { cid: cid.toString(), manifest })
    })
  }

  /** Forgets (and deletes) what is staged for a mission. */
  async unstage (mission: string): Promise<void> {
    await this.#inLane(mission, async () => {
      this.#staged.delete(mission)
      await rm(this.#dirOf(mission), { recursive: true, force: true })
    })
  }

  /**
   * Moves the staged files of checkpoint `cid` into a new container's checkpoint and upper dirs; not used when what
   * is staged is another checkpoint (or the move failed: then the targets are emptied for a full write).
   */
  async moveInto (mission: string, cid: CID, checkpointDir: string, upperDir: string): Promise<StagedUse> {
    return await this.#inLane(mission, async () => {
      const staged = this.#staged.get(mission)
      if (staged?.cid !== cid.toString()) return { used: false, rejected: null }
      this.#staged.delete(mission)
      const dir = this.#dirOf(mission)
      // Files on disk can change behind this process (a bad disk, a stray write): they are restored only if they
      // still match the checkpoint's digests; else they are written again from the (verified) store.
      const problem = await this.#store.verifyTreeOnDisk(staged.manifest.trees.criu, join(dir, 'criu')) ??
        await this.#store.verifyTreeOnDisk(staged.manifest.trees.rootfs, join(dir, 'rootfs'))
      if (problem != null) {
        await rm(dir, { recursive: true, force: true })
        return { used: false, rejected: problem }
      }
      const upper = await stat(upperDir)
      try {
        await mkdir(dirname(checkpointDir), { recursive: true })
        await rename(join(dir, 'criu'), checkpointDir)
        await rm(upperDir, { recursive: true, force: true })
        await rename(join(dir, 'rootfs'), upperDir)
        await chown(upperDir, upper.uid, upper.gid)
        await chmod(upperDir, upper.mode & 0o7777)
        return { used: true, rejected: null }
      } catch {
        await rm(checkpointDir, { recursive: true, force: true })
        await rm(upperDir, { recursive: true, force: true })
        await mkdir(upperDir, { mode: upper.mode & 0o7777 })
        await chown(upperDir, upper.uid, upper.gid)
        await rm(dir, { recursive: true, force: true })
        return { used: false, rejected: null }
      }
    })
  }

  #dirOf (mission: string): string {
    assertMissionName(mission)
    // Under Docker's data root, so moving it into a container's checkpoint and upper dirs is a rename.
    return join(this.#dockerRootDir(), STANDBY_DIR, mission)
  }

  async #inLane<T> (mission: string, work: () => Promise<T>): Promise<T> {
    const previous = this.#lanes.get(mission) ?? Promise.resolve()
    const next = previous.catch(() => {}).then(work)
    this.#lanes.set(mission, next.catch(() => {}))
    return await next
  }
}
