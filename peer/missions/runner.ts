// One mission on this board: its container, the checkpoints it holds, and the work the machine asks of it, in three
// lanes. The container lane runs starts, restores, checkpoints and fences in order; the fetch lane brings the
// backup's checkpoints (and so its acks) beside it; the stage lane writes the newest one's files ahead of a restore.
import { DEFAULT_CONSENSUS_CONFIG, type Action, type CheckpointRef, type ConsensusConfig, type FailureCause, type LocalEvent, type MissionSnapshot } from '../../consensus/types.ts'
import { ImageMissingError, CriuError } from '../../checkpoint/errors.ts'
import { NotARecipientError } from '../../checkpoint/sealing.ts'
import { EnvUnavailableError } from './env-keeper.ts'
import { storageProblemOf } from '../../checkpoint/storage-health.ts'
import type { MissionEventData, StopReason } from '../../consensus/events.ts'
import type { PeerMetrics } from '../metrics.ts'
import type { ContainerSpec, HeldBundle, MissionCheckpoints, MissionRuntime } from './ports.ts'
import type { CheckpointTiming } from './status.ts'
import { enqueue, newLane } from './lanes.ts'
import type { MissionSpec } from '../../manifest/manifest.ts'

/** The machine's actions a runner carries out. */
export type RunnerAction = Extract<Action, { type: 'startFresh' | 'restore' | 'checkpoint' | 'stopContainer' | 'runningEpoch' | 'forget' | 'fetchCheckpoint' }>

type ContainerAction = Exclude<RunnerAction, { type: 'fetchCheckpoint' }>

export type RunnerMetrics = Pick<PeerMetrics, 'checkpointTaken' | 'restored' | 'checkpointFetched'>

/** What a runner needs of the service, bound to its mission. */
export interface RunnerContext {
  mission: string
  peerId: string
  /** Absent on a board without Docker. */
  runtime: MissionRuntime | undefined
  checkpoints: MissionCheckpoints | undefined
  /** Aborted when the service stops. */
  signal: AbortSignal
  /** Checkpoints held per mission. */
  keepCheckpoints: number
  /**
   * When the machine gives up on a checkpoint (checkpointTimeoutMs) or a start (startTimeoutMs), the work is aborted
   * too: a dump that hangs (CRIU waiting on a container killed under it) kept the mission's lane, and every restore and
   * start queued behind it, blocked for good.
   */
  deadlines: { checkpointMs: number, startMs: number }
  /** The machine's snapshot of the mission now. */
  snapshot: () => MissionSnapshot | undefined
  /** The clear env of `spec` (its values opened from the record's seal and checked), or a throw saying why not. */
  env: (spec: MissionSpec) => Record<string, string>
  /** An input to the machine. */
  local: (event: LocalEvent) => void
  record: (event: MissionEventData, at?: number) => void
  /** A fault of this board's storage, if `err` is one. */
  storageFailed: (err: unknown) => void
  metrics: RunnerMetrics
  log: (line: string) => void
}

/**
 * The runner's deadlines from the machine's: a start's is the machine's; a checkpoint's twice the machine's (it has
 * given up on the checkpoint by then; a dump that is only slow, 4-6 s seen on a loaded board, is not killed under the
 * mission).
 */
export function runnerDeadlines (consensus: Partial<ConsensusConfig> | undefined): RunnerContext['deadlines'] {
  return {
    checkpointMs: 2 * (consensus?.checkpointTimeoutMs ?? DEFAULT_CONSENSUS_CONFIG.checkpointTimeoutMs),
    startMs: consensus?.startTimeoutMs ?? DEFAULT_CONSENSUS_CONFIG.startTimeoutMs
  }
}

/** This peer's container of a mission. */
export interface RunningContainer { id: string, epoch: number }

/** What kind of failure a start or restore was, for the machine's back-off and the event's wording. */
export function failureCause (err: unknown): FailureCause {
  if (err instanceof ImageMissingError) return 'image-missing'
  if (err instanceof EnvUnavailableError) return 'env-missing'
  if (err instanceof CriuError) return 'criu'
  if ((err as { statusCode?: unknown }).statusCode != null) return 'docker'
  return 'other'
}

