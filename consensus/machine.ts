// The per-peer consensus state machine for all missions: deterministic, no I/O. Inputs: tick/peerChanged/receive/
// local with a `now` in ms. Outputs: takeActions(), applied in order by the caller (persist before anything after it).
import { imageFor, type MissionSpec } from '../manifest/manifest.ts'
import { blockedReason, fetchingImage, holdsImage, imageRef, placementOk, type Blocked, type BoardFacts } from './placement.ts'
import { cloneJson, compareCheckpoints, MAX_REASON, tombstoneSpec, withRecordDefaults } from './messages.ts'
import { fnv1a64, hrwRank } from './hrw.ts'
import { loneClaimant, majority, quorumReached, stepView } from './quorum.ts'
import { backoffMs, checkpointPeriod, stalenessBound } from './cadence.ts'
import type { OperatorGrant } from './authority.ts'
import { describeSelfFence, seconds, short, type ColdStartCause, type FailureKind, type MachineEvent, type SelfFenceCause, type StopReason } from './events.ts'
import {
  DEFAULT_CONSENSUS_CONFIG,
  type Action, type AuthorityRefusal, type CheckpointRef, type ConsensusConfig, type ConsensusMessage, type FailureCause, type LocalEvent, type MissionRecord,
  type MissionProtection, type MissionView, type PeerInfo, type PeerState, type PersistedMission, type PersistedState
} from './types.ts'

/**
 * What this peer is: its identity and hardware (the failure detector never reports self). The caller may change
 * canRun, canCheckpoint, images and fetchingImages at any time (then tick): the machine reads this object live.
 */
export type SelfInfo = Omit<PeerInfo, 'state' | 'gone'>

export interface MachineInit {
  self: SelfInfo
  now: number
  config?: Partial<ConsensusConfig>
  persisted?: PersistedState
}

/** A two-board primary replacing its partner, proven exited, by `joiner` (see #startPartnerReplacement). */
interface Replacement { partner: string, joiner: string }
/** `answered`: some other peer voted on it (granted or not); a claim nobody answered is retried under its epoch. */
interface Claim { epoch: number, basis: MissionRecord, votes: Set<string>, startedAt: number, replace: Replacement | null, answered: boolean }
/** `kind`: how it was started (a failure of a cold start is not reported as a failed restore). */
interface Container { epoch: number, status: 'starting' | 'running', since: number, kind: 'fresh' | 'restore' }
interface ImageTask { cid: string | null, since: number | null, failures: number, retryAt: number }

/** Volatile per-mission state: lost on restart, rebuilt from the persisted part and the network. */
interface Mission extends PersistedMission {
  container: Container | null
  claim: Claim | null
  lastClaimAt: number
  electionSince: number | null
  quorumLostSince: number | null
  checkpointInFlight: { seq: number, since: number, stop: boolean } | null
  lastCheckpointAt: number
  /** Start times of the newest checkpoints taken, to measure how long each took to be acknowledged. */
  checkpointStarts: Array<{ seq: number, epoch: number, since: number }>
  /** The start of the newest checkpoint the backup acknowledged (primary only). */
  replicatedStart: { seq: number, epoch: number, since: number } | null
  /** The newest replication lags (start to the backup's ack), ms; the slowest sets the checkpoint period. */
  replicationLags: number[]
  fetchInFlight: { ref: CheckpointRef, since: number } | null
  /** Since when this board, a lone claimant with older state than the record's, waits (see #waitsForNewerState). */
  staleSince: number | null
  /** When this board last refused a claim because it holds newer state than the candidate (it claims at once). */
  newerStateSince: number | null
  /** Until when this board leaves the election to a voter that refused its claim for holding newer state. */
  deferToNewerUntil: number
  /** The highest epoch this board refused a claim of for holding newer state: its own claim goes above it. */
  refusedClaimEpoch: number
  /** The candidates ranked before this board at its last look (see #maybeClaim). */
  candidatesAhead: string[]
  /** The epoch of this board's last claim that timed out with no answer at all: the next claim asks for it again. */
  unansweredEpoch: number | null
  /** The candidate whose abandon last released this board's vote (it may ask again for the same epoch). */
  releasedBy: string | null
  /** Since when this board refuses claims for newer state without having won (reset when an epoch is elected). */
  refusingSince: number | null
  /** Primary: checkpoints failed in a row, and the last error (its protection names it). */
  checkpointFailures: number
  lastCheckpointError: string | null
  /** Primary: the backup it waits acks from, and since when it heard none (its last ack, or when it became backup). */
  ackWatch: { backup: string | null, since: number }
  /** Consecutive failed fetches, and when the next may start (see fetchBackoffMs). */
  fetchFailures: number
  fetchRetryAt: number
  /** The record's epoch at the last failed fetch: a new epoch (a new primary serving) is tried once at once. */
  fetchFailedEpoch: number
  lastAnnounceAt: number
  pendingMove: string | null
  coldStartNext: boolean
  /** A claim refused only because the primary looked alive: re-decided when the detector reports it dead. */
  deferredClaim: { from: string, msg: Extract<ConsensusMessage, { type: 'claim' }>, at: number } | null
  /** Restarted as the two-board partner of this epoch: no claim alone on a basis up to this epoch. */
  heldBackUpTo: number | null
  /** Primary: the two-board partner announced it holds back, so a new epoch with its vote re-arms it. */
  partnerHeldBack: boolean
  /** This board's own failures of this mission in a row, and until when it does not claim it (per-board back-off). */
  localFailures: number
  localBackoffUntil: number
  /** Local time this peer learned the record's current `restarts` (the swarm-wide back-off runs from here). */
  failureSeenAt: number
  /** Primary: storing the image in the swarm (storeImage); other boards: fetching it (fetchImage). */
  imageStore: ImageTask
  imageFetch: ImageTask
  /** When this board last held the mission's image (see imageRefetchHoldMs). */
  imageHeldAt: number
  /** The last ack sent: `${record epoch}/${checkpoint epoch}.${seq}` (acks wait until this board holds the image). */
  lastAck: string | null
  /** The last blocked reason reported in an event (events only on change). */
  blockedReason: string | null
  /** Since when no live board could run the mission (null while one can). */
  unplaceableSince: number | null
}

type Removal = Omit<Extract<StopReason, { kind: 'removed' }>, 'kind'>
/** How a failure is named in its reason (an exit names how long the container ran). */
const FAILURE_LABELS: Record<Exclude<FailureKind, 'exited'>, string> = {
  containerGone: 'container gone', restoreFailed: 'restore failed', coldStartFailed: 'cold start failed', startTimedOut: 'start timed out'
}

/** How many recent checkpoints the replication lag is measured over. */
const RECENT_CHECKPOINTS = 10
/** Checkpoints failed in a row after which a primary reports itself not protected. */
const CHECKPOINT_FAILURES_UNPROTECTED = 3
/** A backup that acknowledged nothing for this many checkpoint intervals (and ACK_STALL_MIN_MS) leaves the mission unprotected. */
const ACK_STALL_INTERVALS = 5
const ACK_STALL_MIN_MS = 5000

/**
 * No epoch above this is adopted, claimed or voted for: at 1000 elections a second it lasts 35 years, and a forged
 * epoch near 2^53 can no longer kill a mission for good (its successor would not be a safe integer).
 */
export const MAX_EPOCH = 2 ** 40
/** A claim may run at most this far above the epochs the voter knows (its record's and its highest vote's). */
export const MAX_CLAIM_STEP = 1000

export { majority, stepView } from './quorum.ts'

