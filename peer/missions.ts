// Missions on a peer: wires the consensus state machine (consensus/) to gossip, the membership, the container
// runtime and checkpoints (checkpoint/), level for persisted decisions, and the control API.
import { join } from 'node:path'
import { Level } from 'level'
import { CID } from 'multiformats/cid'
import { ClusterMachine, majority, type SelfInfo } from '../consensus/machine.ts'
import { validateMessage } from '../consensus/messages.ts'
import { checkMessageAuthority, GrantError, newDeployId, OperatorKeys, OperatorSigner, specDigest, validateGrant, type OperatorGrant } from '../consensus/authority.ts'
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { imageFor, ManifestError, MAX_MANIFEST_BYTES, normalizeImageRef, parseManifest, type MissionSpec } from '../manifest/manifest.ts'
import type { Action, CheckpointRef, ConsensusConfig, LocalEvent, MissionView, PeerInfo, PersistedState } from '../consensus/types.ts'
import { ContainerRuntime, LABEL_EPOCH, LABEL_MISSION, LABEL_PEER, type ContainerSpec } from '../checkpoint/runtime.ts'
import { Checkpointer, type LocalBundle } from '../checkpoint/checkpointer.ts'
import { BlockCorruptError, CriuError, ImageMissingError } from '../checkpoint/errors.ts'
import { NotARecipientError } from '../checkpoint/sealing.ts'
import { openSwarmBundleStore } from '../checkpoint/swarm-store.ts'
import { MissionBudget } from './mission-budget.ts'
import { StorageError, storageProblemOf, StoreReopener, type StorageProblem } from '../checkpoint/storage-health.ts'
import { open as openFile, rm as removeFile } from 'node:fs/promises'
import { GossipDrop } from './gossip.ts'
import { Revocations } from './revocations.ts'
import { killContainersOf, leaseValidityMs, startWatchdog, type Watchdog } from './watchdog.ts'
import { MissionEventLog, type EventMark, type MissionEvent } from './mission-events.ts'
import { serveSwarmEvents } from './swarm-events.ts'
import { MissionLogs } from './mission-logs.ts'
import { ImageInventory, imagesExtraOf, type ImageFetchProgress } from './image-inventory.ts'
import { ApiError } from './api.ts'
import type { Peer } from './daemon.ts'
import type { Member } from './membership.ts'
import type { OperatorConfig } from './config.ts'

export const MISSIONS_TOPIC = 'tandem/missions/1'
const STATE_KEY = 'consensus-state'
/** The longest a clean stop waits for its missions to be handed to their backups. */
const HANDOVER_TIMEOUT_MS = 8000
/** Gossip's limit for mission messages; every record fits by construction (specs are at most 64 KiB). */
const MISSIONS_MAX_BYTES = 256 * 1024
/** While its storage fails, the board probes it this often (a write of PROBE_BYTES, synced, and a store record). */
const STORAGE_PROBE_MS = 1000
const PROBE_BYTES = 256 * 1024

/** The storage health a board reports in its heartbeats (`storage`) and status. */
export interface StorageHealth { ok: boolean, problem: StorageProblem | null, detail: string | null, since: number | null }

export function storageExtraOf (extras: Record<string, unknown> | undefined): StorageHealth {
  const value = extras?.storage as Partial<StorageHealth> | undefined
  const problem = value?.problem === 'disk full' || value?.problem === 'I/O error' || value?.problem === 'store corrupt' ? value.problem : null
  return { ok: value?.ok !== false, problem, detail: typeof value?.detail === 'string' ? value.detail : null, since: typeof value?.since === 'number' ? value.since : null }
}

export type { MissionEvent } from './mission-events.ts'

/** A board's fetch of a mission's image, as its heartbeats report it. */
export interface ImageFetchStatus extends ImageFetchProgress { board: string }

/** One mission as `tandem status --json` and the missions API show it. */
export interface MissionStatus {
  name: string
  /** The deployment (an operator's remove or move grant names it). */
  deployId: string
  /** The operator key that signed the deployment (after a rotation, the new one once re-signed). */
  signedBy: string | null
  epoch: number
  primary: string | null
  backup: string | null
  state: MissionView['state']
  role: MissionView['role']
  /** Why the mission is `blocked` or in `backoff` (else null). */
  reason: string | null
  /** Consecutive failed starts or crashes. */
  restarts: number
  lastFailure: MissionView['lastFailure']
  /** Whether the backup would restore a checkpoint if the primary's board died now. */
  protected: boolean
  protection: MissionView['protection']
  /** Boards fetching the mission's image now, with their progress. */
  imageFetches: ImageFetchStatus[]
  lastCheckpoint: { cid: string, seq: number, epoch: number, ageMs: number } | null
  /** Newest checkpoint sequence the backup holds and has acknowledged. */
  replicatedSeq: number | null
  /** Newest checkpoint this peer holds. */
  heldSeq: number | null
  /** Checkpoints the primary took that the backup does not hold yet. */
  replicationLag: number | null
  /** Primary: from the start of the newest acknowledged checkpoint to the backup's ack, ms. */
  replicationLagMs: number | null
  /** Primary: how often checkpoints start (the interval less the replication lag, at least half of it), ms. */
  checkpointPeriodMs: number | null
  spec: MissionSpec
  events: MissionEvent[]
  /** This peer's container of the mission, if it runs one. */
  container: { id: string, epoch: number } | null
  /** The newest checkpoint this peer took (as primary). */
  lastTake: CheckpointTiming | null
}

/** How the newest checkpoint this peer took went, ms and bytes. */
export interface CheckpointTiming { seq: number, pausedMs: number, storeMs: number, totalMs: number, newBytes: number, totalBytes: number, phases: Record<string, number> }

export interface MoveResult {
  mission: string
  to: string
  epoch: number
  seq: number | null
  /** From the source's final pause to the target's container running (or the whole request when unreported), ms. */
  downtimeMs: number
  totalMs: number
  measuredFrom: 'board reports' | 'request'
}

export interface MissionServiceOptions {
  peer: Peer
  consensus?: Partial<ConsensusConfig>
  /** How often the state machine is ticked, ms (default 50). */
  tickIntervalMs?: number
  /** Checkpoints kept per mission (default 3). */
  keepCheckpoints?: number
  log?: (line: string) => void
}

interface Lane { tail: Promise<void> }

/** Turns the manifest's mission into what the container runtime runs. */
function containerSpec (spec: MissionSpec, image: string): ContainerSpec {
  return {
    mission: spec.name,
    image,
    cmd: spec.command,
    env: Object.entries(spec.env).map(([key, value]) => `${key}=${value}`),
    dataPath: spec.data ?? null
  }
}

function peerInfoOf (member: Member): PeerInfo | undefined {
  const info = member.info
  if (info == null) return undefined
  const images = imagesExtraOf(info.extras)
  const storage = storageExtraOf(info.extras)
  return {
    peerId: member.peerId,
    state: member.state,
    arch: info.board.arch,
    board: info.board.name,
    memoryMb: info.board.memoryMb,
    canCheckpoint: info.capabilities.criu.checkOk === true && info.capabilities.docker.available === true,
    canRun: images.docker,
    canStore: storage.ok,
    ...(storage.ok ? {} : { storageProblem: storage.problem ?? 'failing' }),
    images: images.present,
    fetchingImages: images.fetching.map(f => f.image),
    // A refused redial proves the process exited; its watchdog (peer/watchdog.ts) killed its containers.
    gone: member.state === 'dead' && member.reason === 'connection refused'
  }
}

