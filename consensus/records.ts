// Records and authority: adopting what others announce (who may speak for a newer epoch, what a member may change
// within one, deployments ordered by the operator's grants), fences, removals (tombstones) and deployments.
import type { MissionSpec } from '../manifest/manifest.ts'
import { compareCheckpoints, tombstoneSpec } from './messages.ts'
import type { OperatorGrant } from './authority.ts'
import { emit, emitEvent, refuse, type Ctx, type LocalOf } from './context.ts'
import { persist } from './persisted.ts'
import { MAX_CLAIM_STEP, MAX_EPOCH, newerGrant, newMission, sameFailure, type Mission, type Removal } from './mission-state.ts'
import { noteRestarts, proofHolds, stateOf } from './membership.ts'
import { adoptedPrimaryCheck, announce, release, stopIfRunning } from './lifecycle.ts'
import type { ConsensusMessage, EnvSeal, MissionRecord } from './types.ts'

export function onAnnounce (ctx: Ctx, now: number, from: string, incoming: MissionRecord): void {
  if (incoming.epoch > MAX_EPOCH) { refuse(ctx, 'epoch-out-of-range'); return }
  // The epoch's primary is a member of its view and so is its backup (see checkWon in election.ts): anything else is forged.
  if ((incoming.primary !== null && !incoming.view.includes(incoming.primary)) || (incoming.backup !== null && !incoming.view.includes(incoming.backup))) {
    refuse(ctx, 'outside-view')
    return
  }
  const mission = ctx.missions.get(incoming.mission)
  if (mission === undefined) {
    if (incoming.removed) return
    // Nothing known to check it against: its proof must hold on its own (see firstLook).
    if (!firstLook(ctx, incoming)) { refuse(ctx, 'no-quorum-proof'); return }
    const adopted = newMission({ record: incoming, votedEpoch: incoming.epoch, votedFor: null, held: null }, now)
    noteRestarts(ctx, now, adopted, 0)
    ctx.missions.set(incoming.mission, adopted)
    persist(ctx)
    adoptedPrimaryCheck(ctx, now, adopted)
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
      if (signed && !newer && incoming.epoch > record.epoch) refuse(ctx, 'older-deployment')
      mission.lastAnnounceAt = -Infinity
      return
    }
    if (!incoming.removed && !firstLook(ctx, incoming)) { refuse(ctx, 'no-quorum-proof'); return }
    stopIfRunning(ctx, mission, { kind: 'replaced', deployId: incoming.deployId })
    ctx.missions.set(incoming.mission, newMission({ record: incoming, votedEpoch: Math.max(mission.votedEpoch, incoming.epoch), votedFor: mission.votedFor, held: null }, now))
    persist(ctx)
    return
  }
  // A re-signed deployment (a key rotation): the newer grant replaces the older one whoever relays it (the gossip
  // validator checked it names this deployment and spec, signed by a trusted key).
  if (!record.removed && !incoming.removed && incoming.grant !== undefined && newerGrant(incoming.grant, record.grant)) {
    record.grant = incoming.grant
    persist(ctx)
  }
  if (incoming.removed && !record.removed) { onRemove(ctx, record.mission, record.deployId, { by: 'announce', from }, incoming.removal); return }
  if (record.removed) {
    // A live copy of a removed mission is answered with the tombstone (at most twice per announce interval).
    if (!incoming.removed && now - mission.lastAnnounceAt >= ctx.config.announceIntervalMs / 2) announce(ctx, now, mission)
    return
  }
  if (incoming.epoch > record.epoch) {
    const speaker = speaksForNewEpoch(ctx, now, mission, from, incoming)
    // A member speaks for the epoch only with its proof: the signed votes of its election (quorum-proof.ts), checked
    // against the record known here (none when no other member of its view is alive: the proof holds on its own).
    const anchor = { ...record, vouched: vouchersOf(ctx, mission, from, incoming), self: ctx.self.peerId }
    const unproven = speaker !== null && !proofHolds(ctx, speaker === 'alone' ? null : anchor, record.spec, claimOf(incoming), incoming.proof)
    if (speaker === null || unproven) {
      refuse(ctx, speaker === null ? 'not-a-member' : 'no-quorum-proof')
      // Asked of the members instead: they answer a record older than theirs with theirs (a replaced two-board
      // primary heard its successor's epoch first from a board outside its view, and learned it a second later).
      if (now - mission.lastAnnounceAt >= ctx.config.announceIntervalMs / 4) announce(ctx, now, mission)
      return
    }
    adoptHigherEpoch(ctx, now, mission, incoming)
  } else if (incoming.epoch === record.epoch) {
    // Within an epoch only its members relay changes (the primary writes them, the others pass them on).
    if (!record.view.includes(from)) {
      if (wouldChange(ctx, record, incoming)) refuse(ctx, 'not-a-member')
      return
    }
    let changed = false
    const notMine = record.primary !== ctx.self.peerId
    if (compareCheckpoints(incoming.checkpoint, record.checkpoint) > 0) { record.checkpoint = incoming.checkpoint; changed = true }
    if (incoming.replicatedSeq !== null && (record.replicatedSeq === null || incoming.replicatedSeq > record.replicatedSeq)) record.replicatedSeq = incoming.replicatedSeq
    if (incoming.started && !record.started && notMine) { record.started = true; changed = true }
    if (incoming.imageCid !== null && record.imageCid === null) { record.imageCid = incoming.imageCid; record.imageArch = incoming.imageArch; changed = true }
    if (newerSeal(incoming.envSeal, record.envSeal)) { record.envSeal = incoming.envSeal; changed = true }
    // Only the epoch's primary writes a failure, together with the release: take it as it comes.
    if (incoming.released && notMine && (incoming.restarts !== record.restarts || !sameFailure(incoming.lastFailure, record.lastFailure))) {
      const before = record.restarts
      record.restarts = incoming.restarts
      record.lastFailure = incoming.lastFailure
      noteRestarts(ctx, now, mission, before)
      if (incoming.lastFailure !== null) emitEvent(ctx, record.mission, { kind: 'failureLearned', board: incoming.lastFailure.board, reason: incoming.lastFailure.reason, restarts: incoming.restarts })
      changed = true
    }
    if (incoming.released && !record.released && notMine) { record.released = true; record.handoffTo = incoming.handoffTo; changed = true }
    if (changed) persist(ctx)
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
function speaksForNewEpoch (ctx: Ctx, now: number, mission: Mission, from: string, incoming: MissionRecord): 'member' | 'alone' | null {
  const record = mission.record
  if (record.view.includes(from)) return 'member'
  if (incoming.primary === from && mission.votedFor === from && mission.votedEpoch === incoming.epoch) return 'member'
  return record.view.some(p => p !== ctx.self.peerId && stateOf(ctx, now, p) !== 'dead') ? null : 'alone'
}

/**
 * Who vouches here for a newer record besides its proof's signers: this board, if it granted that epoch to that
 * primary, and the members of its known view that announced that record (kept for the newest such record only).
 */
function vouchersOf (ctx: Ctx, mission: Mission, from: string, incoming: MissionRecord): Set<string> {
  const key = `${incoming.epoch}/${incoming.primary ?? ''}`
  if (mission.vouches?.key !== key) {
    if (mission.vouches !== null && Number(mission.vouches.key.split('/')[0]) > incoming.epoch) return new Set()
    mission.vouches = { key, from: new Set() }
  }
  if (mission.record.view.includes(from)) mission.vouches.from.add(from)
  const vouched = new Set(mission.vouches.from)
  if (mission.votedEpoch === incoming.epoch && mission.votedFor === incoming.primary) vouched.add(ctx.self.peerId)
  return vouched
}

/** What a record's proof must prove: its epoch elected its primary in its deployment, with its view. */
function claimOf (record: MissionRecord): { mission: string, deployId: string, epoch: number, candidate: string, view: string[] } {
  return { mission: record.mission, deployId: record.deployId, epoch: record.epoch, candidate: record.primary ?? '', view: record.view }
}

/**
 * A record of a deployment this board did not know: a deploy record (no primary: the operator's grant, checked at
 * the gossip edge, is its justification) or an elected epoch whose proof holds on its own (this board knows no view
 * to anchor it to, see proves in quorum-proof.ts).
 */
function firstLook (ctx: Ctx, incoming: MissionRecord): boolean {
  return incoming.primary === null || proofHolds(ctx, null, incoming.spec, claimOf(incoming), incoming.proof)
}

/** A same-epoch record would change this one (see onAnnounce): refusing it is worth counting. */
function wouldChange (ctx: Ctx, record: MissionRecord, incoming: MissionRecord): boolean {
  return compareCheckpoints(incoming.checkpoint, record.checkpoint) > 0 || (incoming.started && !record.started) ||
    (incoming.released && !record.released) || (incoming.imageCid !== null && record.imageCid === null) ||
    (incoming.replicatedSeq !== null && (record.replicatedSeq === null || incoming.replicatedSeq > record.replicatedSeq)) ||
    newerSeal(incoming.envSeal, record.envSeal)
}

function adoptHigherEpoch (ctx: Ctx, now: number, mission: Mission, incoming: MissionRecord): void {
  const self = ctx.self.peerId
  if (mission.claim !== null && mission.claim.epoch <= incoming.epoch) mission.claim = null
  if (mission.container !== null && incoming.primary !== self) {
    emit(ctx, { type: 'stopContainer', mission: incoming.mission, reason: { kind: 'newerEpoch', epoch: incoming.epoch, primary: incoming.primary } })
    emitEvent(ctx, incoming.mission, { kind: 'fenced', stoppedEpoch: mission.container.epoch, epoch: incoming.epoch, primary: incoming.primary })
    mission.container = null
    mission.checkpointInFlight = null
  }
  const before = mission.record.restarts
  // A re-seal this board learned within the old epoch stays when the new epoch's record carries an older one.
  const seal = newerSeal(mission.record.envSeal, incoming.envSeal) ? mission.record.envSeal : incoming.envSeal
  mission.record = seal === undefined ? incoming : { ...incoming, envSeal: seal }
  mission.vouches = null
  mission.refusingSince = null
  noteRestarts(ctx, now, mission, before)
  mission.votedEpoch = Math.max(mission.votedEpoch, incoming.epoch)
  mission.pendingMove = null
  persist(ctx)
  adoptedPrimaryCheck(ctx, now, mission)
}

export function onFence (ctx: Ctx, now: number, from: string, msg: Extract<ConsensusMessage, { type: 'fence' }>): void {
  const mission = ctx.missions.get(msg.mission)
  if (mission === undefined || msg.target !== ctx.self.peerId || mission.container === null || mission.container.epoch >= msg.epoch) return
  // From a member of the view (the epoch's winner joined it when it won), or from the primary of the epoch this
  // peer adopted; an outsider's fence (repeated each second) stopped a running primary for half its time.
  const record = mission.record
  const fromPrimary = record.epoch >= msg.epoch && record.primary === from
  if (msg.epoch > MAX_EPOCH || (!fromPrimary && !record.view.includes(from)) || msg.epoch > Math.max(record.epoch, mission.votedEpoch) + MAX_CLAIM_STEP) {
    refuse(ctx, 'fence-not-authorized')
    return
  }
  // A member fences only with the proof of the epoch it won (the primary of an epoch adopted here was proven then).
  if (!fromPrimary && !proofHolds(ctx, record, record.spec, { mission: msg.mission, deployId: record.deployId, epoch: msg.epoch, candidate: from }, msg.proof)) {
    refuse(ctx, 'no-quorum-proof')
    return
  }
  emitEvent(ctx, msg.mission, { kind: 'fenceReceived', epoch: msg.epoch, stoppedEpoch: mission.container.epoch })
  stopIfRunning(ctx, mission, { kind: 'fenced', epoch: msg.epoch })
  mission.votedEpoch = Math.max(mission.votedEpoch, msg.epoch)
  release(ctx, now, mission)
  persist(ctx)
}

export function onRemove (ctx: Ctx, name: string, deployId: string, removal: Removal, grant?: OperatorGrant): void {
  const mission = ctx.missions.get(name)
  if (mission === undefined || mission.record.deployId !== deployId || mission.record.removed) return
  stopIfRunning(ctx, mission, { kind: 'removed', ...removal })
  mission.record.removed = true
  if (grant !== undefined) mission.record.removal = grant
  // A tombstone keeps no payload: gossip carries it small, disk keeps it small. Nor its epoch's proof: the
  // operator's removal justifies it.
  mission.record.spec = tombstoneSpec(name)
  delete mission.record.proof
  delete mission.record.envSeal
  mission.claim = null
  mission.held = null
  mission.fetchInFlight = null
  persist(ctx)
  emit(ctx, { type: 'forget', mission: name })
  emitEvent(ctx, name, { kind: 'removed', ...removal })
  mission.lastAnnounceAt = -Infinity
}

export function deploy (ctx: Ctx, now: number, spec: MissionSpec, deployId?: string, grant?: OperatorGrant, envSeal?: EnvSeal): void {
  const existing = ctx.missions.get(spec.name)
  if (existing !== undefined && !existing.record.removed) {
    emitEvent(ctx, spec.name, { kind: 'deployRefused', mission: spec.name })
    return
  }
  const view = [ctx.self.peerId, ...[...ctx.peers.values()].filter(p => p.state === 'alive').map(p => p.peerId)].sort()
  const epoch = existing === undefined ? 0 : Math.max(existing.record.epoch, existing.votedEpoch) + 1
  const record: MissionRecord = {
    mission: spec.name, deployId: deployId ?? `${ctx.self.peerId}@${now}`, spec, epoch, primary: null, backup: null, view,
    released: false, handoffTo: null, checkpoint: null, replicatedSeq: null, removed: false,
    started: false, imageCid: null, imageArch: null, restarts: 0, lastFailure: null,
    ...(grant === undefined ? {} : { grant }),
    ...(envSeal === undefined ? {} : { envSeal })
  }
  ctx.missions.set(spec.name, newMission({ record, votedEpoch: epoch, votedFor: null, held: null }, now))
  persist(ctx)
  emitEvent(ctx, spec.name, { kind: 'deployed', viewSize: view.length })
  announce(ctx, now, ctx.missions.get(spec.name)!)
  ctx.tick(now)
}

/** The operator asked here for a removal: published, then applied as any removal. */
export function onLocalRemove (ctx: Ctx, mission: Mission, ev: LocalOf<'remove'>): void {
  const record = mission.record
  if (!record.removed) {
    const grant = ev.grant === undefined ? {} : { grant: ev.grant }
    emit(ctx, { type: 'publish', message: { type: 'remove', mission: record.mission, deployId: record.deployId, ...grant } })
    onRemove(ctx, record.mission, record.deployId, { by: 'request', from: null }, ev.grant)
  }
}

/** The deployment re-signed here (a key rotation): the newer grant replaces the older one and is announced. */
export function onRegrant (ctx: Ctx, now: number, mission: Mission, ev: LocalOf<'regrant'>): void {
  const record = mission.record
  if (!record.removed && ev.grant.deployId === record.deployId && newerGrant(ev.grant, record.grant)) {
    record.grant = ev.grant
    persist(ctx)
    announce(ctx, now, mission)
    emitEvent(ctx, record.mission, { kind: 'regranted', key: ev.grant.key })
  }
}

/** The env re-sealed here for a changed view: a newer seal of this deployment replaces the record's and is announced. */
export function onEnvSeal (ctx: Ctx, now: number, mission: Mission, ev: LocalOf<'envSeal'>): void {
  const record = mission.record
  if (record.removed || ev.deployId !== record.deployId || !newerSeal(ev.seal, record.envSeal)) return
  record.envSeal = ev.seal
  persist(ctx)
  announce(ctx, now, mission)
}

export const newerSeal = (incoming: EnvSeal | undefined, current: EnvSeal | undefined): boolean =>
  incoming !== undefined && (current === undefined || incoming.gen > current.gen)
