// Missions on a peer: feeds the consensus machine (consensus/) with gossip, the membership and ticks, and hands its
// actions to one MissionRunner per mission, to the image transfers and to the state store. Built from narrow
// components (MissionComponents), not from the whole peer.
import { ClusterMachine, majority, type SelfInfo } from '../../consensus/machine.ts'
import { validateMessage } from '../../consensus/messages.ts'
import { checkMessageAuthority, GrantError } from '../../consensus/authority.ts'
import { imageFor, normalizeImageRef } from '../../manifest/manifest.ts'
import type { VoteKeys } from '../../consensus/quorum-proof.ts'
import type { Action, ConsensusConfig, LocalEvent, MissionSnapshot, PeerInfo, PersistedState } from '../../consensus/types.ts'
import type { BoardProfile } from '../../boards/profiles.ts'
import { storageProblemOf } from '../../checkpoint/storage-health.ts'
import type { ControlApi } from '../api.ts'
import { GossipDrop, type Gossip } from '../gossip.ts'
import type { HeartbeatExtras } from '../heartbeat.ts'
import type { ImageInventory } from '../image-inventory.ts'
import type { Membership } from '../membership.ts'
import type { BeatLink } from '../beats.ts'
import type { PeerMetrics } from '../metrics.ts'
import { MissionBudget } from '../mission-budget.ts'
import type { MissionEventLog } from '../mission-events.ts'
import type { MissionEventData } from '../../consensus/events.ts'
import type { Revocations, RevocationsOptions } from '../revocations.ts'
import type { StatusRegistry } from '../status.ts'
import { leaseValidityMs, type Watchdog } from '../watchdog.ts'
import { ImageTransfers } from './image-transfers.ts'
import type { MissionOperator } from './operator.ts'
import { peerInfoOf, sameList, samePeerInfo } from './peer-info.ts'
import type { MissionCheckpoints, MissionRuntime } from './ports.ts'
import { serveMissionRoutes } from './routes.ts'
import { MissionRunner, runnerDeadlines, type RunnerAction } from './runner.ts'
import { MissionStateStore } from './state-store.ts'
import { EnvKeeper } from './env-keeper.ts'
import type { SealIdentity } from '../../checkpoint/sealing.ts'
import { imageFetchesOf, imageOnSomeLiveBoard, missionStatusOf, type MissionStatus, type OwnImages } from './status.ts'
import { STORAGE_PROBE_MS, StorageMonitor } from './storage.ts'

export const MISSIONS_TOPIC = 'tandem/missions/1'
/** The longest a clean stop waits for its missions to be handed to their backups. */
const HANDOVER_TIMEOUT_MS = 8000
/** Gossip's limit for mission messages; every record fits by construction (specs are at most 64 KiB). */
const MISSIONS_MAX_BYTES = 256 * 1024

/** What the missions service uses of the peer and of this board. */
export interface MissionComponents {
  peerId: string
  board: Pick<BoardProfile, 'arch' | 'name' | 'memoryMb'>
  /** The peer's data dir: the missions store and the storage probe live there. */
  dataDir: string
  gossip: Pick<Gossip, 'subscribe' | 'publish'>
  membership: Pick<Membership, 'list' | 'on'>
  api: Pick<ControlApi, 'route'>
  status: Pick<StatusRegistry, 'extend'>
  heartbeat: Pick<HeartbeatExtras, 'extend'>
  metrics: Pick<PeerMetrics, 'checkpointTaken' | 'restored' | 'checkpointFetched' | 'imageFetched'>
  /** Whether `criu check` passed (the peer's background capability probe). */
  criuReady: () => boolean
  events: Pick<MissionEventLog, 'record' | 'of'>
  operator: MissionOperator
  /** Signs this board's votes and checks the proofs of others' epochs (peer/vote-keys.ts); absent: none made or checked. */
  voteKeys?: VoteKeys
  /** Revoked boards, told to the machine (peer/revocations.ts). */
  revocations: (hooks: Pick<RevocationsOptions, 'keys' | 'signer' | 'onRevoked'>) => Pick<Revocations, 'start' | 'stop' | 'revoked'>
  /** Absent on a board without a working Docker: it still votes and relays. */
  runtime?: MissionRuntime
  checkpoints?: MissionCheckpoints
  images?: Pick<ImageInventory, 'answering' | 'has' | 'present' | 'fetching' | 'isFetching' | 'beginFetch' | 'progress' | 'endFetch' | 'refresh' | 'extra'>
  /** Freezes this peer's containers when the lease is not renewed in time. */
  watchdog?: Pick<Watchdog, 'renew' | 'dismiss'>
  /** When each peer last acknowledged this peer's direct beats (the lease counts from it); beats the peers named. */
  beats: Pick<BeatLink, 'acknowledgedAt' | 'requireAcks'>
  /** Opens the env values sealed for this board (null: it opens none). */
  identity: SealIdentity | null
  log: (line: string) => void
}

