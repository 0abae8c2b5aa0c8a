// The election: when this board claims a mission (rank, stagger, back-offs, deferral to a voter with newer state),
// how it votes on others' claims (pending votes, a primary that still holds, newer state held here), how a claim is
// won (the new record: view, backup, checkpoint; restore or cold start) or abandoned, and how a vote is released.
import { imageFor } from '../manifest/manifest.ts'
import { compareCheckpoints } from './messages.ts'
import { fnv1a64 } from './hrw.ts'
import { stepView } from './quorum.ts'
import { voteStatement, type QuorumProof } from './quorum-proof.ts'
import type { ColdStartCause } from './events.ts'
import { emit, emitEvent, refuse, type Ctx } from './context.ts'
import { persist } from './persisted.ts'
import { copyRecord, MAX_CLAIM_STEP, MAX_EPOCH, type Mission, type Replacement } from './mission-state.ts'
import {
  canRestore, eligible, endSwarmBackoff, hasQuorum, isBlocked, loneClaimantOf, pendingVote, primaryGone, quorumReachable, stateOf, swarmBackoffUntil, whyBlocked
} from './membership.ts'
import { chooseBackup, desiredLayout, opensEnv, rankCandidates } from './ranking.ts'
import { abandonClaim, announce, releaseVote } from './lifecycle.ts'
import type { ConsensusMessage, MissionRecord } from './types.ts'

/**
 * No live primary holds the mission (none, released, or gone): report it blocked while no live board can run it, and
 * otherwise run the election (see maybeClaim). `record` is the record as the tick began.
 */
export function tickElection (ctx: Ctx, now: number, mission: Mission, record: MissionRecord): void {
  const blocked = whyBlocked(ctx, now, record)
  mission.unplaceableSince = blocked === null ? null : mission.unplaceableSince ?? now
  const reported = isBlocked(ctx, now, mission) ? blocked : null
  if (reported?.reason !== mission.blockedReason && (reported !== null || blocked === null)) {
    if (reported !== null) emitEvent(ctx, record.mission, { kind: 'blocked', ...reported })
    mission.blockedReason = reported?.reason ?? null
  }
  // While blocked nobody claims; the candidates' stagger runs from the moment a board can run it.
  if (blocked !== null) mission.electionSince = now
  else {
    mission.electionSince ??= now
    maybeClaim(ctx, now, mission)
  }
}

/** This board's claim timed out: abandoned (one nobody answered is asked for again under its epoch). */
export function expireClaim (ctx: Ctx, now: number, mission: Mission): void {
  if (mission.claim !== null && now - mission.claim.startedAt >= ctx.config.claimTimeoutMs) {
    if (!mission.claim.answered && mission.claim.replace === null) mission.unansweredEpoch = mission.claim.epoch
    abandonClaim(ctx, mission)
  }
}

