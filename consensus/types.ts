// Types of the consensus state machine: what goes in (peer changes, messages, local events), what comes out (actions).
import type { MissionSpec } from '../manifest/manifest.ts'
import type { OperatorGrant } from './authority.ts'
import type { QuorumProof } from './quorum-proof.ts'
import type { MachineEvent, StopReason } from './events.ts'

export type PeerState = 'alive' | 'suspect' | 'dead'

/** One peer as the failure detector sees it. */
export interface PeerInfo {
  peerId: string
  state: PeerState
  arch: string
  board: string
  memoryMb: number
  /** Docker answers on that board (it can run containers). */
  canRun: boolean
  /** Docker and CRIU: it can take and restore checkpoints. */
  canCheckpoint: boolean
  /**
   * Its storage takes checkpoints (absent = true): false after a storage fault (a full disk, I/O errors) until a probe
   * write succeeds again. Such a board is no backup: it could not hold what it would acknowledge.
   */
  canStore?: boolean
  /** Why it cannot store (with canStore false), e.g. `disk full`. */
  storageProblem?: string
  /** Image refs present in that board's Docker, normalized by normalizeImageRef (`repo` -> `repo:latest`). */
  images: string[]
  /** Normalized image refs that board is fetching now (from the swarm's IPFS). */
  fetchingImages: string[]
  /**
   * With state `dead` only: the detector proved the peer's process exited (a redial was refused: nothing listens on
   * its port) and it cannot resume; its containers died with it (the daemon's watchdog). A frozen or partitioned peer
   * is never `gone`. Absent = false.
   */
  gone?: boolean
}

/** Timings; all in ms of the `now` the caller passes. */
export interface ConsensusConfig {
  /** Every peer re-announces what it knows of each mission this often (anti-entropy). */
  announceIntervalMs: number
  /** A claim without a quorum of votes after this long is abandoned and retried with a higher epoch. */
  claimTimeoutMs: number
  /** The n-th ranked candidate waits n times this before claiming, so the first-ranked usually wins uncontested. */
  candidateStaggerMs: number
  /**
   * A primary of a view of >= 3 members that sees fewer than a majority of it alive (suspect counts as not alive)
   * for this long stops its container. Must stay below (detector dead time - detector suspect time), so the old
   * primary is stopped before anyone may take over (takeover needs the primary `dead`).
   */
  selfFenceGraceMs: number
  /**
   * Lease of a primary of a view of >= 3: if the machine was not ticked for this long (board or process frozen),
   * it self-fences at once, since the others may already count it dead. Suspect time + selfFenceGraceMs.
   */
  leaseMs: number
  /**
   * A primary is taken over only when the detector says `dead` AND no message of any kind came from it for this
   * long (messages are signs of life the detector may not have counted yet). Matches the detector's dead time.
   */
  primarySilenceMs: number
  /** A peer the detector never reported is treated as dead this long after the machine started. */
  unknownPeerDeadMs: number
  /**
   * A vote granted to a candidate that was never resolved (no record of that epoch learned, no abandon) blocks this
   * peer's own claims; it lapses once the candidate has been dead this long.
   */
  pendingVoteExpiryMs: number
  /** A requested fetch without a result is re-requested after this long. */
  fetchRetryMs: number
  /**
   * After a failed fetch the backup waits this long before the next one (newer checkpoints included), doubling per
   * consecutive failure up to fetchBackoffMaxMs: a full disk or a missing provider is not hammered 20 times a second.
   */
  fetchBackoffMs: number
  fetchBackoffMaxMs: number
  /** A checkpoint action without a result is given up after this long. */
  checkpointTimeoutMs: number
  /**
   * A mission's checkpointIntervalMs bounds the work a failover may lose, so each checkpoint starts early by the time
   * recent ones took to reach the backup, and by this much more: the tick that notices it due (50 ms in the daemon)
   * and the dump's start-up before the container is paused.
   */
  checkpointSlackMs: number
  /** A restore/start without containerStarted is considered failed after this long. */
  startTimeoutMs: number
  /** First back-off after a failed start or a crash; doubles per consecutive failure up to restartBackoffMaxMs. */
  restartBackoffMs: number
  restartBackoffMaxMs: number
  /** A container that ran this long before it failed counts as a first failure again (back-off and restarts reset). */
  restartResetMs: number
  /** A storeImage/fetchImage without an answer is given up (and retried with back-off) after this long. */
  imageTimeoutMs: number
  /**
   * A board whose image was just removed waits this long before fetching it again, so that its heartbeats and the
   * others' have told everyone who still holds it (image lists are read every 2 s, heartbeats sent every 1 s): an
   * image removed from every board is not fetched back from a board that seemed to hold it a moment ago.
   */
  imageRefetchHoldMs: number
  /**
   * A mission no live board can run is reported `blocked` (state and event) once that held this long: a peer that
   * just started, or just learned a mission, knows the others' images only from their next heartbeat (1 s).
   */
  blockedAfterMs: number
  /**
   * A voter that holds a newer checkpoint than a candidate refuses it and claims itself; if it has not won within
   * this long (its own claims keep failing), it stops refusing: the mission runs on older state rather than not at all.
   */
  newerStateRefusalMs: number
  /**
   * A board left alone in a two-board view with older state than the newest checkpoint waits this long for a board
   * that holds it before it runs on its own: a double fault then costs availability before it costs state.
   */
  staleTakeoverWaitMs: number
  /**
   * A member of a view of 3 or more that died stays in the view (never as the backup) for this long before a
   * reconfiguration drops it: a flapping link or a restarting peer otherwise costs an epoch to drop it and one to
   * add it back each time (a bridge cost 4-6 epochs in 15 s). Its majority still holds without it meanwhile.
   */
  viewLeaveAfterMs: number
  /**
   * A live board joins a view, and stays in one, only while it takes part in consensus: some consensus message from it
   * (every board re-announces each mission every announceIntervalMs) arrived within this long. A board that
   * heartbeats but never speaks (a hostile member that would never vote, a link that passes heartbeats and loses the
   * rest) otherwise counts toward the view's quorum without ever adding to it, and one real failure more blocks the
   * next election for good.
   */
  memberSilenceMs: number
}

