// Checkpoint a running mission container into a bundle, fetch bundles from the swarm, restore them into fresh
// containers on this board. The CRIU dump (criu-dump.ts), the standby area (standby.ts) and image sharing
// (image-sharing.ts) are modules of their own; this class ties them to one runtime and one bundle store.
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { CID } from 'multiformats/cid'
import type { BundleStore, FetchProgress, FetchResult } from './bundle-store.ts'
import { storeBundle } from './bundle.ts'
import { assertMissionName } from './bundle-store.ts'
import type { ContainerRuntime, ContainerSpec } from './runtime.ts'
import { LABEL_DATA_PATH } from './runtime.ts'
import type { CheckpointManifest, CheckpointStats, ContainerSpecRecord } from './format.ts'
import { MIRRORS_DIR, TreeMirror, type SyncStats } from './mirror.ts'
import { criuPhasesFromLog, type CriuPhases } from './criu-hook.ts'
import { criuFailure, dumpHoldingStill, run, startDumper, type CriuStatsSource, type DumpPath, type FreezeMode } from './criu-dump.ts'
import { StandbyArea } from './standby.ts'
import { ImageSharing, type EnsureImageOptions, type EnsureImageResult, type ShareImageResult } from './image-sharing.ts'
import { probeCriu } from './docker-host.ts'
import { ArchitectureMismatchError, BlockCorruptError, CheckpointError, ImageMissingError, UnsafeTreeError } from './errors.ts'
import { setIdInImage, type SetIdEntry } from './tree-safety.ts'

export type { FreezeMode } from './criu-dump.ts'
export type { EnsureImageOptions, EnsureImageResult, ShareImageResult } from './image-sharing.ts'

export interface TakeOptions {
  mission: string
  epoch: number
  seq: number
  /** CID of the mission's previous checkpoint (recorded in the manifest). */
  parent?: CID | null
  signal?: AbortSignal
  /**
   * Peer ids of the mission's view (this board included): the checkpoint is sealed for them alone, under the
   * mission's content key, made anew when they change (see sealing.ts). Absent: stored in the clear.
   */
  sealFor?: string[]
}

export interface TakeStats extends CheckpointStats {
  /** Time the application was paused: CRIU dump plus the snapshot of its rootfs changes and data dir, ms. */
  pausedMs: number
  /** Time to chunk and store the bundle after the application resumed, ms. */
  storeMs: number
  /** Where the CRIU figures come from (see CriuStatsSource). */
  criuStatsSource: CriuStatsSource
  /** Who ran CRIU: runc directly, or Docker's checkpoint API (when runc's state dir was not found). */
  dumpPath: DumpPath
  /** Where the wall time went, ms: inspect and image look-ups before the pause, the pause, placing the images, storing. */
  phases: { prepareMs: number, pausedMs: number, afterPauseMs: number, storeMs: number }
  /** How the mission was held still (see CheckpointerOptions.freezeMode). */
  freezeMode: FreezeMode
  /**
   * CRIU's phases while the mission was frozen, from its dump.log timestamps, ms (runc path; null otherwise):
   * freeze → memory dumped, → mount namespace dumped, → other namespaces (net ns: links, routes, iptables),
   * → images flushed and post-dump (with 'criu-hook': the copy of rootfs changes and data dir), → after the
   * network unlock until the tasks are unfrozen.
   */
  criuPhases: CriuPhases | null
  /** Copy of the rootfs changes and the data dir while frozen, ms. */
  copyMs: number
  /** What the incremental copy wrote (freezeMode 'criu-hook'); null when everything was copied. */
  copied: { rootfs: SyncStats, data: SyncStats } | null
}

export interface TakeResult {
  cid: CID
  seq: number
  manifest: CheckpointManifest
  stats: TakeStats
}

export interface LocalBundle {
  cid: CID
  manifest: CheckpointManifest
  fetch: FetchResult
}

export interface RestoreOptions {
  peerId: string
  epoch: number
  signal?: AbortSignal
  /** Peers to ask first for the image's layers if it must be loaded (default: every connected peer). */
  providers?: string[]
}

export interface RestoreResult {
  containerId: string
  /** From the call to the restored process running, ms. */
  ms: number
  /** Whether the image had to be loaded from the bundle's IPFS copy. */
  imageLoaded: boolean
  /** Whether the CRIU images and rootfs changes were staged ahead (see stage) and only moved into place. */
  staged: boolean
  /** Why the staged files were not used although they were of this checkpoint (they did not match its digests). */
  stagedRejected: string | null
  /** Corrupt blocks found in this board's store while restoring, fetched again from other boards. */
  repairedBlocks: number
  /** Where the time went, ms: container create, writing the bundle's files, CRIU restore (docker start). */
  phases: { createMs: number, filesMs: number, criuMs: number }
}

