// Prometheus metrics of one peer (GET /metrics): every definition is here. Gauges and counters that the status
// already holds are set from status snapshots (`update`); what only exists at the moment it happens (a checkpoint's
// pause, a restore's duration, bytes fetched) is observed through the few methods the mission service calls.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { PeerStatus } from './daemon.ts'
import type { MemberState } from './membership.ts'
import type { MissionStatus } from './missions/index.ts'

const MEMBER_STATES: readonly MemberState[] = ['alive', 'suspect', 'dead']
const MISSION_ROLES: ReadonlyArray<MissionStatus['role']> = ['primary', 'backup', 'member']
const MISSION_STATES: ReadonlyArray<MissionStatus['state']> = ['pending', 'electing', 'starting', 'running', 'backoff', 'blocked', 'stopped', 'removed']

/**
 * Why this board became a mission's primary in place of another one: `board-lost` (the old primary's board is dead,
 * suspect or gone from the membership), `failure` (the container failed or crashed: the record counted a restart),
 * `handoff` (the old primary is alive and handed over: a move or a clean stop).
 */
export type FailoverCause = 'board-lost' | 'failure' | 'handoff'

/** What a checkpoint this board took cost, as the checkpointer measured it. */
export interface CheckpointObservation { pausedMs: number, totalMs: number, frozenTimeUs: number, newBytes: number }

/** What a restore on this board cost. */
export interface RestoreObservation { ms: number, criuMs: number }

interface MissionSnapshot { primary: string | null, epoch: number, restarts: number, failureAt: number | null }

const PAUSE_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

export const METRICS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE

export class PeerMetrics {
  readonly registry = new Registry()
  readonly #previous = new Map<string, MissionSnapshot>()

  readonly #peerState = this.#gauge('tandem_peer_state', 'Membership view of this peer: 1 for the state it gives each other peer, 0 for the others', ['peer', 'state'])
  readonly #self = this.#gauge('tandem_peer_info', 'This peer (always 1), with its board profile and architecture', ['peer', 'board', 'arch'])
  readonly #lag = this.#gauge('tandem_event_loop_lag_seconds', 'Event loop lag the failure detector measured last on this peer', [])
  readonly #health = this.#gauge('tandem_health_score', 'Health score this peer gossips (0 = healthy; higher means it answers late)', [])
  readonly #connections = this.#gauge('tandem_connections', 'Open libp2p connections', [])
  readonly #pauses = this.#counter('tandem_process_pauses_total', 'Times this process was seen paused (e.g. SIGSTOP, a stalled VM) and refuted its death', [])
  readonly #gossipAccepted = this.#counter('tandem_gossip_accepted_total', 'Gossip messages received, validated and handled', ['topic'])
  readonly #gossipDropped = this.#counter('tandem_gossip_dropped_total', 'Gossip messages refused, by reason', ['topic', 'reason'])
  readonly #gossipPublished = this.#counter('tandem_gossip_published_total', 'Gossip messages this peer published', ['topic'])
  readonly #gossipReceivedBytes = this.#counter('tandem_gossip_received_bytes_total', 'Payload bytes of accepted gossip messages', ['topic'])
  readonly #gossipSentBytes = this.#counter('tandem_gossip_sent_bytes_total', 'Payload bytes of gossip messages this peer published', ['topic'])

