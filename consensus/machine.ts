// The per-peer consensus state machine for all missions: deterministic, no I/O. Inputs: tick/peerChanged/receive/
// local with a `now` in ms. Outputs: takeActions(), applied in order by the caller (persist before anything after it).
import { imageFor, type MissionSpec } from './manifest.ts'
import { cloneJson, compareCheckpoints } from './messages.ts'
import { fnv1a64, hrwRank } from './hrw.ts'
import {
  DEFAULT_CONSENSUS_CONFIG,
  type Action, type CheckpointRef, type ConsensusConfig, type ConsensusMessage, type LocalEvent, type MissionRecord,
  type MissionView, type PeerInfo, type PeerState, type PersistedMission, type PersistedState
} from './types.ts'

/** What this peer is: its identity and hardware (the failure detector never reports self). */
export interface SelfInfo { peerId: string, arch: string, board: string, memoryMb: number, canCheckpoint: boolean }

export interface MachineInit {
  self: SelfInfo
  now: number
  config?: Partial<ConsensusConfig>
  persisted?: PersistedState
}

/** A two-board primary replacing its partner, proven exited, by `joiner` (see #startPartnerReplacement). */
interface Replacement { partner: string, joiner: string }
interface Claim { epoch: number, basis: MissionRecord, votes: Set<string>, startedAt: number, replace: Replacement | null }
interface Container { epoch: number, status: 'starting' | 'running', since: number }

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
  /** The newest replication lags (start to the backup's ack), ms; the slowest sets the checkpoint period. */
  replicationLags: number[]
  fetchInFlight: { ref: CheckpointRef, since: number } | null
  lastAnnounceAt: number
  pendingMove: string | null
  coldStartNext: boolean
  /** A claim refused only because the primary looked alive: re-decided when the detector reports it dead. */
  deferredClaim: { from: string, msg: Extract<ConsensusMessage, { type: 'claim' }>, at: number } | null
  /** Restarted as the two-board partner of this epoch: no claim alone on a basis up to this epoch. */
  heldBackUpTo: number | null
  /** Primary: the two-board partner announced it holds back, so a new epoch with its vote re-arms it. */
  partnerHeldBack: boolean
}

/** How many recent checkpoints the replication lag is measured over. */
const RECENT_CHECKPOINTS = 10

