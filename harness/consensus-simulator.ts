// Deterministic simulation of a tandem swarm around ClusterMachine: seeded PRNG, a lossy/duplicating/reordering
// network with partitions, heartbeat failure detectors, a container runtime with checkpoints, and invariant checks.
import { ClusterMachine, type SelfInfo } from '../consensus/machine.ts'
import { describe, type MachineEvent } from '../consensus/events.ts'
import { compareCheckpoints } from '../consensus/messages.ts'
import { majority } from '../consensus/quorum.ts'
import { fnv1a64 } from '../consensus/hrw.ts'
import type { VoteKeys } from '../consensus/quorum-proof.ts'
import { imageFor, normalizeImageRef, type MissionSpec } from '../manifest/manifest.ts'
import { DEFAULT_CONSENSUS_CONFIG, type Action, type CheckpointRef, type ConsensusConfig, type ConsensusMessage, type FailureCause, type LocalEvent, type PeerInfo, type PeerState, type PersistedState } from '../consensus/types.ts'

/** mulberry32: small, fast, good enough for schedules. */
export class Random {
  #state: number
  constructor (seed: number) { this.#state = seed >>> 0 }
  next (): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0
    let t = this.#state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }

  int (min: number, max: number): number { return min + Math.floor(this.next() * (max - min + 1)) }
  chance (p: number): boolean { return this.next() < p }
  pick<T> (items: readonly T[]): T { return items[Math.floor(this.next() * items.length)]! }
}

export interface NetworkConditions { minDelayMs: number, maxDelayMs: number, loss: number, duplication: number }

export interface SimOptions {
  seed: number
  /** `images`: normalized refs in the board's Docker (default SIM_IMAGES: every image of SIM_MISSION's variants). */
  peers: Array<{ id: string, arch?: string, board?: string, canCheckpoint?: boolean, canRun?: boolean, images?: string[] }>
  network?: Partial<NetworkConditions>
  config?: Partial<ConsensusConfig>
  heartbeatMs?: number
  suspectAfterMs?: number
  deadAfterMs?: number
  tickMs?: number
  /** Overlap of two running containers tolerated for views of >= 3 members. */
  overlapBoundMs?: number
  /**
   * The enforcer (the watchdog, peer/watchdog.ts) freezes the board's containers this long after the daemon's last
   * renewal, counted from that tick, or for a primary of a view of 3 to 5 from the newest of its heartbeats a
   * majority of the view acknowledged, if older (peer/missions/service.ts; the watchdog: lease validity 650 ms,
   * checked every 20 ms).
   */
  enforcerLeaseMs?: number
  /**
   * A killed peer's process is gone: connected peers' detectors prove it (refused redial) after a delay drawn from
   * this range and report it `dead` + `gone`. null: kills are detected by silence only, like freezes.
   */
  exitDetectionMs?: [number, number] | null
  /** How long a fetchImage takes (default 200-1500 ms). */
  imageFetchMs?: [number, number]
}

/** Every image the simulated missions use, normalized: what a board holds by default. */
export const SIM_IMAGES = ['tandem/vehicle:latest', 'tandem/vehicle:arm64', 'tandem/vehicle:x64']

interface SimContainer { mission: string, epoch: number, running: boolean, token: number }

interface SimPeer {
  info: SelfInfo
  powered: boolean
  paused: boolean
  /**
   * The pause stopped the daemon only (SIGSTOP of the peer process): its containers run on until the enforcer
   * outside the daemon (the watchdog, peer/watchdog.ts) freezes them when the lease renewed last ends.
   */
  daemonOnly: boolean
  /** The enforcer froze the board's containers: the lease ran out before the daemon renewed it. */
  enforced: boolean
  lastTickAt: number
  /** When the lease the daemon renewed last ends. */
  leaseEndsAt: number
  /** Per peer: the send time of the newest of this daemon's heartbeats it acknowledged (the beat link's acks). */
  heardUsAt: Map<string, number>
  machine: ClusterMachine | null
  persisted: PersistedState | undefined
  containers: Map<string, SimContainer>
  detector: Map<string, { lastHeard: number, state: PeerState, info: PeerInfo, gone: boolean }>
  heldCids: Set<string>
  /** Newest checkpoint this peer ever acknowledged, per mission (facts survive restarts). */
  acked: Map<string, CheckpointRef>
  heldEpochs: Map<string, number>
  pendingWhilePaused: Array<() => void>
  /** Starts and restores on this board fail with this cause (null: they succeed when the image is there). */
  failStarts: FailureCause | null
  /** Every fetch on this board fails (a full or broken disk). */
  failFetches: boolean
  failCheckpoints: boolean
  /** Fetches this board started (for back-off checks). */
  fetchesStarted: number
  /** A started container exits after this long (crash loop); null: it keeps running. */
  crashAfterMs: number | null
}

interface QueuedEvent { at: number, order: number, run: () => void }

/**
 * A cheap deterministic stand-in for the boards' Ed25519 vote signatures: a hash of the signer and the statement.
 * Anyone could compute it (no secret): the simulator's peers are honest, and forged proofs in tests use other values.
 */
export function simVoteKeys (self: string): VoteKeys {
  const sigOf = (signer: string, statement: string): string => `sim:${fnv1a64(`${signer}\n${statement}`).toString(16)}`
  return { sign: statement => sigOf(self, statement), verify: (voter, statement, sig) => sig === sigOf(voter, statement) }
}

export const DEFAULT_NETWORK: NetworkConditions = { minDelayMs: 1, maxDelayMs: 10, loss: 0, duplication: 0 }

/** A mission event as the simulation saw it: when, on which peer. */
export interface SimEvent { at: number, peer: string, mission: string, event: MachineEvent }

export class Simulation {
  readonly rng: Random
  readonly peers = new Map<string, SimPeer>()
  readonly violations: string[] = []
  readonly log: string[] = []
  /** The log keeps about this many newest lines (SIM_LOG_LINES to debug a long schedule). */
  logLimit = Number(process.env.SIM_LOG_LINES ?? 400)
  /** Every mission event any peer's machine emitted, oldest first. */
  readonly events: SimEvent[] = []
  /** When each checkpoint (by CID) was asked for: the moment its state is from. */
  readonly checkpointStartedAt = new Map<string, number>()
  now = 0
  network: NetworkConditions
  readonly heartbeatMs: number
  readonly suspectAfterMs: number
  readonly deadAfterMs: number
  readonly tickMs: number
  readonly overlapBoundMs: number
  readonly enforcerLeaseMs: number
  /** How long a checkpoint takes, ms (min, max): a loaded board's take 1-4 s. */
  checkpointTakeMs: [number, number] = [10, 80]
  readonly exitDetectionMs: [number, number] | null
  /** Longest time two containers of one mission ran at once under an epoch whose view had >= 3 members. */
  maxOverlapMs = 0
  messagesSent = 0
  /** Per mission: times of every start/restore and of every claim message (for the back-off invariants). */
  readonly starts = new Map<string, Array<{ at: number, peer: string }>>()
  readonly claims = new Map<string, number[]>()
  /** Sees every message published (tests). */
  onPublish: ((from: string, message: ConsensusMessage) => void) | null = null
  readonly imageFetchMs: [number, number]
  readonly #config: Partial<ConsensusConfig>
  readonly #muted = new Set<string>()
  readonly #heap: QueuedEvent[] = []
  #order = 0
  #token = 0
  #groups = new Map<string, number>()
  readonly #cuts = new Set<string>()
  /** Draws for the acknowledgements alone, so that they leave every seed's other draws (and scenarios) as they were. */
  readonly #ackRng: Random
  readonly #primaries = new Map<string, string>()
  readonly #epochViews = new Map<string, number>()
  readonly #overlapSince = new Map<string, number>()
  readonly #cidHolders = new Map<string, Set<string>>()