function samePeerInfo (a: PeerInfo | undefined, b: PeerInfo): boolean {
  return a !== undefined && a.state === b.state && a.gone === b.gone && a.arch === b.arch && a.board === b.board &&
    a.memoryMb === b.memoryMb && a.canCheckpoint === b.canCheckpoint && a.canRun === b.canRun && a.canStore === b.canStore && a.storageProblem === b.storageProblem &&
    sameList(a.images, b.images) && sameList(a.fetchingImages, b.fetchingImages)
}

function sameList (a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

/** What kind of failure a start or restore was, for the machine's back-off and the event's wording. */
function failureCause (err: unknown): 'image-missing' | 'criu' | 'docker' | 'other' {
  if (err instanceof ImageMissingError) return 'image-missing'
  if (err instanceof CriuError) return 'criu'
  if ((err as { statusCode?: unknown }).statusCode != null) return 'docker'
  return 'other'
}

export class MissionService {
  readonly #peer: Peer
  readonly #log: (line: string) => void
  readonly #options: MissionServiceOptions
  #db: Level<string, string> | undefined
  #dbReopener: StoreReopener | undefined
  /** This board's storage: failing since a storage fault, until a probe succeeds. */
  #storage: StorageHealth = { ok: true, problem: null, detail: null, since: null }
  #probing = false
  #runtime: ContainerRuntime | undefined
  #checkpointer: Checkpointer | undefined
  #machine: ClusterMachine | undefined
  #selfInfo: SelfInfo | undefined
  readonly #fedPeers = new Map<string, PeerInfo>()
  readonly #containers = new Map<string, { id: string, epoch: number }>()
  /** The containers the last lease renewal covered, and when it ends (wall ms). */
  #leasedContainers = new Map<string, { id: string, epoch: number }>()
  #leaseEndsAt = Infinity
  readonly #lastTake = new Map<string, CheckpointTiming>()
  /** Missions whose checkpoints were seen to take longer than their interval (said once). */
  readonly #overrunWarned = new Set<string>()
  readonly #bundles = new Map<string, LocalBundle>()
  #events: MissionEventLog | undefined
  #images: ImageInventory | undefined
  readonly #lanes = new Map<string, Lane>()
  readonly #fetchLanes = new Map<string, Lane>()
  /** Staging runs beside fetching (a fetch, and so the ack, never waits for it); only the newest is staged. */
  readonly #stageLanes = new Map<string, Lane>()
  readonly #wantedStage = new Map<string, string>()
  /** Checkpoints being restored now (see the store's `pinned`). */
  readonly #restoring = new Set<string>()
  /** Image uploads and downloads, one lane per image, beside the missions' container lanes. */
  readonly #imageLanes = new Map<string, Lane>()
  /** Newest checkpoint the machine asked to fetch per mission: queued fetches of older ones are skipped. */
  readonly #wantedFetch = new Map<string, string>()
  #persistChain: Promise<void> = Promise.resolve()
  readonly #budget = new MissionBudget()
  readonly #heldMissions = {
    holds: (mission: string) => (this.#machine?.knownEpoch(mission) ?? -1) >= 0,
    specs: () => this.#machine?.view(Date.now()).filter(v => v.state !== 'removed').map(v => v.spec) ?? []
  }
  #actionChain: Promise<void> = Promise.resolve()
  #watchdog: Watchdog | undefined
  #dockerExperimental = false
  #timers: NodeJS.Timeout[] = []
  #cleanups: Array<() => void | Promise<void>> = []
  readonly #abort = new AbortController()
  #stopped = false
  /** The operator keys this board trusts, and the operator key it holds (if any) to sign its API's requests. */
  #operatorKeys = new OperatorKeys([])
  #operatorSigner: OperatorSigner | undefined
  #revocations: Revocations | undefined

  constructor (options: MissionServiceOptions) {
    this.#peer = options.peer
    this.#options = options
    this.#log = options.log ?? (line => { process.stderr.write(`${new Date().toISOString()} ${line}\n`) })
  }

  get machine (): ClusterMachine {
    if (this.#machine == null) throw new Error('missions are not started')
    return this.#machine
  }

  async start (): Promise<void> {
    const peer = this.#peer
    const dataDir = peer.config.dataDir
    const operator = peer.config.operator
    this.#operatorKeys = new OperatorKeys(operator?.publicKeys ?? [], { open: operator?.open === true })
    if (operator?.privateKeyFile != null) this.#operatorSigner = new OperatorSigner(await readFile(operator.privateKeyFile, 'utf8'))
    if (this.#operatorKeys.open) this.#log('missions: INSECURE: no operator key (--insecure-open-missions): any peer holding the swarm key may deploy, remove and move missions')
    const db = new Level<string, string>(join(dataDir, 'missions'), { valueEncoding: 'utf8' })
    await db.open()
    this.#db = db
    this.#dbReopener = new StoreReopener(db)
    this.#cleanups.push(async () => { await db.close() })
    const events = new MissionEventLog({ self: peer.peerId, gossip: peer.gossip, log: this.#log })
    events.start()
    this.#events = events
    this.#cleanups.push(() => { events.stop() })
    this.#cleanups.push(serveSwarmEvents(peer, events))

    // Docker and CRIU decide whether this board can host missions; a board without them still votes and relays.
    const runtime = new ContainerRuntime({ dockerHost: peer.config.dockerHost, execRoot: peer.config.dockerExecRoot, stateDir: join(dataDir, 'containers') })
    try {
      const info = await runtime.start()
      this.#dockerExperimental = info.experimental
      if (!info.experimental) this.#log(`missions: Docker at ${peer.config.dockerHost} has no checkpoints (experimental off): this board will not host missions`)
      this.#runtime = runtime
    } catch (err) {
      this.#log(`missions: Docker at ${peer.config.dockerHost} unavailable (${(err as Error).message}): this board will not host missions`)
    }

    if (this.#runtime != null) {
      this.#watchdog = startWatchdog(peer.config.dockerHost, peer.peerId)
      const images = new ImageInventory({ docker: this.#runtime.docker, log: this.#log })
      await images.start()
      this.#images = images
      this.#cleanups.push(() => { images.stop() })
      peer.status.extend('images', () => images.status())
    }
    // Mission output kept and gossiped across failovers (`tandem mission logs`, peer/mission-logs.ts).
    const missionLogs = new MissionLogs({ peer, docker: this.#runtime?.docker, log: this.#log })
    await missionLogs.start()
    this.#cleanups.push(async () => { await missionLogs.stop() })

    // A block no peer delivers within 5 s on a LAN will not come: the fetch fails and the next checkpoint is tried,
    // instead of the backup falling 30 s behind.
    const { store, stop: stopStore } = await openSwarmBundleStore(peer.node, {
      keep: this.#options.keepCheckpoints,
      blockTimeoutMs: 5000,
      // Checkpoints are sealed for their mission's view; this opens the keys wrapped for this board.
      identity: peer.sealIdentity,
      // What this board holds (and may restore) and what it restores now are never collected.
      pinned: () => [
        ...(this.#machine?.view(Date.now()).flatMap(v => v.held != null ? [v.held.cid] : []) ?? []),
        ...this.#restoring
      ]
    })
    this.#cleanups.push(stopStore)
    if (this.#runtime != null) {
      const checkpointer = new Checkpointer({ runtime: this.#runtime, store })
      await checkpointer.start()
      this.#checkpointer = checkpointer
    }

    const board = peer.board
    this.#selfInfo = { peerId: peer.peerId, arch: board.arch, board: board.name, memoryMb: board.memoryMb, canCheckpoint: false, canRun: false, images: [], fetchingImages: [] }
    this.#refreshSelfInfo()
    const persisted = await this.#loadState()
    if (this.#runtime != null) await this.#stopStrayContainers(persisted)
    this.#machine = new ClusterMachine({ self: this.#selfInfo, now: Date.now(), config: this.#options.consensus, persisted })
    const revocations = new Revocations({
      peer, keys: () => this.#operatorKeys, signer: () => this.#operatorSigner, log: this.#log,
      onRevoked: peerId => { this.#input(machine => { machine.revoke(Date.now(), peerId) }) }
    })
    await revocations.start()
    this.#revocations = revocations
    this.#cleanups.push(async () => { await revocations.stop() })

    this.#cleanups.push(peer.gossip.subscribe(MISSIONS_TOPIC, payload => {
      const message = validateMessage(payload)
      if (message === undefined) throw new GossipDrop('malformed', `not a consensus message: ${JSON.stringify(payload).slice(0, 300)}`)
      try {
        checkMessageAuthority(this.#operatorKeys, message, Date.now())
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

    this.#cleanups.push(peer.membership.on(() => { this.#feedPeers() }))
    const tickMs = this.#options.tickIntervalMs ?? 50
    this.#timers.push(setInterval(() => {
      // `criu check` runs in the peer's background capability probe; the machine reads its SelfInfo as it changes.
      this.#refreshSelfInfo()
      this.#feedPeers()
      // The fencing lease, enforced by the watchdog's own event loop: it freezes these containers if this stops.
      this.#renewLease()
      this.#input(machine => { machine.tick(Date.now()) })
    }, tickMs))
    if (this.#runtime != null) this.#timers.push(setInterval(() => { void this.#watchContainers() }, 1000))

    peer.status.extend('missions', () => this.list())
    peer.status.extend('missionBudget', () => ({ refused: { ...this.#budget.refused } }))
    peer.status.extend('storage', () => ({ ...this.#storage }))
    peer.status.extend('authority', () => this.authority())
    peer.heartbeat.extend('storage', () => ({ ...this.#storage }))
    this.#timers.push(setInterval(() => { void this.#probeStorage() }, STORAGE_PROBE_MS))
    peer.heartbeat.extend('images', () => this.#images?.extra(this.#wantedImages()) ?? { docker: false, present: [], fetching: [] })
    peer.heartbeat.extend('missions', () => this.machine.view(Date.now())
      .filter(v => v.role !== 'member' && v.state !== 'removed')
      .map(v => ({ name: v.name, role: v.role, epoch: v.epoch })))
    this.#routes()
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
    this.#watchdog?.dismiss()
    for (const cleanup of this.#cleanups.reverse()) {
      try { await cleanup() } catch (err) { this.#log(`missions: cleanup failed: ${(err as Error).message}`) }
    }
    await this.#runtime?.close()
  }

  /**
   * A clean stop (SIGTERM, e.g. a restart by systemd) hands every mission this peer runs to its backup with a final
   * checkpoint, as `mission move` does, so a restart loses no state: it waits until the backup runs it, the backup
   * is gone, or HANDOVER_TIMEOUT_MS passed (systemd's TimeoutStopSec must allow for it).
   */
  async #handOver (): Promise<void> {
    if (this.#machine == null) return
    const self = this.#peer.peerId
    const alive = (peerId: string): boolean => this.#peer.membership.list().some(m => m.peerId === peerId && m.state === 'alive')
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

  /**
   * Tells the watchdog this daemon is alive and in control of its containers for the lease's validity, counted from
   * the last moment a majority of each mission's view was heard from (views of 3 to 5 boards, where every member's
   * 200 ms beats reach the primary): a primary cut off from its majority has its container frozen by the watchdog
   * 650 ms after it last heard them, however late its own detector, self-fence and Docker are (under load the stop
   * came 1.4 s after the cut, close to a takeover). Larger views count from this tick.
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
    const validity = leaseValidityMs(this.#options.consensus)
    let validFor = validity
    const machine = this.#machine
    if (machine != null) {
      const now = performance.now()
      const heard = new Map(this.#peer.membership.list().map(m => [m.peerId, m.lastHeardAt]))
      for (const v of machine.view(Date.now())) {
        if (v.role !== 'primary' || !this.#containers.has(v.name) || v.view.length < 3 || v.view.length > 5) continue
        const times = v.view.map(p => p === this.#peer.peerId ? now : (heard.get(p) ?? -Infinity)).sort((a, b) => b - a)
        const quorumHeardAt = times[majority(v.view.length) - 1] ?? -Infinity
        validFor = Math.min(validFor, quorumHeardAt + validity - now)
      }
    }
    this.#leasedContainers = new Map(this.#containers)
    this.#leaseEndsAt = sentAt + Math.max(0, validFor)
    this.#watchdog?.renew(Math.max(0, validFor), [...this.#containers.values()].map(c => c.id))
  }

  /** Lets queued work settle, then removes every container of this peer. */
  async #drainAndKill (): Promise<void> {
    await this.#actionChain.catch(() => {})
    await Promise.allSettled([...this.#lanes.values(), ...this.#fetchLanes.values(), ...this.#stageLanes.values(), ...this.#imageLanes.values()].map(async lane => { await lane.tail }))
    await this.#persistChain.catch(() => {})
    // No container may outlive its peer: nobody would fence it while another board takes the mission over.
    if (this.#runtime != null) {
      await killContainersOf(this.#peer.config.dockerHost, this.#peer.peerId).catch(err => {
        this.#log(`missions: could not stop this peer's containers: ${(err as Error).message}`)
      })
    }
  }

  #canCheckpointHere (): boolean {
    return this.#runtime != null && this.#dockerExperimental && this.#peer.capabilities.criu.checkOk === true
  }

  /** What the machine knows of this board: Docker, CRIU, and which images it holds or is fetching. */
  #refreshSelfInfo (): void {
    const self = this.#selfInfo
    if (self == null) return
    self.canCheckpoint = this.#canCheckpointHere()
    self.canRun = this.#images?.answering === true
    self.canStore = this.#storage.ok
    if (this.#storage.ok) delete self.storageProblem
    else self.storageProblem = this.#storage.problem ?? 'failing'
    const images = this.#images
    // Every image here, not only those of known missions: a mission deployed a moment ago finds its image at once.
    const present = images == null ? [] : images.present().sort()
    const fetching = images?.fetching().map(f => f.image) ?? []
    if (!sameList(present, self.images)) self.images = present
    if (!sameList(fetching, self.fetchingImages)) self.fetchingImages = fetching
  }

  /** The images of the missions this peer knows, for this board's architecture, normalized. */
  #wantedImages (): string[] {
    if (this.#machine == null) return []
    const arch = this.#peer.board.arch
    const refs = new Set<string>()
    for (const v of this.#machine.view(Date.now())) {
      if (v.state === 'removed') continue
      const image = imageFor(v.spec, arch)
      if (image != null) refs.add(normalizeImageRef(image))
    }
    return [...refs].sort()
  }

  // ---- inputs -------------------------------------------------------------------------------------------------

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
    for (const member of this.#peer.membership.list()) {
      const info = peerInfoOf(member)
      if (info === undefined || samePeerInfo(this.#fedPeers.get(info.peerId), info)) continue
      this.#fedPeers.set(info.peerId, info)
      this.#input(machine => { machine.peerChanged(Date.now(), info) })
    }
  }

  // ---- actions ------------------------------------------------------------------------------------------------

  async #apply (actions: Action[]): Promise<void> {
    for (const action of actions) {
      switch (action.type) {
        case 'persist':
          // Every decision is durable before anything that depends on it happens.
          await this.#persist(action.state)
          break
        case 'publish':
          this.#peer.gossip.publish(MISSIONS_TOPIC, action.message).catch(err => {
            this.#log(`missions: publish ${action.message.type} failed: ${(err as Error).message}`)
          })
          break
        case 'event':
          this.#recordEvent(action.mission, action.text)
          break
        case 'storeImage':
          this.#inLane(this.#imageLanes, `store ${action.image}`, async () => { await this.#storeImage(action) })
          break
        case 'fetchImage':
          if (this.#images?.isFetching(action.image) === true) break
          this.#images?.beginFetch(action.image)
          this.#refreshSelfInfo()
          this.#inLane(this.#imageLanes, `fetch ${action.image}`, async () => { await this.#fetchImage(action) })
          break
        case 'fetchCheckpoint':
          this.#wantedFetch.set(action.mission, action.checkpoint.cid)
          this.#inLane(this.#fetchLanes, action.mission, async () => { await this.#fetch(action.mission, action.checkpoint) })
          break
        case 'stopContainer':
          // A fence pre-empts everything: the container is killed now, not after the checkpoint, fetch or restore
          // work queued in the mission's lane; the lane then sweeps whatever that work started meanwhile.
          void this.#stopNow(action.mission, action.reason)
          this.#inLane(this.#lanes, action.mission, async () => { await this.#containerAction(action) })
          break
        case 'startFresh':
        case 'restore':
        case 'checkpoint':
        case 'runningEpoch':
        case 'forget':
          this.#inLane(this.#lanes, action.mission, async () => { await this.#containerAction(action) })
          break
      }
    }
  }

  #inLane (lanes: Map<string, Lane>, mission: string, work: () => Promise<void>): void {
    let lane = lanes.get(mission)
    if (lane == null) {
      lane = { tail: Promise.resolve() }
      lanes.set(mission, lane)
    }
    lane.tail = lane.tail.then(work).catch(err => { this.#log(`missions: ${mission}: ${(err as Error).stack ?? String(err)}`) })
  }

  /**
   * Writes the machine's decisions; after a storage fault the store is reopened and the write tried again. If it
   * still fails, the rest of the batch (what depends on the decision: a vote, a start) is not applied.
   */
  async #persist (state: PersistedState): Promise<void> {
    const db = this.#db
    const reopener = this.#dbReopener
    if (db == null || reopener == null) return
    const write = async (): Promise<void> => { await reopener.run('persisting decisions', async () => { await db.put(STATE_KEY, JSON.stringify(state), { sync: true } as object) }) }
    const done = this.#persistChain.catch(() => {}).then(async () => {
      try {
        await write()
      } catch (err) {
        if (storageProblemOf(err) == null) throw err
        await new Promise(resolve => setTimeout(resolve, 100))
        await write()
      }
    })
    this.#persistChain = done.catch(err => { this.#storageFailed(err, null) })
    await done
  }

  /** A storage fault of this board: reported (event, heartbeat, status) and probed until the storage works again. */
  #storageFailed (err: unknown, mission: string | null): void {
    // A block that does not match its CID is fetched again, not a fault of the storage itself.
    const problem = err instanceof BlockCorruptError || (err instanceof StorageError && !err.write && err.problem === 'store corrupt') ? null : storageProblemOf(err)
    if (problem == null) return
    const detail = (err as Error).message
    if (!this.#storage.ok) return
    this.#storage = { ok: false, problem, detail, since: Date.now() }
    this.#refreshSelfInfo()
    const text = `storage: ${problem} on this board (${detail}): it takes no backup duty and acknowledges no checkpoint until its storage works again`
    for (const name of mission != null ? [mission] : this.#machine?.view(Date.now()).filter(v => v.state !== 'removed').map(v => v.name) ?? []) this.#recordEvent(name, text)
    this.#log(`missions: ${text}`)
    this.#input(machine => { machine.tick(Date.now()) })
  }

  /** While the storage fails: a synced write in the data dir and a store record; both work again: recovered. */
  async #probeStorage (): Promise<void> {
    if (this.#storage.ok || this.#probing || this.#stopped) return
    this.#probing = true
    const path = join(this.#peer.config.dataDir, '.storage-probe')
    try {
      const fh = await openFile(path, 'w')
      try {
        await fh.write(Buffer.alloc(PROBE_BYTES, 0x5a))
        await fh.sync()
      } finally { await fh.close() }
      await removeFile(path, { force: true })
      await this.#checkpointer?.store.backend.writeRecord('/tandem/storage-probe', new Uint8Array([1]))
      await this.#checkpointer?.store.backend.deleteRecord('/tandem/storage-probe')
      const db = this.#db
      if (db != null) await this.#dbReopener?.run('probing the missions store', async () => { await db.put('storage-probe', String(Date.now()), { sync: true } as object) })
      const was = this.#storage
      this.#storage = { ok: true, problem: null, detail: null, since: null }
      this.#refreshSelfInfo()
      const text = `storage: works again after ${Math.round((Date.now() - (was.since ?? Date.now())) / 1000)} s of ${was.problem ?? 'faults'}`
      for (const v of this.#machine?.view(Date.now()).filter(v => v.state !== 'removed') ?? []) this.#recordEvent(v.name, text)
      this.#log(`missions: ${text}`)
      this.#input(machine => { machine.tick(Date.now()) })
    } catch {
      await removeFile(path, { force: true }).catch(() => {})
    } finally {
      this.#probing = false
    }
  }

  async #loadState (): Promise<PersistedState | undefined> {
    const text = await this.#db?.get(STATE_KEY)
    if (text == null) return undefined
    try {
      const state = JSON.parse(text) as PersistedState
      if (state.version !== 1) throw new Error(`unknown version ${String(state.version)}`)
      return state
    } catch (err) {
      throw new Error(`persisted mission state in ${join(this.#peer.config.dataDir, 'missions')} is unreadable (${(err as Error).message}); move it aside to rejoin with no memory of missions`)
    }
  }

  async #containerAction (action: Exclude<Action, { type: 'persist' | 'publish' | 'event' | 'fetchCheckpoint' }>): Promise<void> {
    const runtime = this.#runtime
    const peerId = this.#peer.peerId
    const signal = this.#abort.signal
    switch (action.type) {
      case 'startFresh': {
        if (runtime == null) { this.#local({ type: 'startFailed', mission: action.mission, epoch: action.epoch, error: 'no Docker on this board', cause: 'docker' }); return }
        try {
          const spec = containerSpec(action.spec, action.image)
          // The data of the checkpoint the machine named, if this board holds it (after a restart only its store
          // does) and it verifies; else the start says it has none.
          let data: LocalBundle | undefined
          let noData = ''
          if (action.dataFrom != null) {
            data = this.#bundles.get(action.dataFrom.cid)
            if (data == null && this.#checkpointer != null) {
              try {
                data = await this.#checkpointer.fetch(CID.parse(action.dataFrom.cid), { signal: AbortSignal.any([signal, AbortSignal.timeout(10_000)]) })
              } catch (err) {
                noData = ` WITHOUT the data of checkpoint #${action.dataFrom.seq} (${(err as Error).message.split('\n')[0] ?? ''}): its state starts empty`
              }
            }
          }
          const id = data != null
            ? await this.#startWithData(spec, action.epoch, data)
            : await runtime.startFresh(spec, { mission: action.mission, peerId, epoch: action.epoch }, { signal })
          this.#containers.set(action.mission, { id, epoch: action.epoch })
          const from = data != null && action.dataFrom != null ? ` with the data of checkpoint #${action.dataFrom.seq}` : noData
          this.#recordEvent(action.mission, `container started from image ${action.image}${from} under epoch ${action.epoch}`, { kind: 'running', epoch: action.epoch })
          this.#local({ type: 'containerStarted', mission: action.mission, epoch: action.epoch })
        } catch (err) {
          this.#local({ type: 'startFailed', mission: action.mission, epoch: action.epoch, error: (err as Error).message, cause: failureCause(err) })
        }
        return
      }
      case 'restore': {
        const checkpointer = this.#checkpointer
        if (checkpointer == null) { this.#local({ type: 'restoreFailed', mission: action.mission, epoch: action.epoch, error: 'no Docker on this board', cause: 'docker' }); return }
        this.#restoring.add(action.checkpoint.cid)
        try {
          const source = this.#bundles.get(action.checkpoint.cid) ?? CID.parse(action.checkpoint.cid)
          const result = await checkpointer.restore(source, { peerId, epoch: action.epoch, signal })
          this.#containers.set(action.mission, { id: result.containerId, epoch: action.epoch })
          const { createMs, filesMs, criuMs } = result.phases
          this.#peer.metrics.restored(action.mission, { ms: result.ms, criuMs })
          if (result.stagedRejected != null) this.#recordEvent(action.mission, `staged files of checkpoint #${action.checkpoint.seq} are corrupt (${result.stagedRejected}): not restored, written again from the verified store`)
          if (result.repairedBlocks > 0) this.#recordEvent(action.mission, `checkpoint #${action.checkpoint.seq}: ${result.repairedBlocks} corrupt block${result.repairedBlocks === 1 ? '' : 's'} in this board's store fetched again from the swarm before the restore`)
          this.#recordEvent(action.mission, `restored checkpoint #${action.checkpoint.seq} in ${Math.round(result.ms)} ms (create ${createMs}, files ${filesMs}, CRIU ${criuMs})${result.staged ? ', files staged ahead' : ''}${result.imageLoaded ? ', image loaded from the swarm' : ''}`, { kind: 'running', epoch: action.epoch })
          this.#local({ type: 'containerStarted', mission: action.mission, epoch: action.epoch })
        } catch (err) {
          this.#storageFailed(err, action.mission)
          this.#recordEvent(action.mission, `restore of checkpoint #${action.checkpoint.seq} refused: ${(err as Error).message.split('\n')[0] ?? ''}`)
          this.#local({ type: 'restoreFailed', mission: action.mission, epoch: action.epoch, error: (err as Error).message, cause: failureCause(err) })
        } finally {
          this.#restoring.delete(action.checkpoint.cid)
        }
        return
      }
      case 'checkpoint': {
        const container = this.#containers.get(action.mission)
        const checkpointer = this.#checkpointer
        if (container == null || checkpointer == null) {
          this.#local({ type: 'checkpointFailed', mission: action.mission, epoch: action.epoch, seq: action.seq, error: 'no container of the mission runs here', noContainer: true })
          return
        }
        try {
          const parent = this.machine.view(Date.now()).find(v => v.name === action.mission)?.held?.cid
          const takeStart = performance.now()
          const takeStartWall = Date.now()
          // Sealed for the view of this epoch: a board outside it (or that left it) cannot read the checkpoint.
          const members = this.machine.view(Date.now()).find(v => v.name === action.mission)?.view ?? []
          const sealFor = [...new Set([...members, this.#peer.peerId])]
          const result = await checkpointer.take(container.id, { mission: action.mission, epoch: action.epoch, seq: action.seq, parent: parent != null ? CID.parse(parent) : null, signal, sealFor })
          const intervalMs = this.machine.view(Date.now()).find(v => v.name === action.mission)?.spec.checkpointIntervalMs ?? Infinity
          const tookMs = performance.now() - takeStart
          if (tookMs > intervalMs && !this.#overrunWarned.has(action.mission)) {
            this.#overrunWarned.add(action.mission)
            this.#recordEvent(action.mission, `checkpoint #${action.seq} took ${Math.round(tookMs)} ms, longer than checkpointIntervalMs ${intervalMs}: checkpoints follow each other back to back and state lost on a failure can exceed one interval`)
          }
          this.#lastTake.set(action.mission, {
            seq: action.seq,
            pausedMs: result.stats.pausedMs,
            storeMs: result.stats.storeMs,
            totalMs: Math.round(performance.now() - takeStart),
            newBytes: result.manifest.sizes.newBytes,
            totalBytes: result.manifest.sizes.totalBytes,
            phases: result.stats.phases
          })
          this.#peer.metrics.checkpointTaken(action.mission, { pausedMs: result.stats.pausedMs, totalMs: tookMs, frozenTimeUs: result.stats.frozenTimeUs, newBytes: result.manifest.sizes.newBytes })
          if (action.stop) {
            // Untracked before the stop, or the exit watcher reports the planned stop as a crash (a move became a
            // failover with a restart counted and back-off; the final checkpoint was not restored).
            this.#containers.delete(action.mission)
            await runtime?.stop(container.id)
            // The mission ran here for the last time when the final checkpoint paused it.
            this.#recordEvent(action.mission, `final checkpoint #${action.seq} taken (paused ${result.stats.pausedMs} ms), container stopped`,
              { kind: 'stopped', epoch: action.epoch }, takeStartWall + result.stats.phases.prepareMs)
          }
          this.#local({ type: 'checkpointTaken', mission: action.mission, epoch: action.epoch, seq: action.seq, cid: result.cid.toString() })
        } catch (err) {
          this.#storageFailed(err, action.mission)
          const problem = storageProblemOf(err)
          this.#local({ type: 'checkpointFailed', mission: action.mission, epoch: action.epoch, seq: action.seq, error: problem != null ? `storage: ${problem}` : (err as Error).message })
        }
        return
      }
      case 'stopContainer': {
        // Whatever lane work queued before the fence started is stopped too, as is a container this process did
        // not start (e.g. before a daemon restart). Only this peer's: boards may share one Docker (tests do).
        await this.#stopNow(action.mission, action.reason)
        if (runtime != null) {
          for (const stray of await runtime.listMission(action.mission).catch(() => [])) {
            if (stray.labels.peerId === peerId) await runtime.stop(stray.id).catch(() => {})
          }
        }
        return
      }
      case 'runningEpoch': {
        const container = this.#containers.get(action.mission)
        if (container != null) container.epoch = action.epoch
        return
      }
      case 'forget': {
        this.#bundles.forEach((bundle, cid) => { if (bundle.manifest.mission === action.mission) this.#bundles.delete(cid) })
        await this.#checkpointer?.unstage(action.mission).catch(() => {})
        await this.#checkpointer?.store.prune(action.mission, 0).catch(() => {})
      }
    }
  }

  /** Stops this peer's container of the mission, if it runs one, at once. */
  async #stopNow (mission: string, reason: string): Promise<void> {
    const container = this.#containers.get(mission)
    const runtime = this.#runtime
    if (container == null || runtime == null) return
    this.#containers.delete(mission)
    await runtime.stop(container.id).catch(err => { this.#log(`missions: stopping ${container.id} failed: ${(err as Error).message}`) })
    this.#recordEvent(mission, `container of epoch ${container.epoch} stopped: ${reason}`, { kind: 'stopped', epoch: container.epoch })
  }

  /** Primary: stores the mission's image in the swarm's IPFS, layer by layer, for boards that lack it. */
  async #storeImage (action: Extract<Action, { type: 'storeImage' }>): Promise<void> {
    const checkpointer = this.#checkpointer
    if (checkpointer == null) { this.#local({ type: 'imageStoreFailed', mission: action.mission, epoch: action.epoch, error: 'no Docker on this board' }); return }
    try {
      const stored = await checkpointer.shareImage(action.image, this.#abort.signal)
      this.#recordEvent(action.mission, `image ${action.image} stored for the swarm: ${mb(stored.totalBytes)} MB in all, ${mb(stored.newBytes)} MB new, in ${Math.round(stored.ms)} ms`)
      this.#local({ type: 'imageStored', mission: action.mission, epoch: action.epoch, cid: stored.cid.toString() })
    } catch (err) {
      if (this.#stopped) return
      this.#storageFailed(err, action.mission)
      this.#recordEvent(action.mission, `storing image ${action.image} for the swarm failed: ${(err as Error).message}`)
      this.#local({ type: 'imageStoreFailed', mission: action.mission, epoch: action.epoch, error: (err as Error).message })
    }
  }

  /** Backup or next candidate: brings the mission's image into this board's Docker, only the layers it lacks. */
  async #fetchImage (action: Extract<Action, { type: 'fetchImage' }>): Promise<void> {
    const checkpointer = this.#checkpointer
    const images = this.#images
    try {
      if (checkpointer == null || images == null) throw new Error('no Docker on this board')
      const result = await checkpointer.ensureImage(CID.parse(action.cid), {
        signal: this.#abort.signal,
        providers: action.providers.filter(p => p !== this.#peer.peerId),
        onProgress: p => { images.progress(action.image, p.fetchedBytes, p.totalBytes) }
      })
      await images.refresh()
      // The image may be here under another name only (one image id shared under several tags): name it as asked.
      if (!images.has(action.image)) {
        await this.#runtime?.tagImage(result.imageId, action.image)
        await images.refresh()
      }
      if (!images.has(action.image)) throw new Error(`image ${action.image} is still not in this board's Docker after loading ${result.imageId}`)
      if (result.loaded) {
        this.#recordEvent(action.mission, `image ${action.image} loaded from the swarm in ${Math.round(result.ms)} ms: ${mb(result.fetchedBytes)} MB fetched, ` +
          `${mb(result.totalBytes)} MB of layers this board lacked${result.reusedLayers > 0 ? `, ${result.reusedLayers} layer${result.reusedLayers === 1 ? '' : 's'} already in its Docker` : ''}`)
      }
      this.#peer.metrics.imageFetched(action.mission, result.fetchedBytes)
      images.endFetch(action.image, result)
      this.#refreshSelfInfo()
      this.#input(machine => { machine.tick(Date.now()) })
    } catch (err) {
      images?.endFetch(action.image, null, (err as Error).message)
      this.#refreshSelfInfo()
      if (this.#stopped) return
      this.#storageFailed(err, action.mission)
      this.#recordEvent(action.mission, `fetching image ${action.image} failed: ${(err as Error).message}`)
      this.#local({ type: 'imageFetchFailed', mission: action.mission, cid: action.cid, error: (err as Error).message })
    }
  }

  async #fetch (mission: string, ref: CheckpointRef): Promise<void> {
    const checkpointer = this.#checkpointer
    if (checkpointer == null) { this.#local({ type: 'fetchFailed', mission, cid: ref.cid, error: 'no Docker on this board' }); return }
    if (this.#bundles.has(ref.cid)) { this.#local({ type: 'checkpointFetched', mission, checkpoint: ref }); return }
    if (this.#wantedFetch.get(mission) !== ref.cid) return
    try {
      const primary = this.machine.view(Date.now()).find(v => v.name === mission)?.primary
      const bundle = await checkpointer.fetch(CID.parse(ref.cid), {
        signal: AbortSignal.any([this.#abort.signal, AbortSignal.timeout(60_000)]),
        providers: primary != null && primary !== this.#peer.peerId ? [primary] : undefined
      })
      if (bundle.fetch.repairedBlocks > 0) {
        this.#recordEvent(mission, `checkpoint #${ref.seq}: ${bundle.fetch.repairedBlocks} block${bundle.fetch.repairedBlocks === 1 ? '' : 's'} this board held did not match ${bundle.fetch.repairedBlocks === 1 ? 'its CID' : 'their CIDs'} (corrupt): deleted and fetched again before the ack`)
      }
      this.#peer.metrics.checkpointFetched(mission, bundle.fetch.fetchedBytes)
      this.#bundles.set(ref.cid, bundle)
      this.#trimBundles(mission)
      this.#local({ type: 'checkpointFetched', mission, checkpoint: ref })
      // A takeover then only moves the files into place. A failure only costs that head start.
      this.#wantedStage.set(mission, ref.cid)
      this.#inLane(this.#stageLanes, mission, async () => {
        if (this.#wantedStage.get(mission) !== ref.cid) return
        await checkpointer.stage(bundle, { signal: this.#abort.signal }).catch(async err => {
          this.#log(`missions: ${mission}: staging checkpoint #${ref.seq} failed: ${(err as Error).message}`)
          this.#storageFailed(err, mission)
          // Half-written staged files are of no use: a restore writes the files from the store instead.
          await checkpointer.unstage(mission).catch(() => {})
        })
      })
    } catch (err) {
      if (err instanceof NotARecipientError || (err as { cause?: unknown } | null)?.cause instanceof NotARecipientError) {
        // Sealed before this board joined the view: no failure to back off from (three in a row held a new backup
        // 7 s behind, test/mission-images). The fetch stays in flight, and the next checkpoint, sealed for it, replaces it.
        this.#log(`missions: ${mission}: checkpoint #${ref.seq} was sealed before this board joined the view: waiting for the next one`)
        return
      }
      this.#log(`missions: ${mission}: fetch of checkpoint #${ref.seq} ${ref.cid} failed: ${(err as Error).message}`)
      this.#storageFailed(err, mission)
      this.#local({ type: 'fetchFailed', mission, cid: ref.cid, error: (err as Error).message })
    }
  }

  /** Cold start from the image with the data directory of a checkpoint (no CRIU): the cross-architecture path. */
  async #startWithData (spec: ContainerSpec, epoch: number, bundle: LocalBundle): Promise<string> {
    const runtime = this.#runtime as ContainerRuntime
    const store = (this.#checkpointer as Checkpointer).store
    const id = await runtime.create(spec, { mission: spec.mission, peerId: this.#peer.peerId, epoch }, { signal: this.#abort.signal })
    if (spec.dataPath != null) {
      const name = (await runtime.inspect(id)).Name.replace(/^\//, '')
      await store.materializeTree(bundle.manifest.trees.data, runtime.dataDirFor(name), { signal: this.#abort.signal })
    }
    await runtime.docker.getContainer(id).start()
    return id
  }

  #trimBundles (mission: string): void {
    const keep = this.#options.keepCheckpoints ?? 3
    const ofMission = [...this.#bundles.entries()].filter(([, b]) => b.manifest.mission === mission)
      .sort(([, a], [, b]) => (b.manifest.epoch - a.manifest.epoch) || (b.manifest.seq - a.manifest.seq))
    for (const [cid] of ofMission.slice(keep)) this.#bundles.delete(cid)
  }

  /** Reports containers that exited on their own; the machine decides what follows. */
  async #watchContainers (): Promise<void> {
    const runtime = this.#runtime
    if (runtime == null || this.#stopped) return
    for (const [mission, container] of this.#containers) {
      let running: boolean
      let reason = 'the container is gone'
      try {
        const state = (await runtime.inspect(container.id)).State
        running = state.Running === true
        if (!running) reason = `the process exited with code ${state.ExitCode}${state.OOMKilled ? ' (out of memory)' : ''}${state.Error !== '' ? `: ${state.Error}` : ''}`
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode !== 404) continue
        running = false
      }
      if (!running && this.#containers.get(mission) === container) {
        this.#containers.delete(mission)
        this.#recordEvent(mission, `container of epoch ${container.epoch} exited: ${reason}`, { kind: 'stopped', epoch: container.epoch })
        this.#local({ type: 'containerExited', mission, epoch: container.epoch, reason })
      }
    }
  }

  /** At start no container of this peer may run: the machine decides afresh what this board runs. */
  async #stopStrayContainers (persisted: PersistedState | undefined): Promise<void> {
    const runtime = this.#runtime as ContainerRuntime
    const list = await runtime.docker.listContainers({ all: true, filters: { label: [LABEL_MISSION, `${LABEL_PEER}=${this.#peer.peerId}`] } }).catch(() => [])
    for (const c of list) {
      const mission = c.Labels[LABEL_MISSION] ?? '?'
      const epoch = c.Labels[LABEL_EPOCH] ?? '?'
      await runtime.stop(c.Id).catch(err => { this.#log(`missions: cannot remove stale container ${c.Id}: ${(err as Error).message}`) })
      if (c.State === 'running') this.#recordEvent(mission, `stale container of epoch ${epoch} stopped at daemon start (known epoch ${persisted?.missions[mission]?.record.epoch ?? 'none'})`)
    }
  }

  #recordEvent (mission: string, text: string, mark?: EventMark, at?: number): void {
    if (this.#events == null) { this.#log(`mission ${mission}: ${text}`); return }
    this.#events.record(mission, text, mark, at)
  }

  // ---- views and API --------------------------------------------------------------------------------------------

  list (): MissionStatus[] {
    const now = Date.now()
    return this.machine.view(now).filter(v => v.state !== 'removed').map(v => this.#statusOf(v, now))
  }

  #statusOf (v: MissionView, now: number): MissionStatus {
    const last = v.lastCheckpoint
    return {
      name: v.name,
      deployId: v.deployId,
      signedBy: v.signedBy,
      epoch: v.epoch,
      primary: v.primary,
      backup: v.backup,
      state: v.state,
      role: v.role,
      reason: v.reason,
      restarts: v.restarts,
      lastFailure: v.lastFailure,
      protected: v.protected,
      protection: v.protection,
      imageFetches: this.#imageFetchesOf(v.spec),
      lastCheckpoint: last == null ? null : { cid: last.cid, seq: last.seq, epoch: last.epoch, ageMs: Math.max(0, now - last.atMs) },
      replicatedSeq: v.replicatedSeq,
      heldSeq: v.held?.seq ?? null,
      replicationLag: last == null ? null : last.seq - (v.replicatedSeq ?? 0),
      replicationLagMs: v.replicationLagMs,
      checkpointPeriodMs: v.checkpointPeriodMs,
      spec: v.spec,
      events: this.#events?.of(v.name) ?? [],
      container: this.#containers.get(v.name) ?? null,
      lastTake: this.#lastTake.get(v.name) ?? null
    }
  }

  /** Every board's fetch of the mission's image (for its own architecture), from heartbeats and this board. */
  #imageFetchesOf (spec: MissionSpec): ImageFetchStatus[] {
    const fetches: ImageFetchStatus[] = []
    const own = imageFor(spec, this.#peer.board.arch)
    for (const f of this.#images?.fetching() ?? []) if (own != null && f.image === normalizeImageRef(own)) fetches.push({ board: this.#peer.peerId, ...f })
    for (const member of this.#peer.membership.list()) {
      const image = member.info == null ? undefined : imageFor(spec, member.info.board.arch)
      if (image == null || member.state === 'dead') continue
      for (const f of imagesExtraOf(member.info?.extras).fetching) if (f.image === normalizeImageRef(image)) fetches.push({ board: member.peerId, ...f })
    }
    return fetches
  }

  /** Whether some live board (this one included) has the image the spec needs on that board's architecture. */
  #imageOnSomeLiveBoard (spec: MissionSpec): boolean {
    const own = imageFor(spec, this.#peer.board.arch)
    if (own != null && this.#images?.has(own) === true) return true
    return this.#peer.membership.list().some(member => {
      if (member.state !== 'alive' || member.info == null) return false
      const image = imageFor(spec, member.info.board.arch)
      return image != null && imagesExtraOf(member.info.extras).present.includes(normalizeImageRef(image))
    })
  }

  /**
   * The operator grant of an API request: the one the client signed (`tendered`, checked against the request), or
   * one this board signs with the operator key it holds; none in an open swarm. 403 without either.
   */
  #grantFor (tendered: unknown, fields: (at: number) => Omit<OperatorGrant, 'v' | 'key' | 'sig'>, expected: Parameters<OperatorKeys['check']>[1]): OperatorGrant | undefined {
    if (tendered != null) {
      const grant = validateGrant(tendered)
      if (grant === undefined) throw new ApiError(400, 'grant is not an operator grant')
      try { this.#operatorKeys.check(grant, expected) } catch (err) {
        if (err instanceof GrantError) throw new ApiError(403, err.message)
        throw err
      }
      if (expected.op === 'deploy' && grant.deployId == null) throw new ApiError(400, 'a deploy grant names the deployment (deployId)')
      return grant
    }
    if (this.#operatorKeys.open) return undefined
    if (this.#operatorSigner == null) {
      throw new ApiError(403, `${expected.op} needs the operator's signature: this board holds no operator key (sign with the CLI's --operator-key FILE)`)
    }
    return this.#operatorSigner.sign(fields(Date.now()))
  }

  /**
   * New operator keys while running (SIGHUP after the key files changed: a rotation without restarting the boards).
   * An open swarm stays open and an enforcing one enforcing: that change needs a restart.
   */
  async reloadOperator (operator: OperatorConfig): Promise<void> {
    if (operator.open !== this.#operatorKeys.open) throw new Error('switching between an open swarm and operator keys needs a restart')
    const signer = operator.privateKeyFile != null ? new OperatorSigner(await readFile(operator.privateKeyFile, 'utf8')) : undefined
    this.#operatorKeys = new OperatorKeys(operator.publicKeys, { open: operator.open })
    this.#operatorSigner = signer
    this.#log(`missions: operator keys reloaded: ${operator.publicKeys.length} trusted${signer != null ? ', this board holds one' : ''}`)
  }

  /** What this board trusts and refused, for the status (`authority`). */
  authority (): { open: boolean, operatorKeys: string[], holdsOperatorKey: boolean, revoked: string[], refused: ReturnType<ClusterMachine['refusals']> | null } {
    return {
      open: this.#operatorKeys.open,
      operatorKeys: this.#operatorKeys.keys,
      holdsOperatorKey: this.#operatorSigner != null,
      revoked: this.#revocations?.revoked ?? [],
      refused: this.#machine?.refusals() ?? null
    }
  }

  #find (name: string): MissionStatus {
    const mission = this.list().find(m => m.name === name)
    if (mission == null) throw new ApiError(404, `no mission named '${name}'`)
    return mission
  }

  async #waitFor (name: string, done: (m: MissionStatus | undefined) => boolean, timeoutMs: number, signal: AbortSignal): Promise<MissionStatus | undefined> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const mission = this.list().find(m => m.name === name)
      if (done(mission) || Date.now() >= deadline || signal.aborted) return mission
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  }

  /** When the source last ran the mission and when the target first ran it, from their replicated events. */
  #moveMarks (m: MissionStatus | undefined, from: string | null, fromEpoch: number, to: string, toEpoch: number): { stopped: number, running: number } | null {
    const events = m?.events ?? []
    const stopped = events.findLast(e => e.board === from && e.mark?.kind === 'stopped' && e.mark.epoch >= fromEpoch && e.mark.epoch < toEpoch)
    const running = events.find(e => e.board === to && e.mark?.kind === 'running' && e.mark.epoch === toEpoch)
    return stopped != null && running != null ? { stopped: stopped.at, running: running.at } : null
  }

  #routes (): void {
    const api = this.#peer.api
    api.route('GET', '/v1/missions', () => ({ body: this.list() }))
    api.route('GET', '/v1/missions/:name', request => ({ body: this.#find(request.params.name as string) }))
    api.route('POST', '/v1/missions', async request => {
      const body = request.body as { manifest?: unknown, filename?: unknown } | undefined
      if (body == null || typeof body.manifest !== 'string') throw new ApiError(400, 'body must be {"manifest": "<YAML or JSON text>"}')
      const size = Buffer.byteLength(body.manifest)
      if (size > MAX_MANIFEST_BYTES) throw new ApiError(413, `manifest is ${size} bytes; at most ${MAX_MANIFEST_BYTES} bytes (64 KiB) are accepted`)
      let spec: MissionSpec
      try {
        spec = parseManifest(body.manifest, typeof body.filename === 'string' ? body.filename : undefined)
      } catch (err) {
        if (err instanceof ManifestError) throw new ApiError(400, err.message)
        throw err
      }
      const existing = this.list().find(m => m.name === spec.name)
      if (existing != null) throw new ApiError(409, `mission '${spec.name}' already runs (epoch ${existing.epoch}); remove it first`)
      const grant = this.#grantFor((body as { grant?: unknown }).grant, at => ({
        op: 'deploy', subject: spec.name, deployId: newDeployId(this.#operatorSigner!.publicKey, at, randomBytes(4).toString('hex')), spec: specDigest(spec), to: null, at
      }), { op: 'deploy', subject: spec.name, spec })
      const over = this.#budget.refusalOfNew(spec.name, spec, this.#heldMissions)
      if (over != null) throw new ApiError(507, `${over.reason}: ${over.detail} (peers would refuse its announces)`)
      // tandem never pulls from a registry (Kubernetes' ErrImageNeverPull): some live board must hold the image.
      // This board's list is read afresh (an image built a moment ago); others' come with their next heartbeat.
      await this.#images?.refresh()
      if (!this.#imageOnSomeLiveBoard(spec)) {
        const wanted = typeof spec.image === 'string' ? spec.image : Object.entries(spec.image).map(([arch, image]) => `${image} (${arch})`).join(', ')
        throw new ApiError(422, `image ${wanted} is on no live board: build or load it on one board (docker build / docker load), tandem never pulls`)
      }
      this.#local({ type: 'deploy', spec, ...(grant === undefined ? {} : { grant, deployId: grant.deployId as string }) })
      const mission = await this.#waitFor(spec.name, m => m?.primary != null, 5000, request.signal)
      return { status: 201, body: mission ?? this.#find(spec.name) }
    })
    api.route('DELETE', '/v1/missions/:name', request => {
      const name = request.params.name as string
      const { deployId } = this.#find(name)
      const grant = this.#grantFor((request.body as { grant?: unknown } | undefined)?.grant,
        at => ({ op: 'remove', subject: name, deployId, spec: null, to: null, at }), { op: 'remove', subject: name, deployId })
      this.#local({ type: 'remove', mission: name, ...(grant === undefined ? {} : { grant }) })
      return { body: { removed: name } }
    })
    // A key rotation: the deployment re-signed by the new operator key (same deployment, same spec), so the old key
    // can then be dropped without redeploying.
    api.route('POST', '/v1/missions/:name/grant', request => {
      const name = request.params.name as string
      const { deployId, spec } = this.#find(name)
      if (this.#operatorKeys.open) throw new ApiError(409, 'an open swarm (--insecure-open-missions) signs nothing')
      const grant = this.#grantFor((request.body as { grant?: unknown } | undefined)?.grant,
        at => ({ op: 'deploy', subject: name, deployId, spec: specDigest(spec), to: null, at }), { op: 'deploy', subject: name, deployId, spec })!
      this.#local({ type: 'regrant', mission: name, grant })
      return { body: { mission: name, deployId, key: grant.key } }
    })
    api.route('POST', '/v1/missions/:name/move', async request => {
      const name = request.params.name as string
      const to = (request.body as { to?: unknown } | undefined)?.to
      if (typeof to !== 'string' || to === '') throw new ApiError(400, 'body must be {"to": "<peer id>"}')
      const before = this.#find(name)
      if (before.primary === to) throw new ApiError(409, `mission '${name}' already runs on ${to}`)
      const grant = this.#grantFor((request.body as { grant?: unknown }).grant,
        at => ({ op: 'move', subject: name, deployId: before.deployId, spec: null, to, at }), { op: 'move', subject: name, deployId: before.deployId, to })
      const signed = grant === undefined ? {} : { grant }
      const member = this.#peer.membership.list().find(m => m.peerId === to)
      if (to !== this.#peer.peerId && member?.state !== 'alive') throw new ApiError(409, `peer ${to} is not alive in this swarm`)
      const started = Date.now()
      this.#local({ type: 'move', mission: name, to, ...signed })
      let finalSeq = before.lastCheckpoint?.seq ?? null
      let requestedAt = started
      const after = await this.#waitFor(name, m => {
        if (m != null && m.epoch === before.epoch) finalSeq = m.lastCheckpoint?.seq ?? null
        const refused = m?.events.find(e => e.at >= started && /move refused/.test(e.text))
        if (refused != null) throw new ApiError(409, refused.text)
        // The request reaches the primary by gossip: repeat it until the mission moves (a repeat is harmless).
        if (m != null && m.epoch === before.epoch && Date.now() - requestedAt >= 1000) {
          requestedAt = Date.now()
          this.#local({ type: 'move', mission: name, to, ...signed })
        }
        return m != null && m.primary === to && m.state === 'running'
      }, 60_000, request.signal)
      if (after == null || after.primary !== to || after.state !== 'running') {
        throw new ApiError(504, `move of '${name}' to ${to} did not complete within 60 s (state ${after?.state ?? 'unknown'}, primary ${after?.primary ?? 'none'}); see 'tandem mission show ${name}'`)
      }
      // Downtime as the mission saw it: from the source's last moment running (the final checkpoint's pause) to the
      // restored container running, as both boards reported it. Without both reports, the whole wait: never less.
      const marks = await this.#waitFor(name, m => this.#moveMarks(m, before.primary, before.epoch, to, after.epoch) != null, 3000, request.signal)
      const window = this.#moveMarks(marks, before.primary, before.epoch, to, after.epoch)
      const now = Date.now()
      const downtimeMs = window != null && window.running >= window.stopped ? window.running - window.stopped : now - started
      const result: MoveResult = { mission: name, to, epoch: after.epoch, seq: finalSeq, downtimeMs, totalMs: now - started, measuredFrom: window != null ? 'board reports' : 'request' }
      return { body: result }
    })
  }
}

function mb (bytes: number): string { return (bytes / 1e6).toFixed(1) }