export interface CheckpointerOptions {
  runtime: ContainerRuntime
  store: BundleStore
  /** Share the mission image (per layer, see shareImage) from its first checkpoint on, so boards without it can restore. Default true. */
  shipImages?: boolean
  /** How the mission is held still while CRIU dumps it (see FreezeMode). Default 'criu-hook'. */
  freezeMode?: FreezeMode
}

export class Checkpointer {
  readonly runtime: ContainerRuntime
  readonly store: BundleStore
  readonly #shipImages: boolean
  readonly freezeMode: FreezeMode
  #criuVersion = 'unknown'
  readonly #images: ImageSharing
  readonly #standby: StandbyArea
  /** Per container: mirrors of its rootfs changes and data dir as of its last checkpoint (freezeMode 'criu-hook'). */
  readonly #mirrors = new Map<string, { rootfs: TreeMirror, data: TreeMirror, busy: boolean }>()
  /** Names this checkpointer's mirror dirs (several checkpointers may share a state dir). */
  readonly #instance = randomBytes(4).toString('hex')

  constructor (options: CheckpointerOptions) {
    this.runtime = options.runtime
    this.store = options.store
    this.#shipImages = options.shipImages ?? true
    this.freezeMode = options.freezeMode ?? 'criu-hook'
    this.#images = new ImageSharing({ runtime: options.runtime, store: options.store })
    this.#standby = new StandbyArea({ store: options.store, dockerRootDir: () => options.runtime.info.rootDir })
  }

  /** Reads the CRIU version once (recorded in every manifest). The runtime must be started. */
  async start (): Promise<void> {
    await this.#standby.clear()
    await mkdir(join(this.runtime.stateDir, MIRRORS_DIR), { recursive: true, mode: 0o700 })
    this.#criuVersion = (await probeCriu()).version ?? 'unknown'
  }

  async stop (): Promise<void> {
    await this.#images.stop()
    await this.store.idle()
  }

  /**
   * Stores an image in the bundle store, one DAG per layer, and returns its per-layer manifest's CID. Once per image
   * id: concurrent calls share one upload, a finished one is remembered (also across restarts, by the store).
   */
  async shareImage (imageRef: string, signal?: AbortSignal): Promise<ShareImageResult> {
    return await this.#images.share(imageRef, signal)
  }

  /**
   * Makes the image whose manifest is `imageCid` present in this board's Docker, loading only the layers it lacks
   * (see ImageSharing.ensure). Concurrent calls for one image share one load.
   */
  async ensureImage (imageCid: CID, options: EnsureImageOptions = {}): Promise<EnsureImageResult> {
    return await this.#images.ensure(imageCid, options)
  }

