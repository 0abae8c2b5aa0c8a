// Validation of consensus messages received from the network: anything malformed yields undefined, never a throw.
import { validateMissionSpec } from './manifest.ts'
import type { CheckpointRef, ConsensusMessage, MissionRecord } from './types.ts'

const MAX_ID = 256
const MAX_VIEW = 1024

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

export function validateRecord (value: unknown): MissionRecord | undefined {
  const r = obj(value)
  if (r === undefined) return undefined
  if (!str(r.mission) || !str(r.deployId) || !nat(r.epoch) || !optionalPeer(r.primary) || !optionalPeer(r.backup)) return undefined
  if (!Array.isArray(r.view) || r.view.length > MAX_VIEW || !r.view.every(str)) return undefined
  if (typeof r.released !== 'boolean' || typeof r.removed !== 'boolean' || !optionalPeer(r.handoffTo)) return undefined
  if (!(r.replicatedSeq === null || nat(r.replicatedSeq))) return undefined
  const checkpoint = checkpointRef(r.checkpoint)
  if (checkpoint === undefined) return undefined
  let spec
  try { spec = validateMissionSpec(r.spec) } catch { return undefined }
  if (spec.name !== r.mission) return undefined
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
    removed: r.removed
  }
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
      return str(m.mission) && str(m.deployId) && nat(m.epoch) && nat(m.basis) && m.basis < m.epoch
        ? { type: 'claim', mission: m.mission, deployId: m.deployId, epoch: m.epoch, basis: m.basis }
        : undefined
    case 'vote':
      return str(m.mission) && nat(m.epoch) && str(m.candidate) && typeof m.granted === 'boolean' && nat(m.knownEpoch)
        ? { type: 'vote', mission: m.mission, epoch: m.epoch, candidate: m.candidate, granted: m.granted, knownEpoch: m.knownEpoch }
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
    case 'remove':
      return str(m.mission) && str(m.deployId) ? { type: 'remove', mission: m.mission, deployId: m.deployId } : undefined
    case 'move':
      return str(m.mission) && str(m.deployId) && str(m.to) ? { type: 'move', mission: m.mission, deployId: m.deployId, to: m.to } : undefined
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
