// What this board knows of the others, and the questions every role asks of it: is a peer alive, is the primary gone,
// can a board run or back up a mission, the back-offs after failures, and whether a quorum is reached or reachable.
import type { MissionSpec } from '../manifest/manifest.ts'
import { blockedReason, fetchingImage, holdsImage, placementOk, type Blocked, type BoardFacts } from './placement.ts'
import { loneClaimant, quorumReached } from './quorum.ts'
import { proves, type ProofAnchor, type ProofClaim, type QuorumProof } from './quorum-proof.ts'
import { backoffMs } from './cadence.ts'
import type { Ctx } from './context.ts'
import type { ImageTask, Mission } from './mission-state.ts'
import type { CheckpointRef, MissionRecord, PeerInfo, PeerState } from './types.ts'

/**
 * The detector's report of a peer, noted (a revoked board stays dead and gone): its state, since when it is dead, and
 * whether its exit was proven while in contact. Returns the peer as noted.
 */
export function notePeer (ctx: Ctx, now: number, reported: PeerInfo): PeerInfo {
  let peer = reported
  if (ctx.revoked.has(peer.peerId) && (peer.state !== 'dead' || peer.gone !== true)) peer = { ...peer, state: 'dead', gone: true }
  const previous = ctx.peers.get(peer.peerId)?.state
  if (peer.state !== 'dead') ctx.deadSince.delete(peer.peerId)
  else if (previous !== 'dead') ctx.deadSince.set(peer.peerId, now)
  if (peer.state !== 'dead' || peer.gone !== true) ctx.exitProven.delete(peer.peerId)
  else if (previous === 'alive' || previous === 'suspect') ctx.exitProven.add(peer.peerId)
  ctx.peers.set(peer.peerId, { ...peer })
  return peer
}

export function stateOf (ctx: Ctx, now: number, peerId: string): PeerState {
  if (peerId === ctx.self.peerId) return 'alive'
  const peer = ctx.peers.get(peerId)
  if (peer !== undefined) return peer.state
  return now - ctx.startedAt >= ctx.config.unknownPeerDeadMs ? 'dead' : 'suspect'
}

export function boardInfo (ctx: Ctx, peerId: string): Omit<PeerInfo, 'state'> | undefined {
  return peerId === ctx.self.peerId ? ctx.self : ctx.peers.get(peerId)
}

export function primaryGone (ctx: Ctx, now: number, peerId: string): boolean {
  if (stateOf(ctx, now, peerId) !== 'dead') return false
  // The silence wait exists for a frozen primary to self-fence first; a process proven exited (`gone`) can never
  // resume, and its containers died with it (daemon watchdog), so there is nothing to wait for.
  if (ctx.peers.get(peerId)?.gone === true) return true
  return now - (ctx.heardAt.get(peerId) ?? -Infinity) >= ctx.config.primarySilenceMs
}

/**
 * The peer takes part in the mission's consensus (see memberSilenceMs): a message of it about the mission arrived
 * within that time, or this board learned the mission (at start, for the missions it kept) less than that ago and
 * has not heard it yet.
 */
export function takesPart (ctx: Ctx, now: number, mission: Mission, peerId: string): boolean {
  if (peerId === ctx.self.peerId) return true
  return now - (mission.heardFrom.get(peerId) ?? mission.knownSince) < ctx.config.memberSilenceMs
}

export function canPlace (ctx: Ctx, spec: MissionSpec, peerId: string): boolean { return placementOk(spec, boardInfo(ctx, peerId)) }

export function hasImage (ctx: Ctx, spec: MissionSpec, peerId: string): boolean { return holdsImage(spec, boardInfo(ctx, peerId)) }

export function isFetchingImage (ctx: Ctx, spec: MissionSpec, peerId: string): boolean { return fetchingImage(spec, boardInfo(ctx, peerId)) }

/** The board can run the mission now: Docker, the placement, and the image for its architecture held. */
export function eligible (ctx: Ctx, spec: MissionSpec, peerId: string): boolean {
  return boardInfo(ctx, peerId)?.canRun === true && canPlace(ctx, spec, peerId) && hasImage(ctx, spec, peerId)
}

/**
 * The board can be the backup: as eligible, but fetching the image counts (it is not `protected` until it holds
 * it), and the current backup stays while the record names an image it can fetch (a failed fetch is retried).
 */
export function eligibleBackup (ctx: Ctx, record: MissionRecord, peerId: string): boolean {
  const info = boardInfo(ctx, peerId)
  if (info?.canRun !== true || info.canStore === false || !canPlace(ctx, record.spec, peerId)) return false
  if (hasImage(ctx, record.spec, peerId) || isFetchingImage(ctx, record.spec, peerId)) return true
  return peerId === record.backup && record.imageCid !== null && record.imageArch === info.arch
}

/** Back-off after n consecutive failures: 0, then 1 s doubling to 60 s (config). */
export function restartBackoffMs (ctx: Ctx, failures: number): number {
  return backoffMs(failures, ctx.config.restartBackoffMs, ctx.config.restartBackoffMaxMs)
}

