// The running primary: its lease on a quorum (self-fence when lost or frozen), storing the image, checkpoint
// scheduling and the backup's acks, reconfiguration (a new epoch for a new view or backup, a two-board partner's
// replacement) and planned moves; and what happens to its container: started, exited or failed, its lease lapsed.
import { describeSelfFence, seconds, type FailureKind, type SelfFenceCause } from './events.ts'
import { MAX_REASON } from './messages.ts'
import { imageRef } from './placement.ts'
import { majority } from './quorum.ts'
import { checkpointPeriod } from './cadence.ts'
import { emit, emitEvent, type Ctx, type LocalOf } from './context.ts'
import { persist } from './persisted.ts'
import type { Mission } from './mission-state.ts'
import {
  canRestore, eligible, eligibleBackup, noteRestarts, pendingVote, quorumReachable, restartBackoffMs, stateOf, swarmBackoffUntil, taskFailed
} from './membership.ts'
import { chooseBackup, desiredLayout, restoresHere } from './ranking.ts'
import { announce, release, stopIfRunning } from './lifecycle.ts'
import { startClaim } from './election.ts'
import type { CheckpointRef, ConsensusMessage, FailureCause, MissionRecord } from './types.ts'

/** How a failure is named in its reason (an exit names how long the container ran). */
const FAILURE_LABELS: Record<Exclude<FailureKind, 'exited'>, string> = {
  containerGone: 'container gone', restoreFailed: 'restore failed', coldStartFailed: 'cold start failed', startTimedOut: 'start timed out'
}

/** How many recent checkpoints the replication lag is measured over. */
const RECENT_CHECKPOINTS = 10
/** Checkpoints failed in a row after which a primary reports itself not protected. */
export const CHECKPOINT_FAILURES_UNPROTECTED = 3