  constructor (options: SimOptions) {
    this.rng = new Random(options.seed)
    this.#ackRng = new Random(options.seed ^ 0x5bd1e995)
    this.network = { ...DEFAULT_NETWORK, ...options.network }
    this.#config = options.config ?? {}
    this.heartbeatMs = options.heartbeatMs ?? 200
    this.suspectAfterMs = options.suspectAfterMs ?? 600
    this.deadAfterMs = options.deadAfterMs ?? 1100
    this.tickMs = options.tickMs ?? 50
    this.overlapBoundMs = options.overlapBoundMs ?? 0
    this.enforcerLeaseMs = options.enforcerLeaseMs ?? 670
    this.exitDetectionMs = options.exitDetectionMs === undefined ? [20, 150] : options.exitDetectionMs
    this.imageFetchMs = options.imageFetchMs ?? [200, 1500]
    for (const p of options.peers) {
      const info: SelfInfo = {
        peerId: p.id, arch: p.arch ?? 'arm64', board: p.board ?? 'rpi4', memoryMb: 4096, canRun: p.canRun ?? true,
        canCheckpoint: p.canCheckpoint ?? true, images: [...(p.images ?? SIM_IMAGES)], fetchingImages: []
      }
      this.peers.set(p.id, {
        info, powered: false, paused: false, daemonOnly: false, enforced: false, lastTickAt: 0, leaseEndsAt: Infinity, heardUsAt: new Map(), machine: null, persisted: undefined, containers: new Map(), detector: new Map(),
        heldCids: new Set(), acked: new Map(), heldEpochs: new Map(), pendingWhilePaused: [], failStarts: null, failFetches: false, failCheckpoints: false, fetchesStarted: 0, crashAfterMs: null
      })
    }
    for (const id of this.peers.keys()) this.#boot(id)
    this.#schedule(this.tickMs, () => this.#tickAll())
  }

  // ---- faults and operations -----------------------------------------------------------------------------------