  readonly #epoch = this.#gauge('tandem_mission_epoch', 'Current epoch of the mission as this peer knows it', ['mission'])
  readonly #role = this.#gauge('tandem_mission_role', 'This peer\'s role in the mission: 1 for its role, 0 for the others', ['mission', 'role'])
  readonly #state = this.#gauge('tandem_mission_state', 'State of the mission: 1 for its state, 0 for the others', ['mission', 'state'])
  readonly #protected = this.#gauge('tandem_mission_protected', '1 if the backup would restore a checkpoint were the primary\'s board to die now', ['mission'])
  readonly #restarts = this.#gauge('tandem_mission_restarts', 'Consecutive failed starts or crashes of the mission', ['mission'])
  readonly #checkpointAge = this.#gauge('tandem_mission_checkpoint_age_seconds', 'Age of the mission\'s newest checkpoint', ['mission'])
  readonly #replicationLag = this.#gauge('tandem_mission_replication_lag_checkpoints', 'Checkpoints the primary took that the backup does not hold yet', ['mission'])
  readonly #replicationLagSeconds = this.#gauge('tandem_mission_replication_lag_seconds', 'Primary only: from the start of the newest acknowledged checkpoint to the backup\'s ack', ['mission'])

  readonly #checkpointPause = this.#histogram('tandem_checkpoint_pause_seconds', 'Time the mission was paused for a checkpoint this peer took (CRIU dump and file snapshot)', PAUSE_BUCKETS)
  readonly #checkpointDuration = this.#histogram('tandem_checkpoint_duration_seconds', 'Whole time of a checkpoint this peer took, pause and store included', DURATION_BUCKETS)
  readonly #criuFrozen = this.#histogram('tandem_criu_frozen_seconds', 'Time CRIU held the mission\'s processes frozen during a checkpoint this peer took', PAUSE_BUCKETS)
  readonly #restoreDuration = this.#histogram('tandem_restore_duration_seconds', 'Time from the start of a restore on this peer to the restored process running', DURATION_BUCKETS)
  readonly #restoreCriu = this.#histogram('tandem_restore_criu_seconds', 'CRIU part (docker start from the checkpoint) of a restore on this peer', DURATION_BUCKETS)
  readonly #failovers = this.#counter('tandem_mission_failovers_total', 'Times this peer became the mission\'s primary in place of another board, by cause', ['mission', 'cause'])
  readonly #storedBytes = this.#counter('tandem_checkpoint_stored_bytes_total', 'New bytes checkpoints this peer took added to its store (what backups then fetch)', ['mission'])
  readonly #fetchedBytes = this.#counter('tandem_checkpoint_fetched_bytes_total', 'Bytes of checkpoints this peer fetched from other boards', ['mission'])
  readonly #imageFetchedBytes = this.#counter('tandem_image_fetched_bytes_total', 'Bytes of mission images this peer fetched from other boards', ['mission'])