/** Majority for views of 3 or more; see quorumReached for views of 1 and 2 (two-board mode). */
export function majority (size: number): number { return Math.floor(size / 2) + 1 }

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
        this.#missions.set(name, mission)
        const record = mission.record
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
          this.#emit({ type: 'stopContainer', mission: name, reason: 'daemon restarted: rejoining under a new epoch' })
          record.released = true
          this.#event(name, `restarted as primary of epoch ${record.epoch}: container stopped, a new election follows`)
        }
      }
      if (this.#missions.size > 0) this.#persist()
    }
  }

  // ---- inputs ------------------------------------------------------------------------------------------------

  peerChanged (now: number, peer: PeerInfo): void {
    if (peer.peerId === this.self.peerId) return
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
      case 'fence': this.#onFence(now, msg); break
      case 'remove': this.#onRemove(msg.mission, msg.deployId, `removed by ${from}`); break
      case 'abandon': {
        const mission = this.#missions.get(msg.mission)
        if (mission !== undefined && mission.votedFor === from && mission.votedEpoch === msg.epoch) this.#releaseVote(now, mission)
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
    if (ev.type === 'deploy') { this.#deploy(now, ev.spec); return }
    const mission = this.#missions.get(ev.mission)
    if (mission === undefined) {
      if (ev.type === 'remove' || ev.type === 'move') this.#event(ev.mission, `unknown mission ${ev.mission}`)
      return
    }
    const record = mission.record
    switch (ev.type) {
      case 'remove':
        if (!record.removed) {
          this.#emit({ type: 'publish', message: { type: 'remove', mission: record.mission, deployId: record.deployId } })
          this.#onRemove(record.mission, record.deployId, 'removed by request')
        }
        break
      case 'move':
        if (record.primary === this.self.peerId) this.#requestMove(now, mission, ev.to)
        else this.#emit({ type: 'publish', message: { type: 'move', mission: record.mission, deployId: record.deployId, to: ev.to } })
        break
      case 'containerStarted':
        if (mission.container?.epoch === ev.epoch && mission.container.status === 'starting') {
          mission.container = { epoch: ev.epoch, status: 'running', since: now }
          mission.lastCheckpointAt = now
          this.#event(record.mission, `running under epoch ${ev.epoch}`)
        }
        break
      case 'containerExited':
      case 'restoreFailed':
        if (mission.container !== null && mission.container.epoch <= ev.epoch) {
          mission.container = null
          mission.checkpointInFlight = null
          if (ev.type === 'restoreFailed') mission.coldStartNext = true
          this.#event(record.mission, ev.type === 'restoreFailed' ? `restore failed: ${ev.error}; next start is cold` : `container exited: ${ev.reason}`)
          this.#release(now, mission)
        }
        break
      case 'checkpointTaken': this.#onCheckpointTaken(now, mission, ev.epoch, ev.seq, ev.cid); break
      case 'checkpointFailed':
        if (mission.checkpointInFlight?.seq === ev.seq) {
          if (mission.checkpointInFlight.stop) this.#event(record.mission, `move aborted: final checkpoint failed: ${ev.error}`)
          mission.checkpointInFlight = null
          mission.lastCheckpointAt = now
        }
        break
      case 'checkpointFetched': this.#onFetched(now, mission, ev.cid, ev.seq); break
      case 'fetchFailed':
        if (mission.fetchInFlight?.ref.cid === ev.cid) mission.fetchInFlight = null
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

  view (now?: number): MissionView[] {
    return [...this.#missions.values()].map(m => this.#viewOf(m, now ?? this.#startedAt))
  }

  /** Highest epoch this peer knows per mission (for invariant checks and status). */
  knownEpoch (mission: string): number { return this.#missions.get(mission)?.record.epoch ?? -1 }

  persistedState (): PersistedState {
    const missions: Record<string, PersistedMission> = {}
    for (const [name, m] of this.#missions) missions[name] = cloneJson({ record: m.record, votedEpoch: m.votedEpoch, votedFor: m.votedFor, held: m.held })
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

  #eligible (spec: MissionSpec, peerId: string): boolean {
    const info = this.#info(peerId)
    if (info === undefined || imageFor(spec, info.arch) === undefined) return false
    const p = spec.placement
    if (p?.architectures !== undefined && !(p.architectures as string[]).includes(info.arch)) return false
    if (p?.boards !== undefined && !p.boards.includes(info.board)) return false
    if (p?.minMemoryMb !== undefined && info.memoryMb < p.minMemoryMb) return false
    return true
  }

  #canRestore (peerId: string, ref: CheckpointRef | null): boolean {
    const info = this.#info(peerId)
    return ref !== null && info !== undefined && info.canCheckpoint && info.arch === ref.arch
  }

  /** The one member of a view of <= 2 that may claim the next epoch alone (two-board mode). */
  #loneClaimant (basis: MissionRecord): string | null {
    const view = basis.view
    if (view.length === 1) return view[0] ?? null
    if (view.length !== 2) return null
    if (basis.primary !== null && view.includes(basis.primary)) return view.find(p => p !== basis.primary) ?? null
    const eligible = view.filter(p => this.#eligible(basis.spec, p))
    return hrwRank(basis.mission, eligible)[0] ?? null
  }

  #quorumReached (basis: MissionRecord, candidate: string, voters: Set<string>): boolean {
    const view = basis.view
    const granted = view.filter(p => voters.has(p)).length
    if (view.length >= 3) return granted >= majority(view.length)
    if (view.length === 0) return voters.has(candidate)
    return granted === view.length || (candidate === this.#loneClaimant(basis) && voters.has(candidate) && !this.#heldBack(basis, candidate))
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
      // Tombstones are re-announced (slowly, or at once when someone showed a live copy) so no copy resurrects.
      if (now - mission.lastAnnounceAt >= 10 * this.config.announceIntervalMs) this.#announce(now, mission)
      return
    }
    const self = this.self.peerId

    if (mission.claim !== null && now - mission.claim.startedAt >= this.config.claimTimeoutMs) this.#abandonClaim(mission)

    if (mission.container !== null && mission.container.status === 'starting' && now - mission.container.since >= this.config.startTimeoutMs) {
      this.#event(record.mission, 'start timed out')
      this.#emit({ type: 'stopContainer', mission: record.mission, reason: 'start timed out' })
      mission.container = null
      mission.coldStartNext = true
      this.#release(now, mission)
    }

    if (record.primary === self && !record.released) this.#tickPrimary(now, mission, frozenMs)
    if (record.primary === self && !record.released) {
      mission.electionSince = null
    } else if (record.primary === null || record.released || this.#primaryGone(now, record.primary)) {
      mission.electionSince ??= now
      this.#maybeClaim(now, mission)
    } else {
      mission.electionSince = null
    }

    if ((record.backup === self || record.handoffTo === self) && record.checkpoint !== null &&
        compareCheckpoints(record.checkpoint, mission.held) > 0 && record.primary !== self) {
      const inFlight = mission.fetchInFlight
      if (inFlight === null || compareCheckpoints(record.checkpoint, inFlight.ref) > 0 || now - inFlight.since >= this.config.fetchRetryMs) {
        mission.fetchInFlight = { ref: record.checkpoint, since: now }
        this.#emit({ type: 'fetchCheckpoint', mission: record.mission, checkpoint: record.checkpoint })
      }
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
          this.#event(record.mission, frozen
            ? `self-fence: not ticked for ${frozenMs} ms (frozen), the lease of ${this.config.leaseMs} ms expired`
            : `self-fence: only ${alive} of ${record.view.length} members alive (quorum ${majority(record.view.length)})`)
          if (mission.container !== null) this.#emit({ type: 'stopContainer', mission: record.mission, reason: 'lost quorum (self-fence)' })
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

    const inFlight = mission.checkpointInFlight
    if (inFlight !== null && now - inFlight.since >= this.config.checkpointTimeoutMs) mission.checkpointInFlight = null
    if (mission.checkpointInFlight === null) {
      const moveTo = mission.pendingMove
      if (moveTo !== null || now - mission.lastCheckpointAt >= this.#checkpointPeriod(mission)) {
        const seq = (record.checkpoint?.seq ?? mission.held?.seq ?? 0) + 1
        mission.checkpointInFlight = { seq, since: now, stop: moveTo !== null }
        this.#emit({ type: 'checkpoint', mission: record.mission, epoch: record.epoch, seq, stop: moveTo !== null })
        return
      }
    }

    // Reconfiguration: a new epoch when the view or the backup should change (the container keeps running).
    if (mission.claim === null && mission.pendingMove === null && now - mission.lastClaimAt >= this.config.claimTimeoutMs) {
      const { view, backup } = this.#desiredLayout(now, record)
      const backupGone = record.backup !== null && this.#stateOf(now, record.backup) === 'dead'
      const changed = backupGone || backup !== record.backup && (record.backup === null || !view.includes(record.backup)) ||
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
    const joiner = this.#chooseBackup(now, record.mission, record.spec, outside)
    if (joiner === null) return
    this.#event(record.mission, `backup ${short(partner)} exited: replacing it by ${short(joiner)}`)
    this.#startClaim(now, mission, { partner, joiner })
  }

  #maybeClaim (now: number, mission: Mission): void {
    const record = mission.record
    const self = this.self.peerId
    if (mission.claim !== null || now - mission.lastClaimAt < this.config.claimTimeoutMs) return
    if (this.#pendingVote(now, mission)) return
    const candidates = this.#candidates(now, record)
    const rank = candidates.indexOf(self)
    if (rank < 0) return
    if (record.handoffTo === self && compareCheckpoints(record.checkpoint, mission.held) > 0) return
    const handoffPending = record.handoffTo !== null && record.handoffTo !== self && candidates.includes(record.handoffTo)
    // Deterministic jitter per (peer, attempt) breaks repeated split votes between equally placed candidates.
    const jitter = Number(fnv1a64(`${self}/${mission.votedEpoch}`) % BigInt(this.config.candidateStaggerMs))
    const wait = rank * this.config.candidateStaggerMs + (rank > 0 || mission.votedEpoch > record.epoch ? jitter : 0) +
      (handoffPending ? 5 * this.config.claimTimeoutMs : 0)
    if (now - (mission.electionSince ?? now) < wait) return
    if (!this.#quorumReachable(now, record, self)) return
    this.#startClaim(now, mission)
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
    return [...preferred, ...rest]
  }

  #desiredLayout (now: number, record: MissionRecord): { view: string[], backup: string | null } {
    const members = new Set<string>([this.self.peerId])
    for (const p of this.#peers.keys()) if (this.#stateOf(now, p) === 'alive') members.add(p)
    for (const p of record.view) if (this.#stateOf(now, p) === 'suspect') members.add(p)
    const view = [...members].sort()
    const current = record.backup
    if (current !== null && current !== this.self.peerId && view.includes(current) && this.#stateOf(now, current) !== 'dead' &&
        this.#eligible(record.spec, current)) {
      return { view, backup: current }
    }
    return { view, backup: this.#chooseBackup(now, record.mission, record.spec, view) }
  }

  #chooseBackup (now: number, name: string, spec: MissionSpec, view: string[]): string | null {
    const options = hrwRank(name, view.filter(p => p !== this.self.peerId && this.#stateOf(now, p) === 'alive' && this.#eligible(spec, p)))
    const sameArch = options.filter(p => { const i = this.#info(p); return i !== undefined && i.arch === this.self.arch && i.canCheckpoint })
    return sameArch[0] ?? options[0] ?? null
  }

  // ---- election ------------------------------------------------------------------------------------------------

  #startClaim (now: number, mission: Mission, replace: Replacement | null = null): void {
    const record = mission.record
    const epoch = Math.max(record.epoch, mission.votedEpoch) + 1
    mission.votedEpoch = epoch
    mission.votedFor = this.self.peerId
    mission.lastClaimAt = now
    mission.claim = { epoch, basis: cloneJson(record), votes: new Set([this.self.peerId]), startedAt: now, replace }
    this.#persist()
    this.#emit({ type: 'publish', message: { type: 'claim', mission: record.mission, deployId: record.deployId, epoch, basis: record.epoch } })
    this.#checkWon(now, mission)
  }

  #onClaim (now: number, from: string, msg: Extract<ConsensusMessage, { type: 'claim' }>): void {
    const mission = this.#missions.get(msg.mission)
    if (mission === undefined || mission.record.deployId !== msg.deployId) return
    const record = mission.record
    const self = this.self.peerId
    const primaryHolds = this.#primaryHolds(now, mission, from)
    if (from !== self) mission.electionSince = now
    // The candidate claims again on a basis below the epoch it was given a vote for: that claim ended without a win.
    if (mission.votedFor === from && msg.epoch > mission.votedEpoch && msg.basis < mission.votedEpoch) mission.votedFor = null
    const pendingElsewhere = this.#pendingVote(now, mission) && mission.votedFor !== from && msg.basis < mission.votedEpoch
    const valid = !record.removed && msg.epoch > mission.votedEpoch && msg.epoch > record.epoch && msg.basis >= record.epoch && !pendingElsewhere
    const granted = valid && !primaryHolds
    // Refused only because the primary still looks alive here: decided again if the detector reports it dead soon.
    mission.deferredClaim = valid && primaryHolds && record.primary !== self ? { from, msg, at: now } : null
    if (granted) {
      mission.votedEpoch = msg.epoch
      mission.votedFor = from
      this.#persist()
    } else if (record.epoch > msg.basis) {
      mission.lastAnnounceAt = -Infinity
    }
    this.#emit({ type: 'publish', message: { type: 'vote', mission: msg.mission, epoch: msg.epoch, candidate: from, granted, knownEpoch: record.epoch } })
    if (!granted) this.#announce(now, mission)
  }

  #primaryHolds (now: number, mission: Mission, candidate: string): boolean {
    const record = mission.record
    if (record.primary === null || record.released || record.primary === candidate || record.handoffTo === candidate) return false
    if (record.primary === this.self.peerId) return mission.container !== null
    return !this.#primaryGone(now, record.primary) && this.#stateOf(now, record.primary) !== 'suspect'
  }

  #onVote (now: number, from: string, msg: Extract<ConsensusMessage, { type: 'vote' }>): void {
    const mission = this.#missions.get(msg.mission)
    const claim = mission?.claim
    if (mission === undefined || claim == null || msg.candidate !== this.self.peerId || msg.epoch !== claim.epoch) return
    if (msg.granted) {
      claim.votes.add(from)
      this.#checkWon(now, mission)
    } else if (msg.knownEpoch >= claim.epoch) {
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
    const layout = this.#desiredLayout(now, basis)
    const view = replace !== null
      ? [...basis.view.filter(p => p !== replace.partner), replace.joiner].sort()
      : stepView(basis.view, new Set([...layout.view, ...claim.votes]), self)
    const newest = compareCheckpoints(mission.held, record.checkpoint) >= 0 ? mission.held : record.checkpoint
    const wasRunning = mission.container !== null && basis.primary === self
    const restoreFrom = !wasRunning && !mission.coldStartNext && this.#canRestore(self, mission.held) ? mission.held : null
    const checkpoint = wasRunning ? newest : (restoreFrom ?? newest)
    mission.record = {
      ...record,
      epoch: claim.epoch,
      primary: self,
      backup: replace !== null
        ? replace.joiner
        : (layout.backup !== null && view.includes(layout.backup) ? layout.backup : this.#chooseBackup(now, name, record.spec, view)),
      view,
      released: false,
      handoffTo: null,
      checkpoint,
      replicatedSeq: null
    }
    mission.electionSince = null
    mission.quorumLostSince = null
    mission.pendingMove = null
    mission.partnerHeldBack = false
    this.#persist()
    const previous = basis.primary === null ? 'deploy' : basis.primary === self ? 'self' : short(basis.primary)
    if (wasRunning) {
      mission.container = { ...mission.container!, epoch: claim.epoch }
      this.#emit({ type: 'runningEpoch', mission: name, epoch: claim.epoch })
      this.#event(name, `epoch ${claim.epoch}: reconfigured, view ${view.map(short).join(',')}, backup ${short(mission.record.backup)}`)
    } else if (restoreFrom !== null) {
      mission.container = { epoch: claim.epoch, status: 'starting', since: now }
      this.#emit({ type: 'restore', mission: name, epoch: claim.epoch, spec: record.spec, checkpoint: restoreFrom })
      this.#event(name, `epoch ${claim.epoch}: primary (from ${previous}), restoring checkpoint #${restoreFrom.seq}`)
    } else {
      mission.coldStartNext = false
      mission.container = { epoch: claim.epoch, status: 'starting', since: now }
      const image = imageFor(record.spec, this.self.arch) ?? ''
      this.#emit({ type: 'startFresh', mission: name, epoch: claim.epoch, spec: record.spec, image, dataFrom: newest })
      const why = newest === null
        ? 'no checkpoint yet'
        : (this.#canRestore(self, newest) ? 'checkpoint not held here' : `checkpoint is ${newest.arch}, this board is ${this.self.arch}`)
      this.#event(name, `epoch ${claim.epoch}: primary (from ${previous}), cold start from image ${image}` +
        `${newest === null ? '' : ` with data of checkpoint #${newest.seq}`} (${why})`)
    }
    this.#announce(now, mission)
    if (basis.primary !== null && basis.primary !== self) {
      this.#emit({ type: 'publish', message: { type: 'fence', mission: name, epoch: claim.epoch, target: basis.primary } })
    }
  }

  // ---- records ------------------------------------------------------------------------------------------------

  #onAnnounce (now: number, from: string, incoming: MissionRecord): void {
    const mission = this.#missions.get(incoming.mission)
    if (mission === undefined) {
      if (incoming.removed) return
      this.#missions.set(incoming.mission, this.#newMission({ record: incoming, votedEpoch: incoming.epoch, votedFor: null, held: null }))
      this.#persist()
      this.#adoptedPrimaryCheck(now, this.#missions.get(incoming.mission)!)
      return
    }
    const record = mission.record
    if (incoming.deployId !== record.deployId) {
      const newer = incoming.epoch > record.epoch || (incoming.epoch === record.epoch && incoming.deployId > record.deployId)
      if (!newer || (!record.removed && incoming.removed)) { mission.lastAnnounceAt = -Infinity; return }
      this.#stopIfRunning(mission, `replaced by deployment ${incoming.deployId}`)
      this.#missions.set(incoming.mission, this.#newMission({ record: incoming, votedEpoch: Math.max(mission.votedEpoch, incoming.epoch), votedFor: mission.votedFor, held: null }))
      this.#persist()
      return
    }
    if (incoming.removed && !record.removed) { this.#onRemove(record.mission, record.deployId, `removed (learned from ${short(from)})`); return }
    if (record.removed) {
      if (!incoming.removed) this.#announce(now, mission)
      return
    }
    if (incoming.epoch > record.epoch) {
      this.#adoptHigherEpoch(now, mission, incoming)
    } else if (incoming.epoch === record.epoch) {
      let changed = false
      if (compareCheckpoints(incoming.checkpoint, record.checkpoint) > 0) { record.checkpoint = incoming.checkpoint; changed = true }
      if (incoming.replicatedSeq !== null && (record.replicatedSeq === null || incoming.replicatedSeq > record.replicatedSeq)) record.replicatedSeq = incoming.replicatedSeq
      if (incoming.released && !record.released && record.primary !== this.self.peerId) { record.released = true; record.handoffTo = incoming.handoffTo; changed = true }
      if (changed) this.#persist()
    } else {
      mission.lastAnnounceAt = -Infinity
    }
  }

  #adoptHigherEpoch (now: number, mission: Mission, incoming: MissionRecord): void {
    const self = this.self.peerId
    if (mission.claim !== null && mission.claim.epoch <= incoming.epoch) mission.claim = null
    if (mission.container !== null && incoming.primary !== self) {
      this.#emit({ type: 'stopContainer', mission: incoming.mission, reason: `fenced: epoch ${incoming.epoch} belongs to ${short(incoming.primary)}` })
      this.#event(incoming.mission, `fenced: stopped epoch ${mission.container.epoch}, epoch ${incoming.epoch} is ${short(incoming.primary)}'s`)
      mission.container = null
      mission.checkpointInFlight = null
    }
    mission.record = incoming
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

  #stopIfRunning (mission: Mission, reason: string): void {
    if (mission.container === null) return
    this.#emit({ type: 'stopContainer', mission: mission.record.mission, reason })
    mission.container = null
    mission.checkpointInFlight = null
  }

  #onFence (now: number, msg: Extract<ConsensusMessage, { type: 'fence' }>): void {
    const mission = this.#missions.get(msg.mission)
    if (mission === undefined || msg.target !== this.self.peerId || mission.container === null || mission.container.epoch >= msg.epoch) return
    this.#event(msg.mission, `fence for epoch ${msg.epoch} received: stopping epoch ${mission.container.epoch}`)
    this.#stopIfRunning(mission, `fenced by epoch ${msg.epoch}`)
    mission.votedEpoch = Math.max(mission.votedEpoch, msg.epoch)
    this.#release(now, mission)
    this.#persist()
  }

  #onRemove (name: string, deployId: string, why: string): void {
    const mission = this.#missions.get(name)
    if (mission === undefined || mission.record.deployId !== deployId || mission.record.removed) return
    this.#stopIfRunning(mission, why)
    mission.record.removed = true
    mission.claim = null
    mission.held = null
    mission.fetchInFlight = null
    this.#persist()
    this.#emit({ type: 'forget', mission: name })
    this.#event(name, why)
    mission.lastAnnounceAt = -Infinity
  }

  #deploy (now: number, spec: MissionSpec): void {
    const existing = this.#missions.get(spec.name)
    if (existing !== undefined && !existing.record.removed) {
      this.#event(spec.name, `deploy refused: ${spec.name} is already deployed (remove it first)`)
      return
    }
    const view = [this.self.peerId, ...[...this.#peers.values()].filter(p => p.state === 'alive').map(p => p.peerId)].sort()
    const epoch = existing === undefined ? 0 : Math.max(existing.record.epoch, existing.votedEpoch) + 1
    const record: MissionRecord = {
      mission: spec.name, deployId: `${this.self.peerId}@${now}`, spec, epoch, primary: null, backup: null, view,
      released: false, handoffTo: null, checkpoint: null, replicatedSeq: null, removed: false
    }
    this.#missions.set(spec.name, this.#newMission({ record, votedEpoch: epoch, votedFor: null, held: null }))
    this.#persist()
    this.#event(spec.name, `deployed (view of ${view.length})`)
    this.#announce(now, this.#missions.get(spec.name)!)
    this.tick(now)
  }

  #requestMove (now: number, mission: Mission, to: string): void {
    const record = mission.record
    if (record.primary !== this.self.peerId || record.released || mission.container?.status !== 'running') return
    if (to === this.self.peerId || this.#stateOf(now, to) !== 'alive' || !this.#eligible(record.spec, to)) {
      this.#event(record.mission, `move refused: ${short(to)} is not an alive board that can run ${record.mission}`)
      return
    }
    if (!this.#canRestore(to, { cid: '', seq: 0, epoch: 0, arch: this.self.arch, atMs: 0 })) {
      this.#event(record.mission, `move to ${short(to)}: different architecture or no CRIU there, the mission restarts cold`)
    }
    mission.pendingMove = to
    this.#event(record.mission, `move to ${short(to)}: taking the final checkpoint`)
    this.tick(now)
  }

  // ---- checkpoints ------------------------------------------------------------------------------------------------

  #onCheckpointTaken (now: number, mission: Mission, epoch: number, seq: number, cid: string): void {
    const record = mission.record
    const inFlight = mission.checkpointInFlight
    // The epoch may have moved on by a reconfiguration while the checkpoint ran: same container, still ours.
    if (inFlight === null || inFlight.seq !== seq || epoch > record.epoch || record.primary !== this.self.peerId || record.released) return
    mission.checkpointInFlight = null
    // The interval runs from the start of a checkpoint, so a slow dump does not stretch the period by its own length.
    mission.lastCheckpointAt = inFlight.since
    mission.checkpointStarts = [...mission.checkpointStarts.slice(-(RECENT_CHECKPOINTS - 1)), { seq, epoch: record.epoch, since: inFlight.since }]
    const ref: CheckpointRef = { cid, seq, epoch, arch: this.self.arch, atMs: now }
    mission.held = ref
    record.checkpoint = ref
    if (inFlight.stop && mission.pendingMove !== null) {
      mission.container = null
      record.released = true
      record.handoffTo = mission.pendingMove
      mission.pendingMove = null
      this.#event(record.mission, `final checkpoint #${seq} taken, container stopped: handing over to ${short(record.handoffTo)}`)
    }
    this.#persist()
    this.#announce(now, mission)
  }

  #onFetched (now: number, mission: Mission, cid: string, seq: number): void {
    const record = mission.record
    const ref = mission.fetchInFlight?.ref.cid === cid ? mission.fetchInFlight.ref : (record.checkpoint?.cid === cid ? record.checkpoint : null)
    if (ref === null || ref.seq !== seq) return
    if (mission.fetchInFlight?.ref.cid === cid) mission.fetchInFlight = null
    if (compareCheckpoints(ref, mission.held) <= 0) return
    mission.held = ref
    this.#persist()
    this.#emit({ type: 'publish', message: { type: 'ack', mission: record.mission, epoch: record.epoch, cid, seq, checkpointEpoch: ref.epoch } })
  }

  #onAck (now: number, from: string, msg: Extract<ConsensusMessage, { type: 'ack' }>): void {
    const mission = this.#missions.get(msg.mission)
    if (mission === undefined) return
    const record = mission.record
    if (record.primary !== this.self.peerId || msg.epoch !== record.epoch || from !== record.backup) return
    if (record.checkpoint === null || msg.checkpointEpoch !== record.checkpoint.epoch) return
    if (record.replicatedSeq !== null && msg.seq <= record.replicatedSeq) return
    record.replicatedSeq = msg.seq
    const started = mission.checkpointStarts.find(s => s.seq === msg.seq && s.epoch === msg.checkpointEpoch)
    if (started !== undefined) mission.replicationLags = [...mission.replicationLags.slice(-(RECENT_CHECKPOINTS - 1)), now - started.since]
  }

  /**
   * How long after the start of one checkpoint the next one starts. The spec's interval bounds the work a failover
   * may lose: the backup must hold a state at most that old at any moment, so a checkpoint must be acknowledged
   * within one interval of the previous one's start. Each starts early by the slowest recent replication (plus the
   * slack), but never more often than twice per interval: a mission is paused for every dump.
   */
  #checkpointPeriod (mission: Mission): number {
    const interval = mission.record.spec.checkpointIntervalMs
    // Nothing measured yet (a new primary, a new backup still syncing): assume the slowest allowed.
    if (mission.replicationLags.length === 0) return interval / 2
    return Math.max(interval / 2, interval - Math.max(...mission.replicationLags) - this.config.checkpointSlackMs)
  }

  // ---- helpers ------------------------------------------------------------------------------------------------

  #announce (now: number, mission: Mission): void {
    mission.lastAnnounceAt = now
    const record = mission.record
    const heldBack = !record.removed && record.primary !== null && this.#heldBack(record, this.self.peerId) &&
      this.#loneClaimant(record) === this.self.peerId
    const claim = { votedEpoch: mission.votedEpoch, open: mission.claim !== null, ...(heldBack ? { heldBack } : {}) }
    this.#emit({ type: 'publish', message: { type: 'announce', record: cloneJson(mission.record), claim } })
  }

  #newMission (stored: PersistedMission): Mission {
    return {
      ...stored,
      container: null, claim: null, lastClaimAt: -Infinity, electionSince: null, quorumLostSince: null,
      checkpointInFlight: null, lastCheckpointAt: -Infinity, checkpointStarts: [], replicationLags: [], fetchInFlight: null, lastAnnounceAt: -Infinity,
      pendingMove: null, coldStartNext: false, heldBackUpTo: null, partnerHeldBack: false, deferredClaim: null
    }
  }

  #persist (): void { this.#emit({ type: 'persist', state: this.persistedState() }) }
  #emit (action: Action): void { this.#actions.push(action) }
  #event (mission: string, text: string): void { this.#emit({ type: 'event', mission, text }) }

  #viewOf (m: Mission, now: number): MissionView {
    const r = m.record
    const self = this.self.peerId
    let state: MissionView['state']
    if (r.removed) state = 'removed'
    else if (m.container?.status === 'starting') state = 'starting'
    else if (r.primary === self && m.container?.status === 'running') state = 'running'
    else if (r.primary !== null && r.primary !== self && !r.released && this.#stateOf(now, r.primary) !== 'dead') state = 'running'
    else if (r.primary === null && m.claim === null) state = 'pending'
    else state = m.claim !== null || r.released || r.primary === null ? 'electing' : 'stopped'
    return {
      name: r.mission, deployId: r.deployId, spec: r.spec, epoch: r.epoch, primary: r.primary, backup: r.backup, view: [...r.view], state,
      role: r.primary === self ? 'primary' : r.backup === self ? 'backup' : 'member',
      lastCheckpoint: r.checkpoint, replicatedSeq: r.replicatedSeq, held: m.held,
      replicationLagMs: r.primary === self ? m.replicationLags.at(-1) ?? null : null,
      checkpointPeriodMs: r.primary === self && m.container !== null ? this.#checkpointPeriod(m) : null
    }
  }
}

/**
 * The next epoch's view differs from its basis by at most one member (as Raft's single-server changes), so majorities
 * of consecutive views always intersect: first the new primary joins, then one dead member leaves, then one joins.
 */
export function stepView (basis: string[], desired: Set<string>, self: string): string[] {
  const next = new Set(basis)
  const leaving = basis.find(p => !desired.has(p))
  const joining = [...desired].sort().find(p => !next.has(p))
  if (!next.has(self)) next.add(self)
  else if (leaving !== undefined) next.delete(leaving)
  else if (joining !== undefined) next.add(joining)
  return [...next].sort()
}

function short (peerId: string | null): string {
  if (peerId === null) return '-'
  return peerId.length > 12 ? peerId.slice(-6) : peerId
}