export const DEFAULT_CONSENSUS_CONFIG: ConsensusConfig = {
  announceIntervalMs: 1000,
  claimTimeoutMs: 400,
  candidateStaggerMs: 300,
  selfFenceGraceMs: 100,
  leaseMs: 700,
  primarySilenceMs: 1100,
  unknownPeerDeadMs: 3000,
  pendingVoteExpiryMs: 10_000,
  fetchRetryMs: 2000,
  fetchBackoffMs: 250,
  fetchBackoffMaxMs: 30_000,
  checkpointTimeoutMs: 10_000,
  checkpointSlackMs: 60,
  startTimeoutMs: 30_000,
  restartBackoffMs: 1000,
  restartBackoffMaxMs: 60_000,
  restartResetMs: 5 * 60_000,
  imageTimeoutMs: 10 * 60_000,
  imageRefetchHoldMs: 4000,
  blockedAfterMs: 2000,
  newerStateRefusalMs: 5000,
  staleTakeoverWaitMs: 20_000,
  viewLeaveAfterMs: 10_000,
  memberSilenceMs: 10_000
}

/** A checkpoint: content address plus its place in the mission's history. Ordered by (epoch, seq). */
export interface CheckpointRef {
  cid: string
  seq: number
  /** Epoch of the primary that took it. */
  epoch: number
  /** process.arch of the board that took it: CRIU restores only on the same architecture. */
  arch: string
  atMs: number
}

/** The newest failed start, restore or crash of a mission. */
export interface MissionFailure {
  /** Peer id of the board it failed on. */
  board: string
  reason: string
  /** That board's clock (for display only: back-off waits are timed by each peer's own receive time). */
  at: number
  /**
   * The epoch it failed in (absent in records of older peers). Only a failure of the record's own epoch ranks its
   * board last: a board that failed epochs ago and came back holding the newest state is not passed over for it.
   */
  epoch?: number
}

/**
 * Why a start or restore failed, as the daemon classifies it. `image-missing` and `env-missing` (the board cannot open
 * the mission's sealed env values: it was out of the view when they were sealed) are the board's, not the mission's
 * or the checkpoint's: no restart counted, and the next start on the board is not made cold.
 */
export type FailureCause = 'image-missing' | 'env-missing' | 'criu' | 'docker' | 'other'