function maybeClaim (ctx: Ctx, now: number, mission: Mission): void {
  const record = mission.record
  const self = ctx.self.peerId
  if (mission.claim !== null || now - mission.lastClaimAt < ctx.config.claimTimeoutMs) return
  if (pendingVote(ctx, now, mission)) return
  // Back-off after failures: this board's own, and the swarm-wide one after the record's last failure.
  const backoffUntil = swarmBackoffUntil(ctx, mission)
  if (now < backoffUntil || now < mission.localBackoffUntil) return
  // A voter with newer state refused this board's last claim and claims itself: a new epoch from here would only be
  // refused again. (A spare whose detector was quicker than the loaded backup's burnt 2 epochs before the backup
  // claimed: 4 epochs for one board freeze, chaos seed 23.)
  if (now < mission.deferToNewerUntil) return
  const candidates = rankCandidates(ctx, now, record)
  const rank = candidates.indexOf(self)
  if (rank < 0) return
  // A board outside the env values' seal cannot start the mission (env-missing): it leaves the claim to a recipient
  // that could run it, however long that one waits (its back-off, a hold-back, a deferral). (Chaos seed 26: both
  // recipients waited, the board outside claimed last in rank, won, failed its restore, and a recipient took the
  // next epoch: 7 epochs for a double fault.) With no such recipient alive it claims, fails and says why, as before.
  if (!opensEnv(record, self) && record.envSeal!.to.some(w => w.peer !== self && stateOf(ctx, now, w.peer) === 'alive' && eligible(ctx, record.spec, w.peer))) return
  // A better placed board that appears (comes back, is released) gets its whole stagger ahead of this one: the wait
  // runs again from now. (The stagger ran from the primary's death; a spare with an older checkpoint claimed 68 ms
  // after the revived holder of the newest one, ranked first, came back, and won alone in a two-board view.)
  const ahead = candidates.slice(0, rank)
  if (ahead.some(p => !mission.candidatesAhead.includes(p))) mission.electionSince = now
  mission.candidatesAhead = ahead
  // A move's target waits for the final checkpoint while the source can serve it; once the source is down it takes
  // over from what it holds, as a failover would. (It waited forever, refused everyone else's claim as older, and a
  // spare finally cold-started the mission with no state at all.)
  if (record.handoffTo === self && compareCheckpoints(record.checkpoint, mission.held) > 0 &&
      record.primary !== null && stateOf(ctx, now, record.primary) === 'alive') return
  const handoffPending = record.handoffTo !== null && record.handoffTo !== self && candidates.includes(record.handoffTo)
  // Deterministic jitter per (peer, attempt) breaks repeated split votes between equally placed candidates.
  const jitter = Number(fnv1a64(`${self}/${mission.votedEpoch}`) % BigInt(ctx.config.candidateStaggerMs))
  // A board that refused a claim for holding newer state claims without waiting its rank.
  const newerState = mission.newerStateSince !== null && now - mission.newerStateSince < 4 * ctx.config.claimTimeoutMs
  const wait = newerState ? 0 : rank * ctx.config.candidateStaggerMs + (rank > 0 || mission.votedEpoch > record.epoch ? jitter : 0) +
    (handoffPending ? 5 * ctx.config.claimTimeoutMs : 0)
  // The stagger runs from the end of the swarm-wide back-off, so candidates do not all claim the moment it ends.
  if (now - Math.max(mission.electionSince ?? now, backoffUntil) < wait) return
  if (!quorumReachable(ctx, now, record, self)) return
  const stale = staleTakeover(ctx, now, mission)
  if (stale === 'wait') return
  startClaim(ctx, now, mission, null, stale !== 'ask')
}

/**
 * A board about to take over alone (two-board view, partner down in its own start or restore) with older state than
 * the record's newest checkpoint waits for a board that holds it to come back, for staleTakeoverWaitMs; then it runs
 * on what it has and says so. (A spare left alone after a double fault restored 5.3 s old state without a word.)
 * Once the partner is back, the claim goes ahead but only the partner's vote wins it (`ask`): the partner refuses it
 * if it holds newer state and claims itself. (The partner's return ended the wait and the lone claimant won alone
 * 10 ms before both revived holders of the newest checkpoint refused it: 541 ticks lost, chaos seed 24.)
 */
function staleTakeover (ctx: Ctx, now: number, mission: Mission): 'go' | 'wait' | 'ask' {
  const record = mission.record
  const self = ctx.self.peerId
  const newest = record.checkpoint
  // Only after a partner that died in its own start or restore (a double fault): when the primary ran, its backup
  // holds what it acknowledged, and two-board mode takes over at once.
  const partner = record.view.find(p => p !== self)
  const mine = mission.held
  // Any other case ends the wait: it starts afresh at the next double fault. (It was reset only when the wait ran out
  // or newer state arrived: a wait ended by the holder's return was still running at the next double fault, a
  // minute later, and the spare ran on its 40 checkpoints older state 79 ms into it: 543 ticks lost.)
  if (newest === null || record.started || record.view.length !== 2 || loneClaimantOf(ctx, record) !== self ||
    partner === undefined || compareCheckpoints(mine, newest) >= 0) {
    mission.staleSince = null
    return 'go'
  }
  const partnerBack = stateOf(ctx, now, partner) === 'alive'
  // The partner refused this board's claim for holding newer state, or this board refused the partner's: the
  // election between the two is decided by their votes already.
  if (partnerBack && (now < mission.deferToNewerUntil || refusalEpisodeLive(ctx, now, mission))) return 'go'
  if (mission.staleSince === null) {
    mission.staleSince = now
    if (!partnerBack) {
      emitEvent(ctx, record.mission, {
        kind: 'staleWait', held: mine === null ? null : { epoch: mine.epoch, seq: mine.seq }, newest: { epoch: newest.epoch, seq: newest.seq }, waitMs: ctx.config.staleTakeoverWaitMs
      })
    }
  }
  if (now - mission.staleSince < ctx.config.staleTakeoverWaitMs) return partnerBack ? 'ask' : 'wait'
  if (mission.staleSince !== -Infinity) emitEvent(ctx, record.mission, { kind: 'staleGiveUp', heldSeq: mine?.seq ?? null, newestSeq: newest.seq })
  // Given up: it claims alone from here until the situation changes (the wait restarts at the next double fault).
  mission.staleSince = -Infinity
  return 'go'
}

