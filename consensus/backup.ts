// The backup (and a move's target): fetching the newest checkpoint from the primary, holding it, acknowledging it
// once it could restore it; and the image fetched ahead of need by the backup and the next boards in rank order.
import { compareCheckpoints } from './messages.ts'
import { imageRef } from './placement.ts'
import { backoffMs } from './cadence.ts'
import { emit, emitEvent, type Ctx, type LocalOf } from './context.ts'
import { persist } from './persisted.ts'
import type { Mission } from './mission-state.ts'
import { boardInfo, canPlace, hasImage, stateOf, taskFailed } from './membership.ts'
import { fetchRank } from './ranking.ts'
import type { CheckpointRef, MissionRecord } from './types.ts'

/**
 * The backup, or a move's target, fetches the record's checkpoint when it is newer than the one it holds; any board
 * but the primary acknowledges what it holds and fetches the image when its turn comes. `record` is the record as the
 * tick began (an election won during the tick replaced mission.record, and this part still reads the one before).
 */
export function tickBackup (ctx: Ctx, now: number, mission: Mission, record: MissionRecord): void {
  const self = ctx.self.peerId
  if ((record.backup === self || record.handoffTo === self) && record.checkpoint !== null &&
      compareCheckpoints(record.checkpoint, mission.held) > 0 && record.primary !== self) {
    const inFlight = mission.fetchInFlight
    const due = inFlight === null || compareCheckpoints(record.checkpoint, inFlight.ref) > 0 || now - inFlight.since >= ctx.config.fetchRetryMs
    // The back-off is for the epoch whose providers failed: after a takeover the new primary serves what it took.
    if (due && (now >= mission.fetchRetryAt || record.epoch > mission.fetchFailedEpoch)) {
      mission.fetchInFlight = { ref: record.checkpoint, since: now }
      emit(ctx, { type: 'fetchCheckpoint', mission: record.mission, checkpoint: record.checkpoint, providers: record.primary === null ? [] : [record.primary] })
    }
  }
  if (record.primary !== self) {
    maybeAck(ctx, mission)
    maybeFetchImage(ctx, now, mission)
  }
}

export function onFetched (ctx: Ctx, mission: Mission, ref: CheckpointRef): void {
  // A fetch that newer ones superseded still brought a complete checkpoint: it is held (the store retains it, and
  // dropping it here left the machine holding one the store had collected as older than the last `keep`). Only one
  // from a later epoch than the record (an earlier deployment's) is not.
  if (ref.epoch > mission.record.epoch) return
  if (mission.fetchInFlight?.ref.cid === ref.cid) mission.fetchInFlight = null
  mission.fetchFailures = 0
  mission.fetchRetryAt = -Infinity
  if (compareCheckpoints(ref, mission.held) <= 0) return
  mission.held = ref
  // A restore that failed here was of an older checkpoint: this verified one is tried before a cold start.
  mission.coldStartNext = false
  persist(ctx)
  maybeAck(ctx, mission)
}

/**
 * The backup acknowledges the checkpoint it holds, once per record epoch and checkpoint, and only while it holds
 * the image: replicatedSeq counts only checkpoints it could restore. An image that arrives later releases the ack.
 */
function maybeAck (ctx: Ctx, mission: Mission): void {
  const record = mission.record
  const self = ctx.self.peerId
  const held = mission.held
  if (held === null || (record.backup !== self && record.handoffTo !== self) || record.removed) return
  if (record.checkpoint === null || held.epoch !== record.checkpoint.epoch || !hasImage(ctx, record.spec, self)) return
  const key = `${record.epoch}/${held.epoch}.${held.seq}`
  if (mission.lastAck === key) return
  mission.lastAck = key
  emit(ctx, { type: 'publish', message: { type: 'ack', mission: record.mission, epoch: record.epoch, cid: held.cid, seq: held.seq, checkpointEpoch: held.epoch } })
}

/**
 * The backup, and the next two boards in rank order, fetch the image from the swarm when they lack it and the
 * record names the CID a primary of their architecture stored. Failures are retried after 1 s doubling to 60 s.
 */