  constructor (options: { defaultMetrics?: boolean } = {}) {
    // Node.js process metrics (CPU, memory, GC, event loop delay histogram), as every Node exporter has them.
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry })
  }

  #gauge<L extends string> (name: string, help: string, labelNames: L[]): Gauge<L> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] })
  }

  #counter<L extends string> (name: string, help: string, labelNames: L[]): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] })
  }

  #histogram (name: string, help: string, buckets: number[]): Histogram<'mission'> {
    return new Histogram({ name, help, labelNames: ['mission'], buckets, registers: [this.registry] })
  }

  checkpointTaken (mission: string, taken: CheckpointObservation): void {
    this.#checkpointPause.observe({ mission }, taken.pausedMs / 1000)
    this.#checkpointDuration.observe({ mission }, taken.totalMs / 1000)
    if (taken.frozenTimeUs > 0) this.#criuFrozen.observe({ mission }, taken.frozenTimeUs / 1e6)
    this.#storedBytes.inc({ mission }, Math.max(0, taken.newBytes))
  }

  restored (mission: string, restore: RestoreObservation): void {
    this.#restoreDuration.observe({ mission }, restore.ms / 1000)
    this.#restoreCriu.observe({ mission }, restore.criuMs / 1000)
  }

  checkpointFetched (mission: string, bytes: number): void { this.#fetchedBytes.inc({ mission }, Math.max(0, bytes)) }

  imageFetched (mission: string, bytes: number): void { this.#imageFetchedBytes.inc({ mission }, Math.max(0, bytes)) }

  /** Sets the gauges and status counters from a status snapshot, and counts the failovers since the previous one. */
  update (status: PeerStatus): void {
    const self = status.self
    this.#self.reset()
    this.#self.set({ peer: self.peerId, board: self.board, arch: self.arch }, 1)
    this.#lag.set(self.lagMs / 1000)
    this.#health.set(self.healthScore)
    this.#connections.set(self.connections)
    this.#peerState.reset()
    for (const peer of status.peers) {
      for (const state of MEMBER_STATES) this.#peerState.set({ peer: peer.peerId, state }, peer.state === state ? 1 : 0)
    }
    this.#setCounter(this.#pauses, {}, status.counters.pauses)
    for (const counter of [this.#gossipAccepted, this.#gossipDropped, this.#gossipPublished, this.#gossipReceivedBytes, this.#gossipSentBytes]) counter.reset()
    for (const [topic, counters] of Object.entries(status.counters.gossip)) {
      this.#gossipAccepted.inc({ topic }, counters.accepted)
      this.#gossipPublished.inc({ topic }, counters.published)
      this.#gossipReceivedBytes.inc({ topic }, counters.bytesIn)
      this.#gossipSentBytes.inc({ topic }, counters.bytesOut)
      for (const [reason, n] of Object.entries(counters.dropped)) this.#gossipDropped.inc({ topic, reason }, n)
    }
    const missions = Array.isArray(status.missions) ? status.missions as MissionStatus[] : []
    this.#updateMissions(missions, status)
  }

  #updateMissions (missions: MissionStatus[], status: PeerStatus): void {
    for (const gauge of [this.#epoch, this.#role, this.#state, this.#protected, this.#restarts, this.#checkpointAge, this.#replicationLag, this.#replicationLagSeconds]) gauge.reset()
    const selfId = status.self.peerId
    const seen = new Set<string>()
    for (const m of missions) {
      const mission = m.name
      seen.add(mission)
      this.#epoch.set({ mission }, m.epoch)
      for (const role of MISSION_ROLES) this.#role.set({ mission, role }, m.role === role ? 1 : 0)
      for (const state of MISSION_STATES) this.#state.set({ mission, state }, m.state === state ? 1 : 0)
      this.#protected.set({ mission }, m.protected ? 1 : 0)
      this.#restarts.set({ mission }, m.restarts)
      if (m.lastCheckpoint != null) this.#checkpointAge.set({ mission }, m.lastCheckpoint.ageMs / 1000)
      if (m.replicationLag != null) this.#replicationLag.set({ mission }, m.replicationLag)
      if (m.replicationLagMs != null) this.#replicationLagSeconds.set({ mission }, m.replicationLagMs / 1000)

      const now: MissionSnapshot = { primary: m.primary, epoch: m.epoch, restarts: m.restarts, failureAt: m.lastFailure?.at ?? null }
      const before = this.#previous.get(mission)
      this.#previous.set(mission, now)
      if (before == null || before.primary == null || now.primary !== selfId || before.primary === selfId || now.epoch <= before.epoch) continue
      this.#failovers.inc({ mission, cause: failoverCause(before, now, status) })
    }
    for (const name of [...this.#previous.keys()]) if (!seen.has(name)) this.#previous.delete(name)
  }

  #setCounter<L extends string> (counter: Counter<L>, labels: Partial<Record<L, string>>, value: number): void {
    counter.reset()
    counter.inc(labels, value)
  }

  async text (): Promise<string> { return await this.registry.metrics() }
}

function failoverCause (before: MissionSnapshot, now: MissionSnapshot, status: PeerStatus): FailoverCause {
  if (now.restarts > before.restarts || (now.failureAt != null && now.failureAt !== before.failureAt)) return 'failure'
  const old = status.peers.find(peer => peer.peerId === before.primary)
  return old == null || old.state !== 'alive' ? 'board-lost' : 'handoff'
}
