// What view(now) reports of a mission: its state (running, electing, back-off, blocked, ...), this board's role, and
// its protection: whether the backup would restore a checkpoint if the primary's board died now, and how stale.
import { imageRef } from './placement.ts'
import { stalenessBound } from './cadence.ts'
import { seconds, short } from './events.ts'
import type { Ctx } from './context.ts'
import type { Mission } from './mission-state.ts'
import { boardInfo, hasImage, isBlocked, isFetchingImage, stateOf, swarmBackoffUntil, whyBlocked } from './membership.ts'
import { rankCandidates } from './ranking.ts'
import { CHECKPOINT_FAILURES_UNPROTECTED, checkpointPeriodOf } from './primary.ts'
import type { MissionProtection, MissionSnapshot } from './types.ts'

/** A backup that acknowledged nothing for this many checkpoint intervals (and ACK_STALL_MIN_MS) leaves the mission unprotected. */
const ACK_STALL_INTERVALS = 5
const ACK_STALL_MIN_MS = 5000

export function snapshotOf (ctx: Ctx, m: Mission, now: number): MissionSnapshot {
  const r = m.record
  const self = ctx.self.peerId
  let state: MissionSnapshot['state']
  let reason: string | null = null
  const primaryDead = r.primary !== null && r.primary !== self && stateOf(ctx, now, r.primary) === 'dead'
  if (r.removed) state = 'removed'
  else if (m.container?.status === 'starting') state = 'starting'
  else if (r.primary === self && m.container?.status === 'running') state = 'running'
  // Running only once the primary reported it running under this epoch (its `started` announce).
  else if (r.primary !== null && r.primary !== self && !r.released && !primaryDead) state = r.started ? 'running' : 'starting'
  else {
    const blocked = isBlocked(ctx, now, m) ? whyBlocked(ctx, now, r) : null
    const until = Math.max(swarmBackoffUntil(ctx, m), rankCandidates(ctx, now, r).every(p => p === self) ? m.localBackoffUntil : -Infinity)
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
  const protection = protectionOf(ctx, now, m, state)
  return {
    name: r.mission, deployId: r.deployId, spec: r.spec, epoch: r.epoch, primary: r.primary, backup: r.backup, view: [...r.view], ...(r.envSeal === undefined ? {} : { envSeal: r.envSeal }), state,
    role: r.primary === self ? 'primary' : r.backup === self ? 'backup' : 'member',
    lastCheckpoint: r.checkpoint, replicatedSeq: r.replicatedSeq, held: m.held,
    replicationLagMs: r.primary === self ? m.replicationLags.at(-1) ?? null : null,
    checkpointPeriodMs: r.primary === self && m.container !== null ? checkpointPeriodOf(ctx, m) : null,
    reason, restarts: r.restarts, lastFailure: r.lastFailure, signedBy: r.grant?.key ?? null, protected: protection.reason === null, protection
  }
}

/** How old the backup's state may get at worst (see stalenessBound), over this lineage's checkpoints. */
function stalenessBoundOf (ctx: Ctx, now: number, m: Mission): number {
  const starts = m.checkpointStarts.filter(s => s.epoch === m.record.checkpoint?.epoch).map(s => s.since)
  return stalenessBound(checkpointPeriodOf(ctx, m), starts, m.replicationLags, backupStateAgeMs(ctx, now, m))
}

/** From the start of the newest checkpoint the backup acknowledged; before any of this run's, from the container's start. */
function backupStateAgeMs (ctx: Ctx, now: number, m: Mission): number {
  const acked = m.replicatedStart
  if (acked !== null && acked.epoch === m.record.checkpoint?.epoch && acked.seq === m.record.replicatedSeq) return now - acked.since
  return m.container === null ? 0 : now - m.container.since
}

/** Whether the backup would restore a checkpoint if the primary's board died now, and what is missing if not. */
function protectionOf (ctx: Ctx, now: number, m: Mission, state: MissionSnapshot['state']): MissionProtection {
  const r = m.record
  const backup = r.backup
  const info = backup === null ? undefined : boardInfo(ctx, backup)
  const image = backup !== null && hasImage(ctx, r.spec, backup)
  const checkpointSeq = r.checkpoint !== null ? r.replicatedSeq : null
  const ref = backup === null ? undefined : imageRef(r.spec, info?.arch ?? '')
  let reason: string | null = null
  if (state !== 'running') reason = 'mission not running'
  else if (backup === null) reason = 'no backup'
  else if (stateOf(ctx, now, backup) !== 'alive') reason = `backup ${short(backup)} is ${stateOf(ctx, now, backup)}`
  else if (info?.canCheckpoint !== true) reason = `backup ${short(backup)} cannot restore checkpoints (no CRIU)`
  else if (info.canStore === false) reason = `backup ${short(backup)} cannot store checkpoints (storage: ${info.storageProblem ?? 'failing'})`
  else if (r.checkpoint !== null && info.arch !== r.checkpoint.arch) reason = `backup ${short(backup)} is ${info.arch}, the checkpoint is ${r.checkpoint.arch}`
  else if (!image) reason = isFetchingImage(ctx, r.spec, backup) ? `backup fetching image ${ref ?? '?'}` : `backup lacks image ${ref ?? '?'}`
  else if (r.checkpoint === null) reason = 'no checkpoint yet'
  else if (checkpointSeq === null) reason = 'no checkpoint replicated yet'
  else if (r.primary === ctx.self.peerId && m.checkpointFailures >= CHECKPOINT_FAILURES_UNPROTECTED) {
    reason = `checkpoints fail on the primary (${m.checkpointFailures} in a row: ${m.lastCheckpointError ?? '?'})`
  } else if (r.primary === ctx.self.peerId && m.container !== null && r.checkpoint.seq > checkpointSeq && m.ackWatch.backup === backup &&
      now - m.ackWatch.since > Math.max(ACK_STALL_INTERVALS * r.spec.checkpointIntervalMs, ACK_STALL_MIN_MS)) {
    reason = `backup ${short(backup)} acknowledged no checkpoint for ${seconds(now - m.ackWatch.since)} (it holds #${checkpointSeq}, the newest is #${r.checkpoint.seq})`
  }
  const running = r.primary === ctx.self.peerId && m.container?.status === 'running'
  const stalenessBoundMs = running ? Math.round(stalenessBoundOf(ctx, now, m)) : null
  const withinInterval = stalenessBoundMs === null ? null : stalenessBoundMs <= r.spec.checkpointIntervalMs
  return { backup, image, checkpointSeq, reason, stalenessBoundMs, withinInterval }
}