  /** Power cut: daemon and containers die; disk (persisted state, checkpoints) survives. */
  kill (id: string): void {
    const peer = this.#peer(id)
    if (!peer.powered) return
    peer.powered = false
    peer.paused = false
    peer.machine = null
    peer.containers.clear()
    peer.detector.clear()
    peer.pendingWhilePaused = []
    this.#note(`${id}: killed`)
    this.#checkOverlap()
    if (this.exitDetectionMs !== null) {
      for (const [otherId, other] of this.peers) {
        if (otherId === id || !this.connected(id, otherId)) continue
        this.#schedule(this.rng.int(...this.exitDetectionMs), () => {
          const entry = other.detector.get(id)
          if (peer.powered || entry === undefined || entry.gone || !this.connected(id, otherId)) return
          const prove = (): void => {
            const machine = other.machine
            if (machine === null || peer.powered || entry.gone) return
            entry.gone = true
            entry.state = 'dead'
            machine.peerChanged(this.now, { ...entry.info, peerId: id, state: 'dead', gone: true })
            this.#apply(other)
          }
          if (other.paused) other.pendingWhilePaused.push(prove)
          else prove()
        })
      }
    }
  }

  restart (id: string): void {
    const peer = this.#peer(id)
    if (peer.powered) return
    this.#boot(id)
    this.#note(`${id}: restarted`)
  }

  /** Freeze the whole board (daemon and containers) for `ms`; what it missed is delivered on resume. */
  pause (id: string, ms: number): void {
    const peer = this.#peer(id)
    if (!peer.powered || peer.paused) return
    peer.paused = true
    this.#note(`${id}: paused ${ms} ms`)
    this.#checkOverlap()
    this.#schedule(ms, () => this.resume(id))
  }

  /**
   * Freeze the daemon only (the peer process) for `ms`: its containers keep running until the enforcer freezes them;
   * what the daemon missed is delivered on resume.
   */
  freezeDaemon (id: string, ms: number): void {
    const peer = this.#peer(id)
    if (!peer.powered || peer.paused) return
    peer.paused = true
    peer.daemonOnly = true
    this.#note(`${id}: daemon frozen ${ms} ms`)
    this.#schedule(ms, () => this.resume(id))
  }

  /** Whether the board's containers run: a frozen board's do not; a frozen daemon's do until the enforcer acts. */
  #containersRun (peer: SimPeer): boolean {
    return peer.powered && (!peer.paused || peer.daemonOnly) && !peer.enforced
  }

  resume (id: string): void {
    const peer = this.#peer(id)
    if (!peer.paused) return
    peer.paused = false
    peer.daemonOnly = false
    this.#note(`${id}: resumed`)
    const pending = peer.pendingWhilePaused
    peer.pendingWhilePaused = []
    for (const run of pending) run()
    this.#tickPeer(peer)
    this.#checkOverlap()
  }

  partition (groups: string[][]): void {
    this.#groups = new Map()
    groups.forEach((group, i) => { for (const id of group) this.#groups.set(id, i + 1) })
    this.#note(`partition ${groups.map(g => g.join(',')).join(' | ')}`)
  }

  /** Cuts the link between two boards only (a bridge partition when each still reaches a third). */
  cut (a: string, b: string): void {
    this.#cuts.add([a, b].sort().join('|'))
    this.#note(`cut ${a} - ${b}`)
  }

  heal (): void {
    this.#groups = new Map()
    this.#cuts.clear()
    this.#muted.clear()
    this.#note('healed')
  }

  /**
   * Consensus messages between a and b are lost while heartbeats pass (a half-open connection: each side's detector
   * says the other is alive, and claims go nowhere). `false` restores them.
   */
  muteConsensus (a: string, b: string, muted = true): void {
    for (const key of [`${a}>${b}`, `${b}>${a}`]) { if (muted) this.#muted.add(key); else this.#muted.delete(key) }
    this.#note(`${a}-${b}: consensus messages ${muted ? 'lost, heartbeats pass' : 'pass again'}`)
  }

  connected (a: string, b: string): boolean {
    return (this.#groups.get(a) ?? 0) === (this.#groups.get(b) ?? 0) && !this.#cuts.has([a, b].sort().join('|'))
  }

  /** The board's Docker loses (or gains) an image; the arrays are replaced, never mutated (detectors copy them). */
  removeImage (id: string, image: string): void {
    const info = this.#peer(id).info
    info.images = info.images.filter(i => i !== image)
    this.#note(`${id}: image ${image} removed`)
  }

  addImage (id: string, image: string): void {
    const info = this.#peer(id).info
    if (!info.images.includes(image)) info.images = [...info.images, image]
    info.fetchingImages = info.fetchingImages.filter(i => i !== image)
    this.#note(`${id}: image ${image} present`)
  }

  /**
   * The board's disk is full (true) or freed (false): its fetches and checkpoints fail, and it reports canStore false
   * (the info object is replaced: detectors copy it) until it is freed.
   */
  diskFull (id: string, full: boolean): void {
    const peer = this.#peer(id)
    peer.failFetches = full
    peer.failCheckpoints = full
    peer.info.canStore = !full
    if (full) peer.info.storageProblem = 'disk full'
    else delete peer.info.storageProblem
    this.#note(`${id}: disk ${full ? 'full' : 'freed'}`)
  }

  /** Starts and restores on the board fail with `cause` (null: they work again). */
  /** Every fetch on `id` fails from now on (true) or works again (false). */
  failFetches (id: string, broken: boolean): void { this.#peer(id).failFetches = broken }

  /** How many checkpoint fetches `id` started so far. */
  fetchesStarted (id: string): number { return this.#peer(id).fetchesStarted }

  failStarts (id: string, cause: FailureCause | null): void {
    this.#peer(id).failStarts = cause
    this.#note(`${id}: starts ${cause === null ? 'work' : `fail (${cause})`}`)
  }

  /**
   * The primary `id` seals the mission's env values for `recipients` (a stand-in seal: the simulator opens nothing):
   * starts and restores of the mission fail with env-missing on every other board, as the daemon's do.
   */
  seal (id: string, mission: string, recipients: string[]): void {
    this.#input(id, m => {
      const view = m.snapshot(this.now).find(v => v.name === mission)
      if (view === undefined) return
      const seal = { v: 1 as const, gen: (view.envSeal?.gen ?? 0) + 1, key: 'sim', eph: 'sim', to: recipients.map(peer => ({ peer, nonce: 'sim', wrapped: 'sim' })), box: 'sim' }
      m.local(this.now, { type: 'envSeal', mission, deployId: view.deployId, seal })
    })
    this.#note(`${id}: env values of ${mission} sealed for ${recipients.join(',')}`)
  }

  /** Containers on the board exit `ms` after they start (null: they keep running). */
  crashAfter (id: string, ms: number | null): void {
    this.#peer(id).crashAfterMs = ms
    this.#note(`${id}: containers ${ms === null ? 'keep running' : `exit after ${ms} ms`}`)
  }

  /** Starts and restores of `mission` in [from, to). */
  startsBetween (mission: string, from: number, to = Infinity): number { return (this.starts.get(mission) ?? []).filter(s => s.at >= from && s.at < to).length }
  claimsBetween (mission: string, from: number, to = Infinity): number { return (this.claims.get(mission) ?? []).filter(t => t >= from && t < to).length }

  snapshot (id: string, mission: string): ReturnType<ClusterMachine['snapshot']>[number] | undefined {
    return this.#peer(id).machine?.snapshot(this.now).find(v => v.name === mission)
  }

  deploy (from: string, spec: MissionSpec): void { this.#input(from, m => m.local(this.now, { type: 'deploy', spec })) }
  remove (from: string, mission: string): void { this.#input(from, m => m.local(this.now, { type: 'remove', mission })) }
  move (from: string, mission: string, to: string): void { this.#input(from, m => m.local(this.now, { type: 'move', mission, to })) }
  /** Any other local event (e.g. a deploy carrying sealed env values, a re-seal) at `at` now. */
  local (at: string, event: LocalEvent): void { this.#input(at, m => m.local(this.now, event)) }

  /** An outsider's message (a node holding the swarm key, not a simulated peer) delivered to `to` now. */
  inject (to: string, from: string, message: ConsensusMessage): void {
    const copy = JSON.parse(JSON.stringify(message)) as ConsensusMessage
    this.#input(to, m => m.receive(this.now, from, copy))
  }

  /** The operator's revocation of `revoked`, as learned by `at`. */
  revoke (at: string, revoked: string): void { this.#input(at, m => m.revoke(this.now, revoked)) }

  runFor (ms: number): void { this.runUntil(() => false, ms) }

  /** Run until `done()` holds (checked after every event) or `maxMs` passes; returns whether it held. */
  runUntil (done: () => boolean, maxMs: number): boolean {
    const end = this.now + maxMs
    while (this.#heap.length > 0 && this.#heap[0]!.at <= end) {
      const event = this.#pop()
      this.now = event.at
      event.run()
      if (done()) return true
    }
    this.now = end
    return done()
  }

  // ---- observation ------------------------------------------------------------------------------------------------

  machine (id: string): ClusterMachine | null { return this.#peer(id).machine }

  /** Peers whose container of `mission` runs now (powered, not paused, started). */
  runningOn (mission: string): string[] {
    const ids: string[] = []
    for (const [id, peer] of this.peers) {
      const c = peer.containers.get(mission)
      if (this.#containersRun(peer) && c?.running === true) ids.push(id)
    }
    return ids
  }

  containerEpoch (id: string, mission: string): number | undefined { return this.#peer(id).containers.get(mission)?.epoch }
  held (id: string, mission: string): CheckpointRef | null {
    return this.snapshot(id, mission)?.held ?? null
  }

  /** The mission runs on exactly one peer, which is primary of the highest epoch, and its backup is synced. */
  settled (mission: string, requireBackup: boolean): boolean {
    const running = this.runningOn(mission)
    if (running.length !== 1) return false
    const primary = running[0]!
    const view = this.snapshot(primary, mission)
    if (view === undefined || view.primary !== primary || view.state !== 'running') return false
    for (const peer of this.peers.values()) {
      const other = peer.machine === null ? undefined : this.snapshot(peer.info.peerId, mission)
      if (other !== undefined && other.epoch > view.epoch) return false
    }
    if (!requireBackup) return true
    if (view.backup === null || view.lastCheckpoint === null) return false
    const held = this.held(view.backup, mission)
    return held !== null && held.epoch === view.lastCheckpoint.epoch && held.seq >= view.lastCheckpoint.seq - 2
  }

  // ---- the world --------------------------------------------------------------------------------------------------

  #boot (id: string): void {
    const peer = this.#peer(id)
    peer.powered = true
    peer.paused = false
    peer.enforced = false
    peer.leaseEndsAt = Infinity
    peer.heardUsAt = new Map()
    peer.detector.clear()
    peer.info.fetchingImages = []
    peer.machine = new ClusterMachine({ self: peer.info, now: this.now, config: this.#config, persisted: peer.persisted, voteKeys: simVoteKeys(id) })
    this.#checkEpochs(peer, peer.persisted)
    this.#apply(peer)
    const beat = (): void => {
      if (!peer.powered || peer.machine === null) return
      if (!peer.paused) this.#broadcast(id, null)
      this.#schedule(this.heartbeatMs, beat)
    }
    const machine = peer.machine
    this.#schedule(this.rng.int(0, this.heartbeatMs), () => { if (peer.machine === machine) beat() })
  }

  #tickAll (): void {
    for (const peer of this.peers.values()) this.#tickPeer(peer)
    this.#checkOverlap()
    this.#schedule(this.tickMs, () => this.#tickAll())
  }

  #tickPeer (peer: SimPeer): void {
    const machine = peer.machine
    if (machine === null || peer.paused) return
    peer.lastTickAt = this.now
    this.#renewLease(peer, machine)
    for (const [otherId, entry] of peer.detector) {
      if (entry.gone) continue
      const silence = this.now - entry.lastHeard
      const state: PeerState = silence >= this.deadAfterMs ? 'dead' : silence >= this.suspectAfterMs ? 'suspect' : 'alive'
      if (state !== entry.state) {
        entry.state = state
        machine.peerChanged(this.now, { ...entry.info, peerId: otherId, state })
      }
    }
    machine.tick(this.now)
    this.#apply(peer)
  }

  /**
   * The daemon's lease renewal (peer/missions/service.ts #renewLease), before its machine's tick: a lease that ran
   * out first had the enforcer freeze the containers, which it kills now (never thawed alive), and the machine hears
   * that its lease lapsed. The new lease ends enforcerLeaseMs after this tick, or after the newest heartbeat a
   * majority of a 3-to-5-board view acknowledged, if older; the enforcer freezes the containers then unless renewed.
   */
  #renewLease (peer: SimPeer, machine: ClusterMachine): void {
    if (this.now > peer.leaseEndsAt && peer.containers.size > 0) {
      for (const [mission, container] of [...peer.containers]) {
        peer.containers.delete(mission)
        machine.local(this.now, { type: 'leaseLapsed', mission, epoch: container.epoch, lateMs: this.now - peer.leaseEndsAt })
      }
      this.#apply(peer)
    }
    peer.enforced = false
    let endsAt = this.now + this.enforcerLeaseMs
    for (const v of machine.snapshot(this.now)) {
      if (v.role !== 'primary' || peer.containers.get(v.name)?.running !== true || v.view.length < 3 || v.view.length > 5) continue
      const times = v.view.map(p => p === peer.info.peerId ? this.now : (peer.heardUsAt.get(p) ?? -Infinity)).sort((a, b) => b - a)
      endsAt = Math.min(endsAt, (times[majority(v.view.length) - 1] ?? -Infinity) + this.enforcerLeaseMs)
    }
    peer.leaseEndsAt = endsAt
    if (peer.containers.size === 0) return
    this.#schedule(Math.max(0, endsAt - this.now), () => {
      if (!peer.powered || peer.leaseEndsAt !== endsAt || peer.enforced || peer.containers.size === 0) return
      peer.enforced = true
      this.#note(`${peer.info.peerId}: enforcer froze its containers (lease ended)`)
      this.#checkOverlap()
    })
  }

  #input (id: string, fn: (machine: ClusterMachine) => void): void {
    const peer = this.#peer(id)
    if (peer.machine === null || !peer.powered) return
    const run = (): void => { if (peer.machine !== null) { fn(peer.machine); this.#apply(peer) } }
    if (peer.paused) peer.pendingWhilePaused.push(run)
    else run()
  }

  #broadcast (from: string, message: ConsensusMessage | null): void {
    const sender = this.#peer(from)
    const sentAt = this.now
    // Serialized once; each delivery parses its own copy (what a trip through the network does).
    const text = message === null ? null : JSON.stringify(message)
    for (const [to, peer] of this.peers) {
      if (to === from) continue
      const copies = this.rng.chance(this.network.duplication) ? 2 : 1
      for (let i = 0; i < copies; i++) {
        if (this.rng.chance(this.network.loss) || !this.connected(from, to)) continue
        if (message !== null && this.#muted.has(`${from}>${to}`)) continue
        this.messagesSent++
        const payload = text === null ? null : JSON.parse(text) as ConsensusMessage
        this.#schedule(this.rng.int(this.network.minDelayMs, this.network.maxDelayMs), () => {
          if (!peer.powered || !this.connected(from, to)) return
          const deliver = (): void => {
            const machine = peer.machine
            if (machine === null) return
            if (payload === null) {
              const entry = peer.detector.get(from)
              const info: PeerInfo = { ...sender.info, state: 'alive' }
              if (entry === undefined) {
                peer.detector.set(from, { lastHeard: this.now, state: 'alive', info, gone: false })
                machine.peerChanged(this.now, info)
              } else {
                entry.lastHeard = this.now
                entry.gone = false
                // Heartbeats carry the board's capabilities and images (arrays are replaced on change, never mutated).
                const changed = entry.info.images !== info.images || entry.info.fetchingImages !== info.fetchingImages ||
                  entry.info.canRun !== info.canRun || entry.info.canCheckpoint !== info.canCheckpoint || entry.info.canStore !== info.canStore
                if (changed) entry.info = info
                if (entry.state !== 'alive' || changed) { entry.state = 'alive'; machine.peerChanged(this.now, info) }
              }
              this.#acknowledge(to, from, sentAt)
            } else {
              machine.receive(this.now, from, payload)
            }
            this.#apply(peer)
          }
          if (peer.paused) peer.pendingWhilePaused.push(deliver)
          else deliver()
        })
      }
    }
  }

  /** `by` read a heartbeat `of` sent at `sentAt`: its acknowledgement travels back (peer/beats.ts). */
  #acknowledge (by: string, of: string, sentAt: number): void {
    if (this.#ackRng.chance(this.network.loss) || !this.connected(by, of)) return
    const sender = this.#peer(of)
    const machine = sender.machine
    this.#schedule(this.#ackRng.int(this.network.minDelayMs, this.network.maxDelayMs), () => {
      if (sender.machine !== machine || !this.connected(by, of)) return
      const read = (): void => { if (sentAt > (sender.heardUsAt.get(by) ?? -Infinity)) sender.heardUsAt.set(by, sentAt) }
      if (sender.paused) sender.pendingWhilePaused.push(read)
      else read()
    })
  }

  #apply (peer: SimPeer): void {
    const machine = peer.machine
    if (machine === null) return
    const id = peer.info.peerId
    for (const action of machine.takeActions()) this.#applyAction(peer, id, action)
    for (const [mission, c] of peer.containers) {
      const known = machine.knownEpoch(mission)
      if (c.epoch < known) this.#violate(`${id} runs ${mission} under epoch ${c.epoch} but knows epoch ${known}`)
    }
    this.#checkOverlap()
  }

  #applyAction (peer: SimPeer, id: string, action: Action): void {
    switch (action.type) {
      case 'persist':
        this.#checkEpochs(peer, action.state)
        peer.persisted = action.state
        break
      case 'publish':
        if (action.message.type === 'announce' && action.message.record.primary === id) {
          this.#epochViews.set(`${action.message.record.mission}@${action.message.record.epoch}`, action.message.record.view.length)
        }
        if (action.message.type === 'claim') {
          const list = this.claims.get(action.message.mission) ?? []
          list.push(this.now)
          this.claims.set(action.message.mission, list)
        }
        if (action.message.type === 'ack') {
          const m = action.message
          const view = this.snapshot(id, m.mission)
          const ref = view?.held
          const image = view === undefined ? undefined : imageFor(view.spec, peer.info.arch)
          if (image === undefined || !peer.info.images.includes(normalizeImageRef(image))) {
            this.#violate(`${id} acknowledged ${m.mission} #${m.checkpointEpoch}.${m.seq} without the image ${image ?? '-'}: it could not restore it`)
          }
          if (ref != null) {
            const prev = peer.acked.get(m.mission)
            if (compareCheckpoints(ref, prev ?? null) > 0) peer.acked.set(m.mission, ref)
          }
        }
        this.onPublish?.(id, action.message)
        this.#broadcast(id, action.message)
        break
      case 'startFresh':
      case 'restore': {
        this.#claimPrimary(action.mission, action.epoch, id)
        if (action.type === 'restore') {
          const acked = peer.acked.get(action.mission) ?? null
          if (compareCheckpoints(action.checkpoint, acked) < 0) {
            this.#violate(`${id} restores ${action.mission} #${action.checkpoint.epoch}.${action.checkpoint.seq} older than acknowledged #${acked?.epoch}.${acked?.seq}`)
          }
        }
        const list = this.starts.get(action.mission) ?? []
        list.push({ at: this.now, peer: id })
        this.starts.set(action.mission, list)
        const token = ++this.#token
        const container: SimContainer = { mission: action.mission, epoch: action.epoch, running: false, token }
        peer.containers.set(action.mission, container)
        const image = imageFor(action.spec, peer.info.arch)
        const seal = this.snapshot(id, action.mission)?.envSeal
        const failure: [string, FailureCause] | null = !peer.info.canRun
          ? ['Docker does not answer', 'docker']
          : image === undefined || !peer.info.images.includes(normalizeImageRef(image))
            ? [`No such image: ${image ?? '-'}`, 'image-missing']
            : seal !== undefined && !seal.to.some(w => w.peer === id)
              ? ['env values not sealed for this board', 'env-missing']
              : peer.failStarts !== null
                ? ['simulated failure', peer.failStarts]
                : action.type === 'restore' && !peer.heldCids.has(action.checkpoint.cid) ? ['checkpoint not held', 'criu'] : null
        const machine = peer.machine
        this.#schedule(this.rng.int(80, 300), () => {
          if (peer.machine !== machine || peer.containers.get(action.mission)?.token !== token) return
          this.#input(id, m => {
            if (peer.containers.get(action.mission)?.token !== token) return
            if (failure === null) {
              container.running = true
              m.local(this.now, { type: 'containerStarted', mission: action.mission, epoch: action.epoch })
              const crashAfter = peer.crashAfterMs
              if (crashAfter !== null) {
                this.#schedule(crashAfter, () => {
                  if (peer.machine !== machine || peer.containers.get(action.mission)?.token !== token || peer.crashAfterMs === null) return
                  this.#input(id, m2 => {
                    const c = peer.containers.get(action.mission)
                    if (c?.token !== token) return
                    peer.containers.delete(action.mission)
                    m2.local(this.now, { type: 'containerExited', mission: action.mission, epoch: c.epoch, reason: 'exit code 1' })
                  })
                })
              }
            } else {
              peer.containers.delete(action.mission)
              const [error, cause] = failure
              m.local(this.now, { type: action.type === 'restore' ? 'restoreFailed' : 'startFailed', mission: action.mission, epoch: action.epoch, error, cause })
            }
          })
        })
        break
      }
      case 'storeImage': {
        const machine = peer.machine
        this.#schedule(this.rng.int(100, 800), () => {
          if (peer.machine !== machine) return
          this.#input(id, m => {
            if (peer.info.images.includes(action.image)) {
              m.local(this.now, { type: 'imageStored', mission: action.mission, epoch: action.epoch, cid: `img:${action.image}@${peer.info.arch}` })
            } else {
              m.local(this.now, { type: 'imageStoreFailed', mission: action.mission, epoch: action.epoch, error: 'image no longer present' })
            }
          })
        })
        break
      }
      case 'fetchImage': {
        const machine = peer.machine
        const image = action.image
        if (!peer.info.fetchingImages.includes(image)) peer.info.fetchingImages = [...peer.info.fetchingImages, image]
        this.#schedule(this.rng.int(...this.imageFetchMs), () => {
          if (peer.machine !== machine) return
          // Any reachable board of the same architecture that holds the image serves it (IPFS: not only `providers`).
          const source = [...this.peers.values()].find(o => o !== peer && o.powered && !o.paused && this.connected(o.info.peerId, id) &&
            o.info.arch === peer.info.arch && o.info.images.includes(image))
          this.#input(id, m => {
            peer.info.fetchingImages = peer.info.fetchingImages.filter(i => i !== image)
            if (source !== undefined) {
              if (!peer.info.images.includes(image)) peer.info.images = [...peer.info.images, image]
              this.#note(`${id}: image ${image} fetched from ${source.info.peerId}`)
              m.tick(this.now)
            } else {
              m.local(this.now, { type: 'imageFetchFailed', mission: action.mission, cid: action.cid, error: 'no reachable provider' })
            }
          })
        })
        break
      }
      case 'runningEpoch': {
        this.#claimPrimary(action.mission, action.epoch, id)
        const c = peer.containers.get(action.mission)
        if (c === undefined) this.#violate(`${id}: runningEpoch ${action.epoch} without a container`)
        else c.epoch = action.epoch
        break
      }
      case 'checkpoint': {
        const c = peer.containers.get(action.mission)
        const machine = peer.machine
        this.checkpointStartedAt.set(`cp:${action.mission}:${id}:${action.epoch}:${action.seq}`, this.now)
        this.#schedule(this.rng.int(...this.checkpointTakeMs), () => {
          if (peer.machine !== machine) return
          this.#input(id, m => {
            const now = peer.containers.get(action.mission)
            if (c === undefined || now !== c || !c.running) {
              m.local(this.now, { type: 'checkpointFailed', mission: action.mission, epoch: action.epoch, seq: action.seq, error: 'no container', noContainer: true })
              return
            }
            if (peer.failCheckpoints) {
              m.local(this.now, { type: 'checkpointFailed', mission: action.mission, epoch: action.epoch, seq: action.seq, error: 'storage: disk full' })
              return
            }
            const cid = `cp:${action.mission}:${id}:${action.epoch}:${action.seq}`
            peer.heldCids.add(cid)
            this.#holders(cid).add(id)
            if (action.stop) peer.containers.delete(action.mission)
            m.local(this.now, { type: 'checkpointTaken', mission: action.mission, epoch: action.epoch, seq: action.seq, cid })
          })
        })
        break
      }
      case 'fetchCheckpoint': {
        const cid = action.checkpoint.cid
        const machine = peer.machine
        peer.fetchesStarted++
        this.#schedule(this.rng.int(10, 120), () => {
          if (peer.machine !== machine) return
          const source = [...this.#holders(cid)].find(h => h !== id && this.#peer(h).powered && !this.#peer(h).paused && this.connected(h, id))
          this.#input(id, m => {
            if (!peer.failFetches && (source !== undefined || peer.heldCids.has(cid))) {
              peer.heldCids.add(cid)
              this.#holders(cid).add(id)
              m.local(this.now, { type: 'checkpointFetched', mission: action.mission, checkpoint: action.checkpoint })
            } else {
              m.local(this.now, { type: 'fetchFailed', mission: action.mission, cid, error: 'no reachable holder' })
            }
          })
        })
        break
      }
      case 'stopContainer':
        peer.containers.delete(action.mission)
        break
      case 'forget':
        for (const cid of [...peer.heldCids]) if (cid.startsWith(`cp:${action.mission}:`)) { peer.heldCids.delete(cid); this.#holders(cid).delete(id) }
        break
      case 'event':
        this.events.push({ at: this.now, peer: id, mission: action.mission, event: action.event })
        this.#note(`${id} [${action.mission}] ${describe(action.event)}`)
        break
    }
  }

  // ---- invariants ------------------------------------------------------------------------------------------------

  #claimPrimary (mission: string, epoch: number, id: string): void {
    const key = `${mission}@${epoch}`
    const existing = this.#primaries.get(key)
    if (existing !== undefined && existing !== id) this.#violate(`two primaries for ${mission} epoch ${epoch}: ${existing} and ${id}`)
    this.#primaries.set(key, id)
  }

  #checkEpochs (peer: SimPeer, next: PersistedState | undefined): void {
    if (next === undefined) return
    // Per deployment: a new deployment of the name starts again from its own epoch (an open swarm lets anyone deploy,
    // and the decoder fuzz sends forged ones; keyed by name only, a deployment replaced and back counted as going back).
    for (const [mission, m] of Object.entries(next.missions)) {
      const key = `${mission}/${m.record.deployId}`
      const before = peer.heldEpochs.get(key) ?? -1
      if (m.record.epoch < before) this.#violate(`${peer.info.peerId}: epoch of ${mission} went back from ${before} to ${m.record.epoch}`)
      peer.heldEpochs.set(key, Math.max(before, m.record.epoch))
    }
  }

  #checkOverlap (): void {
    const byMission = new Map<string, Array<{ id: string, epoch: number }>>()
    for (const [id, peer] of this.peers) {
      if (!this.#containersRun(peer)) continue
      for (const c of peer.containers.values()) {
        if (!c.running) continue
        const list = byMission.get(c.mission) ?? []
        list.push({ id, epoch: c.epoch })
        byMission.set(c.mission, list)
      }
    }
    for (const mission of new Set([...byMission.keys(), ...this.#overlapSince.keys()])) {
      const running = byMission.get(mission) ?? []
      const oldest = Math.min(...running.map(r => r.epoch))
      const quorumMode = running.length >= 2 && (this.#epochViews.get(`${mission}@${oldest}`) ?? 0) >= 3
      if (quorumMode) {
        const since = this.#overlapSince.get(mission) ?? this.now
        this.#overlapSince.set(mission, since)
        const length = this.now - since
        this.maxOverlapMs = Math.max(this.maxOverlapMs, length)
        if (length > this.overlapBoundMs) {
          this.#violate(`${mission} ran on ${running.map(r => `${r.id}@${r.epoch}`).join(', ')} at once for ${length} ms (> ${this.overlapBoundMs})`)
          this.#overlapSince.set(mission, this.now)
        }
      } else {
        this.#overlapSince.delete(mission)
      }
    }
  }

  #violate (text: string): void {
    this.violations.push(`t=${this.now}: ${text}`)
    this.#note(`VIOLATION ${text}`)
  }

  #note (text: string): void {
    this.log.push(`${String(this.now).padStart(6)} ${text}`)
    if (this.log.length > this.logLimit) this.log.splice(0, this.log.length - Math.floor(this.logLimit * 3 / 4))
  }

  // ---- plumbing ------------------------------------------------------------------------------------------------------

  #peer (id: string): SimPeer {
    const peer = this.peers.get(id)
    if (peer === undefined) throw new Error(`unknown simulated peer ${id}`)
    return peer
  }

  #holders (cid: string): Set<string> {
    let set = this.#cidHolders.get(cid)
    if (set === undefined) { set = new Set(); this.#cidHolders.set(cid, set) }
    return set
  }

  #schedule (delayMs: number, run: () => void): void {
    const event: QueuedEvent = { at: this.now + Math.max(0, delayMs), order: this.#order++, run }
    const heap = this.#heap
    heap.push(event)
    let i = heap.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (before(heap[parent]!, event)) break
      heap[i] = heap[parent]!
      i = parent
    }
    heap[i] = event
  }

  #pop (): QueuedEvent {
    const heap = this.#heap
    const top = heap[0]!
    const last = heap.pop()!
    if (heap.length > 0) {
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let smallest = i
        const candidate = (j: number): void => { if (j < heap.length && before(heap[j]!, smallest === i ? last : heap[smallest]!)) smallest = j }
        candidate(l)
        candidate(r)
        if (smallest === i) break
        heap[i] = heap[smallest]!
        i = smallest
      }
      heap[i] = last
    }
    return top
  }
}