  /**
   * Checkpoints a running mission container; it keeps running. The container is paused while CRIU dumps
   * it and its rootfs changes and data dir are copied, so the three agree with each other.
   */
  async take (containerId: string, options: TakeOptions): Promise<TakeResult> {
    const { signal } = options
    const started = performance.now()
    assertMissionName(options.mission)
    for (const [name, v] of [['epoch', options.epoch], ['seq', options.seq]] as const) {
      if (!Number.isSafeInteger(v) || v < 0) throw new CheckpointError(`${name} must be a non-negative integer, got ${String(v)}`)
    }
    const info = this.runtime.info
    const inspect = await this.runtime.inspect(containerId)
    if (inspect.State.Running !== true) throw new CheckpointError(`container ${containerId} is not running (${inspect.State.Status})`)
    const upperDir = upperDirOf(inspect)
    if (upperDir == null) throw new CheckpointError(`container ${containerId} has no overlay2 upper dir`)
    const dataPath = inspect.Config.Labels?.[LABEL_DATA_PATH] ?? null
    const dataMount = dataPath != null ? inspect.Mounts.find(m => m.Destination === dataPath) : undefined
    if (dataPath != null && dataMount == null) throw new CheckpointError(`container ${containerId} lacks its data mount ${dataPath}`)

    const imageCid = this.#shipImages ? await this.#images.sharedOrStartSharing(inspect.Image) : null
    const image = await this.runtime.imageInfo(inspect.Image)
    const spec: ContainerSpecRecord = {
      imageId: inspect.Image,
      imageTags: image?.tags ?? [],
      imageCid,
      cmd: inspect.Config.Cmd ?? null,
      entrypoint: asArray(inspect.Config.Entrypoint),
      env: inspect.Config.Env ?? [],
      workingDir: inspect.Config.WorkingDir ?? '',
      user: inspect.Config.User ?? '',
      dataPath
    }

    const scratch = await mkdtemp(join(this.runtime.stateDir, 'checkpoint-'))
    try {
      const dirs = { criu: join(scratch, 'criu'), rootfs: join(scratch, 'rootfs'), data: join(scratch, 'data') }
      const container = this.runtime.docker.getContainer(containerId)
      const dumper = await startDumper({ containerId, container, runcRoot: this.runtime.runcRoot, dockerRootDir: info.rootDir }, this.freezeMode, scratch, dirs.criu, options.seq)
      const prepareMs = performance.now() - started
      let copyMs = 0
      let copied: { rootfs: SyncStats, data: SyncStats } | null = null
      // Incremental copy into this container's mirrors (with the hook); the old way (and a concurrent take) copies all.
      const mirror = dumper.hook != null ? this.#mirrorFor(containerId) : null
      if (mirror != null) {
        mirror.busy = true
        dirs.rootfs = mirror.rootfs.dir
        dirs.data = mirror.data.dir
      }
      const copyFiles = async (): Promise<void> => {
        const copyStart = performance.now()
        if (mirror != null) {
          const rootfs = await mirror.rootfs.sync(upperDir)
          const data = dataMount != null ? await mirror.data.sync(dataMount.Source) : (await mirror.data.drop(), await mkdir(mirror.data.dir, { recursive: true }), null)
          copied = { rootfs, data: data ?? { entries: 0, changed: 0, removed: 0, bytes: 0, full: true } }
        } else {
          await copyTree(upperDir, dirs.rootfs)
          if (dataMount != null) await copyTree(dataMount.Source, dirs.data)
          else await mkdir(dirs.data)
        }
        copyMs = performance.now() - copyStart
      }
      const { outcome: dump, pausedMs } = await dumpHoldingStill(dumper, container, copyFiles, signal)
      const criuPhases = dump.log != null ? criuPhasesFromLog(dump.log) : null
      const afterPauseStart = performance.now()
      await dumper.placeImages()
      const afterPauseMs = performance.now() - afterPauseStart
      const storeStart = performance.now()
      const { cid, manifest } = await storeBundle(this.store, {
        mission: options.mission,
        epoch: options.epoch,
        seq: options.seq,
        parent: options.parent ?? null,
        arch: info.arch,
        criuVersion: this.#criuVersion,
        spec,
        stats: {
          freezingTimeUs: dump.stats?.freezingTimeUs ?? 0,
          frozenTimeUs: dump.stats?.frozenTimeUs ?? 0,
          memdumpTimeUs: dump.stats?.memdumpTimeUs ?? 0,
          memwriteTimeUs: dump.stats?.memwriteTimeUs ?? 0,
          pagesScanned: dump.stats?.pagesScanned ?? 0,
          pagesWritten: dump.stats?.pagesWritten ?? 0,
          dumpWallMs: Math.round(dump.wallMs)
        },
        dirs,
        startedAt: started,
        signal,
        seal: options.sealFor != null ? this.store.missionKeys.keyFor(options.mission, options.sealFor) : undefined
      })
      const storeMs = performance.now() - storeStart
      this.store.collectInBackground(manifest.mission)
      return {
        cid,
        seq: options.seq,
        manifest,
        stats: {
          ...manifest.stats,
          pausedMs: Math.round(pausedMs),
          storeMs: Math.round(storeMs),
          criuStatsSource: dump.statsSource,
          dumpPath: dumper.path,
          phases: { prepareMs: Math.round(prepareMs), pausedMs: Math.round(pausedMs), afterPauseMs: Math.round(afterPauseMs), storeMs: Math.round(storeMs) },
          freezeMode: dumper.hook != null ? 'criu-hook' : 'pause',
          criuPhases,
          copyMs: Math.round(copyMs),
          copied
        }
      }
    } finally {
      const mirror = this.#mirrors.get(containerId)
      if (mirror != null) mirror.busy = false
      await rm(scratch, { recursive: true, force: true })
    }
  }

