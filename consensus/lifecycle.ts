// Transitions of a mission that every role uses: announcing the record, releasing this board's epoch, stopping the
// container, ending this board's claim, releasing its vote, and releasing a record that names it primary wrongly.
import type { StopReason } from './events.ts'
import { emit, type Ctx } from './context.ts'
import { persist } from './persisted.ts'
import { copyRecord, type Mission } from './mission-state.ts'
import { isHeldBack, loneClaimantOf } from './membership.ts'

export function announce (ctx: Ctx, now: number, mission: Mission): void {
  mission.lastAnnounceAt = now
  const record = mission.record
  const heldBack = !record.removed && record.primary !== null && isHeldBack(ctx, record, ctx.self.peerId) &&
    loneClaimantOf(ctx, record) === ctx.self.peerId
  const claim = { votedEpoch: mission.votedEpoch, open: mission.claim !== null, ...(heldBack ? { heldBack } : {}) }
  emit(ctx, { type: 'publish', message: { type: 'announce', record: copyRecord(mission.record), claim } })
}

export function release (ctx: Ctx, now: number, mission: Mission): void {
  const record = mission.record
  if (record.primary !== ctx.self.peerId || record.released) return
  record.released = true
  persist(ctx)
  announce(ctx, now, mission)
}

export function stopIfRunning (ctx: Ctx, mission: Mission, reason: StopReason): void {
  if (mission.container === null) return
  emit(ctx, { type: 'stopContainer', mission: mission.record.mission, reason })
  mission.container = null
  mission.checkpointInFlight = null
}

export function abandonClaim (ctx: Ctx, mission: Mission): void {
  if (mission.claim === null) return
  emit(ctx, { type: 'publish', message: { type: 'abandon', mission: mission.record.mission, epoch: mission.claim.epoch } })
  mission.claim = null
}

export function releaseVote (ctx: Ctx, now: number, mission: Mission): void {
  mission.votedFor = null
  persist(ctx)
  ctx.tick(now)
}

/** A record naming this peer primary that it does not run (e.g. echoed after a restart): release it. */
export function adoptedPrimaryCheck (ctx: Ctx, now: number, mission: Mission): void {
  const record = mission.record
  if (record.primary === ctx.self.peerId && !record.released && (mission.container === null || mission.container.epoch !== record.epoch)) {
    release(ctx, now, mission)
  }
}