export interface MissionServiceOptions {
  consensus?: Partial<ConsensusConfig>
  /** How often the state machine is ticked, ms (default 50). */
  tickIntervalMs?: number
  /** Checkpoints kept per mission (default 3). */
  keepCheckpoints?: number
}

export class MissionService {
  readonly #c: MissionComponents
  readonly #options: MissionServiceOptions
  readonly #log: (line: string) => void
  readonly #state: MissionStateStore
  readonly #storage: StorageMonitor
  readonly #images: ImageTransfers
  readonly #runners = new Map<string, MissionRunner>()
  #machine: ClusterMachine | undefined
  #selfInfo: SelfInfo | undefined
  readonly #fedPeers = new Map<string, PeerInfo>()
  /** The containers the last lease renewal covered, and when it ends (wall ms). */
  #leasedContainers = new Map<string, { id: string, epoch: number }>()
  #leaseEndsAt = Infinity
  readonly #budget = new MissionBudget()
  readonly #env: EnvKeeper
  readonly #heldMissions = {
    holds: (mission: string) => (this.#machine?.knownEpoch(mission) ?? -1) >= 0,
    specs: () => this.#liveViews().map(v => v.spec)
  }

  #actionChain: Promise<void> = Promise.resolve()
  #timers: NodeJS.Timeout[] = []
  #cleanups: Array<() => void | Promise<void>> = []
  readonly #abort = new AbortController()
  #stopped = false
  #revocations: Pick<Revocations, 'revoked'> | undefined