/** `alone`: the claim may win with this board's vote alone where the basis allows it (two-board mode). */
export function startClaim (ctx: Ctx, now: number, mission: Mission, replace: Replacement | null = null, alone = true): void {
  const record = mission.record
  // A claim nobody answered (the voters unreachable through a half-open connection) is asked for again under the
  // same epoch: no vote of that epoch went to anyone else, as this board's own vote is still its. (Each retry took
  // a new epoch: 26 epochs burnt in 11 s while the voters could not be reached, an epoch storm for operators.)
  const retry = mission.unansweredEpoch
  mission.unansweredEpoch = null
  const epoch = replace === null && retry !== null && retry === mission.votedEpoch && mission.votedFor === ctx.self.peerId && retry > record.epoch
    ? retry
    : Math.max(record.epoch, mission.votedEpoch, mission.refusedClaimEpoch) + 1
  mission.votedEpoch = epoch
  mission.votedFor = ctx.self.peerId
  mission.lastClaimAt = now
  const sigs = new Map<string, string>()
  const ownSig = ctx.voteKeys?.sign(voteStatement(record.mission, record.deployId, epoch, ctx.self.peerId, record.epoch))
  if (ownSig !== undefined) sigs.set(ctx.self.peerId, ownSig)
  mission.claim = { epoch, basis: copyRecord(record), votes: new Set([ctx.self.peerId]), sigs, startedAt: now, replace, answered: false, alone }
  persist(ctx)
  const running = mission.container !== null && record.primary === ctx.self.peerId
  const restores = !mission.coldStartNext && canRestore(ctx, ctx.self.peerId, mission.held) ? mission.held : null
  const held = running ? undefined : (restores === null ? null : { epoch: restores.epoch, seq: restores.seq })
  emit(ctx, { type: 'publish', message: { type: 'claim', mission: record.mission, deployId: record.deployId, epoch, basis: record.epoch, ...(held === undefined ? {} : { held }) } })
  checkWon(ctx, now, mission)
}

/**
 * This peer holds a newer checkpoint than the candidate would restore, and could restore it itself: it refuses the
 * vote and claims at once. (A new primary killed during its restore left the spare with an older checkpoint than
 * the revived backup's; the spare won and 5.3 s of state were lost.)
 */
function holdsNewerState (ctx: Ctx, now: number, mission: Mission, from: string, held: { epoch: number, seq: number } | null | undefined): boolean {
  const record = mission.record
  const mine = mission.held
  if (held === undefined || mine === null || (from === record.primary && !record.released)) return false
  // The target of a planned move was chosen by the operator, with what it can restore (a cold start across architectures).
  if (record.released && from === record.handoffTo) return false
  // Only a board that would restore it soon: not one whose next start is cold, or that backs off for longer than a
  // refusal may last. (Also while it defers to a newer holder: two deferring boards refused each other, the one with
  // the newest checkpoint unable to restore it, and 37 epochs burnt in 30 s with the mission down, chaos seed 29.)
  // A back-off that ends within the refusal's limit does not stop it: both holders of the newest checkpoint,
  // revived after a kill during the restore, granted the spare's claim while backing off from their restart, and
  // it resumed 321 and 1421 ticks behind (chaos seed 22). The swarm-wide back-off does not count at all: the
  // candidate waited it out already, and this board's runs longer only because it restarted (see onClaim).
  if (mission.coldStartNext || mission.localBackoffUntil - now > ctx.config.newerStateRefusalMs) return false
  if (!canRestore(ctx, ctx.self.peerId, mine) || !eligible(ctx, record.spec, ctx.self.peerId)) return false
  // Nor one outside the env values' seal: it cannot start the mission at all.
  if (!opensEnv(record, ctx.self.peerId)) return false
  // Whether this board reaches a quorum itself does not matter: one that just restarted knows no peer alive yet,
  // granted the older claim, and the newest state was lost. Liveness comes from the refusal's time limit below.
  // A board whose own claims keep failing stops refusing after a while: liveness over the last seconds of state.
  if (refusalEpisodeLive(ctx, now, mission) && mission.refusingSince !== null && now - mission.refusingSince > ctx.config.newerStateRefusalMs) return false
  return held === null || compareCheckpoints(mine, { ...mine, epoch: held.epoch, seq: held.seq }) > 0
}

