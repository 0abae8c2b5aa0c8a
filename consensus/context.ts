// The context every role module works on: this board's identity and configuration, what it knows of its peers, its
// missions, and the actions out (in order). Also the persisted state: what is written, and how it is loaded at start.
import { cloneJson, withRecordDefaults } from './messages.ts'
import type { MachineEvent } from './events.ts'
import { copyRecord, failedInEpoch, newMission, type Mission } from './mission-state.ts'
import type { Action, AuthorityRefusal, ConsensusConfig, LocalEvent, PeerInfo, PersistedMission, PersistedState } from './types.ts'

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

/** One kind of local event, as its handler receives it. */
export type LocalOf<T extends LocalEvent['type']> = Extract<LocalEvent, { type: T }>

/** The shared state of a ClusterMachine, passed to every module of consensus/ that acts on it. */
export interface Ctx {
  readonly self: SelfInfo
  readonly config: ConsensusConfig
  readonly startedAt: number
  lastTickAt: number
  readonly peers: Map<string, PeerInfo>
  readonly deadSince: Map<string, number>
  readonly heardAt: Map<string, number>
  /** Peers whose exit the detector proved (`gone`) while they were still in contact (alive or suspect before). */
  readonly exitProven: Set<string>
  readonly missions: Map<string, Mission>
  /** Boards the operator revoked: dead and gone for good, no vote, no say (see revoke()). */
  readonly revoked: Set<string>
  readonly refusals: Record<AuthorityRefusal, number>
  actions: Action[]
  /** The machine's tick (some transitions re-run the per-mission loop at once). */
  readonly tick: (now: number) => void
}

export function persist (ctx: Ctx): void { emit(ctx, { type: 'persist', state: persistedState(ctx) }) }

export function emit (ctx: Ctx, action: Action): void { ctx.actions.push(action) }

export function emitEvent (ctx: Ctx, mission: string, event: MachineEvent): void { emit(ctx, { type: 'event', mission, event }) }

export function refuse (ctx: Ctx, reason: AuthorityRefusal): void { ctx.refusals[reason]++ }

export function persistedState (ctx: Ctx): PersistedState {
  const missions: Record<string, PersistedMission> = {}
  for (const [name, m] of ctx.missions) {
    missions[name] = { record: copyRecord(m.record), votedEpoch: m.votedEpoch, votedFor: m.votedFor, held: m.held === null ? null : { ...m.held } }
  }
  return { version: 1, self: ctx.self.peerId, missions }
}

/** The persisted state loaded at start (the constructor's part): missions, votes and held checkpoints. */
export function loadPersisted (ctx: Ctx, now: number, persisted: PersistedState | undefined): void {
  if (persisted !== undefined && persisted.self === ctx.self.peerId) {
    for (const [name, stored] of Object.entries(persisted.missions)) {
      const mission = newMission(cloneJson(stored))
      withRecordDefaults(mission.record)
      ctx.missions.set(name, mission)
      const record = mission.record
      // Tombstones are not re-announced at start: a peer holding one answers announces of a live copy instead.
      if (record.removed) mission.lastAnnounceAt = now
      // The record's primary failed and released it: the swarm-wide back-off runs again from now.
      if (record.released && record.restarts > 0 && failedInEpoch(record)) mission.failureSeenAt = now
      mission.votedFor ??= null
      if (mission.votedFor === ctx.self.peerId && mission.votedEpoch > record.epoch) {
        emit(ctx, { type: 'publish', message: { type: 'abandon', mission: name, epoch: mission.votedEpoch } })
      }
      if (record.view.length === 2 && record.view.includes(ctx.self.peerId) && record.primary !== null &&
          record.primary !== ctx.self.peerId && record.view.includes(record.primary) && !record.released && !record.removed) {
        // While this peer was down its primary may have replaced it (startPartnerReplacement in primary.ts): a claim alone on
        // this basis could collide with that epoch. It waits for a newer epoch (the primary re-elects with it).
        mission.heldBackUpTo = record.epoch
      }
      if (record.primary === ctx.self.peerId && !record.released && !record.removed) {
        // After a restart the container's state is unknown: stop it and rejoin under a new epoch.
        emit(ctx, { type: 'stopContainer', mission: name, reason: { kind: 'daemonRestarted' } })
        record.released = true
        emitEvent(ctx, name, { kind: 'restartedAsPrimary', epoch: record.epoch })
      }
    }
    if (ctx.missions.size > 0) persist(ctx)
  }
}