function before (a: QueuedEvent, b: QueuedEvent): boolean { return a.at < b.at || (a.at === b.at && a.order < b.order) }

export interface ScheduleResult {
  seed: number
  peers: number
  violations: string[]
  log: string[]
  maxOverlapMs: number
  messages: number
  recoveredInMs: number | null
  /** How the schedule ended: settled after the faults, blocked (the image on no board), or a crash loop on all boards. */
  ending: 'settle' | 'blocked' | 'crash-loop'
  /** Claims in the quiet window after settling (a mission whose situation does not change claims no new epochs). */
  quietClaims: number
  /** Starts in the 30 s crash-loop window. */
  crashLoopStarts: number
}

export const SIM_MISSION: MissionSpec = { name: 'vehicle', image: 'tandem/vehicle', env: {}, data: '/data', checkpointIntervalMs: 500 }

/** Quiet window after a schedule settled: nothing changes, so no epoch may be claimed. */
const QUIET_MS = 3000
const CRASH_LOOP_MS = 30_000
/** At most this many starts of a mission that crash-loops on every board in CRASH_LOOP_MS (the back-off). */
export const CRASH_LOOP_MAX_STARTS = 8

/**
 * One random schedule: a swarm of 2-5 boards runs a mission through ~15 s of random kills, restarts, pauses,
 * partitions, message loss/delay/duplication, image removals and arrivals, failing starts and crash loops; some boards
 * lack the image from the start. Then faults stop and one of three endings is checked:
 * - settle (most): the mission must settle within `recoveryMs` (plus the longest back-off when starts failed), then
 *   claim no epoch in a quiet window;
 * - blocked: every board loses the image and restarts: no claim, no start, `blocked` everywhere;
 * - crash loop: every container exits 300 ms after it starts: at most CRASH_LOOP_MAX_STARTS starts in 30 s.
 */