export function tickPrimary (ctx: Ctx, now: number, mission: Mission, frozenMs: number): void {
  const record = mission.record
  mission.electionSince = null
  if (record.view.length >= 3) {
    const alive = record.view.filter(p => stateOf(ctx, now, p) === 'alive').length
    // A machine not ticked for longer than a lease (process or board frozen) saw no quorum meanwhile.
    const frozen = frozenMs >= ctx.config.leaseMs
    if (alive < majority(record.view.length) || frozen) {
      mission.quorumLostSince ??= now
      if (now - mission.quorumLostSince >= ctx.config.selfFenceGraceMs || frozen) {
        const cause: SelfFenceCause = frozen
          ? { kind: 'frozen', frozenMs, leaseMs: ctx.config.leaseMs }
          : { kind: 'quorumLost', alive, members: record.view.length, quorum: majority(record.view.length) }
        emitEvent(ctx, record.mission, { kind: 'selfFenced', cause })
        if (mission.container !== null) emit(ctx, { type: 'stopContainer', mission: record.mission, reason: { kind: 'quorumLost' } })
        mission.container = null
        mission.checkpointInFlight = null
        release(ctx, now, mission)
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
  if (store.since !== null && now - store.since >= ctx.config.imageTimeoutMs) taskFailed(ctx, now, store)
  const image = imageRef(record.spec, ctx.self.arch)
  if (record.started && record.imageCid === null && store.since === null && now >= store.retryAt && image !== undefined) {
    store.since = now
    emit(ctx, { type: 'storeImage', mission: record.mission, epoch: record.epoch, image })
  }

  const inFlight = mission.checkpointInFlight
  if (inFlight !== null && now - inFlight.since >= ctx.config.checkpointTimeoutMs) mission.checkpointInFlight = null
  if (mission.checkpointInFlight === null) {
    const moveTo = mission.pendingMove
    if (moveTo !== null || now - mission.lastCheckpointAt >= checkpointPeriodOf(ctx, mission)) {
      const seq = (record.checkpoint?.seq ?? mission.held?.seq ?? 0) + 1
      mission.checkpointInFlight = { seq, since: now, stop: moveTo !== null }
      emit(ctx, {
        type: 'checkpoint', mission: record.mission, epoch: record.epoch, seq, stop: moveTo !== null,
        parent: mission.held?.cid ?? null, view: [...record.view], intervalMs: record.spec.checkpointIntervalMs
      })
      return
    }
  }

  // Reconfiguration: a new epoch when the view or the backup should change (the container keeps running).
  if (mission.claim === null && mission.pendingMove === null && now - mission.lastClaimAt >= ctx.config.claimTimeoutMs) {
    const { view, backup } = desiredLayout(ctx, now, mission, record, true)
    const backupGone = record.backup !== null && stateOf(ctx, now, record.backup) === 'dead'
    // The backup cannot hold the image any more, or a board that can restore here replaces one that cannot.
    const backupUnfit = record.backup !== null && backup !== record.backup && (!eligibleBackup(ctx, record, record.backup) ||
      (backup !== null && restoresHere(ctx, backup) && !restoresHere(ctx, record.backup)))
    const changed = backupGone || backupUnfit || (backup !== record.backup && (record.backup === null || !view.includes(record.backup))) ||
      view.join(',') !== record.view.join(',') || mission.partnerHeldBack
    if (changed && !pendingVote(ctx, now, mission)) {
      if (quorumReachable(ctx, now, record, ctx.self.peerId)) startClaim(ctx, now, mission)
      else startPartnerReplacement(ctx, now, mission)
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
function startPartnerReplacement (ctx: Ctx, now: number, mission: Mission): void {
  const record = mission.record
  const self = ctx.self.peerId
  const partner = record.view.find(p => p !== self)
  if (record.view.length !== 2 || partner === undefined || !ctx.exitProven.has(partner) || stateOf(ctx, now, partner) !== 'dead') return
  const outside = [...ctx.peers.keys()].filter(p => !record.view.includes(p))
  const joiner = chooseBackup(ctx, now, record, outside)
  if (joiner === null) return
  emitEvent(ctx, record.mission, { kind: 'replacingBackup', partner, joiner })
  startClaim(ctx, now, mission, { partner, joiner })
}

function requestMove (ctx: Ctx, now: number, mission: Mission, to: string): void {
  const record = mission.record
  if (record.primary !== ctx.self.peerId || record.released || mission.container?.status !== 'running') return
  if (to === ctx.self.peerId || stateOf(ctx, now, to) !== 'alive' || !eligible(ctx, record.spec, to)) {
    emitEvent(ctx, record.mission, { kind: 'moveRefused', to, mission: record.mission })
    return
  }
  if (!canRestore(ctx, to, { cid: '', seq: 0, epoch: 0, arch: ctx.self.arch, atMs: 0 })) {
    emitEvent(ctx, record.mission, { kind: 'moveCold', to })
  }
  mission.pendingMove = to
  emitEvent(ctx, record.mission, { kind: 'moveStarted', to })
  ctx.tick(now)
}

export function onCheckpointTaken (ctx: Ctx, now: number, mission: Mission, epoch: number, seq: number, cid: string): void {
  const record = mission.record
  const inFlight = mission.checkpointInFlight
  // The epoch may have moved on by a reconfiguration while the checkpoint ran: same container, still ours.
  if (inFlight === null || inFlight.seq !== seq || epoch > record.epoch || record.primary !== ctx.self.peerId || record.released) return
  mission.checkpointInFlight = null
  if (mission.checkpointFailures >= CHECKPOINT_FAILURES_UNPROTECTED) emitEvent(ctx, record.mission, { kind: 'checkpointsRecovered', seq, failures: mission.checkpointFailures })
  mission.checkpointFailures = 0
  mission.lastCheckpointError = null
  // The interval runs from the start of a checkpoint, so a slow dump does not stretch the period by its own length.
  mission.lastCheckpointAt = inFlight.since
  // Keyed as the backup's ack names it (the checkpoint's own epoch, which a reconfiguration during the dump leaves behind).
  mission.checkpointStarts = [...mission.checkpointStarts.slice(-(RECENT_CHECKPOINTS - 1)), { seq, epoch, since: inFlight.since }]
  const ref: CheckpointRef = { cid, seq, epoch, arch: ctx.self.arch, atMs: now }
  mission.held = ref
  record.checkpoint = ref
  if (inFlight.stop && mission.pendingMove !== null) {
    mission.container = null
    record.released = true
    record.handoffTo = mission.pendingMove
    mission.pendingMove = null
    emitEvent(ctx, record.mission, { kind: 'handingOver', seq, to: record.handoffTo })
  }
  persist(ctx)
  announce(ctx, now, mission)
}

export function onAck (ctx: Ctx, now: number, from: string, msg: Extract<ConsensusMessage, { type: 'ack' }>): void {
  const mission = ctx.missions.get(msg.mission)
  if (mission === undefined) return
  const record = mission.record
  if (record.primary !== ctx.self.peerId || msg.epoch !== record.epoch || from !== record.backup) return
  if (record.checkpoint === null || msg.checkpointEpoch !== record.checkpoint.epoch) return
  if (record.replicatedSeq !== null && msg.seq <= record.replicatedSeq) return
  record.replicatedSeq = msg.seq
  mission.ackWatch = { backup: from, since: now }
  const started = mission.checkpointStarts.find(s => s.seq === msg.seq && s.epoch === msg.checkpointEpoch)
  if (started !== undefined) mission.replicationLags = [...mission.replicationLags.slice(-(RECENT_CHECKPOINTS - 1)), now - started.since]
  mission.replicatedStart = started ?? null
}

/** How long after the start of one checkpoint the next one starts (see checkpointPeriod). */
export function checkpointPeriodOf (ctx: Ctx, mission: Mission): number {
  return checkpointPeriod(mission.record.spec.checkpointIntervalMs, mission.replicationLags, ctx.config.checkpointSlackMs)
}

/** A start or restore failed, or the container exited on its own (`cause` null): back off, count, release. */
export function onFailure (ctx: Ctx, now: number, mission: Mission, epoch: number, detail: string, cause: FailureCause | null, known?: 'containerGone' | 'startTimedOut'): void {
  const container = mission.container
  if (container === null || container.epoch > epoch) return
  const record = mission.record
  const self = ctx.self.peerId
  const ranMs = container.status === 'running' ? now - container.since : 0
  // A failure after a long run starts the count again.
  const first = ranMs >= ctx.config.restartResetMs
  mission.container = null
  mission.checkpointInFlight = null
  const failure: FailureKind = known ?? (cause === null ? 'exited' : container.kind === 'restore' ? 'restoreFailed' : 'coldStartFailed')
  const what = failure === 'exited' ? `container exited after ${seconds(ranMs)}` : FAILURE_LABELS[failure]
  const boardLacks = cause === 'image-missing' || cause === 'env-missing'
  // (A restore refused for want of the env values made the next start cold; the board, backup again a minute later
  // and holding the newest checkpoint, could not claim with it, and a spare restored 1761 ticks older state, chaos
  // seed 25.)
  const coldNext = container.kind === 'restore' && cause !== null && !boardLacks
  if (coldNext) mission.coldStartNext = true
  mission.localFailures = first ? 1 : mission.localFailures + 1
  const localWait = restartBackoffMs(ctx, mission.localFailures)
  mission.localBackoffUntil = now + localWait
  const reason = `${what}: ${detail}${cause === null ? '' : ` (${cause})`}`.slice(0, MAX_REASON)
  let wait = localWait
  if (record.primary === self && !record.released) {
    const before = record.restarts
    // A board without the image or the env values is the board's problem, not the mission's: not counted as a restart.
    if (!boardLacks) record.restarts = first ? 1 : record.restarts + 1
    record.lastFailure = { board: self, reason, at: now, epoch: record.epoch }
    noteRestarts(ctx, now, mission, before)
    wait = Math.max(wait, swarmBackoffUntil(ctx, mission) - now)
    release(ctx, now, mission)
  }
  emitEvent(ctx, record.mission, { kind: 'failed', failure, reason, coldNext, restarts: record.restarts, waitMs: wait, localWaitMs: localWait })
}

/** The two-board partner announced it holds back its claim alone: a new epoch with its vote re-arms it. */
export function onPartnerHeldBack (ctx: Ctx, from: string, incoming: MissionRecord): void {
  const mission = ctx.missions.get(incoming.mission)
  const record = mission?.record
  if (mission !== undefined && record !== undefined && record.primary === ctx.self.peerId &&
      !record.released && record.epoch === incoming.epoch && record.deployId === incoming.deployId && record.view.includes(from)) {
    mission.partnerHeldBack = true
  }
}

/** A move message for this deployment: acted on if this board is its running primary. */
export function onMoveMessage (ctx: Ctx, now: number, msg: Extract<ConsensusMessage, { type: 'move' }>): void {
  const mission = ctx.missions.get(msg.mission)
  if (mission !== undefined && mission.record.deployId === msg.deployId) requestMove(ctx, now, mission, msg.to)
}

/** The operator asked here for a move: the primary starts it, any other board passes the request on. */
export function onLocalMove (ctx: Ctx, now: number, mission: Mission, ev: LocalOf<'move'>): void {
  const record = mission.record
  if (record.primary === ctx.self.peerId) requestMove(ctx, now, mission, ev.to)
  else emit(ctx, { type: 'publish', message: { type: 'move', mission: record.mission, deployId: record.deployId, to: ev.to, ...(ev.grant === undefined ? {} : { grant: ev.grant }) } })
}

export function onContainerStarted (ctx: Ctx, now: number, mission: Mission, ev: LocalOf<'containerStarted'>): void {
  const record = mission.record
  if (mission.container?.epoch === ev.epoch && mission.container.status === 'starting') {
    mission.container = { ...mission.container, status: 'running', since: now }
    mission.lastCheckpointAt = now
    if (record.primary === ctx.self.peerId && !record.released && record.epoch === ev.epoch) {
      record.started = true
      persist(ctx)
      announce(ctx, now, mission)
    }
    emitEvent(ctx, record.mission, { kind: 'running', epoch: ev.epoch })
  }
}

export function onLeaseLapsed (ctx: Ctx, now: number, mission: Mission, ev: LocalOf<'leaseLapsed'>): void {
  const record = mission.record
  // The board's failure, not the mission's: no restart counted, no swarm-wide back-off. Named as the last failure,
  // the released board ranks last, so a healthy board takes over (a starved board that claimed again first
  // restored for 4 s, lapsed again, and went round 4 epochs).
  if (mission.container !== null && mission.container.epoch <= ev.epoch && record.primary === ctx.self.peerId && !record.released) {
    const cause = { kind: 'leaseLapsed' as const, lateMs: ev.lateMs }
    const reason = describeSelfFence(cause)
    emitEvent(ctx, record.mission, { kind: 'selfFenced', cause })
    stopIfRunning(ctx, mission, { kind: 'leaseLapsed' })
    record.lastFailure = { board: ctx.self.peerId, reason, at: now, epoch: record.epoch }
    mission.localBackoffUntil = now + ctx.config.restartBackoffMs
    release(ctx, now, mission)
  }
}

export function onImageStored (ctx: Ctx, now: number, mission: Mission, ev: LocalOf<'imageStored'>): void {
  const record = mission.record
  if (mission.imageStore.since !== null) mission.imageStore = { cid: null, since: null, failures: 0, retryAt: -Infinity }
  if (record.primary === ctx.self.peerId && !record.released && ev.epoch <= record.epoch && record.imageCid === null) {
    record.imageCid = ev.cid
    record.imageArch = ctx.self.arch
    persist(ctx)
    emitEvent(ctx, record.mission, { kind: 'imageStored', image: imageRef(record.spec, ctx.self.arch) ?? null, cid: ev.cid })
    announce(ctx, now, mission)
  }
}

export function onImageStoreFailed (ctx: Ctx, now: number, mission: Mission, ev: LocalOf<'imageStoreFailed'>): void {
  if (mission.imageStore.since !== null) {
    const wait = taskFailed(ctx, now, mission.imageStore)
    emitEvent(ctx, mission.record.mission, { kind: 'imageStoreFailed', error: ev.error, retryMs: wait })
  }
}

export function onCheckpointFailed (ctx: Ctx, now: number, mission: Mission, ev: LocalOf<'checkpointFailed'>): void {
  const record = mission.record
  // The container is gone without an exit event (it was stopped or died while this daemon was frozen): an exit,
  // not a failing checkpoint. (Simulated seed 3157: a primary retried checkpoints of a vanished container for
  // 15 s, a move waited on it, and the mission ran nowhere.)
  if (ev.noContainer === true && mission.container !== null && mission.container.epoch <= ev.epoch && mission.checkpointInFlight?.seq === ev.seq) {
    mission.checkpointInFlight = null
    onFailure(ctx, now, mission, ev.epoch, 'the container is gone (found by a checkpoint)', null, 'containerGone')
    return
  }
  if (mission.checkpointInFlight?.seq === ev.seq) {
    if (mission.checkpointInFlight.stop) emitEvent(ctx, record.mission, { kind: 'moveAborted', error: ev.error })
    mission.checkpointInFlight = null
    mission.lastCheckpointAt = now
    mission.checkpointFailures++
    mission.lastCheckpointError = ev.error
    if (mission.checkpointFailures === CHECKPOINT_FAILURES_UNPROTECTED || mission.checkpointFailures % 30 === 0) {
      emitEvent(ctx, record.mission, { kind: 'checkpointsFailing', failures: mission.checkpointFailures, error: ev.error, since: record.checkpoint?.seq ?? null })
    }
  }
}

/** A container that did not start within startTimeoutMs is stopped and counted as a failed start. */
export function expireStart (ctx: Ctx, now: number, mission: Mission): void {
  if (mission.container !== null && mission.container.status === 'starting' && now - mission.container.since >= ctx.config.startTimeoutMs) {
    emit(ctx, { type: 'stopContainer', mission: mission.record.mission, reason: { kind: 'startTimedOut' } })
    onFailure(ctx, now, mission, mission.container.epoch, `no answer after ${seconds(ctx.config.startTimeoutMs)}`, 'other', 'startTimedOut')
  }
}
