// One mission's state on this board: the persisted part (record, vote, held checkpoint) and the volatile part, lost
// on restart and rebuilt from the persisted part and the network; plus the record helpers every role module uses.
import type { OperatorGrant } from './authority.ts'
import type { StopReason } from './events.ts'
import type { CheckpointRef, ConsensusMessage, MissionRecord, PersistedMission } from './types.ts'

/** A two-board primary replacing its partner, proven exited, by `joiner` (see startPartnerReplacement in primary.ts). */
export interface Replacement { partner: string, joiner: string }
/**
 * `answered`: some other peer voted on it (granted or not); a claim nobody answered is retried under its epoch.
 * `sigs`: the granted votes' signatures (by voter, this board's own included), for the proof of the epoch won.
 * `alone`: whether it may win with the candidate's vote alone where the basis allows it (see staleTakeover in election.ts).
 */
export interface Claim { epoch: number, basis: MissionRecord, votes: Set<string>, sigs: Map<string, string>, startedAt: number, replace: Replacement | null, answered: boolean, alone: boolean }
/** `kind`: how it was started (a failure of a cold start is not reported as a failed restore). */
export interface Container { epoch: number, status: 'starting' | 'running', since: number, kind: 'fresh' | 'restore' }
export interface ImageTask { cid: string | null, since: number | null, failures: number, retryAt: number }

/** Volatile per-mission state: lost on restart, rebuilt from the persisted part and the network. */
export interface Mission extends PersistedMission {
  container: Container | null
  claim: Claim | null
  lastClaimAt: number
  electionSince: number | null
  quorumLostSince: number | null
  checkpointInFlight: { seq: number, since: number, stop: boolean } | null
  lastCheckpointAt: number
  /** Start times of the newest checkpoints taken, to measure how long each took to be acknowledged. */
  checkpointStarts: Array<{ seq: number, epoch: number, since: number }>
  /** The start of the newest checkpoint the backup acknowledged (primary only). */
  replicatedStart: { seq: number, epoch: number, since: number } | null
  /** The newest replication lags (start to the backup's ack), ms; the slowest sets the checkpoint period. */
  replicationLags: number[]
  fetchInFlight: { ref: CheckpointRef, since: number } | null
  /** Since when this board, a lone claimant with older state than the record's, waits (see waitsForNewerState in election.ts). */
  staleSince: number | null
  /** When this board last refused a claim because it holds newer state than the candidate (it claims at once). */
  newerStateSince: number | null
  /** Until when this board leaves the election to a voter that refused its claim for holding newer state. */
  deferToNewerUntil: number
  /** The highest epoch this board refused a claim of for holding newer state: its own claim goes above it. */
  refusedClaimEpoch: number
  /** The candidates ranked before this board at its last look (see maybeClaim in election.ts). */
  candidatesAhead: string[]
  /** The epoch of this board's last claim that timed out with no answer at all: the next claim asks for it again. */
  unansweredEpoch: number | null
  /** The candidate whose abandon last released this board's vote (it may ask again for the same epoch). */
  releasedBy: string | null
  /** Since when this board refuses claims for newer state without having won (reset when an epoch is elected). */
  refusingSince: number | null
  /** Primary: checkpoints failed in a row, and the last error (its protection names it). */
  checkpointFailures: number
  lastCheckpointError: string | null
  /** Primary: the backup it waits acks from, and since when it heard none (its last ack, or when it became backup). */
  ackWatch: { backup: string | null, since: number }
  /** Consecutive failed fetches, and when the next may start (see fetchBackoffMs). */
  fetchFailures: number
  fetchRetryAt: number
  /** The record's epoch at the last failed fetch: a new epoch (a new primary serving) is tried once at once. */
  fetchFailedEpoch: number
  lastAnnounceAt: number
  pendingMove: string | null
  coldStartNext: boolean
  /** A claim refused only because the primary looked alive: re-decided when the detector reports it dead. */
  deferredClaim: { from: string, msg: Extract<ConsensusMessage, { type: 'claim' }>, at: number } | null
  /** Restarted as the two-board partner of this epoch: no claim alone on a basis up to this epoch. */
  heldBackUpTo: number | null
  /** Primary: the two-board partner announced it holds back, so a new epoch with its vote re-arms it. */
  partnerHeldBack: boolean
  /** This board's own failures of this mission in a row, and until when it does not claim it (per-board back-off). */
  localFailures: number
  localBackoffUntil: number
  /** Local time this peer learned the record's current `restarts` (the swarm-wide back-off runs from here). */
  failureSeenAt: number
  /** Primary: storing the image in the swarm (storeImage); other boards: fetching it (fetchImage). */
  imageStore: ImageTask
  imageFetch: ImageTask
  /** When this board last held the mission's image (see imageRefetchHoldMs). */
  imageHeldAt: number
  /** The last ack sent: `${record epoch}/${checkpoint epoch}.${seq}` (acks wait until this board holds the image). */
  lastAck: string | null
  /** The last blocked reason reported in an event (events only on change). */
  blockedReason: string | null
  /** Since when no live board could run the mission (null while one can). */
  unplaceableSince: number | null
  /**
   * Members of the known view that announced a newer record this board could not anchor yet (it missed the elections
   * between): `key` names the record (epoch, primary); they vouch for it (see ProofAnchor in quorum-proof.ts).
   */
  vouches: { key: string, from: Set<string> } | null
  /** When this board learned the mission, and when each peer last sent a consensus message about it (see takesPart). */
  knownSince: number
  heardFrom: Map<string, number>
}