/** Turns the manifest's mission into what the container runtime runs; `env`: its clear values. */
export function containerSpec (spec: MissionSpec, image: string, env: Record<string, string> = spec.env): ContainerSpec {
  return {
    mission: spec.name,
    image,
    cmd: spec.command,
    env: Object.entries(env).map(([key, value]) => `${key}=${value}`),
    dataPath: spec.data ?? null
  }
}

const firstLine = (err: unknown): string => (err as Error).message.split('\n')[0] ?? ''

export class MissionRunner {
  readonly mission: string
  readonly #ctx: RunnerContext
  #container: RunningContainer | undefined
  #lastTake: CheckpointTiming | undefined
  /** Checkpoints of the mission this board fetched, by CID. */
  readonly #bundles = new Map<string, HeldBundle>()
  readonly #work = newLane()
  readonly #fetches = newLane()
  readonly #staging = newLane()
  /** Newest checkpoint the machine asked to fetch: queued fetches of older ones are skipped. */
  #wantedFetch: string | undefined
  /** Only the newest fetched checkpoint is staged. */
  #wantedStage: string | undefined
  /** Checkpoints being restored now (the store must not collect them). */
  readonly #restoring = new Set<string>()
  /** Whether a checkpoint was seen to take longer than the interval (said once). */
  #overrunWarned = false

  constructor (ctx: RunnerContext) {
    this.mission = ctx.mission
    this.#ctx = ctx
  }