/**
 * What one epoch of a mission is. Written once by the epoch's primary (view, primary, backup never change within
 * an epoch: any change is a new epoch); checkpoint, replicatedSeq, released, handoffTo, started and imageCid only move
 * forward; restarts and lastFailure are written by the primary together with the release after a failure (and copied
 * into the next epoch's record). A removed record (tombstone) carries a placeholder spec (tombstoneSpec).
 */
export interface MissionRecord {
  mission: string
  /** Identifies one deployment of the name (deployer peer id + time); a removal applies to one deployId. */
  deployId: string
  spec: MissionSpec
  epoch: number
  /** null in the deploy record (epoch of the deploy, before the first election). */
  primary: string | null
  backup: string | null
  /** Sorted voting set whose quorum elects epoch + 1. */
  view: string[]
  /** The primary no longer runs the container under this epoch (self-fence, exit, handoff, restart). */
  released: boolean
  /** Planned migration: the peer that should claim the next epoch. */
  handoffTo: string | null
  checkpoint: CheckpointRef | null
  /** Newest checkpoint seq the backup acknowledged (of `checkpoint.epoch` lineage). */
  replicatedSeq: number | null
  removed: boolean
  /** The epoch's primary reported its container running (under this epoch). */
  started: boolean
  /** CID of the image (for imageArch) a primary stored in the swarm's IPFS; kept across epochs of the same arch. */
  imageCid: string | null
  imageArch: string | null
  /** Consecutive failed starts/restores/crashes (a failure after restartResetMs of running counts as 1 again). */
  restarts: number
  lastFailure: MissionFailure | null
  /** The operator's signed deploy of this deployment (consensus/authority.ts); absent in an open (dev) swarm. */
  grant?: OperatorGrant
  /** A tombstone's signed removal. */
  removal?: OperatorGrant
  /**
   * The signed votes that elected this epoch (consensus/quorum-proof.ts); absent in a deploy record (epoch of the
   * deploy, justified by the operator's grant) and in records elected by peers that sign no votes.
   */
  proof?: QuorumProof
  /** The env values (with their salts) sealed for the view; absent when the spec has no env. */
  envSeal?: EnvSeal
}

/**
 * A mission's env openings (manifest/env-commitment.ts) sealed for a set of peers (checkpoint/env-seal.ts): a content
 * key wrapped per peer (base64url fields) and the sealed JSON. Opaque to the machine but for `gen`, which orders
 * the seals of one deployment (each re-seal for a changed view takes the next).
 */
export interface EnvSeal {
  v: 1
  gen: number
  key: string
  eph: string
  to: Array<{ peer: string, nonce: string, wrapped: string }>
  box: string
}

/** The sender's election state, carried by every announce. */
export interface AnnouncedClaimState {
  votedEpoch: number
  open: boolean
  /**
   * The sender restarted as the two-board partner of this record and holds back its right to claim alone until a
   * newer epoch is elected (the primary may have replaced it while it was gone): the primary re-elects with its vote.
   */
  heldBack?: boolean
}

export type ConsensusMessage =
  /** `claim`: the sender's own election state, so a vote granted to it is released even if its abandon was lost. */
  | { type: 'announce', record: MissionRecord, claim: AnnouncedClaimState }
  /**
   * `held`: the checkpoint the candidate would restore (null: a cold start). A voter holding a newer checkpoint it
   * could restore refuses and claims itself (Raft's election restriction): a takeover never restores older state than
   * a quorum member holds. Absent from a running primary re-electing itself (its state is live).
   */
  | { type: 'claim', mission: string, deployId: string, epoch: number, basis: number, held?: { epoch: number, seq: number } | null }
  /** `newerState`: refused because the voter holds newer state than the candidate's and claims itself. */
  /** `sig`: with a granted vote, the voter's signature of its statement (voteStatement in quorum-proof.ts). */
  | { type: 'vote', mission: string, epoch: number, candidate: string, granted: boolean, knownEpoch: number, newerState?: true, sig?: string }
  | { type: 'ack', mission: string, epoch: number, cid: string, seq: number, checkpointEpoch: number }
  /** `proof`: the signed votes that elected the sender in `epoch` (the target checks them before it stops). */
  | { type: 'fence', mission: string, epoch: number, target: string, proof?: QuorumProof }
  /** The sender's claim for `epoch` is over without a win: votes granted to it are released. */
  | { type: 'abandon', mission: string, epoch: number }
  | { type: 'remove', mission: string, deployId: string, grant?: OperatorGrant }
  | { type: 'move', mission: string, deployId: string, to: string, grant?: OperatorGrant }