/** This board refused a claim for holding newer state recently enough that it is the same election. */
function refusalEpisodeLive (ctx: Ctx, now: number, mission: Mission): boolean {
  return mission.newerStateSince !== null && now - mission.newerStateSince < 4 * ctx.config.claimTimeoutMs
}

export function onClaim (ctx: Ctx, now: number, from: string, msg: Extract<ConsensusMessage, { type: 'claim' }>): void {
  const mission = ctx.missions.get(msg.mission)
  if (mission === undefined || mission.record.deployId !== msg.deployId) return
  const record = mission.record
  // A vote persists its epoch: a forged claim far ahead would make every later claim start from there.
  if (msg.epoch > MAX_EPOCH || msg.epoch > Math.max(record.epoch, mission.votedEpoch) + MAX_CLAIM_STEP) { refuse(ctx, 'epoch-out-of-range'); return }
  const self = ctx.self.peerId
  const primaryHolds = primaryHoldsAgainst(ctx, now, mission, from)
  if (from !== self) mission.electionSince = now
  // The candidate claims again on a basis below the epoch it was given a vote for: that claim ended without a win.
  if (mission.votedFor === from && msg.epoch > mission.votedEpoch && msg.basis < mission.votedEpoch) mission.votedFor = null
  const pendingElsewhere = pendingVote(ctx, now, mission) && mission.votedFor !== from && msg.basis < mission.votedEpoch
  // The same candidate asking again for the epoch this board gave it (its answer lost, or released by its abandon).
  const askedAgain = msg.epoch === mission.votedEpoch && (mission.votedFor === from || (mission.votedFor === null && mission.releasedBy === from))
  const valid = !record.removed && (msg.epoch > mission.votedEpoch || askedAgain) && msg.epoch > record.epoch && msg.basis >= record.epoch && !pendingElsewhere
  const newerHere = valid && holdsNewerState(ctx, now, mission, from, msg.held)
  if (newerHere) {
    // Counted per episode of refusals: a refusal 15 s ago, with the mission running since, made a later election
    // grant at once a claim that restored 10 s older state.
    if (!refusalEpisodeLive(ctx, now, mission)) mission.refusingSince = now
    mission.newerStateSince = now
    // It claims at once: the swarm-wide back-off the candidate waited out is over here too (a restarted board's
    // runs from its restart, as it cannot know when the failure was).
    endSwarmBackoff(ctx, now, mission)
    // The other voters may have granted that epoch already: a claim of the same epoch could not win. (The holder
    // of the newest state claimed the epoch it refused, lost it to the votes already given, and a spare 117
    // checkpoints behind won the next one, simulated seed 4.)
    // Not when the running primary refuses (it holds the mission anyway): its next reconfiguration keeps the next
    // number, as before (skipping it counted as a fourth epoch for one power cut of the backup, chaos suite seed 7).
    if (!primaryHolds) mission.refusedClaimEpoch = Math.max(mission.refusedClaimEpoch, msg.epoch)
    const held = mission.held
    emitEvent(ctx, record.mission, {
      kind: 'claimRefused', epoch: msg.epoch, candidate: from,
      wouldRestore: msg.held == null ? null : { epoch: msg.held.epoch, seq: msg.held.seq }, held: held === null ? null : { epoch: held.epoch, seq: held.seq }
    })
  }
  const granted = valid && !primaryHolds && !newerHere
  // Refused only because the primary still looks alive here: decided again if the detector reports it dead soon.
  mission.deferredClaim = valid && primaryHolds && record.primary !== self ? { from, msg, at: now } : null
  if (granted) {
    mission.votedEpoch = msg.epoch
    mission.votedFor = from
    persist(ctx)
  } else if (record.epoch > msg.basis) {
    mission.lastAnnounceAt = -Infinity
  }
  // A granted vote is signed: the candidate's proof of the epoch carries it (quorum-proof.ts).
  const sig = granted ? ctx.voteKeys?.sign(voteStatement(msg.mission, msg.deployId, msg.epoch, from, msg.basis)) : undefined
  emit(ctx, {
    type: 'publish',
    message: { type: 'vote', mission: msg.mission, epoch: msg.epoch, candidate: from, granted, knownEpoch: record.epoch, ...(newerHere ? { newerState: true as const } : {}), ...(sig === undefined ? {} : { sig }) }
  })
  if (!granted) announce(ctx, now, mission)
}

