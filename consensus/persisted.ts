// The persisted state: what a `persist` action carries (records, votes, held checkpoints), and how it is loaded at
// start (a record this board was primary of is released: its container's state is unknown after a restart).
import { cloneJson, withRecordDefaults } from './messages.ts'
import { emit, emitEvent, type Ctx } from './context.ts'
import { copyRecord, failedInEpoch, newMission } from './mission-state.ts'
import type { PersistedMission, PersistedState } from './types.ts'

export function persist (ctx: Ctx): void { emit(ctx, { type: 'persist', state: persistedState(ctx) }) }

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
      const mission = newMission(cloneJson(stored), now)
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