/** `grant`: the operator's signature of the operation (required by every board unless the swarm is open). */
/**
 * Why the machine refused a mission message from the network (counted, see ClusterMachine.refusals):
 * `epoch-out-of-range`: an epoch above MAX_EPOCH, or a claim further above the known epochs than MAX_CLAIM_STEP;
 * `outside-view`: a record whose primary or backup is not in its view; `not-a-member`: a new epoch, or a change to
 * the current one, from a peer that is not in the mission's view (nor the candidate this peer voted for);
 * `fence-not-authorized`: a fence from a peer that is neither in the view nor the epoch's primary;
 * `older-deployment`: another deployment of the name whose operator grant is older than the current one's;
 * `revoked`: a message from a board the operator revoked; `no-quorum-proof`: a newer epoch (a record, or a fence of
 * it) whose signed votes do not prove its election (missing, forged, too few, of another epoch, candidate or basis).
 */
export type AuthorityRefusal = 'epoch-out-of-range' | 'outside-view' | 'not-a-member' | 'fence-not-authorized' | 'older-deployment' | 'revoked' | 'no-quorum-proof'

export type LocalEvent =
  | { type: 'deploy', spec: MissionSpec, deployId?: string, grant?: OperatorGrant, envSeal?: EnvSeal }
  /** The env re-sealed here for the current view (a member holding the values, when the view changed). */
  | { type: 'envSeal', mission: string, deployId: string, seal: EnvSeal }
  | { type: 'remove', mission: string, grant?: OperatorGrant }
  | { type: 'move', mission: string, to: string, grant?: OperatorGrant }
  /** The operator re-signed the deployment (a key rotation): the record carries this newer deploy grant from now on. */
  | { type: 'regrant', mission: string, grant: OperatorGrant }
  | { type: 'containerStarted', mission: string, epoch: number }
  /** The container exited without being asked to (the machine knows how long it ran). */
  | { type: 'containerExited', mission: string, epoch: number, reason: string }
  /**
   * The daemon renewed its watchdog's lease too late (a stalled or starved event loop): the watchdog froze the
   * container and kills it. A fence, not a crash of the mission: no restart counted, no back-off.
   */
  | { type: 'leaseLapsed', mission: string, epoch: number, lateMs: number }
  /** A `restore` failed; `startFailed` answers a `startFresh` (a cold start). */
  | { type: 'restoreFailed', mission: string, epoch: number, error: string, cause: FailureCause }
  | { type: 'startFailed', mission: string, epoch: number, error: string, cause: FailureCause }
  | { type: 'checkpointTaken', mission: string, epoch: number, seq: number, cid: string }
  /** `noContainer`: the executor found no container of the mission to dump (it is gone: handled as an exit). */
  | { type: 'checkpointFailed', mission: string, epoch: number, seq: number, error: string, noContainer?: boolean }
  /** The checkpoint of a `fetchCheckpoint`, now held complete (also when the record has moved past it). */
  | { type: 'checkpointFetched', mission: string, checkpoint: CheckpointRef }
  | { type: 'fetchFailed', mission: string, cid: string, error: string }
  | { type: 'imageStored', mission: string, epoch: number, cid: string }
  | { type: 'imageStoreFailed', mission: string, epoch: number, error: string }
  /** A fetchImage failed; success is reported by adding the image to SelfInfo.images. */
  | { type: 'imageFetchFailed', mission: string, cid: string, error: string }