function primaryHoldsAgainst (ctx: Ctx, now: number, mission: Mission, candidate: string): boolean {
  const record = mission.record
  if (record.primary === null || record.released || record.primary === candidate || record.handoffTo === candidate) return false
  if (record.primary === ctx.self.peerId) return mission.container !== null
  // A primary merely suspect here, or dead by a verdict while it still talks to this voter, may be alive and
  // running: in a bridge partition (candidate and primary cut apart, both reaching this voter) a vote granted on
  // suspicion elected a second primary while the first still held its quorum (simulated, seed 2464: 455 ms of two
  // copies). A vote goes against the primary only by the candidate's own rule: dead and silent, or proven exited.
  return !primaryGone(ctx, now, record.primary)
}

export function onVote (ctx: Ctx, now: number, from: string, msg: Extract<ConsensusMessage, { type: 'vote' }>): void {
  const mission = ctx.missions.get(msg.mission)
  const claim = mission?.claim
  if (mission === undefined || claim == null || msg.candidate !== ctx.self.peerId || msg.epoch !== claim.epoch) return
  if (from !== ctx.self.peerId) claim.answered = true
  if (msg.granted) {
    // With vote keys, only a vote whose signature verifies counts: the proof of the epoch must convince every board.
    const keys = ctx.voteKeys
    if (keys !== undefined) {
      const basis = claim.basis
      if (msg.sig === undefined || !keys.verify(from, voteStatement(basis.mission, basis.deployId, claim.epoch, ctx.self.peerId, basis.epoch), msg.sig)) return
      claim.sigs.set(from, msg.sig)
    }
    claim.votes.add(from)
    checkWon(ctx, now, mission)
  } else if (msg.knownEpoch >= claim.epoch) {
    abandonClaim(ctx, mission)
  } else if (msg.newerState === true) {
    // Shorter than the voter's episode of refusals (refusalEpisodeLive, 4 claim timeouts): this board's next claim
    // falls inside it, so the voter's time limit on refusing runs on. (Deferring as long, each claim came just after
    // the episode ended, the limit restarted every time and the refusals never ended.)
    mission.deferToNewerUntil = now + 2 * ctx.config.claimTimeoutMs
    abandonClaim(ctx, mission)
  }
}

/** The candidate this peer voted for shows (announce, or a newer claim) that its claim is over without a win. */
export function releaseVoteIfOver (ctx: Ctx, now: number, from: string, votedEpoch: number, open: boolean, record: MissionRecord | null): void {
  const mission = ctx.missions.get(record?.mission ?? '')
  if (mission === undefined || mission.votedFor !== from) return
  const f = mission.votedEpoch
  if ((votedEpoch > f) || (votedEpoch === f && !open && record !== null && record.epoch < f)) releaseVote(ctx, now, mission)
}