  get container (): RunningContainer | undefined { return this.#container }
  get lastTake (): CheckpointTiming | undefined { return this.#lastTake }
  get restoring (): ReadonlySet<string> { return this.#restoring }

  apply (action: RunnerAction): void {
    switch (action.type) {
      case 'fetchCheckpoint':
        this.#wantedFetch = action.checkpoint.cid
        this.#queue(this.#fetches, async () => { await this.#fetch(action.checkpoint, action.providers) })
        return
      case 'stopContainer':
        // A fence pre-empts everything: the container is killed now, not after the checkpoint, fetch or restore
        // work queued in the mission's lane; the lane then sweeps whatever that work started meanwhile.
        void this.stopNow(action.reason)
        this.#queue(this.#work, async () => { await this.#run(action) })
        return
      default:
        this.#queue(this.#work, async () => { await this.#run(action) })
    }
  }

  /** Resolves once every lane is empty. */
  async idle (): Promise<void> {
    await Promise.allSettled([this.#work.onIdle(), this.#fetches.onIdle(), this.#staging.onIdle()])
  }

  /** Stops this peer's container of the mission, if it runs one, at once. */
  async stopNow (reason: StopReason): Promise<void> {
    const container = this.#container
    const runtime = this.#ctx.runtime
    if (container == null || runtime == null) return
    this.#container = undefined
    await runtime.stop(container.id).catch(err => { this.#ctx.log(`missions: stopping ${container.id} failed: ${(err as Error).message}`) })
    this.#ctx.record({ kind: 'containerStopped', epoch: container.epoch, reason })
  }

  /** Reports the container if it exited on its own; the machine decides what follows. */
  async checkExit (): Promise<void> {
    const container = this.#container
    const runtime = this.#ctx.runtime
    if (container == null || runtime == null) return
    const state = await runtime.stateOf(container.id)
    if (state == null || state.running || this.#container !== container) return
    this.#container = undefined
    const reason = state.exitReason ?? 'the container is gone'
    this.#ctx.record({ kind: 'containerExited', epoch: container.epoch, reason })
    this.#ctx.local({ type: 'containerExited', mission: this.mission, epoch: container.epoch, reason })
  }

  /** The service's signal, aborted also once the machine's deadline for this kind of work has passed. */
  #deadline (kind: keyof RunnerContext['deadlines']): AbortSignal {
    return AbortSignal.any([this.#ctx.signal, AbortSignal.timeout(this.#ctx.deadlines[kind])])
  }

  #queue (lane: ReturnType<typeof newLane>, work: () => Promise<void>): void {
    enqueue(lane, work, err => { this.#ctx.log(`missions: ${this.mission}: ${(err as Error).stack ?? String(err)}`) })
  }

  async #run (action: ContainerAction): Promise<void> {
    switch (action.type) {
      case 'startFresh': await this.#startFresh(action); return
      case 'restore': await this.#restore(action); return
      case 'checkpoint': await this.#checkpoint(action); return
      case 'stopContainer': await this.#fence(action.reason); return
      case 'runningEpoch':
        if (this.#container != null) this.#container.epoch = action.epoch
        return
      case 'forget':
        this.#bundles.clear()
        await this.#ctx.checkpoints?.unstage(this.mission).catch(() => {})
        await this.#ctx.checkpoints?.prune(this.mission).catch(() => {})
    }
  }

  async #startFresh (action: Extract<Action, { type: 'startFresh' }>): Promise<void> {
    const { runtime, checkpoints, signal } = this.#ctx
    if (runtime == null) { this.#ctx.local({ type: 'startFailed', mission: this.mission, epoch: action.epoch, error: 'no Docker on this board', cause: 'docker' }); return }
    try {
      const spec = containerSpec(action.spec, action.image, this.#ctx.env(action.spec))
      // The data of the checkpoint the machine named, if this board holds it (after a restart only its store
      // does) and it verifies; else the start says it has none.
      let data: HeldBundle | undefined
      let noData: string | null = null
      if (action.dataFrom != null) {
        data = this.#bundles.get(action.dataFrom.cid)
        if (data == null && checkpoints != null) {
          try {
            data = await checkpoints.fetch(action.dataFrom.cid, { signal: AbortSignal.any([signal, AbortSignal.timeout(10_000)]) })
          } catch (err) {
            noData = firstLine(err)
          }
        }
      }
      const deadline = this.#deadline('startMs')
      const id = data != null && checkpoints != null
        ? await checkpoints.startWithData(spec, action.epoch, data, { signal: deadline })
        : await runtime.startFresh(spec, action.epoch, { signal: deadline })
      this.#container = { id, epoch: action.epoch }
      const from = action.dataFrom == null || (data == null && noData == null) ? null : { seq: action.dataFrom.seq, error: data != null ? null : noData }
      this.#ctx.record({ kind: 'containerStarted', image: action.image, epoch: action.epoch, data: from })
      this.#ctx.local({ type: 'containerStarted', mission: this.mission, epoch: action.epoch })
    } catch (err) {
      this.#ctx.local({ type: 'startFailed', mission: this.mission, epoch: action.epoch, error: (err as Error).message, cause: failureCause(err) })
    }
  }

  async #restore (action: Extract<Action, { type: 'restore' }>): Promise<void> {
    const { checkpoints, peerId } = this.#ctx
    const { checkpoint, epoch } = action
    if (checkpoints == null) { this.#ctx.local({ type: 'restoreFailed', mission: this.mission, epoch, error: 'no Docker on this board', cause: 'docker' }); return }
    this.#restoring.add(checkpoint.cid)
    try {
      // The restored env is the checkpoint's (sealed for the view); a board that cannot open and check the signed
      // values is no member that should run the mission: it says so rather than restore.
      this.#ctx.env(action.spec)
      const result = await checkpoints.restore(this.#bundles.get(checkpoint.cid) ?? checkpoint.cid, { peerId, epoch, signal: this.#deadline('startMs') })
      this.#container = { id: result.containerId, epoch }
      const { createMs, filesMs, criuMs } = result.phases
      this.#ctx.metrics.restored(this.mission, { ms: result.ms, criuMs })
      const seq = checkpoint.seq
      if (result.stagedRejected != null) this.#ctx.record({ kind: 'stagedRejected', seq, reason: result.stagedRejected })
      if (result.repairedBlocks > 0) this.#ctx.record({ kind: 'restoreRepaired', seq, blocks: result.repairedBlocks })
      this.#ctx.record({ kind: 'restored', seq, epoch, ms: Math.round(result.ms), phases: { createMs, filesMs, criuMs }, staged: result.staged, imageLoaded: result.imageLoaded })
      this.#ctx.local({ type: 'containerStarted', mission: this.mission, epoch })
    } catch (err) {
      this.#ctx.storageFailed(err)
      this.#ctx.record({ kind: 'restoreRefused', seq: checkpoint.seq, error: firstLine(err) })
      this.#ctx.local({ type: 'restoreFailed', mission: this.mission, epoch, error: (err as Error).message, cause: failureCause(err) })
    } finally {
      this.#restoring.delete(checkpoint.cid)
    }
  }

  async #checkpoint (action: Extract<Action, { type: 'checkpoint' }>): Promise<void> {
    const { checkpoints, runtime } = this.#ctx
    const { epoch, seq } = action
    const container = this.#container
    if (container == null || checkpoints == null) {
      this.#ctx.local({ type: 'checkpointFailed', mission: this.mission, epoch, seq, error: 'no container of the mission runs here', noContainer: true })
      return
    }
    const deadline = this.#deadline('checkpointMs')
    try {
      const { parent, intervalMs } = action
      const takeStart = performance.now()
      const takeStartWall = Date.now()
      // Sealed for the view of this epoch: a board outside it (or that left it) cannot read the checkpoint.
      const sealFor = [...new Set([...action.view, this.#ctx.peerId])]
      const result = await checkpoints.take(container.id, { mission: this.mission, epoch, seq, parent, signal: deadline, sealFor })
      const tookMs = performance.now() - takeStart
      if (tookMs > intervalMs && !this.#overrunWarned) {
        this.#overrunWarned = true
        this.#ctx.record({ kind: 'checkpointOverrun', seq, tookMs: Math.round(tookMs), intervalMs })
      }
      this.#lastTake = {
        seq,
        pausedMs: result.pausedMs,
        storeMs: result.storeMs,
        totalMs: Math.round(performance.now() - takeStart),
        newBytes: result.newBytes,
        totalBytes: result.totalBytes,
        phases: result.phases
      }
      this.#ctx.metrics.checkpointTaken(this.mission, { pausedMs: result.pausedMs, totalMs: tookMs, frozenTimeUs: result.frozenTimeUs, newBytes: result.newBytes })
      if (action.stop) {
        // Untracked before the stop, or the exit watcher reports the planned stop as a crash (a move became a
        // failover with a restart counted and back-off; the final checkpoint was not restored).
        this.#container = undefined
        await runtime?.stop(container.id)
        // The mission ran here for the last time when the final checkpoint paused it.
        this.#ctx.record({ kind: 'finalCheckpointTaken', seq, epoch, pausedMs: result.pausedMs }, takeStartWall + result.phases.prepareMs)
      }
      this.#ctx.local({ type: 'checkpointTaken', mission: this.mission, epoch, seq, cid: result.cid })
    } catch (err) {
      if (deadline.aborted && !this.#ctx.signal.aborted && this.#container === container) {
        await this.#dumpHung(container, seq, (err as Error).message)
        return
      }
      this.#ctx.storageFailed(err)
      const problem = storageProblemOf(err)
      this.#ctx.local({ type: 'checkpointFailed', mission: this.mission, epoch, seq, error: problem != null ? `storage: ${problem}` : (err as Error).message })
    }
  }

  /**
   * A dump past its deadline was killed with its CRIU, which may have left the container frozen or with its parasite
   * code in it: the container is stopped and reported as exited, so the mission goes on from its last checkpoint
   * (on the backup, or here after the back-off) instead of a container in an unknown state.
   */
  async #dumpHung (container: RunningContainer, seq: number, error: string): Promise<void> {
    const reason = `checkpoint #${seq} did not end within ${Math.round(this.#ctx.deadlines.checkpointMs / 1000)} s and was killed (${error}); the container's state is unknown, so it is stopped`
    this.#container = undefined
    await this.#ctx.runtime?.stop(container.id).catch(err => { this.#ctx.log(`missions: stopping ${container.id} failed: ${(err as Error).message}`) })
    this.#ctx.local({ type: 'checkpointFailed', mission: this.mission, epoch: container.epoch, seq, error })
    this.#ctx.record({ kind: 'containerExited', epoch: container.epoch, reason })
    this.#ctx.local({ type: 'containerExited', mission: this.mission, epoch: container.epoch, reason })
  }

  /** The fence's sweep: whatever lane work queued before it started is stopped too, as is a container this process
   * did not start (e.g. before a daemon restart). Only this peer's: boards may share one Docker (tests do). */
  async #fence (reason: StopReason): Promise<void> {
    await this.stopNow(reason)
    const runtime = this.#ctx.runtime
    if (runtime == null) return
    for (const stray of await runtime.listOwn({ mission: this.mission, all: true }).catch(() => [])) {
      await runtime.stop(stray.id).catch(() => {})
    }
  }

  async #fetch (ref: CheckpointRef, providers: string[]): Promise<void> {
    const checkpoints = this.#ctx.checkpoints
    if (checkpoints == null) { this.#ctx.local({ type: 'fetchFailed', mission: this.mission, cid: ref.cid, error: 'no Docker on this board' }); return }
    if (this.#bundles.has(ref.cid)) { this.#ctx.local({ type: 'checkpointFetched', mission: this.mission, checkpoint: ref }); return }
    if (this.#wantedFetch !== ref.cid) return
    try {
      const others = providers.filter(p => p !== this.#ctx.peerId)
      const bundle = await checkpoints.fetch(ref.cid, {
        signal: AbortSignal.any([this.#ctx.signal, AbortSignal.timeout(60_000)]),
        providers: others.length > 0 ? others : undefined
      })
      if (bundle.repairedBlocks > 0) {
        this.#ctx.record({ kind: 'fetchRepaired', seq: ref.seq, blocks: bundle.repairedBlocks })
      }
      this.#ctx.metrics.checkpointFetched(this.mission, bundle.fetchedBytes)
      this.#bundles.set(ref.cid, bundle)
      this.#trimBundles()
      this.#ctx.local({ type: 'checkpointFetched', mission: this.mission, checkpoint: ref })
      // A takeover then only moves the files into place. A failure only costs that head start.
      this.#wantedStage = ref.cid
      this.#queue(this.#staging, async () => { await this.#stage(bundle, ref) })
    } catch (err) {
      if (err instanceof NotARecipientError || (err as { cause?: unknown } | null)?.cause instanceof NotARecipientError) {
        // Sealed before this board joined the view: no failure to back off from (three in a row held a new backup
        // 7 s behind, test/mission-images). The fetch stays in flight, and the next checkpoint, sealed for it, replaces it.
        this.#ctx.log(`missions: ${this.mission}: checkpoint #${ref.seq} was sealed before this board joined the view: waiting for the next one`)
        return
      }
      this.#ctx.log(`missions: ${this.mission}: fetch of checkpoint #${ref.seq} ${ref.cid} failed: ${(err as Error).message}`)
      this.#ctx.storageFailed(err)
      this.#ctx.local({ type: 'fetchFailed', mission: this.mission, cid: ref.cid, error: (err as Error).message })
    }
  }

  async #stage (bundle: HeldBundle, ref: CheckpointRef): Promise<void> {
    const checkpoints = this.#ctx.checkpoints
    if (this.#wantedStage !== ref.cid || checkpoints == null) return
    await checkpoints.stage(bundle, { signal: this.#ctx.signal }).catch(async err => {
      this.#ctx.log(`missions: ${this.mission}: staging checkpoint #${ref.seq} failed: ${(err as Error).message}`)
      this.#ctx.storageFailed(err)
      // Half-written staged files are of no use: a restore writes the files from the store instead.
      await checkpoints.unstage(this.mission).catch(() => {})
    })
  }

  #trimBundles (): void {
    const newestFirst = [...this.#bundles.values()].sort((a, b) => (b.epoch - a.epoch) || (b.seq - a.seq))
    for (const bundle of newestFirst.slice(this.#ctx.keepCheckpoints)) this.#bundles.delete(bundle.cid)
  }
}