function maybeFetchImage (ctx: Ctx, now: number, mission: Mission): void {
  const record = mission.record
  const self = ctx.self.peerId
  const task = mission.imageFetch
  const cid = record.imageCid
  if (cid === null || record.imageArch !== ctx.self.arch || !ctx.self.canRun || !canPlace(ctx, record.spec, self)) return
  const image = imageRef(record.spec, ctx.self.arch)
  if (image === undefined) return
  if ((ctx.self.images ?? []).includes(image)) {
    mission.imageHeldAt = now
    if (task.cid !== null || task.failures > 0) mission.imageFetch = { cid: null, since: null, failures: 0, retryAt: -Infinity }
    return
  }
  if (now - mission.imageHeldAt < ctx.config.imageRefetchHoldMs) return
  if (task.cid !== cid) mission.imageFetch = { cid, since: null, failures: 0, retryAt: -Infinity }
  const current = mission.imageFetch
  if ((ctx.self.fetchingImages ?? []).includes(image)) return
  if (current.since !== null) {
    if (now - current.since < ctx.config.imageTimeoutMs) return
    taskFailed(ctx, now, current)
  }
  if (now < current.retryAt) return
  if (record.backup !== self) {
    const rank = fetchRank(ctx, now, record)
    if (!rank.includes(self)) return
    // The backup's copy comes first (it makes the mission protected): the next candidates fetch once it holds the
    // image, or, with no usable backup, one after the other in rank order; each then has one more provider.
    const backup = record.backup !== null && stateOf(ctx, now, record.backup) === 'alive' &&
      boardInfo(ctx, record.backup)?.arch === record.imageArch ? record.backup : null
    const ahead = backup !== null ? [backup] : rank.slice(0, rank.indexOf(self))
    if (ahead.some(p => !hasImage(ctx, record.spec, p))) return
  }
  const providers = [record.primary, ...ctx.peers.keys()].filter((p): p is string => p !== null && p !== self &&
    stateOf(ctx, now, p) === 'alive' && boardInfo(ctx, p)?.arch === ctx.self.arch && hasImage(ctx, record.spec, p))
  // The image lives in the boards' Docker; the swarm's IPFS only carries it. Removed from every Docker, it is not
  // brought back from blocks some board still holds: the mission is blocked until a board has it again.
  if (providers.length === 0) return
  current.since = now
  emit(ctx, { type: 'fetchImage', mission: record.mission, image, cid, providers: [...new Set(providers)] })
  emitEvent(ctx, record.mission, { kind: 'fetchingImage', image, as: record.backup === self ? 'backup' : 'candidate' })
}

export function onFetchFailed (ctx: Ctx, now: number, mission: Mission, ev: LocalOf<'fetchFailed'>): void {
  const record = mission.record
  if (mission.fetchInFlight?.ref.cid === ev.cid) {
    mission.fetchInFlight = null
    mission.fetchFailures++
    const wait = backoffMs(mission.fetchFailures, ctx.config.fetchBackoffMs, ctx.config.fetchBackoffMaxMs)
    mission.fetchRetryAt = now + wait
    mission.fetchFailedEpoch = record.epoch
    if (mission.fetchFailures === 3 || mission.fetchFailures % 10 === 0) {
      emitEvent(ctx, record.mission, { kind: 'fetchesFailing', failures: mission.fetchFailures, error: ev.error, retryMs: wait })
    }
  }
}

export function onImageFetchFailed (ctx: Ctx, now: number, mission: Mission, ev: LocalOf<'imageFetchFailed'>): void {
  const record = mission.record
  if (mission.imageFetch.since !== null && mission.imageFetch.cid === ev.cid) {
    const wait = taskFailed(ctx, now, mission.imageFetch)
    emitEvent(ctx, record.mission, { kind: 'imageFetchFailed', image: imageRef(record.spec, ctx.self.arch) ?? null, error: ev.error, retryMs: wait })
  }
}