/** Until when no board claims after the record's last failure (swarm-wide; from the local time it was learned). */
export function swarmBackoffUntil (ctx: Ctx, mission: Mission): number {
  const record = mission.record
  if (record.restarts <= 0 || record.lastFailure === null) return -Infinity
  return mission.failureSeenAt + restartBackoffMs(ctx, record.restarts)
}

/** The swarm-wide back-off ends now (if it had not already). */
export function endSwarmBackoff (ctx: Ctx, now: number, mission: Mission): void {
  const record = mission.record
  if (record.restarts > 0) mission.failureSeenAt = Math.min(mission.failureSeenAt, now - restartBackoffMs(ctx, record.restarts))
}

/** The record's restarts changed from `before`: the swarm-wide back-off runs from now. */
export function noteRestarts (ctx: Ctx, now: number, mission: Mission, before: number): void {
  if (mission.record.restarts !== before && mission.record.restarts > 0) mission.failureSeenAt = now
}

/** A storeImage/fetchImage failed: retried after 1 s doubling to 60 s; returns the wait. */
export function taskFailed (ctx: Ctx, now: number, task: ImageTask): number {
  task.failures++
  task.since = null
  const wait = restartBackoffMs(ctx, task.failures)
  task.retryAt = now + wait
  return wait
}

/** Why no live board can run the mission (null when one can): see blockedReason. */
export function whyBlocked (ctx: Ctx, now: number, record: MissionRecord): Blocked | null {
  const live = [ctx.self.peerId, ...[...ctx.peers.keys()].filter(p => stateOf(ctx, now, p) === 'alive')]
  return blockedReason(record.spec, live.map(p => boardInfo(ctx, p)).filter((i): i is BoardFacts => i !== undefined))
}

/** No live board could run the mission for blockedAfterMs (before that the facts may just not have arrived). */
export function isBlocked (ctx: Ctx, now: number, mission: Mission): boolean {
  return mission.unplaceableSince !== null && now - mission.unplaceableSince >= ctx.config.blockedAfterMs
}

export function canRestore (ctx: Ctx, peerId: string, ref: CheckpointRef | null): boolean {
  const info = boardInfo(ctx, peerId)
  return ref !== null && info !== undefined && info.canCheckpoint && info.arch === ref.arch
}

/** The one member of a view of <= 2 that may claim the next epoch alone (two-board mode). */
export function loneClaimantOf (ctx: Ctx, basis: MissionRecord): string | null {
  return loneClaimant(basis, p => canPlace(ctx, basis.spec, p))
}

/**
 * The members whose votes count: the view without revoked boards. Safe for one revocation at a time: a candidate
 * that knows of it needs a majority of the n-1 others, one that does not yet a majority of n, which the revoked
 * board can give only one vote of; the two sets of honest voters still meet.
 */
function quorumView (ctx: Ctx, basis: MissionRecord): string[] {
  return ctx.revoked.size === 0 ? basis.view : basis.view.filter(p => !ctx.revoked.has(p))
}

export function hasQuorum (ctx: Ctx, basis: MissionRecord, candidate: string, voters: Set<string>): boolean {
  const quorum = { voters: quorumView(ctx, basis), loneClaimant: () => loneClaimantOf(ctx, basis), heldBack: (c: string) => isHeldBack(ctx, basis, c) }
  return quorumReached(quorum, candidate, voters)
}

/** This peer restarted as the two-board partner of `basis` and may not claim alone on it (see the constructor). */
export function isHeldBack (ctx: Ctx, basis: MissionRecord, candidate: string): boolean {
  const upTo = ctx.missions.get(basis.mission)?.heldBackUpTo ?? null
  return candidate === ctx.self.peerId && upTo !== null && basis.epoch <= upTo && !basis.released
}

export function quorumReachable (ctx: Ctx, now: number, basis: MissionRecord, candidate: string): boolean {
  const alive = new Set(basis.view.filter(p => stateOf(ctx, now, p) === 'alive'))
  alive.add(candidate)
  return hasQuorum(ctx, basis, candidate, alive)
}

/**
 * This peer granted a vote for an epoch above the record it knows and has not learned how that ended: the
 * candidate may have won with a view this peer has not seen, so it must not help elect on an older basis.
 */
export function pendingVote (ctx: Ctx, now: number, mission: Mission): boolean {
  const candidate = mission.votedFor
  if (candidate === null || candidate === ctx.self.peerId || mission.votedEpoch <= mission.record.epoch) return false
  if (stateOf(ctx, now, candidate) !== 'dead') return true
  const deadSince = ctx.deadSince.get(candidate) ?? ctx.startedAt + ctx.config.unknownPeerDeadMs
  return now - deadSince < ctx.config.pendingVoteExpiryMs
}

/**
 * The proof shows the claimed epoch was elected (see proves in quorum-proof.ts), checked against `anchor`, the record
 * this board knows (null: none it can check against). Always true on a machine without vote keys.
 */
export function proofHolds (ctx: Ctx, anchor: ProofAnchor | null, spec: MissionSpec, claim: ProofClaim, proof: QuorumProof | undefined): boolean {
  const keys = ctx.voteKeys
  if (keys === undefined) return true
  return proves({ keys, revoked: ctx.revoked, placementOk: p => canPlace(ctx, spec, p) }, claim, proof, anchor)
}
