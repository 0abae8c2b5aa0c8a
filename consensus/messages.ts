// Validation of consensus messages received from the network: anything malformed yields undefined, never a throw.
import { DEFAULT_CHECKPOINT_INTERVAL_MS, validateMissionSpec, type MissionSpec } from '../manifest/manifest.ts'
import { validateGrant, type OperatorGrant } from './authority.ts'
import type { CheckpointRef, ConsensusMessage, MissionFailure, MissionRecord } from './types.ts'

const MAX_ID = 256
const MAX_VIEW = 1024
/** Longest failure reason a record carries (the machine truncates to this). */
export const MAX_REASON = 1024

/**
 * The spec a removed record (tombstone) carries instead of the mission's: the payload is dropped, and it still
 * validates as a spec on peers of older versions. A tombstone is never run.
 */
export function tombstoneSpec (name: string): MissionSpec {
  return { name, image: 'removed', env: {}, checkpointIntervalMs: DEFAULT_CHECKPOINT_INTERVAL_MS }
}

/** Fields added after version 1 records were first persisted or announced: their defaults for older records. */
export function withRecordDefaults (record: MissionRecord): MissionRecord {
  const r = record as Partial<MissionRecord> & MissionRecord
  r.started ??= false
  r.imageCid ??= null
  r.imageArch ??= null
  r.restarts ??= 0
  r.lastFailure ??= null
  if (r.removed) r.spec = tombstoneSpec(r.mission)
  return r
}

function obj (value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : undefined
}
function str (value: unknown): value is string { return typeof value === 'string' && value.length > 0 && value.length <= MAX_ID }
function nat (value: unknown): value is number { return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 }
function optionalPeer (value: unknown): value is string | null { return value === null || str(value) }

function checkpointRef (value: unknown): CheckpointRef | null | undefined {
  if (value === null) return null
  const c = obj(value)
  if (c === undefined || !str(c.cid) || !nat(c.seq) || !nat(c.epoch) || !str(c.arch) || typeof c.atMs !== 'number' || !Number.isFinite(c.atMs)) return undefined
  return { cid: c.cid, seq: c.seq, epoch: c.epoch, arch: c.arch, atMs: c.atMs }
}

function failure (value: unknown): MissionFailure | null | undefined {
  if (value === null || value === undefined) return null
  const f = obj(value)
  if (f === undefined || !str(f.board) || typeof f.reason !== 'string' || f.reason.length > MAX_REASON || typeof f.at !== 'number' || !Number.isFinite(f.at)) return undefined
  if (f.epoch !== undefined && !nat(f.epoch)) return undefined
  return { board: f.board, reason: f.reason, at: f.at, ...(f.epoch !== undefined ? { epoch: f.epoch } : {}) }
}

export function validateRecord (value: unknown): MissionRecord | undefined {
  const r = obj(value)
  if (r === undefined) return undefined
  if (!str(r.mission) || !str(r.deployId) || !nat(r.epoch) || !optionalPeer(r.primary) || !optionalPeer(r.backup)) return undefined
  if (!Array.isArray(r.view) || r.view.length > MAX_VIEW || !r.view.every(str)) return undefined
  if (typeof r.released !== 'boolean' || typeof r.removed !== 'boolean' || !optionalPeer(r.handoffTo)) return undefined
  if (!(r.replicatedSeq === null || nat(r.replicatedSeq))) return undefined
  const checkpoint = checkpointRef(r.checkpoint)
  if (checkpoint === undefined) return undefined
  // Fields of newer versions: absent in records of older peers.
  if (r.started !== undefined && typeof r.started !== 'boolean') return undefined
  if (!(r.imageCid === undefined || r.imageCid === null || str(r.imageCid))) return undefined
  if (!(r.imageArch === undefined || r.imageArch === null || str(r.imageArch))) return undefined
  if (r.restarts !== undefined && !nat(r.restarts)) return undefined
  const lastFailure = failure(r.lastFailure)
  if (lastFailure === undefined) return undefined
  const grant = optionalGrant(r.grant)
  const removal = optionalGrant(r.removal)
  if (grant === false || removal === false) return undefined
  let spec
  if (r.removed) {
    // A tombstone's spec is not needed (and not kept): whatever was sent, it carries the placeholder.
    spec = tombstoneSpec(r.mission)
  } else {
    try { spec = validateMissionSpec(r.spec) } catch { return undefined }
    if (spec.name !== r.mission) return undefined
  }
  return {
    mission: r.mission,
    deployId: r.deployId,
    spec,
    epoch: r.epoch,
    primary: r.primary,
    backup: r.backup,
    view: [...new Set(r.view as string[])].sort(),
    released: r.released,
    handoffTo: r.handoffTo,
    checkpoint,
    replicatedSeq: r.replicatedSeq,
    removed: r.removed,
    started: r.started === true,
    imageCid: (r.imageCid ?? null) as string | null,
    imageArch: (r.imageArch ?? null) as string | null,
    restarts: (r.restarts ?? 0) as number,
    lastFailure,
    ...(grant === undefined ? {} : { grant }),
    ...(removal === undefined ? {} : { removal })
  }
}