function checkWon (ctx: Ctx, now: number, mission: Mission): void {
  const claim = mission.claim
  if (claim === null) return
  const replace = claim.replace
  const won = replace === null
    ? hasQuorum(ctx, claim.basis, ctx.self.peerId, claim.votes) && (claim.alone || claim.basis.view.every(p => claim.votes.has(p)))
    : claim.votes.has(replace.joiner) && ctx.exitProven.has(replace.partner)
  if (!won) return
  mission.claim = null
  const basis = claim.basis
  const name = basis.mission
  const self = ctx.self.peerId
  const record = mission.record
  if (record.epoch >= claim.epoch || record.removed) return
  const wasRunning = mission.container !== null && basis.primary === self
  // A running primary's reconfiguration keeps a member that died lately; a takeover drops the dead primary at once.
  const layout = desiredLayout(ctx, now, mission, basis, wasRunning)
  const view = replace !== null
    ? [...basis.view.filter(p => p !== replace.partner), replace.joiner].sort()
    : stepView(basis.view, new Set([...layout.view, ...claim.votes]), self)
  const proof = proofOf(ctx, claim)
  const newest = compareCheckpoints(mission.held, record.checkpoint) >= 0 ? mission.held : record.checkpoint
  const restoreFrom = !wasRunning && !mission.coldStartNext && canRestore(ctx, self, mission.held) ? mission.held : null
  const checkpoint = wasRunning ? newest : (restoreFrom ?? newest)
  mission.record = {
    ...record,
    epoch: claim.epoch,
    primary: self,
    backup: replace !== null
      ? replace.joiner
      : (layout.backup !== null && view.includes(layout.backup) ? layout.backup : chooseBackup(ctx, now, record, view)),
    view,
    released: false,
    handoffTo: null,
    checkpoint,
    replicatedSeq: null,
    started: wasRunning && mission.container?.status === 'running',
    // The stored image is kept for boards of the same architecture; another one stores its own.
    imageCid: record.imageArch === ctx.self.arch ? record.imageCid : null,
    imageArch: record.imageArch === ctx.self.arch ? record.imageArch : null,
    ...(proof === undefined ? {} : { proof })
  }
  if (proof === undefined) delete mission.record.proof
  mission.electionSince = null
  mission.quorumLostSince = null
  mission.refusingSince = null
  mission.pendingMove = null
  mission.partnerHeldBack = false
  persist(ctx)
  const elected = { kind: 'elected' as const, epoch: claim.epoch, from: basis.primary, takeover: basis.primary !== null && basis.primary !== self }
  if (wasRunning) {
    mission.container = { ...mission.container!, epoch: claim.epoch }
    emit(ctx, { type: 'runningEpoch', mission: name, epoch: claim.epoch })
    emitEvent(ctx, name, { kind: 'reconfigured', epoch: claim.epoch, view, backup: mission.record.backup })
  } else if (restoreFrom !== null) {
    mission.imageStore = { cid: null, since: null, failures: 0, retryAt: -Infinity }
    mission.container = { epoch: claim.epoch, status: 'starting', since: now, kind: 'restore' }
    emit(ctx, { type: 'restore', mission: name, epoch: claim.epoch, spec: record.spec, checkpoint: restoreFrom })
    emitEvent(ctx, name, { ...elected, start: { kind: 'restore', seq: restoreFrom.seq } })
  } else {
    mission.coldStartNext = false
    mission.imageStore = { cid: null, since: null, failures: 0, retryAt: -Infinity }
    mission.container = { epoch: claim.epoch, status: 'starting', since: now, kind: 'fresh' }
    const image = imageFor(record.spec, ctx.self.arch) ?? ''
    emit(ctx, { type: 'startFresh', mission: name, epoch: claim.epoch, spec: record.spec, image, dataFrom: newest })
    const because: ColdStartCause = newest === null
      ? { kind: 'noCheckpoint' }
      : (canRestore(ctx, self, newest) ? { kind: 'notHeld' } : { kind: 'otherArch', checkpointArch: newest.arch, arch: ctx.self.arch })
    emitEvent(ctx, name, { ...elected, start: { kind: 'cold', image, dataSeq: newest?.seq ?? null, because } })
  }
  announce(ctx, now, mission)
  if (basis.primary !== null && basis.primary !== self) {
    emit(ctx, { type: 'publish', message: { type: 'fence', mission: name, epoch: claim.epoch, target: basis.primary, ...(proof === undefined ? {} : { proof }) } })
  }
}

/**
 * The proof of the epoch a claim won: its basis and the signed votes of the basis view's members (and of the joiner
 * of a partner replacement), sorted by voter. None on a machine without vote keys.
 */
function proofOf (ctx: Ctx, claim: NonNullable<Mission['claim']>): QuorumProof | undefined {
  if (ctx.voteKeys === undefined) return undefined
  const basis = claim.basis
  const counts = (p: string): boolean => basis.view.includes(p) || p === ctx.self.peerId || p === claim.replace?.joiner
  const votes = [...claim.sigs].filter(([p]) => counts(p)).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
  return { basis: basis.epoch, view: [...basis.view], primary: basis.primary, votes, ...(claim.replace === null ? {} : { replaces: claim.replace.partner }) }
}

/** The detector reports `peerId` dead: claims refused only because it, their primary, looked alive are decided again. */
export function redecideDeferredClaims (ctx: Ctx, now: number, peerId: string): void {
  for (const mission of ctx.missions.values()) {
    const deferred = mission.deferredClaim
    if (deferred === null || mission.record.primary !== peerId) continue
    mission.deferredClaim = null
    if (now - deferred.at < ctx.config.claimTimeoutMs && !primaryHoldsAgainst(ctx, now, mission, deferred.from)) onClaim(ctx, now, deferred.from, deferred.msg)
  }
}

/** The candidate this board voted for abandoned that claim: the vote is free again (it may ask again for the epoch). */
export function onAbandon (ctx: Ctx, now: number, from: string, msg: Extract<ConsensusMessage, { type: 'abandon' }>): void {
  const mission = ctx.missions.get(msg.mission)
  if (mission !== undefined && mission.votedFor === from && mission.votedEpoch === msg.epoch) {
    mission.releasedBy = from
    releaseVote(ctx, now, mission)
  }
}