export function runSchedule (seed: number, recoveryMs = 15_000): ScheduleResult {
  const rng = new Random(seed ^ 0x9e3779b9)
  const count = rng.pick([2, 3, 3, 4, 5])
  const ids = Array.from({ length: count }, (_, i) => `p${i + 1}`)
  const mixedArch = rng.chance(0.25)
  const archOf = (i: number): string => mixedArch && i === count - 1 ? 'x64' : 'arm64'
  const spec: MissionSpec = {
    ...SIM_MISSION,
    image: mixedArch ? { arm64: 'tandem/vehicle:arm64', x64: 'tandem/vehicle:x64' } : SIM_MISSION.image,
    checkpointIntervalMs: rng.pick([200, 500, 1000])
  }
  const imageOf = (arch: string): string => normalizeImageRef(imageFor(spec, arch)!)
  // Some boards lack the image; the first always has it.
  const sim = new Simulation({
    seed,
    peers: ids.map((id, i) => ({ id, arch: archOf(i), images: i === 0 || rng.chance(0.7) ? [imageOf(archOf(i))] : [] }))
  })
  sim.runFor(rng.int(300, 1500))
  sim.deploy(rng.pick(ids), spec)
  const faultUntil = sim.now + rng.int(5000, 15_000)
  let failures = false
  while (sim.now < faultUntil) {
    sim.runFor(rng.int(200, 2500))
    const down = ids.filter(id => !sim.peers.get(id)!.powered)
    const up = ids.filter(id => sim.peers.get(id)!.powered)
    const roll = rng.next()
    if (roll < 0.2 && up.length > 0) sim.kill(rng.pick(up))
    else if (roll < 0.38 && down.length > 0) sim.restart(rng.pick(down))
    else if (roll < 0.43 && up.length > 0) sim.pause(rng.pick(up), rng.int(200, 3000))
    else if (roll < 0.48 && up.length > 0) sim.freezeDaemon(rng.pick(up), rng.int(200, 3000))
    else if (roll < 0.52 && ids.length >= 3) {
      const [a, b] = [...ids].sort(() => rng.next() - 0.5)
      // A link cut for real, or half-open (heartbeats pass, consensus messages are lost).
      if (rng.chance(0.5)) sim.cut(a!, b!)
      else sim.muteConsensus(a!, b!)
    } else if (roll < 0.6) {
      const shuffled = [...ids].sort(() => rng.next() - 0.5)
      const cut = rng.int(1, ids.length - 1)
      sim.partition([shuffled.slice(0, cut), shuffled.slice(cut)])
    } else if (roll < 0.7) sim.heal()
    else if (roll < 0.74 && up.length > 0) {
      // A planned migration, possibly into the faults around it (the source killed while the target fetches).
      sim.move(rng.pick(up), spec.name, rng.pick(ids))
    } else if (roll < 0.8) {
      sim.network = {
        minDelayMs: 1,
        maxDelayMs: rng.pick([5, 20, 100, 300]),
        loss: rng.pick([0, 0.05, 0.2]),
        duplication: rng.pick([0, 0.1, 0.3])
      }
    } else if (roll < 0.84) {
      const id = rng.pick(ids)
      sim.removeImage(id, imageOf(sim.peers.get(id)!.info.arch))
    } else if (roll < 0.87) {
      const id = rng.pick(ids)
      sim.addImage(id, imageOf(sim.peers.get(id)!.info.arch))
    } else if (roll < 0.91) {
      sim.failStarts(rng.pick(ids), rng.pick(['image-missing', 'criu', 'docker', 'other'] as const))
      failures = true
    } else if (roll < 0.95) {
      sim.crashAfter(rng.pick(ids), rng.int(100, 3000))
      failures = true
    } else {
      const id = rng.pick(ids)
      sim.failStarts(id, null)
      sim.crashAfter(id, null)
    }
  }
  sim.heal()
  sim.network = { ...DEFAULT_NETWORK }
  for (const id of ids) { sim.failStarts(id, null); sim.crashAfter(id, null) }
  const endRoll = rng.next()
  const ending: ScheduleResult['ending'] = endRoll < 0.06 ? 'blocked' : endRoll < 0.11 ? 'crash-loop' : 'settle'
  const result = (recoveredInMs: number | null, quietClaims = 0, crashLoopStarts = 0): ScheduleResult => ({
    seed, peers: count, violations: sim.violations, log: sim.log, maxOverlapMs: sim.maxOverlapMs, messages: sim.messagesSent,
    recoveredInMs, ending, quietClaims, crashLoopStarts
  })

  if (ending === 'blocked') {
    for (const id of ids) {
      sim.kill(id)
      const info = sim.peers.get(id)!.info
      sim.removeImage(id, imageOf(info.arch))
    }
    sim.runFor(100)
    for (const id of ids) sim.restart(id)
    const from = sim.now
    sim.runFor(QUIET_MS)
    const claims = sim.claimsBetween(spec.name, from)
    const starts = sim.startsBetween(spec.name, from)
    if (claims > 0 || starts > 0) sim.violations.push(`t=${sim.now}: image on no board, yet ${claims} claims and ${starts} starts in ${QUIET_MS} ms`)
    for (const id of ids) {
      const v = sim.snapshot(id, spec.name)
      if (v !== undefined && v.state !== 'blocked') sim.violations.push(`t=${sim.now}: ${id} shows ${v.state}, not blocked, with the image on no board`)
    }
    return result(null, claims)
  }

  // The image is back on at least one board of the first board's architecture, so the mission can run.
  // (and on a second board, so a backup is possible: a board of another architecture cannot fetch the stored one).
  const holders = ids.filter(id => sim.peers.get(id)!.info.images.includes(imageOf(sim.peers.get(id)!.info.arch)))
  if (!holders.includes('p1')) sim.addImage('p1', imageOf('arm64'))
  if (holders.filter(id => id !== 'p1').length === 0) sim.addImage('p2', imageOf(sim.peers.get('p2')!.info.arch))
  for (const id of ids) { sim.restart(id); sim.resume(id) }

  if (ending === 'crash-loop') {
    for (const id of ids) sim.crashAfter(id, 300)
    const from = sim.now
    sim.runFor(CRASH_LOOP_MS)
    const starts = sim.startsBetween(spec.name, from)
    if (starts > CRASH_LOOP_MAX_STARTS) sim.violations.push(`t=${sim.now}: crash loop on every board: ${starts} starts in ${CRASH_LOOP_MS} ms (at most ${CRASH_LOOP_MAX_STARTS})`)
    return result(null, 0, starts)
  }

  // Back-offs after failed starts may delay the recovery by up to their longest wait.
  const bound = recoveryMs + (failures ? DEFAULT_CONSENSUS_CONFIG.restartBackoffMaxMs : 0)
  const start = sim.now
  const settled = sim.runUntil(() => sim.settled(spec.name, true), bound)
  const recoveredInMs = settled ? sim.now - start : null
  if (!settled) {
    const running = sim.runningOn(spec.name)
    sim.violations.push(`t=${sim.now}: liveness: not settled ${bound} ms after faults stopped (running on: ${running.join(',') || 'none'})`)
    return result(null)
  }
  // Settling may still leave a reconfiguration (the view grows by one member per epoch, a backup is replaced): let it
  // finish, then nothing changes and nothing may be claimed.
  sim.runFor(2000)
  const from = sim.now
  sim.runFor(QUIET_MS)
  const claims = sim.claimsBetween(spec.name, from)
  if (claims > 0) sim.violations.push(`t=${sim.now}: ${claims} claims in a quiet window of ${QUIET_MS} ms after settling`)
  return result(recoveredInMs, claims)
}

