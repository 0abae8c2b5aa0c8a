// Checkpoint a running mission container into a bundle, fetch bundles from the swarm, restore them into
// fresh containers on this board.
import { access, chmod, chown, mkdir, readFile, readdir, rename, rm, mkdtemp, open, stat, type FileHandle } from 'node:fs/promises'
import { execFile, spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { Readable } from 'node:stream'
import type Docker from 'dockerode'
import { randomBytes } from 'node:crypto'
import { CID } from 'multiformats/cid'
import type { BundleStore, FetchProgress, FetchResult, ImageFetchProgress } from './bundle-store.ts'
import { storeBundle } from './bundle.ts'
import { assertMissionName } from './bundle-store.ts'
import type { ContainerRuntime, ContainerSpec } from './runtime.ts'
import { LABEL_DATA_PATH } from './runtime.ts'
import type { CheckpointManifest, CheckpointStats, ContainerSpecRecord, ImageManifest } from './format.ts'
import { parseStatsDump, type CriuDumpStats } from './criu-stats.ts'
import { MIRRORS_DIR, TreeMirror, type SyncStats } from './mirror.ts'
import { criuPhasesFromLog, prepareCriuHook, type CriuHook, type CriuPhases } from './criu-hook.ts'
import { ArchitectureMismatchError, BlockCorruptError, CheckpointError, CriuError, ImageMissingError, UnsafeTreeError } from './errors.ts'
import { setIdInImage, type SetIdEntry } from './tree-safety.ts'

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
  /**
   * Where the CRIU figures come from: its stats-dump file, or (when containerd deleted that too soon)
   * dump.log timestamps plus page image sizes (then freezing/memdump/memwrite times are 0), or nowhere.
   */
  criuStatsSource: 'stats-dump' | 'dump-log' | 'none'
  /** Who ran CRIU: runc directly, or Docker's checkpoint API (when runc's state dir was not found). */
  dumpPath: 'runc' | 'docker'
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

export interface ShareImageResult {
  /** Root of the image's per-layer manifest (what a checkpoint's `spec.imageCid` points to). */
  cid: CID
  imageId: string
  /** Bytes of all the image's layer tars. */
  totalBytes: number
  /** Bytes this board's store did not hold before (layers shared with images stored earlier cost nothing). */
  newBytes: number
  ms: number
}

export interface EnsureImageOptions {
  signal?: AbortSignal
  /** Peers to ask first for the layers (default: every connected peer). */
  providers?: string[]
  /** Layer bytes fetched so far, of those that must come. */
  onProgress?: (progress: ImageFetchProgress) => void
  /** The image id, when the caller knows it (a checkpoint's spec does): a board that has it then reads nothing. */
  imageId?: string
}

export interface EnsureImageResult {
  /** Whether the image was loaded into Docker (false: Docker had it). */
  loaded: boolean
  imageId: string
  /** Bytes that crossed the network. */
  fetchedBytes: number
  /** Layer bytes that had to come (missing from Docker and from this board's store). */
  totalBytes: number
  /** Leading layers Docker already held through other images: neither fetched nor loaded. */
  reusedLayers: number
  ms: number
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
  /**
   * How the mission is held still while CRIU dumps it and its files are copied (runc path only; Docker's checkpoint
   * API always pauses first). 'criu-hook' (default): CRIU freezes the container itself, and a post-dump action script
   * keeps it frozen until the rootfs changes and data dir are copied; CRIU's network lock is skipped (see
   * checkpoint/criu-hook.ts). 'pause': the container is paused through Docker for runc's whole run (the old way,
   * kept to measure against).
   */
  freezeMode?: FreezeMode
}

export type FreezeMode = 'criu-hook' | 'pause'

export class Checkpointer {
  private readonly runtime: ContainerRuntime
  readonly store: BundleStore
  private readonly shipImages: boolean
  readonly freezeMode: FreezeMode
  private criuVersion = 'unknown'
  /** Per image id: its upload, kept once finished (an image is stored once). */
  private readonly imageUploads = new Map<string, Promise<ShareImageResult>>()
  /** Per image CID: the load in flight, and everyone who wants its progress. */
  private readonly imageLoads = new Map<string, { done: Promise<EnsureImageResult>, listeners: Set<(p: ImageFetchProgress) => void> }>()
  /** Aborts image loads in flight on stop (a caller's signal only ends its own wait). */
  private readonly lifetime = new AbortController()
  /** Per mission: the checkpoint whose CRIU images and rootfs changes sit ready in the standby dir. */
  private readonly staged = new Map<string, { cid: string, manifest: CheckpointManifest }>()
  /** Per container: mirrors of its rootfs changes and data dir as of its last checkpoint (freezeMode 'criu-hook'). */
  private readonly mirrors = new Map<string, { rootfs: TreeMirror, data: TreeMirror, busy: boolean }>()
  /** Names this checkpointer's mirror dirs (several checkpointers may share a state dir). */
  private readonly instance = randomBytes(4).toString('hex')
  /** Per mission: staging and restores take turns on the standby dir. */
  private readonly standbyLanes = new Map<string, Promise<unknown>>()

  constructor (options: CheckpointerOptions) {
    this.runtime = options.runtime
    this.store = options.store
    this.shipImages = options.shipImages ?? true
    this.freezeMode = options.freezeMode ?? 'criu-hook'
  }

  /** Reads the CRIU version once (recorded in every manifest). The runtime must be started. */
  async start (): Promise<void> {
    // Whatever a previous run staged is unknown to this one.
    await rm(join(this.runtime.info.rootDir, 'tandem-standby'), { recursive: true, force: true })
    await mkdir(join(this.runtime.stateDir, MIRRORS_DIR), { recursive: true, mode: 0o700 })
    this.criuVersion = await new Promise(resolve => {
      execFile('criu', ['--version'], (err, stdout) => {
        resolve(err != null ? 'unknown' : (/Version:\s*(\S+)/.exec(stdout)?.[1] ?? 'unknown'))
      })
    })
  }

  async stop (): Promise<void> {
    this.lifetime.abort(new CheckpointError('checkpointer stopped'))
    await Promise.allSettled([...this.imageLoads.values()].map(async l => await l.done))
    await this.store.idle()
  }

  /**
   * The image's CID once it is stored; until then starts storing it in the background and returns null, so the
   * mission's first checkpoints are not held up by a `docker save` of the whole image. Boards that lack the image
   * can restore from the first checkpoint whose manifest carries it.
   */
  private async sharedImageOrStartSharing (imageId: string): Promise<CID | null> {
    const known = await this.store.imageCid(imageId)
    if (known != null) return known
    this.shareImage(imageId, this.lifetime.signal).catch(() => {})
    return null
  }

  /**
   * Stores an image in the bundle store, one DAG per layer, and returns its per-layer manifest's CID. Once per image
   * id: concurrent calls share one upload, a finished one is remembered (also across restarts, by the store).
   */
  async shareImage (imageRef: string, signal?: AbortSignal): Promise<ShareImageResult> {
    const info = await this.runtime.imageInfo(imageRef)
    if (info == null) throw new ImageMissingError(`image ${imageRef} is not on this board`)
    let pending = this.imageUploads.get(info.id)
    if (pending == null) {
      pending = (async () => {
        const started = performance.now()
        const known = await this.store.imageCid(info.id)
        if (known != null) {
          const manifest = await this.store.getImageManifest(known, { offline: true })
          return { cid: known, imageId: info.id, totalBytes: manifest.totalBytes, newBytes: 0, ms: performance.now() - started }
        }
        const save = await this.runtime.saveImage(info.id, signal)
        const stored = await this.store.putImage(save, { imageId: info.id, tags: info.tags, arch: info.arch }, signal)
        return { cid: stored.cid, imageId: info.id, totalBytes: stored.manifest.totalBytes, newBytes: stored.newBytes, ms: performance.now() - started }
      })()
      this.imageUploads.set(info.id, pending)
      pending.catch(() => this.imageUploads.delete(info.id))
    }
    return await pending
  }

  /**
   * Makes the image whose manifest is `imageCid` present in this board's Docker: nothing when it is there; otherwise
   * only the layers Docker lacks (after the longest chain of leading layers some local image already has) are
   * fetched, blocks this store holds are not, and the needed layers are streamed from the store into `docker load`.
   * Concurrent calls for one image share one load.
   */
  async ensureImage (imageCid: CID, options: EnsureImageOptions = {}): Promise<EnsureImageResult> {
    const started = performance.now()
    if (options.imageId != null && await this.runtime.imageInfo(options.imageId) != null) {
      return { loaded: false, imageId: options.imageId, fetchedBytes: 0, totalBytes: 0, reusedLayers: 0, ms: performance.now() - started }
    }
    const key = imageCid.toString()
    let load = this.imageLoads.get(key)
    if (load == null) {
      const listeners = new Set<(p: ImageFetchProgress) => void>()
      const done = this.loadImage(imageCid, options.providers, p => { for (const l of listeners) l(p) })
      load = { done, listeners }
      this.imageLoads.set(key, load)
      done.finally(() => this.imageLoads.delete(key)).catch(() => {})
    }
    const { onProgress } = options
    if (onProgress != null) load.listeners.add(onProgress)
    try {
      const result = await untilAborted(load.done, options.signal)
      if (options.imageId != null && result.imageId !== options.imageId) {
        throw new ImageMissingError(`image ${key} holds ${result.imageId}, not ${options.imageId}`)
      }
      return result
    } finally {
      if (onProgress != null) load.listeners.delete(onProgress)
    }
  }

  private async loadImage (imageCid: CID, providers: string[] | undefined, onProgress: (p: ImageFetchProgress) => void): Promise<EnsureImageResult> {
    const started = performance.now()
    const signal = this.lifetime.signal
    const manifestWasLocal = await this.store.backend.has(imageCid)
    const manifest: ImageManifest = await this.store.getImageManifest(imageCid, { signal, providers })
    const manifestBytes = manifestWasLocal ? 0 : (await this.store.getBlock(imageCid, { signal, offline: true })).byteLength
    const present = await this.runtime.imageInfo(manifest.imageId)
    if (present != null) {
      // The same image under another name (e.g. a tag removed and the image id kept by another tag): name it again.
      for (const tag of manifest.tags) if (!present.tags.includes(tag)) await this.runtime.tagImage(manifest.imageId, tag)
      return { loaded: false, imageId: manifest.imageId, fetchedBytes: manifestBytes, totalBytes: 0, reusedLayers: 0, ms: performance.now() - started }
    }
    const diffIds = manifest.layers.map(l => l.diffId)
    const reusedLayers = Math.max(0, ...(await this.runtime.layerChains()).map(chain => commonPrefixLength(chain, diffIds)))
    const needed = manifest.layers.slice(reusedLayers)
    const fetched = await this.store.fetchImageLayers(imageCid, manifest, needed, { signal, providers, onProgress })
    try {
      await this.runtime.loadImage(Readable.from(this.store.imageArchive(manifest, reusedLayers, { signal })), signal)
    } catch (err) {
      throw new CheckpointError(`docker load of image ${manifest.imageId} (${needed.length} of ${manifest.layers.length} layers from ${imageCid.toString()}) failed: ${(err as Error).message}`)
    }
    if (await this.runtime.imageInfo(manifest.imageId) == null) throw new ImageMissingError(`docker load of ${imageCid.toString()} did not produce image ${manifest.imageId}`)
    await this.store.recordImageLayers(imageCid, manifest, needed)
    return {
      loaded: true,
      imageId: manifest.imageId,
      fetchedBytes: manifestBytes + fetched.networkBytes,
      totalBytes: fetched.totalBytes,
      reusedLayers,
      ms: performance.now() - started
    }
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

    const imageCid = this.shipImages ? await this.sharedImageOrStartSharing(inspect.Image) : null
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
      const dumper = await this.#startDumper(containerId, scratch, dirs.criu, options.seq)
      let dump: DumpOutcome = { wallMs: 0, stats: null, statsSource: 'none', log: null }
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
      let pausedAt = performance.now()
      let resumedAt = pausedAt
      if (dumper.hook != null) {
        // The container is frozen at CRIU's pre-dump action (by this process, or by CRIU itself on cgroup v2) and CRIU's
        // post-dump action waits for the copy: runc's start-up and CRIU's own preparation run while the mission runs.
        const hook = dumper.hook
        const dumping = dumper.dump(signal)
        const settled = dumping.done.then(() => true, () => false)
        try {
          // A failed dump rejects done; a dump that ends without the hook (it cannot, unless CRIU ignored it) is an error.
          const frozen = await Promise.race([hook.frozen.then(() => true), dumping.done.then(() => false)])
          if (!frozen) throw new CriuError('CRIU finished without running tandem\'s post-dump hook', [])
          pausedAt = hook.selfFrozenAt ?? performance.now()
          try { await copyFiles() } finally { hook.release(); resumedAt = performance.now() }
          await dumping.done
          // Frozen by this process at pre-dump: CRIU left it frozen, thawed now that runc is done.
          if (hook.selfFrozenAt != null) { await hook.thaw(); resumedAt = performance.now() }
        } finally {
          hook.release()
          await settled
          await hook.thaw().catch(() => {})
          dump = await dumper.finish()
          await hook.close()
        }
      } else {
        try {
          await container.pause()
          const dumping = dumper.dump(signal)
          dumping.done.catch(() => {})
          // Once CRIU has written its images the rest of the dump is file copying: the mission may run on.
          await Promise.race([dumping.done, dumping.criuWritten])
          await copyFiles()
          await container.unpause()
          resumedAt = performance.now()
          await dumping.done
        } finally {
          if (resumedAt === pausedAt) {
            await container.unpause().catch(() => {})
            resumedAt = performance.now()
          }
          dump = await dumper.finish()
        }
      }
      const criuPhases = dump.log != null ? criuPhasesFromLog(dump.log) : null
      // With the hook and CRIU freezing: from its freeze request to its thaw (CRIU's own figures, the copy included).
      const pausedMs = dumper.hook != null && dumper.hook.selfFrozenAt == null && dump.stats != null && dump.stats.frozenTimeUs > 0
        ? (dump.stats.freezingTimeUs + dump.stats.frozenTimeUs) / 1000
        : resumedAt - pausedAt
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
        criuVersion: this.criuVersion,
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
      const mirror = this.mirrors.get(containerId)
      if (mirror != null) mirror.busy = false
      await rm(scratch, { recursive: true, force: true })
    }
  }

  /** This container's mirrors, unless a take of it is already using them (then null: that take copies all). */
  #mirrorFor (containerId: string): { rootfs: TreeMirror, data: TreeMirror, busy: boolean } | null {
    let mirror = this.mirrors.get(containerId)
    if (mirror?.busy === true) return null
    if (mirror == null) {
      const base = join(this.runtime.stateDir, MIRRORS_DIR, `${containerId}-${this.instance}`)
      mirror = { rootfs: new TreeMirror(join(base, 'rootfs')), data: new TreeMirror(join(base, 'data')), busy: false }
      this.mirrors.set(containerId, mirror)
    }
    return mirror
  }

  /** Deletes the mirrors of a container that is gone (its checkpoints are stored; the mirrors only speed up the next). */
  async forgetContainer (containerId: string): Promise<void> {
    const mirror = this.mirrors.get(containerId)
    if (mirror == null || mirror.busy) return
    this.mirrors.delete(containerId)
    await rm(dirname(mirror.rootfs.dir), { recursive: true, force: true })
  }

  /**
   * How this container is dumped. runc directly when this daemon's runc state is where the runtime expects it: CRIU
   * writes its images straight into the bundle's directory. Otherwise Docker's checkpoint API, which has containerd
   * pack the images into its content store and unpack them again, ~0.2 s more for a small Node.js mission.
   */
  async #startDumper (containerId: string, scratch: string, imagesDir: string, seq: number): Promise<Dumper> {
    const runcRoot = this.runtime.runcRoot
    if (await access(join(runcRoot, containerId, 'state.json')).then(() => true, () => false)) {
      const hook = this.freezeMode === 'criu-hook' ? await prepareCriuHook(scratch, await freezerStateOf(runcRoot, containerId)) : null
      return runcDumper(runcRoot, containerId, scratch, imagesDir, hook)
    }
    const taskDir = join(this.runtime.info.rootDir, 'containerd/daemon/io.containerd.runtime.v2.task/moby', containerId)
    return dockerDumper(this.runtime.docker.getContainer(containerId), taskDir, scratch, imagesDir, `tandem-${seq}-${randomBytes(3).toString('hex')}`)
  }

  /**
   * Brings a checkpoint into this board's store from the swarm and retains it; not its image (see ensureImage).
   * A bundle from another CPU architecture is refused after reading only its manifest.
   */
  async fetch (cid: CID, options: { signal?: AbortSignal, onProgress?: (p: FetchProgress) => void, providers?: string[] } = {}): Promise<LocalBundle> {
    const result = await this.store.fetch(cid, {
      ...options,
      accept: (m) => this.assertRunnableHere(m, cid),
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
    const { manifest } = bundle
    await this.inStandbyLane(manifest.mission, async () => {
      const base = this.staged.get(manifest.mission)
      if (base?.cid === bundle.cid.toString()) return
      this.staged.delete(manifest.mission)
      const dir = this.standbyDir(manifest.mission)
      if (base == null) await rm(dir, { recursive: true, force: true })
      // Only root's: the rootfs changes may hold the image's set-id programs.
      await mkdir(dir, { recursive: true, mode: 0o700 })
      await chmod(dir, 0o700)
      await this.store.materializeTree(manifest.trees.criu, join(dir, 'criu'), { signal: options.signal, previous: base?.manifest.trees.criu, role: 'criu' })
      await this.store.materializeTree(manifest.trees.rootfs, join(dir, 'rootfs'), {
        signal: options.signal, previous: base?.manifest.trees.rootfs, role: 'rootfs', allowSetId: this.setIdPolicy(manifest)
      })
      this.staged.set(manifest.mission, { cid: bundle.cid.toString(), manifest })
    })
  }

  /** Forgets (and deletes) what is staged for a mission. */
  async unstage (mission: string): Promise<void> {
    await this.inStandbyLane(mission, async () => {
      this.staged.delete(mission)
      await rm(this.standbyDir(mission), { recursive: true, force: true })
    })
  }

  private standbyDir (mission: string): string {
    assertMissionName(mission)
    // Under Docker's data root, so moving it into a container's checkpoint and upper dirs is a rename.
    return join(this.runtime.info.rootDir, 'tandem-standby', mission)
  }

  private async inStandbyLane<T> (mission: string, work: () => Promise<T>): Promise<T> {
    const previous = this.standbyLanes.get(mission) ?? Promise.resolve()
    const next = previous.catch(() => {}).then(work)
    this.standbyLanes.set(mission, next.catch(() => {}))
    return await next
  }

  /**
   * Moves the staged files of checkpoint `cid` into a new container's checkpoint and upper dirs; false when what
   * is staged is another checkpoint (or the move failed: then the targets are emptied for a full write).
   */
  private async useStaged (mission: string, cid: CID, checkpointDir: string, upperDir: string): Promise<{ used: boolean, rejected: string | null }> {
    return await this.inStandbyLane(mission, async () => {
      const staged = this.staged.get(mission)
      if (staged?.cid !== cid.toString()) return { used: false, rejected: null }
      this.staged.delete(mission)
      const dir = this.standbyDir(mission)
      // Files on disk can change behind this process (a bad disk, a stray write): they are restored only if they
      // still match the checkpoint's digests; else they are written again from the (verified) store.
      const problem = await this.store.verifyTreeOnDisk(staged.manifest.trees.criu, join(dir, 'criu')) ??
        await this.store.verifyTreeOnDisk(staged.manifest.trees.rootfs, join(dir, 'rootfs'))
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

  /** Restores a checkpoint into a new container on this board and returns its id. Fetches it first if needed. */
  async restore (source: CID | LocalBundle, options: RestoreOptions): Promise<RestoreResult> {
    const started = performance.now()
    const { signal } = options
    const bundle = 'manifest' in source ? source : await this.fetch(source, { signal, providers: options.providers })
    const { manifest, cid } = bundle
    this.assertRunnableHere(manifest, cid)

    let imageLoaded = false
    if (await this.runtime.imageInfo(manifest.spec.imageId) == null) {
      if (manifest.spec.imageCid == null) throw new ImageMissingError(`image ${manifest.spec.imageId} of mission ${manifest.mission} is not on this board and the checkpoint carries no copy`)
      imageLoaded = (await this.ensureImage(manifest.spec.imageCid, { signal, providers: options.providers, imageId: manifest.spec.imageId })).loaded
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
      const { used: staged, rejected: stagedRejected } = await this.useStaged(manifest.mission, cid, checkpointDir, upperDir)
      const dataDir = this.runtime.dataDirFor(inspect.Name.replace(/^\//, ''))
      const writeFiles = async (): Promise<void> => {
        // All settle before a failure is reported: the container is removed after it, not while files are still written.
        const written = await Promise.allSettled([
          staged ? Promise.resolve() : this.store.materializeTree(manifest.trees.criu, checkpointDir, { signal, role: 'criu' }),
          staged ? Promise.resolve() : this.store.materializeTree(manifest.trees.rootfs, upperDir, { signal, role: 'rootfs', allowSetId: this.setIdPolicy(manifest) }),
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

  private setIdPolicy (manifest: CheckpointManifest): (entries: SetIdEntry[]) => Promise<void> {
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

  private assertRunnableHere (manifest: CheckpointManifest, cid: CID): void {
    const local = this.runtime.info.arch
    if (manifest.arch !== local) throw new ArchitectureMismatchError(manifest.arch, local, cid.toString())
  }
}

/** The container's cgroup v1 freezer.state, from runc's state.json; null on cgroup v2 or when unknown. */
async function freezerStateOf (runcRoot: string, containerId: string): Promise<string | null> {
  try {
    const state = JSON.parse(await readFile(join(runcRoot, containerId, 'state.json'), 'utf8')) as { cgroup_paths?: Record<string, string> }
    const dir = state.cgroup_paths?.freezer
    if (dir == null || !dir.startsWith('/sys/fs/cgroup/')) return null
    const file = join(dir, 'freezer.state')
    await access(file)
    return file
  } catch {
    return null
  }
}

function commonPrefixLength (a: string[], b: string[]): number {
  let n = 0
  while (n < a.length && n < b.length && a[n] === b[n]) n++
  return n
}

/** `work`, or the signal's reason once it aborts (the work itself goes on). */
async function untilAborted<T> (work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal == null) return await work
  signal.throwIfAborted()
  let onAbort = (): void => {}
  const aborted = new Promise<never>((_resolve, reject) => { onAbort = () => { reject(signal.reason) }; signal.addEventListener('abort', onAbort, { once: true }) })
  try { return await Promise.race([work, aborted]) } finally { signal.removeEventListener('abort', onAbort) }
}

function upperDirOf (inspect: { GraphDriver?: { Data?: object } }): string | undefined {
  return (inspect.GraphDriver?.Data as { UpperDir?: string } | undefined)?.UpperDir
}

function asArray (v: unknown): string[] | null {
  if (Array.isArray(v)) return v as string[]
  if (typeof v === 'string' && v !== '') return [v]
  return null
}

interface DumpOutcome {
  wallMs: number
  stats: CriuDumpStats | null
  statsSource: TakeStats['criuStatsSource']
  /** CRIU's dump.log, when it could be read. */
  log: string | null
}

/** One CRIU dump of a paused container, by runc or by Docker. */
interface Dumper {
  readonly path: TakeStats['dumpPath']
  /** CRIU's post-dump hook holding the freeze (runc path with freezeMode 'criu-hook'), else null. */
  readonly hook: CriuHook | null
  /** Starts the dump; `criuWritten` resolves once CRIU is done, `done` once the images are in place. */
  dump (signal?: AbortSignal): { criuWritten: Promise<void>, done: Promise<void> }
  /** After the dump (or its failure): CRIU's own figures. */
  finish (): Promise<DumpOutcome>
  /** Moves the images into the bundle's criu directory (when they were written elsewhere). */
  placeImages (): Promise<void>
}

function runcDumper (runcRoot: string, containerId: string, scratch: string, imagesDir: string, hook: CriuHook | null): Dumper {
  const workDir = join(scratch, 'criu-work')
  let wallMs = 0
  return {
    path: 'runc',
    hook,
    dump (signal) {
      const started = performance.now()
      const done = (async () => {
        await mkdir(imagesDir, { recursive: true })
        await mkdir(workDir, { recursive: true })
        try {
          await run('runc', ['--root', runcRoot, 'checkpoint', '--leave-running', '--image-path', imagesDir, '--work-path', workDir, containerId], signal, hook?.env)
        } catch (err) {
          const log = (await readFile(join(workDir, 'dump.log'), 'utf8').catch(() => '')).split('\n')
          const errors = log.filter(l => /Error|Warn/.test(l))
          throw new CriuError(`CRIU checkpoint failed: ${(err as Error).message}`, (errors.length > 0 ? errors : log).slice(-20))
        }
        wallMs = performance.now() - started
      })()
      return { criuWritten: done, done }
    },
    async finish () {
      const stats = parseStatsDump(await readFile(join(workDir, 'stats-dump')).catch(() => new Uint8Array()))
      const log = await readFile(join(workDir, 'dump.log'), 'latin1').catch(() => null)
      if (stats != null) return { wallMs, stats, statsSource: 'stats-dump', log }
      const fromLog = log != null ? await statsFromDumpLog(log, imagesDir) : null
      return { wallMs, stats: fromLog, statsSource: fromLog != null ? 'dump-log' : 'none', log }
    },
    async placeImages () {}
  }
}

function dockerDumper (container: Docker.Container, taskDir: string, scratch: string, imagesDir: string, name: string): Dumper {
  const statsWatch = watchCriuWork(taskDir)
  let wallMs = 0
  return {
    path: 'docker',
    hook: null,
    dump (signal) {
      const started = performance.now()
      const done = (container as unknown as { createCheckpoint: (o: object) => Promise<unknown> })
        .createCheckpoint({ CheckpointID: name, CheckpointDir: scratch, Exit: false, abortSignal: signal })
        .then(() => { wallMs = performance.now() - started }, async (err: unknown) => { throw await criuFailure('checkpoint', err) })
      return { criuWritten: statsWatch.criuDone, done }
    },
    async finish () {
      const criu = await statsWatch.stop()
      const stats = criu.stats ?? (criu.log != null ? await statsFromDumpLog(criu.log, join(scratch, name)) : null)
      return { wallMs, stats, statsSource: criu.stats != null ? 'stats-dump' : stats != null ? 'dump-log' : 'none', log: criu.log }
    },
    async placeImages () { await renameDir(join(scratch, name), imagesDir) }
  }
}

/**
 * containerd runs CRIU in `<data-root>/containerd/.../<id>/criu-work` and deletes that directory as soon
 * as the dump returns. Polling every 2 ms: dump.log (open for the whole dump) is opened and followed, so
 * the end of CRIU's work is seen before Docker finishes copying the images, and it stays readable through
 * its descriptor after the deletion; stats-dump (written last) is read when caught in time.
 */
function watchCriuWork (taskDir: string): {
  /** Resolves when CRIU reports the dump finished (or the watch stops). */
  criuDone: Promise<void>
  stop: () => Promise<{ stats: CriuDumpStats | null, log: string | null }>
} {
  const workDir = join(taskDir, 'criu-work')
  let stats: CriuDumpStats | null = null
  let log: FileHandle | null = null
  let logText = ''
  let stopped = false
  let markDone: () => void = () => {}
  const criuDone = new Promise<void>(resolve => { markDone = resolve })
  const follow = async (handle: FileHandle): Promise<void> => {
    const buf = Buffer.alloc(256 * 1024)
    for (;;) {
      const { bytesRead } = await handle.read(buf, 0, buf.length, Buffer.byteLength(logText))
      if (bytesRead === 0) return
      logText += buf.subarray(0, bytesRead).toString('latin1')
    }
  }
  const poll = async (): Promise<void> => {
    while (!stopped && stats == null) {
      if (log == null) log = await open(join(workDir, 'dump.log'), 'r').catch(() => null)
      if (log != null) {
        await follow(log).catch(() => {})
        if (logText.includes('Dumping finished successfully')) markDone()
      }
      try { stats = parseStatsDump(await readFile(join(workDir, 'stats-dump'))) } catch {}
      if (stats != null) markDone()
      else await new Promise(resolve => setTimeout(resolve, 2))
    }
  }
  const polling = poll()
  return {
    criuDone,
    stop: async () => {
      stopped = true
      markDone()
      await polling
      const handle = log as FileHandle | null
      if (handle == null) return { stats, log: null }
      try {
        await follow(handle).catch(() => {})
        return { stats, log: logText }
      } finally { await handle.close() }
    }
  }
}

/**
 * When stats-dump was deleted before it could be read: CRIU's frozen time from the timestamps of
 * dump.log (first task seized .. tasks unfrozen) and pages written from the size of the page images.
 */
async function statsFromDumpLog (log: string, imagesDir: string): Promise<CriuDumpStats | null> {
  const stamp = (line: string | undefined): number | null => {
    const m = /^\((\d+)\.(\d+)\)/.exec(line ?? '')
    return m?.[1] != null && m[2] != null ? Number(m[1]) * 1e6 + Number(m[2].padEnd(6, '0').slice(0, 6)) : null
  }
  const lines = log.split('\n')
  const frozen = stamp(lines.find(l => /Seized task|freezer\.state=FROZEN/.test(l)))
  const thawed = stamp(lines.findLast(l => /Unfreezing tasks|Unseizing/.test(l)))
  if (frozen == null || thawed == null || thawed < frozen) return null
  let pageBytes = 0
  try {
    for (const f of await readdir(imagesDir)) if (/^pages-\d+\.img$/.test(f)) pageBytes += (await stat(join(imagesDir, f))).size
  } catch {}
  const pages = Math.round(pageBytes / 4096)
  return { freezingTimeUs: 0, frozenTimeUs: thawed - frozen, memdumpTimeUs: 0, memwriteTimeUs: 0, pagesScanned: 0, pagesSkippedParent: 0, pagesWritten: pages }
}

/** Turns a Docker checkpoint/restore error into a CriuError carrying CRIU's own log lines. */
async function criuFailure (what: 'checkpoint' | 'restore', err: unknown): Promise<Error> {
  const message = (err as { json?: { message?: string } })?.json?.message ?? (err as Error)?.message ?? String(err)
  if (!/criu|runc/i.test(message)) return err instanceof Error ? err : new Error(message)
  const logPath = /path=\s*(\S+\.log)/.exec(message)?.[1] ?? /log file:\s*(\S+\.log)/.exec(message)?.[1]
  let lines: string[] = []
  if (logPath != null) {
    try {
      const log = (await readFile(logPath, 'utf8')).split('\n')
      const errors = log.filter(l => /Error|Warn/.test(l))
      lines = (errors.length > 0 ? errors : log).slice(-20)
    } catch {}
  }
  return new CriuError(`CRIU ${what} failed: ${message}`, lines)
}

async function run (cmd: string, args: string[], signal?: AbortSignal, env?: NodeJS.ProcessEnv): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], signal, env: env ?? process.env })
    let err = ''
    p.stderr.on('data', (d: Buffer) => { err += d.toString() })
    p.on('error', reject)
    p.on('close', code => { code === 0 ? resolve() : reject(new CheckpointError(`${cmd} ${args.join(' ')}: ${err.trim()}`)) })
  })
}

/** Copies a directory tree keeping owners, modes, symlinks and overlay whiteouts (reflinks where possible). */
async function copyTree (from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true })
  await run('cp', ['-a', '--reflink=auto', `${from}/.`, to])
}

async function renameDir (from: string, to: string): Promise<void> {
  await run('mv', ['-T', from, to])
}
