// One mission as `tandem status --json` and the missions API show it, from the machine's view and this board.
import { imageFor, normalizeImageRef, type MissionSpec } from '../../manifest/manifest.ts'
import type { MissionSnapshot } from '../../consensus/types.ts'
import { imagesExtraOf, type ImageFetchProgress } from '../image-inventory.ts'
import type { Member } from '../membership.ts'
import type { MissionEvent } from '../mission-events.ts'

export type { MissionEvent } from '../mission-events.ts'

/** A board's fetch of a mission's image, as its heartbeats report it. */
export interface ImageFetchStatus extends ImageFetchProgress { board: string }

/** How the newest checkpoint this peer took went, ms and bytes. */
export interface CheckpointTiming { seq: number, pausedMs: number, storeMs: number, totalMs: number, newBytes: number, totalBytes: number, phases: Record<string, number> }

export interface MissionStatus {
  name: string
  /** The deployment (an operator's remove or move grant names it). */
  deployId: string
  /** The operator key that signed the deployment (after a rotation, the new one once re-signed). */
  signedBy: string | null
  epoch: number
  primary: string | null
  backup: string | null
  /** The epoch's members, whose votes elect the next one (peer ids, sorted). */
  view: string[]
  state: MissionSnapshot['state']
  role: MissionSnapshot['role']
  /** Why the mission is `blocked` or in `backoff` (else null). */
  reason: string | null
  /** Consecutive failed starts or crashes. */
  restarts: number
  lastFailure: MissionSnapshot['lastFailure']
  /** Whether the backup would restore a checkpoint if the primary's board died now. */
  protected: boolean
  protection: MissionSnapshot['protection']
  /** Boards fetching the mission's image now, with their progress. */
  imageFetches: ImageFetchStatus[]
  lastCheckpoint: { cid: string, seq: number, epoch: number, ageMs: number } | null
  /** Newest checkpoint sequence the backup holds and has acknowledged. */
  replicatedSeq: number | null
  /** Newest checkpoint this peer holds. */
  heldSeq: number | null
  /** Checkpoints the primary took that the backup does not hold yet. */
  replicationLag: number | null
  /** Primary: from the start of the newest acknowledged checkpoint to the backup's ack, ms. */
  replicationLagMs: number | null
  /** Primary: how often checkpoints start (the interval less the replication lag, at least half of it), ms. */
  checkpointPeriodMs: number | null
  /** As the operator signed it: each env value is its salted digest (manifest/env-commitment.ts). */
  spec: MissionSpec
  /** The env values where this board can open them (a view member), else each name with null. */
  env: Record<string, string | null>
  events: MissionEvent[]
  /** This peer's container of the mission, if it runs one. */
  container: { id: string, epoch: number } | null
  /** The newest checkpoint this peer took (as primary). */
  lastTake: CheckpointTiming | null
}

export interface MoveResult {
  mission: string
  to: string
  epoch: number
  seq: number | null
  /** From the source's final pause to the target's container running (or the whole request when unreported), ms. */
  downtimeMs: number
  totalMs: number
  measuredFrom: 'board reports' | 'request'
}

/** What this board adds to the machine's view of a mission. */
export interface LocalMissionFacts {
  imageFetches: ImageFetchStatus[]
  events: MissionEvent[]
  container: { id: string, epoch: number } | null
  lastTake: CheckpointTiming | null
  env: Record<string, string | null>
}

export function missionStatusOf (v: MissionSnapshot, now: number, local: LocalMissionFacts): MissionStatus {
  const last = v.lastCheckpoint
  return {
    name: v.name,
    deployId: v.deployId,
    signedBy: v.signedBy,
    epoch: v.epoch,
    primary: v.primary,
    backup: v.backup,
    view: [...v.view],
    state: v.state,
    role: v.role,
    reason: v.reason,
    restarts: v.restarts,
    lastFailure: v.lastFailure,
    protected: v.protected,
    protection: v.protection,
    imageFetches: local.imageFetches,
    lastCheckpoint: last == null ? null : { cid: last.cid, seq: last.seq, epoch: last.epoch, ageMs: Math.max(0, now - last.atMs) },
    replicatedSeq: v.replicatedSeq,
    heldSeq: v.held?.seq ?? null,
    replicationLag: last == null ? null : last.seq - (v.replicatedSeq ?? 0),
    replicationLagMs: v.replicationLagMs,
    checkpointPeriodMs: v.checkpointPeriodMs,
    spec: v.spec,
    env: local.env,
    events: local.events,
    container: local.container,
    lastTake: local.lastTake
  }
}

/** This board's image fetches and its architecture. */
export interface OwnImages { self: string, arch: string, fetching: ImageFetchProgress[], has: (ref: string) => boolean }

/** Every board's fetch of the mission's image (for its own architecture), from heartbeats and this board. */
export function imageFetchesOf (spec: MissionSpec, own: OwnImages, members: Member[]): ImageFetchStatus[] {
  const fetches: ImageFetchStatus[] = []
  const image = imageFor(spec, own.arch)
  for (const f of own.fetching) if (image != null && f.image === normalizeImageRef(image)) fetches.push({ board: own.self, ...f })
  for (const member of members) {
    const theirs = member.info == null ? undefined : imageFor(spec, member.info.board.arch)
    if (theirs == null || member.state === 'dead') continue
    for (const f of imagesExtraOf(member.info?.extras).fetching) if (f.image === normalizeImageRef(theirs)) fetches.push({ board: member.peerId, ...f })
  }
  return fetches
}

/** Whether some live board (this one included) has the image the spec needs on that board's architecture. */
export function imageOnSomeLiveBoard (spec: MissionSpec, own: OwnImages, members: Member[]): boolean {
  const image = imageFor(spec, own.arch)
  if (image != null && own.has(image)) return true
  return members.some(member => {
    if (member.state !== 'alive' || member.info == null) return false
    const theirs = imageFor(spec, member.info.board.arch)
    return theirs != null && imagesExtraOf(member.info.extras).present.includes(normalizeImageRef(theirs))
  })
}