export type Removal = Omit<Extract<StopReason, { kind: 'removed' }>, 'kind'>

/**
 * No epoch above this is adopted, claimed or voted for: at 1000 elections a second it lasts 35 years, and a forged
 * epoch near 2^53 can no longer kill a mission for good (its successor would not be a safe integer).
 */
export const MAX_EPOCH = 2 ** 40
/** A claim may run at most this far above the epochs the voter knows (its record's and its highest vote's). */
export const MAX_CLAIM_STEP = 1000

export function newMission (stored: PersistedMission, now: number): Mission {
  return {
    ...stored,
    container: null, claim: null, lastClaimAt: -Infinity, electionSince: null, quorumLostSince: null,
    checkpointInFlight: null, lastCheckpointAt: -Infinity, checkpointStarts: [], replicatedStart: null, replicationLags: [], checkpointFailures: 0, lastCheckpointError: null, ackWatch: { backup: null, since: -Infinity }, fetchInFlight: null, fetchFailures: 0, fetchRetryAt: -Infinity, fetchFailedEpoch: 0, newerStateSince: null, deferToNewerUntil: -Infinity, refusedClaimEpoch: 0, candidatesAhead: [], unansweredEpoch: null, releasedBy: null, refusingSince: null, staleSince: null, lastAnnounceAt: -Infinity,
    pendingMove: null, coldStartNext: false, heldBackUpTo: null, partnerHeldBack: false, deferredClaim: null,
    localFailures: 0, localBackoffUntil: -Infinity, failureSeenAt: -Infinity,
    imageStore: { cid: null, since: null, failures: 0, retryAt: -Infinity },
    imageFetch: { cid: null, since: null, failures: 0, retryAt: -Infinity },
    imageHeldAt: -Infinity,
    lastAck: null, blockedReason: null, unplaceableSince: null, vouches: null, knownSince: now, heardFrom: new Map()
  }
}

/**
 * A copy of a record that later changes to this one do not reach (they replace fields, and view/checkpoint/lastFailure
 * objects). The spec is shared: it is never modified in place (a removal replaces it). Much cheaper than a JSON trip.
 */
export function copyRecord (record: MissionRecord): MissionRecord {
  return {
    ...record,
    view: [...record.view],
    checkpoint: record.checkpoint === null ? null : { ...record.checkpoint },
    lastFailure: record.lastFailure === null ? null : { ...record.lastFailure }
  }
}

/** `grant` was signed after `current` (or there is none): it replaces it. */
export function newerGrant (grant: OperatorGrant, current: OperatorGrant | undefined): boolean {
  return current === undefined || grant.at > current.at || (grant.at === current.at && grant.sig > current.sig)
}

/** The record's primary failed in the record's epoch (a failure without an epoch, from an older peer, counts). */
export function failedInEpoch (record: MissionRecord): boolean {
  const failure = record.lastFailure
  return failure !== null && failure.board === record.primary && (failure.epoch === undefined || failure.epoch === record.epoch)
}

export function sameFailure (a: MissionRecord['lastFailure'], b: MissionRecord['lastFailure']): boolean {
  return a === b || (a !== null && b !== null && a.board === b.board && a.at === b.at && a.reason === b.reason && a.epoch === b.epoch)
}