export interface FailoverSample { seed: number, peers: number, killToRunningMs: number | null }

/**
 * One failover: `peers` boards settle with a mission, the primary is killed at a random moment, and the time until
 * another board runs the mission is measured. `exitDetection` false: kills are only seen as silence.
 */
export function measureKillToRunning (seed: number, peers: number, exitDetection: boolean): FailoverSample {
  const rng = new Random(seed ^ 0x5bd1e995)
  const ids = Array.from({ length: peers }, (_, i) => `p${i + 1}`)
  const sim = new Simulation({ seed, peers: ids.map(id => ({ id })), exitDetectionMs: exitDetection ? [20, 150] : null })
  sim.runFor(1000)
  sim.deploy(rng.pick(ids), SIM_MISSION)
  if (!sim.runUntil(() => sim.settled(SIM_MISSION.name, true), 10_000)) return { seed, peers, killToRunningMs: null }
  sim.runFor(rng.int(0, 1000))
  const victim = sim.runningOn(SIM_MISSION.name)[0]!
  sim.kill(victim)
  const killedAt = sim.now
  const ok = sim.runUntil(() => sim.runningOn(SIM_MISSION.name).some(id => id !== victim), 10_000)
  return { seed, peers, killToRunningMs: ok && sim.violations.length === 0 ? sim.now - killedAt : null }
}