/** An optional grant field: undefined when absent, false when malformed. */
function optionalGrant (value: unknown): OperatorGrant | undefined | false {
  if (value === undefined || value === null) return undefined
  return validateGrant(value) ?? false
}

/** A received message as a ConsensusMessage, or undefined when it is malformed. */
export function validateMessage (value: unknown): ConsensusMessage | undefined {
  const m = obj(value)
  if (m === undefined) return undefined
  switch (m.type) {
    case 'announce': {
      const record = validateRecord(m.record)
      const claim = obj(m.claim)
      if (record === undefined || claim === undefined || !nat(claim.votedEpoch) || typeof claim.open !== 'boolean') return undefined
      if (claim.heldBack !== undefined && typeof claim.heldBack !== 'boolean') return undefined
      return {
        type: 'announce', record,
        claim: { votedEpoch: claim.votedEpoch, open: claim.open, ...(claim.heldBack === true ? { heldBack: true } : {}) }
      }
    }
    case 'claim':
      if (!(str(m.mission) && str(m.deployId) && nat(m.epoch) && nat(m.basis) && m.basis < m.epoch)) return undefined
      if (m.held !== undefined && m.held !== null && !(typeof m.held === 'object' && nat((m.held as { epoch?: unknown }).epoch) && nat((m.held as { seq?: unknown }).seq))) return undefined
      return {
        type: 'claim', mission: m.mission, deployId: m.deployId, epoch: m.epoch, basis: m.basis,
        ...(m.held === undefined ? {} : { held: m.held === null ? null : { epoch: (m.held as { epoch: number }).epoch, seq: (m.held as { seq: number }).seq } })
      }
    case 'vote':
      return str(m.mission) && nat(m.epoch) && str(m.candidate) && typeof m.granted === 'boolean' && nat(m.knownEpoch)
        ? { type: 'vote', mission: m.mission, epoch: m.epoch, candidate: m.candidate, granted: m.granted, knownEpoch: m.knownEpoch, ...(m.newerState === true ? { newerState: true as const } : {}) }
        : undefined
    case 'ack':
      return str(m.mission) && nat(m.epoch) && str(m.cid) && nat(m.seq) && nat(m.checkpointEpoch)
        ? { type: 'ack', mission: m.mission, epoch: m.epoch, cid: m.cid, seq: m.seq, checkpointEpoch: m.checkpointEpoch }
        : undefined
    case 'fence':
      return str(m.mission) && nat(m.epoch) && str(m.target)
        ? { type: 'fence', mission: m.mission, epoch: m.epoch, target: m.target }
        : undefined
    case 'abandon':
      return str(m.mission) && nat(m.epoch) ? { type: 'abandon', mission: m.mission, epoch: m.epoch } : undefined
    case 'remove': {
      const grant = optionalGrant(m.grant)
      return str(m.mission) && str(m.deployId) && grant !== false ? { type: 'remove', mission: m.mission, deployId: m.deployId, ...(grant === undefined ? {} : { grant }) } : undefined
    }
    case 'move': {
      const grant = optionalGrant(m.grant)
      return str(m.mission) && str(m.deployId) && str(m.to) && grant !== false ? { type: 'move', mission: m.mission, deployId: m.deployId, to: m.to, ...(grant === undefined ? {} : { grant }) } : undefined
    }
    default:
      return undefined
  }
}

/** Order of checkpoints: by epoch of the primary that took them, then by sequence number. */
export function compareCheckpoints (a: CheckpointRef | null, b: CheckpointRef | null): number {
  if (a === null || b === null) return a === b ? 0 : (a === null ? -1 : 1)
  return a.epoch !== b.epoch ? a.epoch - b.epoch : a.seq - b.seq
}

/** Deep copy of plain JSON data (records, messages, persisted state): what a trip through the network or disk does. */
export function cloneJson<T> (value: T): T {
  return JSON.parse(JSON.stringify(value)) as T
}