export type Action =
  /** Write this state durably before applying any later action. */
  | { type: 'persist', state: PersistedState }
  | { type: 'publish', message: ConsensusMessage }
  /** Start the mission from its image; seed its data directory from a checkpoint's data snapshot when given. */
  | { type: 'startFresh', mission: string, epoch: number, spec: MissionSpec, image: string, dataFrom: CheckpointRef | null }
  /** CRIU-restore the checkpoint (held locally) as the mission's container under `epoch`. */
  | { type: 'restore', mission: string, epoch: number, spec: MissionSpec, checkpoint: CheckpointRef }
  /** The running container now runs under a newer epoch this peer won (reconfiguration); no restart. */
  | { type: 'runningEpoch', mission: string, epoch: number }
  /**
   * Checkpoint the running container; `stop` for the final checkpoint of a planned migration. `parent`: the CID of
   * the newest checkpoint this board holds (the new one stores only what changed since); `view`: the epoch's members,
   * who may read it; `intervalMs`: the mission's checkpoint interval (a dump longer than it is worth a warning).
   */
  | { type: 'checkpoint', mission: string, epoch: number, seq: number, stop: boolean, parent: string | null, view: string[], intervalMs: number }
  /** Fetch the checkpoint from the swarm; `providers`: the boards that hold it (the primary), to ask first. */
  | { type: 'fetchCheckpoint', mission: string, checkpoint: CheckpointRef, providers: string[] }
  /** Primary, container running: store the image (normalized ref for this board's arch) in the swarm's IPFS. */
  | { type: 'storeImage', mission: string, epoch: number, image: string }
  /**
   * Load the image (normalized ref) from the swarm's IPFS into this board's Docker; `providers` hold it (peer ids).
   * Answered by adding it to SelfInfo.images (and fetchingImages meanwhile) or by imageFetchFailed.
   */
  | { type: 'fetchImage', mission: string, image: string, cid: string, providers: string[] }
  | { type: 'stopContainer', mission: string, reason: StopReason }
  /** The mission was removed: delete its checkpoints and data. */
  | { type: 'forget', mission: string }
  /** Something the operator should hear of (consensus/events.ts renders it: describe). */
  | { type: 'event', mission: string, event: MachineEvent }

export interface PersistedMission {
  record: MissionRecord
  /** Highest epoch this peer voted in (for itself or another): it never votes twice in one epoch. */
  votedEpoch: number
  /** Whom it voted for in votedEpoch; a vote for another peer above the known record is pending until resolved. */
  votedFor: string | null
  /** Newest checkpoint this peer holds (fetched as backup, or taken as primary). */
  held: CheckpointRef | null
}

export interface PersistedState {
  version: 1
  self: string
  missions: Record<string, PersistedMission>
}

/**
 * pending: deployed, nothing claimed yet; electing: a new epoch is being claimed; starting: its primary starts it;
 * running: the primary reported it running under the current epoch; backoff: waiting after failures before the next
 * start; blocked: no live board can run it (`reason` says why); stopped: not running and no election under way.
 */
export type MissionState = 'pending' | 'electing' | 'starting' | 'running' | 'backoff' | 'blocked' | 'stopped' | 'removed'

/** Whether a failover now would restore a checkpoint, and what is missing if not. */
export interface MissionProtection {
  backup: string | null
  /** The backup holds the image for its architecture. */
  image: boolean
  /** replicatedSeq of the current checkpoint lineage. */
  checkpointSeq: number | null
  /** What is missing while not protected; null when protected. */
  reason: string | null
  /**
   * Primary only (null elsewhere): how old the backup's state may be at worst now, ms: the checkpoint period plus the
   * slowest recent replication, or the age of the newest checkpoint the backup acknowledged when that is more. Above the mission's checkpointIntervalMs a failover may lose more than one interval
   * (a loaded board): `withinInterval` is false then.
   */
  stalenessBoundMs: number | null
  withinInterval: boolean | null
}

/** A mission as this peer sees it: the fields of its current record, plus this peer's own standing. */
export interface MissionSnapshot extends Pick<MissionRecord, 'deployId' | 'spec' | 'epoch' | 'primary' | 'backup' | 'view' | 'replicatedSeq' | 'envSeal'> {
  name: string
  state: MissionState
  role: 'primary' | 'backup' | 'member'
  lastCheckpoint: CheckpointRef | null
  held: CheckpointRef | null
  /** Primary: how long the newest acknowledged checkpoint took from its start to the backup's ack, ms. */
  replicationLagMs: number | null
  /** Primary: how often checkpoints start now (the interval less the replication lag, at least half of it), ms. */
  checkpointPeriodMs: number | null
  /** For blocked and backoff: why, and what is missing or when the next start comes; else null. */
  reason: string | null
  restarts: number
  lastFailure: MissionFailure | null
  /** The operator key that signed the deployment's current grant (null in an open swarm). */
  signedBy: string | null
  /** If the primary's board died now, its backup would restore a checkpoint. */
  protected: boolean
  protection: MissionProtection
}