  constructor (components: MissionComponents, options: MissionServiceOptions = {}) {
    this.#c = components
    this.#options = options
    this.#log = components.log
    this.#env = new EnvKeeper({
      peerId: components.peerId,
      identity: components.identity,
      local: event => { this.#local(event) },
      record: (mission, event) => { this.#recordEvent(mission, event) },
      log: this.#log
    })
    this.#state = new MissionStateStore({ dataDir: components.dataDir, onWriteFailed: err => { this.#storage.failed(err, null) } })
    const checkpoints = components.checkpoints
    this.#storage = new StorageMonitor({
      dataDir: components.dataDir,
      probes: [...(checkpoints != null ? [async () => { await checkpoints.probe() }] : []), async () => { await this.#state.probe() }],
      missions: () => this.#liveViews().map(v => v.name),
      record: (mission, event) => { this.#recordEvent(mission, event) },
      log: this.#log,
      onChange: () => { this.#refreshSelfInfo(); this.#input(machine => { machine.tick(Date.now()) }) }
    })
    this.#images = new ImageTransfers({
      peerId: components.peerId,
      runtime: components.runtime,
      checkpoints,
      images: components.images,
      signal: this.#abort.signal,
      stopped: () => this.#stopped,
      local: event => { this.#local(event) },
      record: (mission, event) => { this.#recordEvent(mission, event) },
      storageFailed: (err, mission) => { this.#storage.failed(err, mission) },
      metrics: components.metrics,
      onImagesChanged: () => { this.#refreshSelfInfo() },
      tick: () => { this.#input(machine => { machine.tick(Date.now()) }) },
      log: this.#log
    })
  }

  get machine (): ClusterMachine {
    if (this.#machine == null) throw new Error('missions are not started')
    return this.#machine
  }

  /** Checkpoints the store must keep: those this board holds (and may restore) and those it restores now. */
  pinned (): string[] {
    return [
      ...(this.#machine?.snapshot(Date.now()).flatMap(v => v.held != null ? [v.held.cid] : []) ?? []),
      ...[...this.#runners.values()].flatMap(r => [...r.restoring])
    ]
  }

  async start (): Promise<void> {
    const c = this.#c
    await this.#state.open()
    this.#cleanups.push(async () => { await this.#state.close() })
    this.#selfInfo = { peerId: c.peerId, arch: c.board.arch, board: c.board.name, memoryMb: c.board.memoryMb, canCheckpoint: false, canRun: false, images: [], fetchingImages: [] }
    this.#refreshSelfInfo()
    const persisted = await this.#state.load()
    if (c.runtime != null) await this.#stopStrayContainers(c.runtime, persisted)
    this.#machine = new ClusterMachine({ self: this.#selfInfo, now: Date.now(), config: this.#options.consensus, persisted, ...(c.voteKeys === undefined ? {} : { voteKeys: c.voteKeys }) })
    const revocations = c.revocations({
      keys: () => c.operator.keys,
      signer: () => c.operator.signer,
      onRevoked: peerId => { this.#input(machine => { machine.revoke(Date.now(), peerId) }) }
    })
    await revocations.start()
    this.#revocations = revocations
    this.#cleanups.push(async () => { await revocations.stop() })

    this.#cleanups.push(c.gossip.subscribe(MISSIONS_TOPIC, payload => {
      const message = validateMessage(payload)
      if (message === undefined) throw new GossipDrop('malformed', `not a consensus message: ${JSON.stringify(payload).slice(0, 300)}`)
      try {
        checkMessageAuthority(c.operator.keys, message, Date.now())
      } catch (err) {
        if (err instanceof GrantError) throw new GossipDrop('unauthorized', `${err.problem}: ${err.message}`)
        throw err
      }
      const over = this.#budget.refusal(message, this.#heldMissions)
      if (over != null) throw new GossipDrop('oversized', `${over.reason}: ${over.detail}`)
      return message
    }, (message, sender) => {
      this.#input(machine => { machine.receive(Date.now(), sender, message) })
    }, { maxBytes: MISSIONS_MAX_BYTES }))

    this.#cleanups.push(c.membership.on(() => { this.#feedPeers() }))
    c.beats.requireAcks(() => this.#leaseViews().flatMap(v => v.view.filter(p => p !== c.peerId)))
    this.#cleanups.push(() => { c.beats.requireAcks(() => []) })
    this.#timers.push(setInterval(() => {
      // `criu check` runs in the peer's background capability probe; the machine reads its SelfInfo as it changes.
      this.#refreshSelfInfo()
      this.#feedPeers()
      // The fencing lease, enforced by the watchdog's own event loop: it freezes these containers if this stops.
      this.#renewLease()
      this.#input(machine => { machine.tick(Date.now()) })
      if (!this.#stopped) this.#env.reseal(this.machine.snapshot(Date.now()))
    }, this.#options.tickIntervalMs ?? 50))
    if (c.runtime != null) this.#timers.push(setInterval(() => { void this.#watchContainers() }, 1000))

    c.status.extend('missions', () => this.list())
    c.status.extend('missionBudget', () => ({ refused: { ...this.#budget.refused } }))
    c.status.extend('storage', () => this.#storage.health)
    c.status.extend('authority', () => this.authority())
    c.status.extend('env', () => ({ refused: { ...this.#env.refused } }))
    c.heartbeat.extend('storage', () => this.#storage.health)
    this.#timers.push(setInterval(() => { if (!this.#stopped) void this.#storage.probe() }, STORAGE_PROBE_MS))
    c.heartbeat.extend('images', () => c.images?.extra(this.#wantedImages()) ?? { docker: false, present: [], fetching: [] })
    c.heartbeat.extend('missions', () => this.machine.snapshot(Date.now())
      .filter(v => v.role !== 'member' && v.state !== 'removed')
      .map(v => ({ name: v.name, role: v.role, epoch: v.epoch })))
    serveMissionRoutes({
      api: c.api,
      peerId: c.peerId,
      operator: c.operator,
      list: () => this.list(),
      local: event => { this.#local(event) },
      commitEnv: (spec, salts) => this.#env.commit(spec, this.#c.membership.list().filter(m => m.state === 'alive').map(m => m.peerId), salts),
      refusalOfNew: spec => this.#budget.refusalOfNew(spec.name, spec, this.#heldMissions),
      refreshImages: async () => { await c.images?.refresh() },
      imageOnSomeLiveBoard: spec => imageOnSomeLiveBoard(spec, this.#ownImages(), c.membership.list()),
      isAlive: peerId => c.membership.list().some(m => m.peerId === peerId && m.state === 'alive')
    })
    this.#feedPeers()
    this.#input(machine => { machine.tick(Date.now()) })
  }

  async stop (): Promise<void> {
    if (this.#stopped) return
    await this.#handOver().catch(err => { this.#log(`missions: hand-over before stopping failed: ${(err as Error).message}`) })
    this.#stopped = true
    this.#abort.abort()
    for (const timer of this.#timers) clearInterval(timer)
    // The lease stays renewed while this peer removes its containers itself: the watchdog must not freeze a container
    // that `docker rm -f` is removing (the removal would wait for the watchdog's kill).
    const renewing = setInterval(() => { this.#renewLease() }, 50)
    try {
      await this.#drainAndKill()
    } finally {
      clearInterval(renewing)
    }
    this.#c.watchdog?.dismiss()
    for (const cleanup of this.#cleanups.reverse()) {
      try { await cleanup() } catch (err) { this.#log(`missions: cleanup failed: ${(err as Error).message}`) }
    }
  }

  list (): MissionStatus[] {
    const now = Date.now()
    const own = this.#ownImages()
    const members = this.#c.membership.list()
    return this.machine.snapshot(now).filter(v => v.state !== 'removed').map(v => {
      const runner = this.#runners.get(v.name)
      return missionStatusOf(v, now, {
        imageFetches: imageFetchesOf(v.spec, own, members),
        events: this.#c.events.of(v.name),
        container: runner?.container ?? null,
        lastTake: runner?.lastTake ?? null,
        env: this.#env.shown(v)
      })
    })
  }

  /** What this board trusts and refused, for the status (`authority`). */
  authority (): { open: boolean, operatorKeys: string[], holdsOperatorKey: boolean, revoked: string[], refused: ReturnType<ClusterMachine['refusals']> | null } {
    const operator = this.#c.operator
    return {
      open: operator.open,
      operatorKeys: operator.keys.keys,
      holdsOperatorKey: operator.signer != null,
      revoked: this.#revocations?.revoked ?? [],
      refused: this.#machine?.refusals() ?? null
    }
  }

  #liveViews (): ReturnType<ClusterMachine['snapshot']> {
    return this.#machine?.snapshot(Date.now()).filter(v => v.state !== 'removed') ?? []
  }

  #ownImages (): OwnImages {
    const images = this.#c.images
    return { self: this.#c.peerId, arch: this.#c.board.arch, fetching: images?.fetching() ?? [], has: ref => images?.has(ref) === true }
  }

  #runner (mission: string): MissionRunner {
    let runner = this.#runners.get(mission)
    if (runner == null) {
      const c = this.#c
      runner = new MissionRunner({
        mission,
        peerId: c.peerId,
        runtime: c.runtime,
        checkpoints: c.checkpoints,
        signal: this.#abort.signal,
        keepCheckpoints: this.#options.keepCheckpoints ?? 3,
        deadlines: runnerDeadlines(this.#options.consensus),
        snapshot: () => this.machine.snapshot(Date.now()).find(v => v.name === mission),
        env: spec => {
          const v = this.machine.snapshot(Date.now()).find(v => v.name === mission)
          return this.#env.require({ name: mission, spec, deployId: v?.deployId ?? '', envSeal: v?.envSeal })
        },
        local: event => { this.#local(event) },
        record: (event, at) => { this.#recordEvent(mission, event, at) },
        storageFailed: err => { this.#storage.failed(err, mission) },
        metrics: c.metrics,
        log: this.#log
      })
      this.#runners.set(mission, runner)
    }
    return runner
  }

  /**
   * A clean stop (SIGTERM, e.g. a restart by systemd) hands every mission this peer runs to its backup with a final
   * checkpoint, as `mission move` does, so a restart loses no state: it waits until the backup runs it, the backup
   * is gone, or HANDOVER_TIMEOUT_MS passed (systemd's TimeoutStopSec must allow for it).
   */
  async #handOver (): Promise<void> {
    if (this.#machine == null) return
    const self = this.#c.peerId
    const alive = (peerId: string): boolean => this.#c.membership.list().some(m => m.peerId === peerId && m.state === 'alive')
    const moving = this.list().filter(m => m.role === 'primary' && m.state === 'running' && m.backup != null && alive(m.backup))
    if (moving.length === 0) return
    this.#log(`missions: stopping: handing ${moving.map(m => m.name).join(', ')} over to ${moving.length === 1 ? 'its backup' : 'their backups'}`)
    for (const m of moving) this.#local({ type: 'move', mission: m.name, to: m.backup as string })
    const deadline = Date.now() + HANDOVER_TIMEOUT_MS
    while (Date.now() < deadline) {
      const pending = moving.filter(m => {
        const now = this.list().find(x => x.name === m.name)
        const handed = now == null || (now.primary !== self && now.state === 'running')
        return !handed && alive(m.backup as string)
      })
      if (pending.length === 0) return
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    this.#log(`missions: hand-over not finished after ${HANDOVER_TIMEOUT_MS} ms: stopping anyway (the backup takes over as after a failure)`)
  }

  /** This peer's running containers, by mission. */
  #containers (): Map<string, { id: string, epoch: number }> {
    const containers = new Map<string, { id: string, epoch: number }>()
    for (const [mission, runner] of this.#runners) if (runner.container != null) containers.set(mission, runner.container)
    return containers
  }

  /** The views of 3 to 5 boards whose primary this peer is, with its container running here: they hold its lease. */
  #leaseViews (): MissionSnapshot[] {
    const machine = this.#machine
    if (machine == null) return []
    const containers = this.#containers()
    return machine.snapshot(Date.now()).filter(v => v.role === 'primary' && containers.has(v.name) && v.view.length >= 3 && v.view.length <= 5)
  }

  /**
   * Tells the watchdog this daemon is alive and in control of its containers for the lease's validity, counted from
   * the newest of this peer's beats a majority of each mission's view acknowledged (Raft's leader lease; views of
   * 3 to 5 boards, each member beaten every 100 ms): no member takes over before it has not heard this peer for
   * primarySilenceMs, and each acknowledging member heard it at that beat's send time or later. A primary cut off
   * from its majority has its container frozen by the watchdog 650 ms after its last acknowledged beat, however late
   * its own detector, self-fence and Docker are, and whatever it reads after a stall of its own. Larger views count
   * from this tick.
   */
  #renewLease (): void {
    const sentAt = Date.now()
    // The previous renewal ran out before this one: the watchdog froze the containers it covered and kills them on
    // this renewal. The machine hears it as a fence (a starved daemon), not as the mission crashing.
    if (sentAt > this.#leaseEndsAt) {
      for (const [mission, container] of this.#leasedContainers) {
        this.#log(`missions: the watchdog's lease lapsed ${sentAt - this.#leaseEndsAt} ms before this renewal: container ${container.id.slice(0, 12)} of ${mission} is fenced`)
        this.#local({ type: 'leaseLapsed', mission, epoch: container.epoch, lateMs: sentAt - this.#leaseEndsAt })
      }
    }
    const containers = this.#containers()
    const validity = leaseValidityMs(this.#options.consensus)
    let validFor = validity
    const now = performance.now()
    for (const v of this.#leaseViews()) {
      const times = v.view.map(p => p === this.#c.peerId ? now : this.#c.beats.acknowledgedAt(p)).sort((a, b) => b - a)
      const quorumAckedAt = times[majority(v.view.length) - 1] ?? -Infinity
      validFor = Math.min(validFor, quorumAckedAt + validity - now)
    }
    this.#leasedContainers = containers
    this.#leaseEndsAt = sentAt + Math.max(0, validFor)
    this.#c.watchdog?.renew(Math.max(0, validFor), [...containers.values()].map(c => c.id))
  }

  /** Lets queued work settle, then removes every container of this peer. */
  async #drainAndKill (): Promise<void> {
    await this.#actionChain.catch(() => {})
    await Promise.allSettled([...[...this.#runners.values()].map(async r => { await r.idle() }), this.#images.idle()])
    await this.#state.settled()
    // No container may outlive its peer: nobody would fence it while another board takes the mission over.
    await this.#c.runtime?.removeAllOwn().catch(err => {
      this.#log(`missions: could not stop this peer's containers: ${(err as Error).message}`)
    })
  }

  /** What the machine knows of this board: Docker, CRIU, and which images it holds or is fetching. */
  #refreshSelfInfo (): void {
    const self = this.#selfInfo
    if (self == null) return
    const storage = this.#storage.health
    const images = this.#c.images
    self.canCheckpoint = this.#c.runtime != null && this.#c.criuReady()
    self.canRun = images?.answering === true
    self.canStore = storage.ok
    if (storage.ok) delete self.storageProblem
    else self.storageProblem = storage.problem ?? 'failing'
    // Every image here, not only those of known missions: a mission deployed a moment ago finds its image at once.
    const present = images == null ? [] : images.present().sort()
    const fetching = images?.fetching().map(f => f.image) ?? []
    if (!sameList(present, self.images)) self.images = present
    if (!sameList(fetching, self.fetchingImages)) self.fetchingImages = fetching
  }

  /** The images of the missions this peer knows, for this board's architecture, normalized. */
  #wantedImages (): string[] {
    const refs = new Set<string>()
    for (const v of this.#liveViews()) {
      const image = imageFor(v.spec, this.#c.board.arch)
      if (image != null) refs.add(normalizeImageRef(image))
    }
    return [...refs].sort()
  }

  /** Feeds the machine and applies what it decided. All machine inputs go through here. */
  #input (feed: (machine: ClusterMachine) => void): void {
    if (this.#stopped || this.#machine == null) return
    feed(this.#machine)
    const actions = this.#machine.takeActions()
    // One failed batch (its decision could not be persisted) must not stop every later one.
    if (actions.length > 0) {
      this.#actionChain = this.#actionChain.then(async () => { await this.#apply(actions) }).catch(err => {
        // A storage fault was reported once already (event, status); it is not logged for every tick's batch.
        if (storageProblemOf(err) == null || this.#storage.ok) this.#log(`missions: actions not applied: ${(err as Error).message}`)
      })
    }
  }

  #local (event: LocalEvent): void {
    this.#input(machine => { machine.local(Date.now(), event) })
  }

  #feedPeers (): void {
    if (this.#machine == null) return
    for (const member of this.#c.membership.list()) {
      const info = peerInfoOf(member)
      if (info === undefined || samePeerInfo(this.#fedPeers.get(info.peerId), info)) continue
      this.#fedPeers.set(info.peerId, info)
      this.#input(machine => { machine.peerChanged(Date.now(), info) })
    }
  }

  async #apply (actions: Action[]): Promise<void> {
    for (const action of actions) {
      switch (action.type) {
        case 'persist':
          // Every decision is durable before anything that depends on it happens.
          await this.#state.persist(action.state)
          break
        case 'publish':
          this.#c.gossip.publish(MISSIONS_TOPIC, action.message).catch(err => {
            this.#log(`missions: publish ${action.message.type} failed: ${(err as Error).message}`)
          })
          break
        case 'event':
          this.#recordEvent(action.mission, action.event)
          break
        case 'storeImage':
        case 'fetchImage':
          this.#images.apply(action)
          break
        default:
          this.#runner(action.mission).apply(action satisfies RunnerAction)
      }
    }
  }

  #recordEvent (mission: string, event: MissionEventData, at?: number): void {
    this.#c.events.record(mission, event, at)
  }

  /** At start no container of this peer may run: the machine decides afresh what this board runs. */
  async #stopStrayContainers (runtime: MissionRuntime, persisted: PersistedState | undefined): Promise<void> {
    for (const c of await runtime.listOwn({ all: true }).catch(() => [])) {
      await runtime.stop(c.id).catch(err => { this.#log(`missions: cannot remove stale container ${c.id}: ${(err as Error).message}`) })
      if (c.running) this.#recordEvent(c.mission, { kind: 'staleContainerStopped', epoch: c.epoch, knownEpoch: persisted?.missions[c.mission]?.record.epoch ?? null })
    }
  }

  /** Reports containers that exited on their own; the machine decides what follows. */
  async #watchContainers (): Promise<void> {
    if (this.#stopped) return
    for (const runner of this.#runners.values()) await runner.checkExit()
  }
}
