// The dispatch, in the spirit of raft's `step`: a tick of a mission is handled by this board's role for it (a
// tombstone, the running primary, a board electing a new primary, a follower of a live one; the backup's part runs
// for every board but the primary), a received message and a local event by the module that owns its kind.
import { emitEvent, type Ctx } from './context.ts'
import type { Mission } from './mission-state.ts'
import { primaryGone } from './membership.ts'
import { announce } from './lifecycle.ts'
import { expireClaim, onAbandon, onClaim, onVote, releaseVoteIfOver, tickElection } from './election.ts'
import {
  expireStart, onAck, onCheckpointFailed, onCheckpointTaken, onContainerStarted, onFailure, onImageStored, onImageStoreFailed,
  onLeaseLapsed, onLocalMove, onMoveMessage, onPartnerHeldBack, tickPrimary
} from './primary.ts'
import { onFetched, onFetchFailed, onImageFetchFailed, tickBackup } from './backup.ts'
import { deploy, onAnnounce, onEnvSeal, onFence, onLocalRemove, onRegrant, onRemove } from './records.ts'
import type { ConsensusMessage, LocalEvent, MissionRecord } from './types.ts'

/**
 * This board's role for a mission, by its record: `primary` while it holds the epoch (not released), `electing` while
 * no live primary does (none, released, or gone), `follower` of a live primary, `tombstone` once removed.
 */
export type Role = 'tombstone' | 'primary' | 'electing' | 'follower'

function roleOf (ctx: Ctx, now: number, record: MissionRecord): Role {
  if (record.removed) return 'tombstone'
  if (record.primary === ctx.self.peerId && !record.released) return 'primary'
  if (record.primary === null || record.released || primaryGone(ctx, now, record.primary)) return 'electing'
  return 'follower'
}

/**
 * One mission's tick. The role is read again after the timeouts and the primary's part, which may release the epoch;
 * every part reads the record as the tick began (an election won during the tick replaces mission.record).
 */
export function tickMission (ctx: Ctx, now: number, mission: Mission, frozenMs: number): void {
  const record = mission.record
  if (roleOf(ctx, now, record) === 'tombstone') {
    // A tombstone is not re-announced periodically: it is announced once when learned, and again (without the
    // spec) as the answer to an announce or claim of a live copy, so no copy resurrects.
    if (mission.lastAnnounceAt === -Infinity) announce(ctx, now, mission)
    return
  }
  expireClaim(ctx, now, mission)
  expireStart(ctx, now, mission)
  if (roleOf(ctx, now, record) === 'primary') tickPrimary(ctx, now, mission, frozenMs)
  switch (roleOf(ctx, now, record)) {
    case 'electing':
      tickElection(ctx, now, mission, record)
      break
    default:
      // A primary holds the mission (this board or another): no election runs here, nothing is blocked or stale.
      mission.electionSince = null
      mission.unplaceableSince = null
      mission.staleSince = null
  }
  tickBackup(ctx, now, mission, record)
  if (now - mission.lastAnnounceAt >= ctx.config.announceIntervalMs) announce(ctx, now, mission)
}

/** A message received from `from` (not this board, not revoked): to the module that owns its kind. */
export function stepMessage (ctx: Ctx, now: number, from: string, msg: ConsensusMessage): void {
  switch (msg.type) {
    case 'announce':
      releaseVoteIfOver(ctx, now, from, msg.claim.votedEpoch, msg.claim.open, msg.record)
      onAnnounce(ctx, now, from, msg.record)
      if (msg.claim.heldBack === true) onPartnerHeldBack(ctx, from, msg.record)
      break
    case 'claim': onClaim(ctx, now, from, msg); break
    case 'vote': onVote(ctx, now, from, msg); break
    case 'ack': onAck(ctx, now, from, msg); break
    case 'fence': onFence(ctx, now, from, msg); break
    case 'remove': onRemove(ctx, msg.mission, msg.deployId, { by: 'message', from }, msg.grant); break
    case 'abandon': onAbandon(ctx, now, from, msg); break
    case 'move': onMoveMessage(ctx, now, msg); break
  }
  ctx.missions.get(msg.type === 'announce' ? msg.record.mission : msg.mission)?.heardFrom.set(from, now)
}

/** A local event (the operator's requests here, the results of actions): to the module that owns its kind. */
export function stepLocal (ctx: Ctx, now: number, ev: LocalEvent): void {
  if (ev.type === 'deploy') { deploy(ctx, now, ev.spec, ev.deployId, ev.grant, ev.envSeal); return }
  const mission = ctx.missions.get(ev.mission)
  if (mission === undefined) {
    if (ev.type === 'remove' || ev.type === 'move') emitEvent(ctx, ev.mission, { kind: 'unknownMission', mission: ev.mission })
    return
  }
  switch (ev.type) {
    case 'remove': onLocalRemove(ctx, mission, ev); break
    case 'regrant': onRegrant(ctx, now, mission, ev); break
    case 'envSeal': onEnvSeal(ctx, now, mission, ev); break
    case 'move': onLocalMove(ctx, now, mission, ev); break
    case 'containerStarted': onContainerStarted(ctx, now, mission, ev); break
    case 'containerExited': onFailure(ctx, now, mission, ev.epoch, ev.reason, null); break
    case 'leaseLapsed': onLeaseLapsed(ctx, now, mission, ev); break
    case 'restoreFailed':
    case 'startFailed':
      onFailure(ctx, now, mission, ev.epoch, ev.error, ev.cause ?? 'other')
      break
    case 'imageStored': onImageStored(ctx, now, mission, ev); break
    case 'imageStoreFailed': onImageStoreFailed(ctx, now, mission, ev); break
    case 'imageFetchFailed': onImageFetchFailed(ctx, now, mission, ev); break
    case 'checkpointTaken': onCheckpointTaken(ctx, now, mission, ev.epoch, ev.seq, ev.cid); break
    case 'checkpointFailed': onCheckpointFailed(ctx, now, mission, ev); break
    case 'checkpointFetched': onFetched(ctx, mission, ev.checkpoint); break
    case 'fetchFailed': onFetchFailed(ctx, now, mission, ev); break
  }
  ctx.tick(now)
}