export class ClusterMachine {
  readonly self: SelfInfo
  readonly config: ConsensusConfig
  readonly #startedAt: number
  #lastTickAt: number
  readonly #peers = new Map<string, PeerInfo>()
  readonly #deadSince = new Map<string, number>()
  readonly #heardAt = new Map<string, number>()
  /** Peers whose exit the detector proved (`gone`) while they were still in contact (alive or suspect before). */
  readonly #exitProven = new Set<string>()
  readonly #missions = new Map<string, Mission>()
  /** Boards the operator revoked: dead and gone for good, no vote, no say (see revoke()). */
  readonly #revoked = new Set<string>()
  readonly #refusals: Record<AuthorityRefusal, number> = {
    'epoch-out-of-range': 0, 'outside-view': 0, 'not-a-member': 0, 'fence-not-authorized': 0, 'older-deployment': 0, revoked: 0
  }
  #actions: Action[] = []

  constructor (init: MachineInit) {
    this.self = init.self
    this.config = { ...DEFAULT_CONSENSUS_CONFIG, ...init.config }
    this.#startedAt = init.now
    this.#lastTickAt = init.now
    const persisted = init.persisted
    if (persisted !== undefined && persisted.self === this.self.peerId) {
      for (const [name, stored] of Object.entries(persisted.missions)) {
        const mission = this.#newMission(cloneJson(stored))
        withRecordDefaults(mission.record)
        this.#missions.set(name, mission)
        const record = mission.record
        // Tombstones are not re-announced at start: a peer holding one answers announces of a live copy instead.
        if (record.removed) mission.lastAnnounceAt = init.now
        // The record's primary failed and released it: the swarm-wide back-off runs again from now.
        if (record.released && record.restarts > 0 && failedInEpoch(record)) mission.failureSeenAt = init.now
        mission.votedFor ??= null
        if (mission.votedFor === this.self.peerId && mission.votedEpoch > record.epoch) {
          this.#emit({ type: 'publish', message: { type: 'abandon', mission: name, epoch: mission.votedEpoch } })
        }
        if (record.view.length === 2 && record.view.includes(this.self.peerId) && record.primary !== null &&
            record.primary !== this.self.peerId && record.view.includes(record.primary) && !record.released && !record.removed) {
          // While this peer was down its primary may have replaced it (#startPartnerReplacement): a claim alone on
          // this basis could collide with that epoch. It waits for a newer epoch (the primary re-elects with it).
          mission.heldBackUpTo = record.epoch
        }
        if (record.primary === this.self.peerId && !record.released && !record.removed) {
          // After a restart the container's state is unknown: stop it and rejoin under a new epoch.
          this.#emit({ type: 'stopContainer', mission: name, reason: { kind: 'daemonRestarted' } })
          record.released = true
          this.#event(name, { kind: 'restartedAsPrimary', epoch: record.epoch })
        }
      }
      if (this.#missions.size > 0) this.#persist()
    }
  }

  // ---- inputs ------------------------------------------------------------------------------------------------

  peerChanged (now: number, peer: PeerInfo): void {
    if (peer.peerId === this.self.peerId) return
    if (this.#revoked.has(peer.peerId) && (peer.state !== 'dead' || peer.gone !== true)) peer = { ...peer, state: 'dead', gone: true }
    const previous = this.#peers.get(peer.peerId)?.state
    if (peer.state !== 'dead') this.#deadSince.delete(peer.peerId)
    else if (previous !== 'dead') this.#deadSince.set(peer.peerId, now)
    if (peer.state !== 'dead' || peer.gone !== true) this.#exitProven.delete(peer.peerId)
    else if (previous === 'alive' || previous === 'suspect') this.#exitProven.add(peer.peerId)
    this.#peers.set(peer.peerId, { ...peer })
    if (peer.state === 'dead') {
      for (const mission of this.#missions.values()) {
        const deferred = mission.deferredClaim
        if (deferred === null || mission.record.primary !== peer.peerId) continue
        mission.deferredClaim = null
        if (now - deferred.at < this.config.claimTimeoutMs && !this.#primaryHolds(now, mission, deferred.from)) this.#onClaim(now, deferred.from, deferred.msg)
      }
    }
    this.tick(now)
  }

  receive (now: number, from: string, msg: ConsensusMessage): void {
    if (from === this.self.peerId) return
    if (this.#revoked.has(from)) { this.#refuse('revoked'); return }
    this.#heardAt.set(from, now)
    switch (msg.type) {
      case 'announce': {
        this.#releaseVoteIfOver(now, from, msg.claim.votedEpoch, msg.claim.open, msg.record)
        this.#onAnnounce(now, from, msg.record)
        const mission = this.#missions.get(msg.record.mission)
        const record = mission?.record
        if (msg.claim.heldBack === true && mission !== undefined && record !== undefined && record.primary === this.self.peerId &&
            !record.released && record.epoch === msg.record.epoch && record.deployId === msg.record.deployId && record.view.includes(from)) {
          mission.partnerHeldBack = true
        }
        break
      }
      case 'claim': this.#onClaim(now, from, msg); break
      case 'vote': this.#onVote(now, from, msg); break
      case 'ack': this.#onAck(now, from, msg); break
      case 'fence': this.#onFence(now, from, msg); break
      case 'remove': this.#onRemove(msg.mission, msg.deployId, { by: 'message', from }, msg.grant); break
      case 'abandon': {
        const mission = this.#missions.get(msg.mission)
        if (mission !== undefined && mission.votedFor === from && mission.votedEpoch === msg.epoch) {
          mission.releasedBy = from
          this.#releaseVote(now, mission)
        }
        break
      }
      case 'move': {
        const mission = this.#missions.get(msg.mission)
        if (mission !== undefined && mission.record.deployId === msg.deployId) this.#requestMove(now, mission, msg.to)
        break
      }
    }
  }

  local (now: number, ev: LocalEvent): void {
    if (ev.type === 'deploy') { this.#deploy(now, ev.spec, ev.deployId, ev.grant); return }
    const mission = this.#missions.get(ev.mission)
    if (mission === undefined) {
      if (ev.type === 'remove' || ev.type === 'move') this.#event(ev.mission, { kind: 'unknownMission', mission: ev.mission })
      return
    }
    const record = mission.record
    switch (ev.type) {
      case 'remove':
        if (!record.removed) {
          const grant = ev.grant === undefined ? {} : { grant: ev.grant }
          this.#emit({ type: 'publish', message: { type: 'remove', mission: record.mission, deployId: record.deployId, ...grant } })
          this.#onRemove(record.mission, record.deployId, { by: 'request', from: null }, ev.grant)
        }
        break
      case 'regrant':
        if (!record.removed && ev.grant.deployId === record.deployId && newerGrant(ev.grant, record.grant)) {
          record.grant = ev.grant
          this.#persist()
          this.#announce(now, mission)
          this.#event(record.mission, { kind: 'regranted', key: ev.grant.key })
        }
        break
      case 'move':
        if (record.primary === this.self.peerId) this.#requestMove(now, mission, ev.to)
        else this.#emit({ type: 'publish', message: { type: 'move', mission: record.mission, deployId: record.deployId, to: ev.to, ...(ev.grant === undefined ? {} : { grant: ev.grant }) } })
        break
      case 'containerStarted':
        if (mission.container?.epoch === ev.epoch && mission.container.status === 'starting') {
          mission.container = { ...mission.container, status: 'running', since: now }
          mission.lastCheckpointAt = now
          if (record.primary === this.self.peerId && !record.released && record.epoch === ev.epoch) {
            record.started = true
            this.#persist()
            this.#announce(now, mission)
          }
          this.#event(record.mission, { kind: 'running', epoch: ev.epoch })
        }
        break
      case 'containerExited':
        this.#onFailure(now, mission, ev.epoch, ev.reason, null)
        break
      case 'leaseLapsed':
        // The board's failure, not the mission's: no restart counted, no swarm-wide back-off. Named as the last failure,
        // the released board ranks last, so a healthy board takes over (a starved board that claimed again first
        // restored for 4 s, lapsed again, and went round 4 epochs).
        if (mission.container !== null && mission.container.epoch <= ev.epoch && record.primary === this.self.peerId && !record.released) {
          const cause = { kind: 'leaseLapsed' as const, lateMs: ev.lateMs }
          const reason = describeSelfFence(cause)
          this.#event(record.mission, { kind: 'selfFenced', cause })
          this.#stopIfRunning(mission, { kind: 'leaseLapsed' })
          record.lastFailure = { board: this.self.peerId, reason, at: now, epoch: record.epoch }
          mission.localBackoffUntil = now + this.config.restartBackoffMs
          this.#release(now, mission)
        }
        break
      case 'restoreFailed':
      case 'startFailed':
        this.#onFailure(now, mission, ev.epoch, ev.error, ev.cause ?? 'other')
        break
      case 'imageStored':
        if (mission.imageStore.since !== null) mission.imageStore = { cid: null, since: null, failures: 0, retryAt: -Infinity }
        if (record.primary === this.self.peerId && !record.released && ev.epoch <= record.epoch && record.imageCid === null) {
          record.imageCid = ev.cid
          record.imageArch = this.self.arch
          this.#persist()
          this.#event(record.mission, { kind: 'imageStored', image: imageRef(record.spec, this.self.arch) ?? null, cid: ev.cid })
          this.#announce(now, mission)
        }
        break
      case 'imageStoreFailed':
        if (mission.imageStore.since !== null) {
          const wait = this.#taskFailed(now, mission.imageStore)
          this.#event(record.mission, { kind: 'imageStoreFailed', error: ev.error, retryMs: wait })
        }
        break
      case 'imageFetchFailed':
        if (mission.imageFetch.since !== null && mission.imageFetch.cid === ev.cid) {
          const wait = this.#taskFailed(now, mission.imageFetch)
          this.#event(record.mission, { kind: 'imageFetchFailed', image: imageRef(record.spec, this.self.arch) ?? null, error: ev.error, retryMs: wait })
        }
        break
      case 'checkpointTaken': this.#onCheckpointTaken(now, mission, ev.epoch, ev.seq, ev.cid); break
      case 'checkpointFailed':
        // The container is gone without an exit event (it was stopped or died while this daemon was frozen): an exit,
        // not a failing checkpoint. (Simulated seed 3157: a primary retried checkpoints of a vanished container for
        // 15 s, a move waited on it, and the mission ran nowhere.)
        if (ev.noContainer === true && mission.container !== null && mission.container.epoch <= ev.epoch && mission.checkpointInFlight?.seq === ev.seq) {
          mission.checkpointInFlight = null
          this.#onFailure(now, mission, ev.epoch, 'the container is gone (found by a checkpoint)', null, 'containerGone')
          break
        }
        if (mission.checkpointInFlight?.seq === ev.seq) {
          if (mission.checkpointInFlight.stop) this.#event(record.mission, { kind: 'moveAborted', error: ev.error })
          mission.checkpointInFlight = null
          mission.lastCheckpointAt = now
          mission.checkpointFailures++
          mission.lastCheckpointError = ev.error
          if (mission.checkpointFailures === CHECKPOINT_FAILURES_UNPROTECTED || mission.checkpointFailures % 30 === 0) {
            this.#event(record.mission, { kind: 'checkpointsFailing', failures: mission.checkpointFailures, error: ev.error, since: record.checkpoint?.seq ?? null })
          }
        }
        break
      case 'checkpointFetched': this.#onFetched(mission, ev.checkpoint); break
      case 'fetchFailed':
        if (mission.fetchInFlight?.ref.cid === ev.cid) {
          mission.fetchInFlight = null
          mission.fetchFailures++
          const wait = backoffMs(mission.fetchFailures, this.config.fetchBackoffMs, this.config.fetchBackoffMaxMs)
          mission.fetchRetryAt = now + wait
          mission.fetchFailedEpoch = record.epoch
          if (mission.fetchFailures === 3 || mission.fetchFailures % 10 === 0) {
            this.#event(record.mission, { kind: 'fetchesFailing', failures: mission.fetchFailures, error: ev.error, retryMs: wait })
          }
        }
        break
    }
    this.tick(now)
  }

  tick (now: number): void {
    const frozenMs = now - this.#lastTickAt
    this.#lastTickAt = now
    for (const mission of this.#missions.values()) this.#tickMission(now, mission, frozenMs)
  }

  takeActions (): Action[] {
    const actions = this.#actions
    this.#actions = []
    return actions
  }

  // ---- outputs for the caller ----------------------------------------------------------------------------------

  view (now: number): MissionView[] {
    return [...this.#missions.values()].map(m => this.#viewOf(m, now))
  }

  /** Mission messages refused for lack of authority, by reason (since start). */
  refusals (): Record<AuthorityRefusal, number> { return { ...this.#refusals } }

  /**
   * The operator revoked this board: its messages are refused, it is dead and gone for good (its missions fail over
   * at once), and it no longer counts in any view's quorum (see #quorumView).
   */
  revoke (now: number, peerId: string): void {
    if (peerId === this.self.peerId || this.#revoked.has(peerId)) return
    this.#revoked.add(peerId)
    const info = this.#peers.get(peerId)
    if (info !== undefined) this.peerChanged(now, { ...info, state: 'dead', gone: true })
    else { this.#deadSince.set(peerId, now); this.tick(now) }
  }

  /** Highest epoch this peer knows per mission (for invariant checks and status). */
  knownEpoch (mission: string): number { return this.#missions.get(mission)?.record.epoch ?? -1 }

  persistedState (): PersistedState {
    const missions: Record<string, PersistedMission> = {}
    for (const [name, m] of this.#missions) {
      missions[name] = { record: copyRecord(m.record), votedEpoch: m.votedEpoch, votedFor: m.votedFor, held: m.held === null ? null : { ...m.held } }
    }
    return { version: 1, self: this.self.peerId, missions }
  }

  // ---- membership ------------------------------------------------------------------------------------------------

  #stateOf (now: number, peerId: string): PeerState {
    if (peerId === this.self.peerId) return 'alive'
    const peer = this.#peers.get(peerId)
    if (peer !== undefined) return peer.state
    return now - this.#startedAt >= this.config.unknownPeerDeadMs ? 'dead' : 'suspect'
  }

  #info (peerId: string): Omit<PeerInfo, 'state'> | undefined {
    return peerId === this.self.peerId ? this.self : this.#peers.get(peerId)
  }

  #primaryGone (now: number, peerId: string): boolean {
    if (this.#stateOf(now, peerId) !== 'dead') return false
    // The silence wait exists for a frozen primary to self-fence first; a process proven exited (`gone`) can never
    // resume, and its containers died with it (daemon watchdog), so there is nothing to wait for.
    if (this.#peers.get(peerId)?.gone === true) return true
    return now - (this.#heardAt.get(peerId) ?? -Infinity) >= this.config.primarySilenceMs
  }

  #placementOk (spec: MissionSpec, peerId: string): boolean { return placementOk(spec, this.#info(peerId)) }
  #holdsImage (spec: MissionSpec, peerId: string): boolean { return holdsImage(spec, this.#info(peerId)) }
  #fetchingImage (spec: MissionSpec, peerId: string): boolean { return fetchingImage(spec, this.#info(peerId)) }

  /** The board can run the mission now: Docker, the placement, and the image for its architecture held. */
  #eligible (spec: MissionSpec, peerId: string): boolean {
    return this.#info(peerId)?.canRun === true && this.#placementOk(spec, peerId) && this.#holdsImage(spec, peerId)
  }

  /**
   * The board can be the backup: as #eligible, but fetching the image counts (it is not `protected` until it holds
   * it), and the current backup stays while the record names an image it can fetch (a failed fetch is retried).
   */
  #eligibleBackup (record: MissionRecord, peerId: string): boolean {
    const info = this.#info(peerId)
    if (info?.canRun !== true || info.canStore === false || !this.#placementOk(record.spec, peerId)) return false
    if (this.#holdsImage(record.spec, peerId) || this.#fetchingImage(record.spec, peerId)) return true
    return peerId === record.backup && record.imageCid !== null && record.imageArch === info.arch
  }

  /** Back-off after n consecutive failures: 0, then 1 s doubling to 60 s (config). */
  #backoffMs (failures: number): number {
    return backoffMs(failures, this.config.restartBackoffMs, this.config.restartBackoffMaxMs)
  }

  /** Until when no board claims after the record's last failure (swarm-wide; from the local time it was learned). */
  #swarmBackoffUntil (mission: Mission): number {
    const record = mission.record
    if (record.restarts <= 0 || record.lastFailure === null) return -Infinity
    return mission.failureSeenAt + this.#backoffMs(record.restarts)
  }

  /** The record's restarts changed from `before`: the swarm-wide back-off runs from now. */
  #noteRestarts (now: number, mission: Mission, before: number): void {
    if (mission.record.restarts !== before && mission.record.restarts > 0) mission.failureSeenAt = now
  }

  /** A storeImage/fetchImage failed: retried after 1 s doubling to 60 s; returns the wait. */
  #taskFailed (now: number, task: ImageTask): number {
    task.failures++
    task.since = null
    const wait = this.#backoffMs(task.failures)
    task.retryAt = now + wait
    return wait
  }

  /** Why no live board can run the mission (null when one can): see blockedReason. */
  #blockedReason (now: number, record: MissionRecord): Blocked | null {
    const live = [this.self.peerId, ...[...this.#peers.keys()].filter(p => this.#stateOf(now, p) === 'alive')]
    return blockedReason(record.spec, live.map(p => this.#info(p)).filter((i): i is BoardFacts => i !== undefined))
  }

  /** No live board could run the mission for blockedAfterMs (before that the facts may just not have arrived). */
  #isBlocked (now: number, mission: Mission): boolean {
    return mission.unplaceableSince !== null && now - mission.unplaceableSince >= this.config.blockedAfterMs
  }

  #canRestore (peerId: string, ref: CheckpointRef | null): boolean {
    const info = this.#info(peerId)
    return ref !== null && info !== undefined && info.canCheckpoint && info.arch === ref.arch
  }

  /** The one member of a view of <= 2 that may claim the next epoch alone (two-board mode). */
  #loneClaimant (basis: MissionRecord): string | null {
    return loneClaimant(basis, p => this.#placementOk(basis.spec, p))
  }

  /**
   * The members whose votes count: the view without revoked boards. Safe for one revocation at a time: a candidate
   * that knows of it needs a majority of the n-1 others, one that does not yet a majority of n, which the revoked
   * board can give only one vote of; the two sets of honest voters still meet.
   */
  #quorumView (basis: MissionRecord): string[] {
    return this.#revoked.size === 0 ? basis.view : basis.view.filter(p => !this.#revoked.has(p))
  }

  #quorumReached (basis: MissionRecord, candidate: string, voters: Set<string>): boolean {
    const quorum = { voters: this.#quorumView(basis), loneClaimant: () => this.#loneClaimant(basis), heldBack: (c: string) => this.#heldBack(basis, c) }
    return quorumReached(quorum, candidate, voters)
  }

  /** This peer restarted as the two-board partner of `basis` and may not claim alone on it (see the constructor). */
  #heldBack (basis: MissionRecord, candidate: string): boolean {
    const upTo = this.#missions.get(basis.mission)?.heldBackUpTo ?? null
    return candidate === this.self.peerId && upTo !== null && basis.epoch <= upTo && !basis.released
  }

  #quorumReachable (now: number, basis: MissionRecord, candidate: string): boolean {
    const alive = new Set(basis.view.filter(p => this.#stateOf(now, p) === 'alive'))
    alive.add(candidate)
    return this.#quorumReached(basis, candidate, alive)
  }

  // ---- the per-mission loop ----------------------------------------------------------------------------------------

  #tickMission (now: number, mission: Mission, frozenMs: number): void {
    const record = mission.record
    if (record.removed) {
      // A tombstone is not re-announced periodically: it is announced once when learned, and again (without the
      // spec) as the answer to an announce or claim of a live copy, so no copy resurrects.
      if (mission.lastAnnounceAt === -Infinity) this.#announce(now, mission)
      return
    }
    const self = this.self.peerId

    if (mission.claim !== null && now - mission.claim.startedAt >= this.config.claimTimeoutMs) {
      if (!mission.claim.answered && mission.claim.replace === null) mission.unansweredEpoch = mission.claim.epoch
      this.#abandonClaim(mission)
    }

    if (mission.container !== null && mission.container.status === 'starting' && now - mission.container.since >= this.config.startTimeoutMs) {
      this.#emit({ type: 'stopContainer', mission: record.mission, reason: { kind: 'startTimedOut' } })
      this.#onFailure(now, mission, mission.container.epoch, `no answer after ${seconds(this.config.startTimeoutMs)}`, 'other', 'startTimedOut')
    }

    if (record.primary === self && !record.released) this.#tickPrimary(now, mission, frozenMs)
    if (record.primary === self && !record.released) {
      mission.electionSince = null
      mission.unplaceableSince = null
      mission.staleSince = null
    } else if (record.primary === null || record.released || this.#primaryGone(now, record.primary)) {
      const blocked = this.#blockedReason(now, record)
      mission.unplaceableSince = blocked === null ? null : mission.unplaceableSince ?? now
      const reported = this.#isBlocked(now, mission) ? blocked : null
      if (reported?.reason !== mission.blockedReason && (reported !== null || blocked === null)) {
        if (reported !== null) this.#event(record.mission, { kind: 'blocked', ...reported })
        mission.blockedReason = reported?.reason ?? null
      }
      // While blocked nobody claims; the candidates' stagger runs from the moment a board can run it.
      if (blocked !== null) mission.electionSince = now
      else {
        mission.electionSince ??= now
        this.#maybeClaim(now, mission)
      }
    } else {
      mission.electionSince = null
      mission.unplaceableSince = null
      mission.staleSince = null
    }

    if ((record.backup === self || record.handoffTo === self) && record.checkpoint !== null &&
        compareCheckpoints(record.checkpoint, mission.held) > 0 && record.primary !== self) {
      const inFlight = mission.fetchInFlight
      const due = inFlight === null || compareCheckpoints(record.checkpoint, inFlight.ref) > 0 || now - inFlight.since >= this.config.fetchRetryMs
      // The back-off is for the epoch whose providers failed: after a takeover the new primary serves what it took.
      if (due && (now >= mission.fetchRetryAt || record.epoch > mission.fetchFailedEpoch)) {
        mission.fetchInFlight = { ref: record.checkpoint, since: now }
        this.#emit({ type: 'fetchCheckpoint', mission: record.mission, checkpoint: record.checkpoint, providers: record.primary === null ? [] : [record.primary] })
      }
    }
    if (record.primary !== self) {
      this.#maybeAck(mission)
      this.#maybeFetchImage(now, mission)
    }

    if (now - mission.lastAnnounceAt >= this.config.announceIntervalMs) this.#announce(now, mission)
  }

  #tickPrimary (now: number, mission: Mission, frozenMs: number): void {
    const record = mission.record
    mission.electionSince = null
    if (record.view.length >= 3) {
      const alive = record.view.filter(p => this.#stateOf(now, p) === 'alive').length
      // A machine not ticked for longer than a lease (process or board frozen) saw no quorum meanwhile.
      const frozen = frozenMs >= this.config.leaseMs
      if (alive < majority(record.view.length) || frozen) {
        mission.quorumLostSince ??= now
        if (now - mission.quorumLostSince >= this.config.selfFenceGraceMs || frozen) {
          const cause: SelfFenceCause = frozen
            ? { kind: 'frozen', frozenMs, leaseMs: this.config.leaseMs }
            : { kind: 'quorumLost', alive, members: record.view.length, quorum: majority(record.view.length) }
          this.#event(record.mission, { kind: 'selfFenced', cause })
          if (mission.container !== null) this.#emit({ type: 'stopContainer', mission: record.mission, reason: { kind: 'quorumLost' } })
          mission.container = null
          mission.checkpointInFlight = null
          this.#release(now, mission)
          return
        }
      } else {
        mission.quorumLostSince = null
      }
    }
    const container = mission.container
    if (container === null || container.status !== 'running') return
    if (mission.ackWatch.backup !== record.backup) mission.ackWatch = { backup: record.backup, since: now }

    // The image goes into the swarm's IPFS once the container runs, so boards without it can fetch it.
    const store = mission.imageStore
    if (store.since !== null && now - store.since >= this.config.imageTimeoutMs) this.#taskFailed(now, store)
    const image = imageRef(record.spec, this.self.arch)
    if (record.started && record.imageCid === null && store.since === null && now >= store.retryAt && image !== undefined) {
      store.since = now
      this.#emit({ type: 'storeImage', mission: record.mission, epoch: record.epoch, image })
    }

    const inFlight = mission.checkpointInFlight
    if (inFlight !== null && now - inFlight.since >= this.config.checkpointTimeoutMs) mission.checkpointInFlight = null
    if (mission.checkpointInFlight === null) {
      const moveTo = mission.pendingMove
      if (moveTo !== null || now - mission.lastCheckpointAt >= this.#checkpointPeriod(mission)) {
        const seq = (record.checkpoint?.seq ?? mission.held?.seq ?? 0) + 1
        mission.checkpointInFlight = { seq, since: now, stop: moveTo !== null }
        this.#emit({
          type: 'checkpoint', mission: record.mission, epoch: record.epoch, seq, stop: moveTo !== null,
          parent: mission.held?.cid ?? null, view: [...record.view], intervalMs: record.spec.checkpointIntervalMs
        })
        return
      }
    }

    // Reconfiguration: a new epoch when the view or the backup should change (the container keeps running).
    if (mission.claim === null && mission.pendingMove === null && now - mission.lastClaimAt >= this.config.claimTimeoutMs) {
      const { view, backup } = this.#desiredLayout(now, record, true)
      const backupGone = record.backup !== null && this.#stateOf(now, record.backup) === 'dead'
      // The backup cannot hold the image any more, or a board that can restore here replaces one that cannot.
      const backupUnfit = record.backup !== null && backup !== record.backup && (!this.#eligibleBackup(record, record.backup) ||
        (backup !== null && this.#restoresHere(backup) && !this.#restoresHere(record.backup)))
      const changed = backupGone || backupUnfit || backup !== record.backup && (record.backup === null || !view.includes(record.backup)) ||
        view.join(',') !== record.view.join(',') || mission.partnerHeldBack
      if (changed && !this.#pendingVote(now, mission)) {
        if (this.#quorumReachable(now, record, this.self.peerId)) this.#startClaim(now, mission)
        else this.#startPartnerReplacement(now, mission)
      }
    }
  }

  /**
   * A two-board view {self, partner} whose partner is dead cannot elect a new epoch by the usual rules: the partner
   * may be alive behind a partition and claim the next epoch alone. When the detector proved the partner's process
   * exited while it was still in contact (so it cannot have claimed alone: that needs this primary silent to it for
   * longer than the detector's dead time), and a restarted partner holds back its claim alone on this basis, the
   * primary replaces it with the vote of a live board, which becomes the backup.
   */
  #startPartnerReplacement (now: number, mission: Mission): void {
    const record = mission.record
    const self = this.self.peerId
    const partner = record.view.find(p => p !== self)
    if (record.view.length !== 2 || partner === undefined || !this.#exitProven.has(partner) || this.#stateOf(now, partner) !== 'dead') return
    const outside = [...this.#peers.keys()].filter(p => !record.view.includes(p))
    const joiner = this.#chooseBackup(now, record, outside)
    if (joiner === null) return
    this.#event(record.mission, { kind: 'replacingBackup', partner, joiner })
    this.#startClaim(now, mission, { partner, joiner })
  }

  #maybeClaim (now: number, mission: Mission): void {
    const record = mission.record
    const self = this.self.peerId
    if (mission.claim !== null || now - mission.lastClaimAt < this.config.claimTimeoutMs) return
    if (this.#pendingVote(now, mission)) return
    // Back-off after failures: this board's own, and the swarm-wide one after the record's last failure.
    const backoffUntil = this.#swarmBackoffUntil(mission)
    if (now < backoffUntil || now < mission.localBackoffUntil) return
    // A voter with newer state refused this board's last claim and claims itself: a new epoch from here would only be
    // refused again. (A spare whose detector was quicker than the loaded backup's burnt 2 epochs before the backup
    // claimed: 4 epochs for one board freeze, chaos seed 23.)
    if (now < mission.deferToNewerUntil) return
    const candidates = this.#candidates(now, record)
    const rank = candidates.indexOf(self)
    if (rank < 0) return
    // A better placed board that appears (comes back, is released) gets its whole stagger ahead of this one: the wait
    // runs again from now. (The stagger ran from the primary's death; a spare with an older checkpoint claimed 68 ms
    // after the revived holder of the newest one, ranked first, came back, and won alone in a two-board view.)
    const ahead = candidates.slice(0, rank)
    if (ahead.some(p => !mission.candidatesAhead.includes(p))) mission.electionSince = now
    mission.candidatesAhead = ahead
    // A move's target waits for the final checkpoint while the source can serve it; once the source is down it takes
    // over from what it holds, as a failover would. (It waited forever, refused everyone else's claim as older, and a
    // spare finally cold-started the mission with no state at all.)
    if (record.handoffTo === self && compareCheckpoints(record.checkpoint, mission.held) > 0 &&
        record.primary !== null && this.#stateOf(now, record.primary) === 'alive') return
    const handoffPending = record.handoffTo !== null && record.handoffTo !== self && candidates.includes(record.handoffTo)
    // Deterministic jitter per (peer, attempt) breaks repeated split votes between equally placed candidates.
    const jitter = Number(fnv1a64(`${self}/${mission.votedEpoch}`) % BigInt(this.config.candidateStaggerMs))
    // A board that refused a claim for holding newer state claims without waiting its rank.
    const newerState = mission.newerStateSince !== null && now - mission.newerStateSince < 4 * this.config.claimTimeoutMs
    const wait = newerState ? 0 : rank * this.config.candidateStaggerMs + (rank > 0 || mission.votedEpoch > record.epoch ? jitter : 0) +
      (handoffPending ? 5 * this.config.claimTimeoutMs : 0)
    // The stagger runs from the end of the swarm-wide back-off, so candidates do not all claim the moment it ends.
    if (now - Math.max(mission.electionSince ?? now, backoffUntil) < wait) return
    if (!this.#quorumReachable(now, record, self)) return
    if (this.#waitsForNewerState(now, mission)) return
    this.#startClaim(now, mission)
  }

  /**
   * A board about to take over alone (two-board view, partner down in its own start or restore) with older state than
   * the record's newest checkpoint waits for a board that holds it to come back, for staleTakeoverWaitMs; then it runs
   * on what it has and says so. (A spare left alone after a double fault restored 5.3 s old state without a word.)
   */
  #waitsForNewerState (now: number, mission: Mission): boolean {
    const record = mission.record
    const self = this.self.peerId
    const newest = record.checkpoint
    // Only after a partner that died in its own start or restore (a double fault): when the primary ran, its backup
    // holds what it acknowledged, and two-board mode takes over at once.
    const partner = record.view.find(p => p !== self)
    const mine = mission.held
    // Any other case ends the wait: it starts afresh at the next double fault. (It was reset only when the wait ran out
    // or newer state arrived: a wait ended by the holder's return was still running at the next double fault, a
    // minute later, and the spare ran on its 40 checkpoints older state 79 ms into it: 543 ticks lost.)
    if (newest === null || record.started || record.view.length !== 2 || this.#loneClaimant(record) !== self ||
      partner === undefined || this.#stateOf(now, partner) === 'alive' || compareCheckpoints(mine, newest) >= 0) {
      mission.staleSince = null
      return false
    }
    if (mission.staleSince === null) {
      mission.staleSince = now
      this.#event(record.mission, {
        kind: 'staleWait', held: mine === null ? null : { epoch: mine.epoch, seq: mine.seq }, newest: { epoch: newest.epoch, seq: newest.seq }, waitMs: this.config.staleTakeoverWaitMs
      })
    }
    if (now - mission.staleSince < this.config.staleTakeoverWaitMs) return true
    this.#event(record.mission, { kind: 'staleGiveUp', heldSeq: mine?.seq ?? null, newestSeq: newest.seq })
    mission.staleSince = null
    return false
  }

  /** Peers that may run the mission next, best first; every peer computes the same order from the same facts. */
  #candidates (now: number, record: MissionRecord): string[] {
    const ids = new Set<string>([this.self.peerId, ...this.#peers.keys(), ...record.view])
    const usable = [...ids].filter(p => this.#stateOf(now, p) === 'alive' && this.#eligible(record.spec, p) &&
      !(p === record.primary && !record.released))
    const lone = this.#loneClaimant(record)
    const allowed = record.view.length === 2 && lone !== null
      ? usable.filter(p => p === lone || this.#quorumReachable(now, record, p))
      : usable
    const preferred: string[] = []
    for (const p of [record.handoffTo, record.released ? record.primary : null, record.backup]) {
      if (p !== null && allowed.includes(p) && !preferred.includes(p)) preferred.push(p)
    }
    const rest = hrwRank(record.mission, allowed.filter(p => !preferred.includes(p)))
    rest.sort((a, b) => Number(this.#canRestore(b, record.checkpoint)) - Number(this.#canRestore(a, record.checkpoint)))
    const ranked = [...preferred, ...rest]
    // The board whose start or run just failed (it released this epoch) goes last while others can run it.
    // (Not a board that failed in an earlier epoch and was released now by its restart: a board killed while it restored
    // came back as the only holder of the newest checkpoint, ranked last for a failure of 5 epochs before, and a spare
    // took over with 158 ticks older state.)
    const failed = record.released && failedInEpoch(record) ? record.primary : null
    if (failed !== null && ranked.length > 1 && ranked.includes(failed)) return [...ranked.filter(p => p !== failed), failed]
    return ranked
  }

  #desiredLayout (now: number, record: MissionRecord, keepRecentlyDead = false): { view: string[], backup: string | null } {
    const members = new Set<string>([this.self.peerId])
    for (const p of this.#peers.keys()) if (this.#stateOf(now, p) === 'alive') members.add(p)
    for (const p of record.view) if (this.#stateOf(now, p) === 'suspect') members.add(p)
    if (keepRecentlyDead && record.view.length >= 3) {
      for (const p of record.view) {
        if (this.#stateOf(now, p) === 'dead' && !this.#revoked.has(p) && now - (this.#deadSince.get(p) ?? -Infinity) < this.config.viewLeaveAfterMs) members.add(p)
      }
    }
    const view = [...members].sort()
    const current = record.backup
    const best = this.#chooseBackup(now, record, view)
    // The current backup stays unless it left, cannot hold the image, or cannot restore this board's checkpoints while
    // another board could (a board that fetches the image can become a better backup than one that held it at first).
    if (current !== null && current !== this.self.peerId && view.includes(current) && this.#stateOf(now, current) !== 'dead' &&
        this.#eligibleBackup(record, current) && (this.#restoresHere(current) || best === null || !this.#restoresHere(best))) {
      return { view, backup: current }
    }
    return { view, backup: best }
  }

  /** The board could restore checkpoints this board takes (same architecture, CRIU). */
  #restoresHere (peerId: string): boolean {
    const info = this.#info(peerId)
    return info !== undefined && info.arch === this.self.arch && info.canCheckpoint
  }

  /** Best backup: can restore this board's checkpoints (same arch, CRIU), then holds the image, then rendezvous order. */
  #chooseBackup (now: number, record: MissionRecord, view: string[]): string | null {
    const options = hrwRank(record.mission, view.filter(p => p !== this.self.peerId && this.#stateOf(now, p) === 'alive' && this.#eligibleBackup(record, p)))
    const score = (p: string): number => (this.#restoresHere(p) ? 2 : 0) + (this.#holdsImage(record.spec, p) ? 1 : 0)
    return options.map((p, i) => ({ p, i, s: score(p) })).sort((a, b) => b.s - a.s || a.i - b.i)[0]?.p ?? null
  }

  // ---- election ------------------------------------------------------------------------------------------------

  #startClaim (now: number, mission: Mission, replace: Replacement | null = null): void {
    const record = mission.record
    // A claim nobody answered (the voters unreachable through a half-open connection) is asked for again under the
    // same epoch: no vote of that epoch went to anyone else, as this board's own vote is still its. (Each retry took
    // a new epoch: 26 epochs burnt in 11 s while the voters could not be reached, an epoch storm for operators.)
    const retry = mission.unansweredEpoch
    mission.unansweredEpoch = null
    const epoch = replace === null && retry !== null && retry === mission.votedEpoch && mission.votedFor === this.self.peerId && retry > record.epoch
      ? retry
      : Math.max(record.epoch, mission.votedEpoch, mission.refusedClaimEpoch) + 1
    mission.votedEpoch = epoch
    mission.votedFor = this.self.peerId
    mission.lastClaimAt = now
    mission.claim = { epoch, basis: copyRecord(record), votes: new Set([this.self.peerId]), startedAt: now, replace, answered: false }
    this.#persist()
    const running = mission.container !== null && record.primary === this.self.peerId
    const restores = !mission.coldStartNext && this.#canRestore(this.self.peerId, mission.held) ? mission.held : null
    const held = running ? undefined : (restores === null ? null : { epoch: restores.epoch, seq: restores.seq })
    this.#emit({ type: 'publish', message: { type: 'claim', mission: record.mission, deployId: record.deployId, epoch, basis: record.epoch, ...(held === undefined ? {} : { held }) } })
    this.#checkWon(now, mission)
  }

  /**
   * This peer holds a newer checkpoint than the candidate would restore, and could restore it itself: it refuses the
   * vote and claims at once. (A new primary killed during its restore left the spare with an older checkpoint than
   * the revived backup's; the spare won and 5.3 s of state were lost.)
   */
  #holdsNewerState (now: number, mission: Mission, from: string, held: { epoch: number, seq: number } | null | undefined): boolean {
    const record = mission.record
    const mine = mission.held
    if (held === undefined || mine === null || (from === record.primary && !record.released)) return false
    // The target of a planned move was chosen by the operator, with what it can restore (a cold start across architectures).
    if (record.released && from === record.handoffTo) return false
    // Only a board that would restore it now: not one backing off after failures, or whose next start is cold. (Also
    // while it defers to a newer holder: two deferring boards refused each other, the one with the newest checkpoint
    // unable to restore it, and 37 epochs burnt in 30 s with the mission down, chaos seed 29.)
    if (mission.coldStartNext || now < mission.localBackoffUntil || now < this.#swarmBackoffUntil(mission)) return false
    if (!this.#canRestore(this.self.peerId, mine) || !this.#eligible(record.spec, this.self.peerId)) return false
    // Whether this board reaches a quorum itself does not matter: one that just restarted knows no peer alive yet,
    // granted the older claim, and the newest state was lost. Liveness comes from the refusal's time limit below.
    // A board whose own claims keep failing stops refusing after a while: liveness over the last seconds of state.
    if (this.#refusalEpisodeLive(now, mission) && mission.refusingSince !== null && now - mission.refusingSince > this.config.newerStateRefusalMs) return false
    return held === null || compareCheckpoints(mine, { ...mine, epoch: held.epoch, seq: held.seq }) > 0
  }

  /** This board refused a claim for holding newer state recently enough that it is the same election. */
  #refusalEpisodeLive (now: number, mission: Mission): boolean {
    return mission.newerStateSince !== null && now - mission.newerStateSince < 4 * this.config.claimTimeoutMs
  }

  #onClaim (now: number, from: string, msg: Extract<ConsensusMessage, { type: 'claim' }>): void {
    const mission = this.#missions.get(msg.mission)
    if (mission === undefined || mission.record.deployId !== msg.deployId) return
    const record = mission.record
    // A vote persists its epoch: a forged claim far ahead would make every later claim start from there.
    if (msg.epoch > MAX_EPOCH || msg.epoch > Math.max(record.epoch, mission.votedEpoch) + MAX_CLAIM_STEP) { this.#refuse('epoch-out-of-range'); return }
    const self = this.self.peerId
    const primaryHolds = this.#primaryHolds(now, mission, from)
    if (from !== self) mission.electionSince = now
    // The candidate claims again on a basis below the epoch it was given a vote for: that claim ended without a win.
    if (mission.votedFor === from && msg.epoch > mission.votedEpoch && msg.basis < mission.votedEpoch) mission.votedFor = null
    const pendingElsewhere = this.#pendingVote(now, mission) && mission.votedFor !== from && msg.basis < mission.votedEpoch
    // The same candidate asking again for the epoch this board gave it (its answer lost, or released by its abandon).
    const askedAgain = msg.epoch === mission.votedEpoch && (mission.votedFor === from || (mission.votedFor === null && mission.releasedBy === from))
    const valid = !record.removed && (msg.epoch > mission.votedEpoch || askedAgain) && msg.epoch > record.epoch && msg.basis >= record.epoch && !pendingElsewhere
    const newerHere = valid && this.#holdsNewerState(now, mission, from, msg.held)
    if (newerHere) {
      // Counted per episode of refusals: a refusal 15 s ago, with the mission running since, made a later election
      // grant at once a claim that restored 10 s older state.
      if (!this.#refusalEpisodeLive(now, mission)) mission.refusingSince = now
      mission.newerStateSince = now
      // The other voters may have granted that epoch already: a claim of the same epoch could not win. (The holder
      // of the newest state claimed the epoch it refused, lost it to the votes already given, and a spare 117
      // checkpoints behind won the next one, simulated seed 4.)
      // Not when the running primary refuses (it holds the mission anyway): its next reconfiguration keeps the next
      // number, as before (skipping it counted as a fourth epoch for one power cut of the backup, chaos suite seed 7).
      if (!primaryHolds) mission.refusedClaimEpoch = Math.max(mission.refusedClaimEpoch, msg.epoch)
      const held = mission.held
      this.#event(record.mission, {
        kind: 'claimRefused', epoch: msg.epoch, candidate: from,
        wouldRestore: msg.held == null ? null : { epoch: msg.held.epoch, seq: msg.held.seq }, held: held === null ? null : { epoch: held.epoch, seq: held.seq }
      })
    }
    const granted = valid && !primaryHolds && !newerHere
    // Refused only because the primary still looks alive here: decided again if the detector reports it dead soon.
    mission.deferredClaim = valid && primaryHolds && record.primary !== self ? { from, msg, at: now } : null
    if (granted) {
      mission.votedEpoch = msg.epoch
      mission.votedFor = from
      this.#persist()
    } else if (record.epoch > msg.basis) {
      mission.lastAnnounceAt = -Infinity
    }
    this.#emit({ type: 'publish', message: { type: 'vote', mission: msg.mission, epoch: msg.epoch, candidate: from, granted, knownEpoch: record.epoch, ...(newerHere ? { newerState: true as const } : {}) } })
    if (!granted) this.#announce(now, mission)
  }

  #primaryHolds (now: number, mission: Mission, candidate: string): boolean {
    const record = mission.record
    if (record.primary === null || record.released || record.primary === candidate || record.handoffTo === candidate) return false
    if (record.primary === this.self.peerId) return mission.container !== null
    // A primary merely suspect here, or dead by a verdict while it still talks to this voter, may be alive and
    // running: in a bridge partition (candidate and primary cut apart, both reaching this voter) a vote granted on
    // suspicion elected a second primary while the first still held its quorum (simulated, seed 2464: 455 ms of two
    // copies). A vote goes against the primary only by the candidate's own rule: dead and silent, or proven exited.
    return !this.#primaryGone(now, record.primary)
  }

  #onVote (now: number, from: string, msg: Extract<ConsensusMessage, { type: 'vote' }>): void {
    const mission = this.#missions.get(msg.mission)
    const claim = mission?.claim
    if (mission === undefined || claim == null || msg.candidate !== this.self.peerId || msg.epoch !== claim.epoch) return
    if (from !== this.self.peerId) claim.answered = true
    if (msg.granted) {
      claim.votes.add(from)
      this.#checkWon(now, mission)
    } else if (msg.knownEpoch >= claim.epoch) {
      this.#abandonClaim(mission)
    } else if (msg.newerState === true) {
      // Shorter than the voter's episode of refusals (#refusalEpisodeLive, 4 claim timeouts): this board's next claim
      // falls inside it, so the voter's time limit on refusing runs on. (Deferring as long, each claim came just after
      // the episode ended, the limit restarted every time and the refusals never ended.)
      mission.deferToNewerUntil = now + 2 * this.config.claimTimeoutMs
      this.#abandonClaim(mission)
    }
  }

  /** The candidate this peer voted for shows (announce, or a newer claim) that its claim is over without a win. */
  #releaseVoteIfOver (now: number, from: string, votedEpoch: number, open: boolean, record: MissionRecord | null): void {
    const mission = this.#missions.get(record?.mission ?? '')
    if (mission === undefined || mission.votedFor !== from) return
    const f = mission.votedEpoch
    if ((votedEpoch > f) || (votedEpoch === f && !open && record !== null && record.epoch < f)) this.#releaseVote(now, mission)
  }

  #releaseVote (now: number, mission: Mission): void {
    mission.votedFor = null
    this.#persist()
    this.tick(now)
  }

  #abandonClaim (mission: Mission): void {
    if (mission.claim === null) return
    this.#emit({ type: 'publish', message: { type: 'abandon', mission: mission.record.mission, epoch: mission.claim.epoch } })
    mission.claim = null
  }

  /**
   * This peer granted a vote for an epoch above the record it knows and has not learned how that ended: the
   * candidate may have won with a view this peer has not seen, so it must not help elect on an older basis.
   */
  #pendingVote (now: number, mission: Mission): boolean {
    const candidate = mission.votedFor
    if (candidate === null || candidate === this.self.peerId || mission.votedEpoch <= mission.record.epoch) return false
    if (this.#stateOf(now, candidate) !== 'dead') return true
    const deadSince = this.#deadSince.get(candidate) ?? this.#startedAt + this.config.unknownPeerDeadMs
    return now - deadSince < this.config.pendingVoteExpiryMs
  }

  #checkWon (now: number, mission: Mission): void {
    const claim = mission.claim
    if (claim === null) return
    const replace = claim.replace
    const won = replace === null
      ? this.#quorumReached(claim.basis, this.self.peerId, claim.votes)
      : claim.votes.has(replace.joiner) && this.#exitProven.has(replace.partner)
    if (!won) return
    mission.claim = null
    const basis = claim.basis
    const name = basis.mission
    const self = this.self.peerId
    const record = mission.record
    if (record.epoch >= claim.epoch || record.removed) return
    const wasRunning = mission.container !== null && basis.primary === self
    // A running primary's reconfiguration keeps a member that died lately; a takeover drops the dead primary at once.
    const layout = this.#desiredLayout(now, basis, wasRunning)
    const view = replace !== null
      ? [...basis.view.filter(p => p !== replace.partner), replace.joiner].sort()
      : stepView(basis.view, new Set([...layout.view, ...claim.votes]), self)
    const newest = compareCheckpoints(mission.held, record.checkpoint) >= 0 ? mission.held : record.checkpoint
    const restoreFrom = !wasRunning && !mission.coldStartNext && this.#canRestore(self, mission.held) ? mission.held : null
    const checkpoint = wasRunning ? newest : (restoreFrom ?? newest)
    mission.record = {
      ...record,
      epoch: claim.epoch,
      primary: self,
      backup: replace !== null
        ? replace.joiner
        : (layout.backup !== null && view.includes(layout.backup) ? layout.backup : this.#chooseBackup(now, record, view)),
      view,
      released: false,
      handoffTo: null,
      checkpoint,
      replicatedSeq: null,
      started: wasRunning && mission.container?.status === 'running',
      // The stored image is kept for boards of the same architecture; another one stores its own.
      imageCid: record.imageArch === this.self.arch ? record.imageCid : null,
      imageArch: record.imageArch === this.self.arch ? record.imageArch : null
    }
    mission.electionSince = null
    mission.quorumLostSince = null
    mission.refusingSince = null
    mission.pendingMove = null
    mission.partnerHeldBack = false
    this.#persist()
    const elected = { kind: 'elected' as const, epoch: claim.epoch, from: basis.primary, takeover: basis.primary !== null && basis.primary !== self }
    if (wasRunning) {
      mission.container = { ...mission.container!, epoch: claim.epoch }
      this.#emit({ type: 'runningEpoch', mission: name, epoch: claim.epoch })
      this.#event(name, { kind: 'reconfigured', epoch: claim.epoch, view, backup: mission.record.backup })
    } else if (restoreFrom !== null) {
      mission.imageStore = { cid: null, since: null, failures: 0, retryAt: -Infinity }
      mission.container = { epoch: claim.epoch, status: 'starting', since: now, kind: 'restore' }
      this.#emit({ type: 'restore', mission: name, epoch: claim.epoch, spec: record.spec, checkpoint: restoreFrom })
      this.#event(name, { ...elected, start: { kind: 'restore', seq: restoreFrom.seq } })
    } else {
      mission.coldStartNext = false
      mission.imageStore = { cid: null, since: null, failures: 0, retryAt: -Infinity }
      mission.container = { epoch: claim.epoch, status: 'starting', since: now, kind: 'fresh' }
      const image = imageFor(record.spec, this.self.arch) ?? ''
      this.#emit({ type: 'startFresh', mission: name, epoch: claim.epoch, spec: record.spec, image, dataFrom: newest })
      const because: ColdStartCause = newest === null
        ? { kind: 'noCheckpoint' }
        : (this.#canRestore(self, newest) ? { kind: 'notHeld' } : { kind: 'otherArch', checkpointArch: newest.arch, arch: this.self.arch })
      this.#event(name, { ...elected, start: { kind: 'cold', image, dataSeq: newest?.seq ?? null, because } })
    }
    this.#announce(now, mission)
    if (basis.primary !== null && basis.primary !== self) {
      this.#emit({ type: 'publish', message: { type: 'fence', mission: name, epoch: claim.epoch, target: basis.primary } })
    }
  }

  // ---- records ------------------------------------------------------------------------------------------------

  #onAnnounce (now: number, from: string, incoming: MissionRecord): void {
    if (incoming.epoch > MAX_EPOCH) { this.#refuse('epoch-out-of-range'); return }
    // The epoch's primary is a member of its view and so is its backup (see #checkWon): anything else is forged.
    if ((incoming.primary !== null && !incoming.view.includes(incoming.primary)) || (incoming.backup !== null && !incoming.view.includes(incoming.backup))) {
      this.#refuse('outside-view')
      return
    }
    const mission = this.#missions.get(incoming.mission)
    if (mission === undefined) {
      if (incoming.removed) return
      const adopted = this.#newMission({ record: incoming, votedEpoch: incoming.epoch, votedFor: null, held: null })
      this.#noteRestarts(now, adopted, 0)
      this.#missions.set(incoming.mission, adopted)
      this.#persist()
      this.#adoptedPrimaryCheck(now, adopted)
      return
    }
    const record = mission.record
    if (incoming.deployId !== record.deployId) {
      // Deployments signed by the operator are ordered by the operator's time: an old deploy grant replayed with a
      // high epoch does not replace a newer deployment.
      const signed = incoming.grant !== undefined && record.grant !== undefined
      const newer = signed
        ? incoming.grant!.at > record.grant!.at || (incoming.grant!.at === record.grant!.at && incoming.deployId > record.deployId)
        : incoming.epoch > record.epoch || (incoming.epoch === record.epoch && incoming.deployId > record.deployId)
      if (!newer || (!record.removed && incoming.removed)) {
        if (signed && !newer && incoming.epoch > record.epoch) this.#refuse('older-deployment')
        mission.lastAnnounceAt = -Infinity
        return
      }
      this.#stopIfRunning(mission, { kind: 'replaced', deployId: incoming.deployId })
      this.#missions.set(incoming.mission, this.#newMission({ record: incoming, votedEpoch: Math.max(mission.votedEpoch, incoming.epoch), votedFor: mission.votedFor, held: null }))
      this.#persist()
      return
    }
    // A re-signed deployment (a key rotation): the newer grant replaces the older one whoever relays it (the gossip
    // validator checked it names this deployment and spec, signed by a trusted key).
    if (!record.removed && !incoming.removed && incoming.grant !== undefined && newerGrant(incoming.grant, record.grant)) {
      record.grant = incoming.grant
      this.#persist()
    }
    if (incoming.removed && !record.removed) { this.#onRemove(record.mission, record.deployId, { by: 'announce', from }, incoming.removal); return }
    if (record.removed) {
      // A live copy of a removed mission is answered with the tombstone (at most twice per announce interval).
      if (!incoming.removed && now - mission.lastAnnounceAt >= this.config.announceIntervalMs / 2) this.#announce(now, mission)
      return
    }
    if (incoming.epoch > record.epoch) {
      if (!this.#speaksForNewEpoch(now, mission, from, incoming)) {
        this.#refuse('not-a-member')
        // Asked of the members instead: they answer a record older than theirs with theirs (a replaced two-board
        // primary heard its successor's epoch first from a board outside its view, and learned it a second later).
        if (now - mission.lastAnnounceAt >= this.config.announceIntervalMs / 4) this.#announce(now, mission)
        return
      }
      this.#adoptHigherEpoch(now, mission, incoming)
    } else if (incoming.epoch === record.epoch) {
      // Within an epoch only its members relay changes (the primary writes them, the others pass them on).
      if (!record.view.includes(from)) {
        if (this.#wouldChange(record, incoming)) this.#refuse('not-a-member')
        return
      }
      let changed = false
      const notMine = record.primary !== this.self.peerId
      if (compareCheckpoints(incoming.checkpoint, record.checkpoint) > 0) { record.checkpoint = incoming.checkpoint; changed = true }
      if (incoming.replicatedSeq !== null && (record.replicatedSeq === null || incoming.replicatedSeq > record.replicatedSeq)) record.replicatedSeq = incoming.replicatedSeq
      if (incoming.started && !record.started && notMine) { record.started = true; changed = true }
      if (incoming.imageCid !== null && record.imageCid === null) { record.imageCid = incoming.imageCid; record.imageArch = incoming.imageArch; changed = true }
      // Only the epoch's primary writes a failure, together with the release: take it as it comes.
      if (incoming.released && notMine && (incoming.restarts !== record.restarts || !sameFailure(incoming.lastFailure, record.lastFailure))) {
        const before = record.restarts
        record.restarts = incoming.restarts
        record.lastFailure = incoming.lastFailure
        this.#noteRestarts(now, mission, before)
        if (incoming.lastFailure !== null) this.#event(record.mission, { kind: 'failureLearned', board: incoming.lastFailure.board, reason: incoming.lastFailure.reason, restarts: incoming.restarts })
        changed = true
      }
      if (incoming.released && !record.released && notMine) { record.released = true; record.handoffTo = incoming.handoffTo; changed = true }
      if (changed) this.#persist()
    } else {
      mission.lastAnnounceAt = -Infinity
    }
  }

  /**
   * Who may tell this peer of a newer epoch: a member of the view it knows (the voters elect from it, and each
   * adopts the winner's record and relays it), or the candidate this peer itself voted for in that epoch, naming
   * itself primary. A peer whose known view has no other live member (it was away while the view changed over)
   * takes it from any peer, or it would never learn the mission's current epoch.
   */
  #speaksForNewEpoch (now: number, mission: Mission, from: string, incoming: MissionRecord): boolean {
    const record = mission.record
    if (record.view.includes(from)) return true
    if (incoming.primary === from && mission.votedFor === from && mission.votedEpoch === incoming.epoch) return true
    return !record.view.some(p => p !== this.self.peerId && this.#stateOf(now, p) !== 'dead')
  }

  /** A same-epoch record would change this one (see #onAnnounce): refusing it is worth counting. */
  #wouldChange (record: MissionRecord, incoming: MissionRecord): boolean {
    return compareCheckpoints(incoming.checkpoint, record.checkpoint) > 0 || (incoming.started && !record.started) ||
      (incoming.released && !record.released) || (incoming.imageCid !== null && record.imageCid === null) ||
      (incoming.replicatedSeq !== null && (record.replicatedSeq === null || incoming.replicatedSeq > record.replicatedSeq))
  }

  #refuse (reason: AuthorityRefusal): void { this.#refusals[reason]++ }

  #adoptHigherEpoch (now: number, mission: Mission, incoming: MissionRecord): void {
    const self = this.self.peerId
    if (mission.claim !== null && mission.claim.epoch <= incoming.epoch) mission.claim = null
    if (mission.container !== null && incoming.primary !== self) {
      this.#emit({ type: 'stopContainer', mission: incoming.mission, reason: { kind: 'newerEpoch', epoch: incoming.epoch, primary: incoming.primary } })
      this.#event(incoming.mission, { kind: 'fenced', stoppedEpoch: mission.container.epoch, epoch: incoming.epoch, primary: incoming.primary })
      mission.container = null
      mission.checkpointInFlight = null
    }
    const before = mission.record.restarts
    mission.record = incoming
    mission.refusingSince = null
    this.#noteRestarts(now, mission, before)
    mission.votedEpoch = Math.max(mission.votedEpoch, incoming.epoch)
    mission.pendingMove = null
    this.#persist()
    this.#adoptedPrimaryCheck(now, mission)
  }

  /** A record naming this peer primary that it does not run (e.g. echoed after a restart): release it. */
  #adoptedPrimaryCheck (now: number, mission: Mission): void {
    const record = mission.record
    if (record.primary === this.self.peerId && !record.released && (mission.container === null || mission.container.epoch !== record.epoch)) {
      this.#release(now, mission)
    }
  }

  #release (now: number, mission: Mission): void {
    const record = mission.record
    if (record.primary !== this.self.peerId || record.released) return
    record.released = true
    this.#persist()
    this.#announce(now, mission)
  }

  #stopIfRunning (mission: Mission, reason: StopReason): void {
    if (mission.container === null) return
    this.#emit({ type: 'stopContainer', mission: mission.record.mission, reason })
    mission.container = null
    mission.checkpointInFlight = null
  }

  #onFence (now: number, from: string, msg: Extract<ConsensusMessage, { type: 'fence' }>): void {
    const mission = this.#missions.get(msg.mission)
    if (mission === undefined || msg.target !== this.self.peerId || mission.container === null || mission.container.epoch >= msg.epoch) return
    // From a member of the view (the epoch's winner joined it when it won), or from the primary of the epoch this
    // peer adopted; an outsider's fence (repeated each second) stopped a running primary for half its time.
    const record = mission.record
    const fromPrimary = record.epoch >= msg.epoch && record.primary === from
    if (msg.epoch > MAX_EPOCH || (!fromPrimary && !record.view.includes(from)) || msg.epoch > Math.max(record.epoch, mission.votedEpoch) + MAX_CLAIM_STEP) {
      this.#refuse('fence-not-authorized')
      return
    }
    this.#event(msg.mission, { kind: 'fenceReceived', epoch: msg.epoch, stoppedEpoch: mission.container.epoch })
    this.#stopIfRunning(mission, { kind: 'fenced', epoch: msg.epoch })
    mission.votedEpoch = Math.max(mission.votedEpoch, msg.epoch)
    this.#release(now, mission)
    this.#persist()
  }

  #onRemove (name: string, deployId: string, removal: Removal, grant?: OperatorGrant): void {
    const mission = this.#missions.get(name)
    if (mission === undefined || mission.record.deployId !== deployId || mission.record.removed) return
    this.#stopIfRunning(mission, { kind: 'removed', ...removal })
    mission.record.removed = true
    if (grant !== undefined) mission.record.removal = grant
    // A tombstone keeps no payload: gossip carries it small, disk keeps it small.
    mission.record.spec = tombstoneSpec(name)
    mission.claim = null
    mission.held = null
    mission.fetchInFlight = null
    this.#persist()
    this.#emit({ type: 'forget', mission: name })
    this.#event(name, { kind: 'removed', ...removal })
    mission.lastAnnounceAt = -Infinity
  }

  #deploy (now: number, spec: MissionSpec, deployId?: string, grant?: OperatorGrant): void {
    const existing = this.#missions.get(spec.name)
    if (existing !== undefined && !existing.record.removed) {
      this.#event(spec.name, { kind: 'deployRefused', mission: spec.name })
      return
    }
    const view = [this.self.peerId, ...[...this.#peers.values()].filter(p => p.state === 'alive').map(p => p.peerId)].sort()
    const epoch = existing === undefined ? 0 : Math.max(existing.record.epoch, existing.votedEpoch) + 1
    const record: MissionRecord = {
      mission: spec.name, deployId: deployId ?? `${this.self.peerId}@${now}`, spec, epoch, primary: null, backup: null, view,
      released: false, handoffTo: null, checkpoint: null, replicatedSeq: null, removed: false,
      started: false, imageCid: null, imageArch: null, restarts: 0, lastFailure: null,
      ...(grant === undefined ? {} : { grant })
    }
    this.#missions.set(spec.name, this.#newMission({ record, votedEpoch: epoch, votedFor: null, held: null }))
    this.#persist()
    this.#event(spec.name, { kind: 'deployed', viewSize: view.length })
    this.#announce(now, this.#missions.get(spec.name)!)
    this.tick(now)
  }

  #requestMove (now: number, mission: Mission, to: string): void {
    const record = mission.record
    if (record.primary !== this.self.peerId || record.released || mission.container?.status !== 'running') return
    if (to === this.self.peerId || this.#stateOf(now, to) !== 'alive' || !this.#eligible(record.spec, to)) {
      this.#event(record.mission, { kind: 'moveRefused', to, mission: record.mission })
      return
    }
    if (!this.#canRestore(to, { cid: '', seq: 0, epoch: 0, arch: this.self.arch, atMs: 0 })) {
      this.#event(record.mission, { kind: 'moveCold', to })
    }
    mission.pendingMove = to
    this.#event(record.mission, { kind: 'moveStarted', to })
    this.tick(now)
  }

  // ---- checkpoints ------------------------------------------------------------------------------------------------

  #onCheckpointTaken (now: number, mission: Mission, epoch: number, seq: number, cid: string): void {
    const record = mission.record
    const inFlight = mission.checkpointInFlight
    // The epoch may have moved on by a reconfiguration while the checkpoint ran: same container, still ours.
    if (inFlight === null || inFlight.seq !== seq || epoch > record.epoch || record.primary !== this.self.peerId || record.released) return
    mission.checkpointInFlight = null
    if (mission.checkpointFailures >= CHECKPOINT_FAILURES_UNPROTECTED) this.#event(record.mission, { kind: 'checkpointsRecovered', seq, failures: mission.checkpointFailures })
    mission.checkpointFailures = 0
    mission.lastCheckpointError = null
    // The interval runs from the start of a checkpoint, so a slow dump does not stretch the period by its own length.
    mission.lastCheckpointAt = inFlight.since
    // Keyed as the backup's ack names it (the checkpoint's own epoch, which a reconfiguration during the dump leaves behind).
    mission.checkpointStarts = [...mission.checkpointStarts.slice(-(RECENT_CHECKPOINTS - 1)), { seq, epoch, since: inFlight.since }]
    const ref: CheckpointRef = { cid, seq, epoch, arch: this.self.arch, atMs: now }
    mission.held = ref
    record.checkpoint = ref
    if (inFlight.stop && mission.pendingMove !== null) {
      mission.container = null
      record.released = true
      record.handoffTo = mission.pendingMove
      mission.pendingMove = null
      this.#event(record.mission, { kind: 'handingOver', seq, to: record.handoffTo })
    }
    this.#persist()
    this.#announce(now, mission)
  }

  #onFetched (mission: Mission, ref: CheckpointRef): void {
    // A fetch that newer ones superseded still brought a complete checkpoint: it is held (the store retains it, and
    // dropping it here left the machine holding one the store had collected as older than the last `keep`). Only one
    // from a later epoch than the record (an earlier deployment's) is not.
    if (ref.epoch > mission.record.epoch) return
    if (mission.fetchInFlight?.ref.cid === ref.cid) mission.fetchInFlight = null
    mission.fetchFailures = 0
    mission.fetchRetryAt = -Infinity
    if (compareCheckpoints(ref, mission.held) <= 0) return
    mission.held = ref
    this.#persist()
    this.#maybeAck(mission)
  }

  /**
   * The backup acknowledges the checkpoint it holds, once per record epoch and checkpoint, and only while it holds
   * the image: replicatedSeq counts only checkpoints it could restore. An image that arrives later releases the ack.
   */
  #maybeAck (mission: Mission): void {
    const record = mission.record
    const self = this.self.peerId
    const held = mission.held
    if (held === null || (record.backup !== self && record.handoffTo !== self) || record.removed) return
    if (record.checkpoint === null || held.epoch !== record.checkpoint.epoch || !this.#holdsImage(record.spec, self)) return
    const key = `${record.epoch}/${held.epoch}.${held.seq}`
    if (mission.lastAck === key) return
    mission.lastAck = key
    this.#emit({ type: 'publish', message: { type: 'ack', mission: record.mission, epoch: record.epoch, cid: held.cid, seq: held.seq, checkpointEpoch: held.epoch } })
  }

  /**
   * The backup, and the next two boards in rank order, fetch the image from the swarm when they lack it and the
   * record names the CID a primary of their architecture stored. Failures are retried after 1 s doubling to 60 s.
   */
  #maybeFetchImage (now: number, mission: Mission): void {
    const record = mission.record
    const self = this.self.peerId
    const task = mission.imageFetch
    const cid = record.imageCid
    if (cid === null || record.imageArch !== this.self.arch || !this.self.canRun || !this.#placementOk(record.spec, self)) return
    const image = imageRef(record.spec, this.self.arch)
    if (image === undefined) return
    if ((this.self.images ?? []).includes(image)) {
      mission.imageHeldAt = now
      if (task.cid !== null || task.failures > 0) mission.imageFetch = { cid: null, since: null, failures: 0, retryAt: -Infinity }
      return
    }
    if (now - mission.imageHeldAt < this.config.imageRefetchHoldMs) return
    if (task.cid !== cid) mission.imageFetch = { cid, since: null, failures: 0, retryAt: -Infinity }
    const current = mission.imageFetch
    if ((this.self.fetchingImages ?? []).includes(image)) return
    if (current.since !== null) {
      if (now - current.since < this.config.imageTimeoutMs) return
      this.#taskFailed(now, current)
    }
    if (now < current.retryAt) return
    if (record.backup !== self) {
      const rank = this.#fetchRank(now, record)
      if (!rank.includes(self)) return
      // The backup's copy comes first (it makes the mission protected): the next candidates fetch once it holds the
      // image, or, with no usable backup, one after the other in rank order; each then has one more provider.
      const backup = record.backup !== null && this.#stateOf(now, record.backup) === 'alive' &&
        this.#info(record.backup)?.arch === record.imageArch ? record.backup : null
      const ahead = backup !== null ? [backup] : rank.slice(0, rank.indexOf(self))
      if (ahead.some(p => !this.#holdsImage(record.spec, p))) return
    }
    const providers = [record.primary, ...this.#peers.keys()].filter((p): p is string => p !== null && p !== self &&
      this.#stateOf(now, p) === 'alive' && this.#info(p)?.arch === this.self.arch && this.#holdsImage(record.spec, p))
    // The image lives in the boards' Docker; the swarm's IPFS only carries it. Removed from every Docker, it is not
    // brought back from blocks some board still holds: the mission is blocked until a board has it again.
    if (providers.length === 0) return
    current.since = now
    this.#emit({ type: 'fetchImage', mission: record.mission, image, cid, providers: [...new Set(providers)] })
    this.#event(record.mission, { kind: 'fetchingImage', image, as: record.backup === self ? 'backup' : 'candidate' })
  }

  /** The two boards after the primary and the backup that would run the mission next (image presence aside). */
  #fetchRank (now: number, record: MissionRecord): string[] {
    const ids = [this.self.peerId, ...this.#peers.keys()].filter(p => p !== record.primary && p !== record.backup &&
      this.#stateOf(now, p) === 'alive' && this.#info(p)?.canRun === true && this.#info(p)?.arch === record.imageArch && this.#placementOk(record.spec, p))
    const ranked = hrwRank(record.mission, ids)
    ranked.sort((a, b) => Number(this.#canRestore(b, record.checkpoint)) - Number(this.#canRestore(a, record.checkpoint)))
    return ranked.slice(0, 2)
  }

  /** A start or restore failed, or the container exited on its own (`cause` null): back off, count, release. */
  #onFailure (now: number, mission: Mission, epoch: number, detail: string, cause: FailureCause | null, known?: 'containerGone' | 'startTimedOut'): void {
    const container = mission.container
    if (container === null || container.epoch > epoch) return
    const record = mission.record
    const self = this.self.peerId
    const ranMs = container.status === 'running' ? now - container.since : 0
    // A failure after a long run starts the count again.
    const first = ranMs >= this.config.restartResetMs
    mission.container = null
    mission.checkpointInFlight = null
    const failure: FailureKind = known ?? (cause === null ? 'exited' : container.kind === 'restore' ? 'restoreFailed' : 'coldStartFailed')
    const what = failure === 'exited' ? `container exited after ${seconds(ranMs)}` : FAILURE_LABELS[failure]
    const coldNext = container.kind === 'restore' && cause !== null && cause !== 'image-missing'
    if (coldNext) mission.coldStartNext = true
    mission.localFailures = first ? 1 : mission.localFailures + 1
    const localWait = this.#backoffMs(mission.localFailures)
    mission.localBackoffUntil = now + localWait
    const reason = `${what}: ${detail}${cause === null ? '' : ` (${cause})`}`.slice(0, MAX_REASON)
    let wait = localWait
    if (record.primary === self && !record.released) {
      const before = record.restarts
      // A board without the image is the board's problem, not the mission's: not counted as a restart.
      if (cause !== 'image-missing') record.restarts = first ? 1 : record.restarts + 1
      record.lastFailure = { board: self, reason, at: now, epoch: record.epoch }
      this.#noteRestarts(now, mission, before)
      wait = Math.max(wait, this.#swarmBackoffUntil(mission) - now)
      this.#release(now, mission)
    }
    this.#event(record.mission, { kind: 'failed', failure, reason, coldNext, restarts: record.restarts, waitMs: wait, localWaitMs: localWait })
  }

  #onAck (now: number, from: string, msg: Extract<ConsensusMessage, { type: 'ack' }>): void {
    const mission = this.#missions.get(msg.mission)
    if (mission === undefined) return
    const record = mission.record
    if (record.primary !== this.self.peerId || msg.epoch !== record.epoch || from !== record.backup) return
    if (record.checkpoint === null || msg.checkpointEpoch !== record.checkpoint.epoch) return
    if (record.replicatedSeq !== null && msg.seq <= record.replicatedSeq) return
    record.replicatedSeq = msg.seq
    mission.ackWatch = { backup: from, since: now }
    const started = mission.checkpointStarts.find(s => s.seq === msg.seq && s.epoch === msg.checkpointEpoch)
    if (started !== undefined) mission.replicationLags = [...mission.replicationLags.slice(-(RECENT_CHECKPOINTS - 1)), now - started.since]
    mission.replicatedStart = started ?? null
  }

  /** How long after the start of one checkpoint the next one starts (see checkpointPeriod). */
  #checkpointPeriod (mission: Mission): number {
    return checkpointPeriod(mission.record.spec.checkpointIntervalMs, mission.replicationLags, this.config.checkpointSlackMs)
  }

  // ---- helpers ------------------------------------------------------------------------------------------------

  #announce (now: number, mission: Mission): void {
    mission.lastAnnounceAt = now
    const record = mission.record
    const heldBack = !record.removed && record.primary !== null && this.#heldBack(record, this.self.peerId) &&
      this.#loneClaimant(record) === this.self.peerId
    const claim = { votedEpoch: mission.votedEpoch, open: mission.claim !== null, ...(heldBack ? { heldBack } : {}) }
    this.#emit({ type: 'publish', message: { type: 'announce', record: copyRecord(mission.record), claim } })
  }

  #newMission (stored: PersistedMission): Mission {
    return {
      ...stored,
      container: null, claim: null, lastClaimAt: -Infinity, electionSince: null, quorumLostSince: null,
      checkpointInFlight: null, lastCheckpointAt: -Infinity, checkpointStarts: [], replicatedStart: null, replicationLags: [], checkpointFailures: 0, lastCheckpointError: null, ackWatch: { backup: null, since: -Infinity }, fetchInFlight: null, fetchFailures: 0, fetchRetryAt: -Infinity, fetchFailedEpoch: 0, newerStateSince: null, deferToNewerUntil: -Infinity, refusedClaimEpoch: 0, candidatesAhead: [], unansweredEpoch: null, releasedBy: null, refusingSince: null, staleSince: null, lastAnnounceAt: -Infinity,
      pendingMove: null, coldStartNext: false, heldBackUpTo: null, partnerHeldBack: false, deferredClaim: null,
      localFailures: 0, localBackoffUntil: -Infinity, failureSeenAt: -Infinity,
      imageStore: { cid: null, since: null, failures: 0, retryAt: -Infinity },
      imageFetch: { cid: null, since: null, failures: 0, retryAt: -Infinity },
      imageHeldAt: -Infinity,
      lastAck: null, blockedReason: null, unplaceableSince: null
    }
  }

  #persist (): void { this.#emit({ type: 'persist', state: this.persistedState() }) }
  #emit (action: Action): void { this.#actions.push(action) }
  #event (mission: string, event: MachineEvent): void { this.#emit({ type: 'event', mission, event }) }

  #viewOf (m: Mission, now: number): MissionView {
    const r = m.record
    const self = this.self.peerId
    let state: MissionView['state']
    let reason: string | null = null
    const primaryDead = r.primary !== null && r.primary !== self && this.#stateOf(now, r.primary) === 'dead'
    if (r.removed) state = 'removed'
    else if (m.container?.status === 'starting') state = 'starting'
    else if (r.primary === self && m.container?.status === 'running') state = 'running'
    // Running only once the primary reported it running under this epoch (its `started` announce).
    else if (r.primary !== null && r.primary !== self && !r.released && !primaryDead) state = r.started ? 'running' : 'starting'
    else {
      const blocked = this.#isBlocked(now, m) ? this.#blockedReason(now, r) : null
      const until = Math.max(this.#swarmBackoffUntil(m), this.#candidates(now, r).every(p => p === self) ? m.localBackoffUntil : -Infinity)
      if (blocked !== null) {
        state = 'blocked'
        reason = blocked.reason
      } else if (now < until && m.claim === null) {
        state = 'backoff'
        const failure = r.lastFailure
        reason = `back-off after ${r.restarts} failed start${r.restarts === 1 ? '' : 's'}: next start in ${seconds(until - now)}` +
          (failure === null ? '' : `; last: ${failure.reason} on ${short(failure.board)}`)
      } else if (r.primary === null && m.claim === null) state = 'pending'
      else state = m.claim !== null || r.released || r.primary === null ? 'electing' : 'stopped'
    }
    const protection = this.#protectionOf(now, m, state)
    return {
      name: r.mission, deployId: r.deployId, spec: r.spec, epoch: r.epoch, primary: r.primary, backup: r.backup, view: [...r.view], state,
      role: r.primary === self ? 'primary' : r.backup === self ? 'backup' : 'member',
      lastCheckpoint: r.checkpoint, replicatedSeq: r.replicatedSeq, held: m.held,
      replicationLagMs: r.primary === self ? m.replicationLags.at(-1) ?? null : null,
      checkpointPeriodMs: r.primary === self && m.container !== null ? this.#checkpointPeriod(m) : null,
      reason, restarts: r.restarts, lastFailure: r.lastFailure, signedBy: r.grant?.key ?? null, protected: protection.reason === null, protection
    }
  }

  /** How old the backup's state may get at worst (see stalenessBound), over this lineage's checkpoints. */
  #stalenessBound (now: number, m: Mission): number {
    const starts = m.checkpointStarts.filter(s => s.epoch === m.record.checkpoint?.epoch).map(s => s.since)
    return stalenessBound(this.#checkpointPeriod(m), starts, m.replicationLags, this.#backupStateAgeMs(now, m))
  }

  /** From the start of the newest checkpoint the backup acknowledged; before any of this run's, from the container's start. */
  #backupStateAgeMs (now: number, m: Mission): number {
    const acked = m.replicatedStart
    if (acked !== null && acked.epoch === m.record.checkpoint?.epoch && acked.seq === m.record.replicatedSeq) return now - acked.since
    return m.container === null ? 0 : now - m.container.since
  }

  /** Whether the backup would restore a checkpoint if the primary's board died now, and what is missing if not. */
  #protectionOf (now: number, m: Mission, state: MissionView['state']): MissionProtection {
    const r = m.record
    const backup = r.backup
    const info = backup === null ? undefined : this.#info(backup)
    const image = backup !== null && this.#holdsImage(r.spec, backup)
    const checkpointSeq = r.checkpoint !== null ? r.replicatedSeq : null
    const ref = backup === null ? undefined : imageRef(r.spec, info?.arch ?? '')
    let reason: string | null = null
    if (state !== 'running') reason = 'mission not running'
    else if (backup === null) reason = 'no backup'
    else if (this.#stateOf(now, backup) !== 'alive') reason = `backup ${short(backup)} is ${this.#stateOf(now, backup)}`
    else if (info?.canCheckpoint !== true) reason = `backup ${short(backup)} cannot restore checkpoints (no CRIU)`
    else if (info.canStore === false) reason = `backup ${short(backup)} cannot store checkpoints (storage: ${info.storageProblem ?? 'failing'})`
    else if (r.checkpoint !== null && info.arch !== r.checkpoint.arch) reason = `backup ${short(backup)} is ${info.arch}, the checkpoint is ${r.checkpoint.arch}`
    else if (!image) reason = this.#fetchingImage(r.spec, backup) ? `backup fetching image ${ref ?? '?'}` : `backup lacks image ${ref ?? '?'}`
    else if (r.checkpoint === null) reason = 'no checkpoint yet'
    else if (checkpointSeq === null) reason = 'no checkpoint replicated yet'
    else if (r.primary === this.self.peerId && m.checkpointFailures >= CHECKPOINT_FAILURES_UNPROTECTED) {
      reason = `checkpoints fail on the primary (${m.checkpointFailures} in a row: ${m.lastCheckpointError ?? '?'})`
    } else if (r.primary === this.self.peerId && m.container !== null && r.checkpoint.seq > checkpointSeq && m.ackWatch.backup === backup &&
        now - m.ackWatch.since > Math.max(ACK_STALL_INTERVALS * r.spec.checkpointIntervalMs, ACK_STALL_MIN_MS)) {
      reason = `backup ${short(backup)} acknowledged no checkpoint for ${seconds(now - m.ackWatch.since)} (it holds #${checkpointSeq}, the newest is #${r.checkpoint.seq})`
    }
    const running = r.primary === this.self.peerId && m.container?.status === 'running'
    const stalenessBoundMs = running ? Math.round(this.#stalenessBound(now, m)) : null
    const withinInterval = stalenessBoundMs === null ? null : stalenessBoundMs <= r.spec.checkpointIntervalMs
    return { backup, image, checkpointSeq, reason, stalenessBoundMs, withinInterval }
  }
}

/**
 * A copy of a record that later changes to this one do not reach (they replace fields, and view/checkpoint/lastFailure
 * objects). The spec is shared: it is never modified in place (a removal replaces it). Much cheaper than a JSON trip.
 */
function copyRecord (record: MissionRecord): MissionRecord {
  return {
    ...record,
    view: [...record.view],
    checkpoint: record.checkpoint === null ? null : { ...record.checkpoint },
    lastFailure: record.lastFailure === null ? null : { ...record.lastFailure }
  }
}

/** `grant` was signed after `current` (or there is none): it replaces it. */
function newerGrant (grant: OperatorGrant, current: OperatorGrant | undefined): boolean {
  return current === undefined || grant.at > current.at || (grant.at === current.at && grant.sig > current.sig)
}

/** The record's primary failed in the record's epoch (a failure without an epoch, from an older peer, counts). */
function failedInEpoch (record: MissionRecord): boolean {
  const failure = record.lastFailure
  return failure !== null && failure.board === record.primary && (failure.epoch === undefined || failure.epoch === record.epoch)
}

function sameFailure (a: MissionRecord['lastFailure'], b: MissionRecord['lastFailure']): boolean {
  return a === b || (a !== null && b !== null && a.board === b.board && a.at === b.at && a.reason === b.reason && a.epoch === b.epoch)
}