  /** This container's mirrors, unless a take of it is already using them (then null: that take copies all). */
  #mirrorFor (containerId: string): { rootfs: TreeMirror, data: TreeMirror, busy: boolean } | null {
    let mirror = this.#mirrors.get(containerId)
    if (mirror?.busy === true) return null
    if (mirror == null) {
      const base = join(this.runtime.stateDir, MIRRORS_DIR, `${containerId}-${this.#instance}`)
      mirror = { rootfs: new TreeMirror(join(base, 'rootfs')), data: new TreeMirror(join(base, 'data')), busy: false }
      this.#mirrors.set(containerId, mirror)
    }
    return mirror
  }

  /** Deletes the mirrors of a container that is gone (its checkpoints are stored; the mirrors only speed up the next). */
  async forgetContainer (containerId: string): Promise<void> {
    const mirror = this.#mirrors.get(containerId)
    if (mirror == null || mirror.busy) return
    this.#mirrors.delete(containerId)
    await rm(dirname(mirror.rootfs.dir), { recursive: true, force: true })
  }

  /**
   * Brings a checkpoint into this board's store from the swarm and retains it; not its image (see ensureImage).
   * A bundle from another CPU architecture is refused after reading only its manifest.
   */
  async fetch (cid: CID, options: { signal?: AbortSignal, onProgress?: (p: FetchProgress) => void, providers?: string[] } = {}): Promise<LocalBundle> {
    const result = await this.store.fetch(cid, {
      ...options,
      accept: (m) => this.#assertRunnableHere(m, cid),
      allowSetId: async (m, entries) => { await this.assertSetIdOfImage(m.spec.imageId, entries) }
    })
    this.store.collectInBackground(result.manifest.mission)
    return { cid, manifest: result.manifest, fetch: result }
  }

  /**
   * Writes a fetched checkpoint's CRIU images and rootfs changes into this board's standby dir for its mission
   * ahead of a takeover, so a restore moves them into place instead of writing ~10 MB then. Only what changed
   * since the checkpoint staged before is written (typically the few hundred KB of changed pages).
   */
  async stage (bundle: LocalBundle, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#standby.stage(bundle.cid, bundle.manifest, { signal: options.signal, allowSetId: this.#setIdPolicy(bundle.manifest) })
  }

  /** Forgets (and deletes) what is staged for a mission. */
  async unstage (mission: string): Promise<void> {
    await this.#standby.unstage(mission)
  }

  /** Restores a checkpoint into a new container on this board and returns its id. Fetches it first if needed. */
  async restore (source: CID | LocalBundle, options: RestoreOptions): Promise<RestoreResult> {
    const started = performance.now()
    const { signal } = options
    const bundle = 'manifest' in source ? source : await this.fetch(source, { signal, providers: options.providers })
    const { manifest, cid } = bundle
    this.#assertRunnableHere(manifest, cid)

    let imageLoaded = false
    if (await this.runtime.imageInfo(manifest.spec.imageId) == null) {
      if (manifest.spec.imageCid == null) throw new ImageMissingError(`image ${manifest.spec.imageId} of mission ${manifest.mission} is not on this board and the checkpoint carries no copy`)
      imageLoaded = (await this.#images.ensure(manifest.spec.imageCid, { signal, providers: options.providers, imageId: manifest.spec.imageId })).loaded
    }

    const spec: ContainerSpec = {
      mission: manifest.mission,
      image: manifest.spec.imageId,
      cmd: manifest.spec.cmd ?? undefined,
      entrypoint: manifest.spec.entrypoint ?? undefined,
      env: manifest.spec.env,
      workingDir: manifest.spec.workingDir,
      user: manifest.spec.user,
      dataPath: manifest.spec.dataPath
    }
    const createStart = performance.now()
    const containerId = await this.runtime.create(spec, { mission: manifest.mission, peerId: options.peerId, epoch: options.epoch }, { signal })
    const filesStart = performance.now()
    try {
      const inspect = await this.runtime.inspect(containerId)
      const upperDir = upperDirOf(inspect)
      if (upperDir == null) throw new CheckpointError(`new container ${containerId} has no overlay2 upper dir`)
      const name = `restore-${manifest.seq}`
      const checkpointDir = join(this.runtime.info.rootDir, 'containers', containerId, 'checkpoints', name)
      const { used: staged, rejected: stagedRejected } = await this.#standby.moveInto(manifest.mission, cid, checkpointDir, upperDir)
      const dataDir = this.runtime.dataDirFor(inspect.Name.replace(/^\//, ''))
      const writeFiles = async (): Promise<void> => {
        // All settle before a failure is reported: the container is removed after it, not while files are still written.
        const written = await Promise.allSettled([
          staged ? Promise.resolve() : this.store.materializeTree(manifest.trees.criu, checkpointDir, { signal, role: 'criu' }),
          staged ? Promise.resolve() : this.store.materializeTree(manifest.trees.rootfs, upperDir, { signal, role: 'rootfs', allowSetId: this.#setIdPolicy(manifest) }),
          manifest.spec.dataPath != null ? this.store.materializeTree(manifest.trees.data, dataDir, { signal, role: 'data' }) : Promise.resolve()
        ])
        const failed = written.find((r): r is PromiseRejectedResult => r.status === 'rejected')
        if (failed != null) throw failed.reason
      }
      const repairsBefore = this.store.repairedBlocks
      try {
        await writeFiles()
      } catch (err) {
        if (!(err instanceof BlockCorruptError)) throw err
        // A block of this board's store went bad since it was fetched: fetch again what does not verify (from
        // whoever still holds it) and write the files once more; if no board delivers it, the restore fails.
        try {
          await this.store.fetch(cid, { signal, providers: options.providers, verifyHeld: true })
        } catch (refetch) {
          throw new BlockCorruptError(CID.parse(err.cid), `no board delivered an intact copy (${(refetch as Error).message})`)
        }
        await writeFiles()
      }
      const repairedBlocks = this.store.repairedBlocks - repairsBefore
      const criuStart = performance.now()
      await (this.runtime.docker.getContainer(containerId).start({ _query: { checkpoint: name }, _body: {}, abortSignal: signal } as object) as Promise<unknown>)
        .catch(async (err: unknown) => { throw await criuFailure('restore', err) })
      const done = performance.now()
      await rm(checkpointDir, { recursive: true, force: true })
      const phases = { createMs: Math.round(filesStart - createStart), filesMs: Math.round(criuStart - filesStart), criuMs: Math.round(done - criuStart) }
      return { containerId, ms: done - started, imageLoaded, staged, stagedRejected, repairedBlocks, phases }
    } catch (err) {
      await this.runtime.stop(containerId).catch(() => {})
      throw err
    }
  }

  #setIdPolicy (manifest: CheckpointManifest): (entries: SetIdEntry[]) => Promise<void> {
    return async (entries) => { await this.assertSetIdOfImage(manifest.spec.imageId, entries) }
  }

  /**
   * A setuid/setgid file or directory in a container's upper dir is legitimate only as the copy-up of the image's
   * own (same path, kind, owner, bits): anything else was made by the mission or forged, and becomes a set-id
   * program on this board's disk. The image must be on this board to compare: otherwise refused too.
   */
  async assertSetIdOfImage (imageId: string, entries: SetIdEntry[]): Promise<void> {
    let layers: string[] = []
    try {
      const data = (await this.runtime.docker.getImage(imageId).inspect()).GraphDriver?.Data as { UpperDir?: string, LowerDir?: string } | undefined
      layers = [data?.UpperDir, ...(data?.LowerDir ?? '').split(':')].filter((d): d is string => d != null && d !== '')
    } catch (err: any) {
      if (err?.statusCode !== 404) throw err
    }
    for (const e of entries) {
      if (!(await setIdInImage(layers, e))) {
        const why = layers.length === 0 ? `image ${imageId} is not on this board to compare with` : `image ${imageId} has no such ${e.kind} with these bits and owner`
        throw new UnsafeTreeError('set-id bit', e.path, `rootfs ${e.path} has mode ${e.mode.toString(8)} (owner ${e.uid}:${e.gid}) and ${why}`)
      }
    }
  }

  #assertRunnableHere (manifest: CheckpointManifest, cid: CID): void {
    const local = this.runtime.info.arch
    if (manifest.arch !== local) throw new ArchitectureMismatchError(manifest.arch, local, cid.toString())
  }
}

function upperDirOf (inspect: { GraphDriver?: { Data?: object } }): string | undefined {
  return (inspect.GraphDriver?.Data as { UpperDir?: string } | undefined)?.UpperDir
}

function asArray (v: unknown): string[] | null {
  if (Array.isArray(v)) return v as string[]
  if (typeof v === 'string' && v !== '') return [v]
  return null
}

/** Copies a directory tree keeping owners, modes, symlinks and overlay whiteouts (reflinks where possible). */
async function copyTree (from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true })
  await run('cp', ['-a', '--reflink=auto', `${from}/.`, to])
}
