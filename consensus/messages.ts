// Validation of consensus messages received from the network: anything malformed yields undefined, never a throw.
import { DEFAULT_CHECKPOINT_INTERVAL_MS, validateMissionSpec, type MissionSpec } from '../manifest/manifest.ts'
import { validateGrant, type OperatorGrant } from './authority.ts'
import type { CheckpointRef, ConsensusMessage, EnvSeal, MissionFailure, MissionRecord } from './types.ts'
import { MAX_PROOF_VOTES, type QuorumProof } from './quorum-proof.ts'
import { natural, text, z } from '../schema/schema.ts'

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
  if (r.removed) { r.spec = tombstoneSpec(r.mission); delete r.envSeal }
  return r
}

const id = text(MAX_ID, 1)
const peer = id.nullable()
const finite = z.number({ error: 'must be a finite number' })

const checkpointRefSchema = z.object({ cid: id, seq: natural, epoch: natural, arch: id, atMs: finite }) satisfies z.ZodType<CheckpointRef>

const failureSchema = z.object({
  board: id,
  reason: text(MAX_REASON),
  at: finite,
  epoch: natural.optional()
}).nullish().transform((f): MissionFailure | null => f == null ? null : { board: f.board, reason: f.reason, at: f.at, ...(f.epoch !== undefined ? { epoch: f.epoch } : {}) })

/** An optional grant field: absent when undefined or null, refused when malformed. */
const optionalGrant = z.unknown().optional().transform((value, ctx): OperatorGrant | undefined => {
  if (value === undefined || value === null) return undefined
  const grant = validateGrant(value)
  if (grant === undefined) ctx.addIssue({ code: 'custom', message: 'malformed grant' })
  return grant
})

const signature = text(256, 1)
const proofSchema = z.object({
  basis: natural,
  view: z.array(id).max(MAX_VIEW),
  primary: peer,
  votes: z.array(z.tuple([id, signature])).max(MAX_PROOF_VOTES),
  replaces: id.optional()
}).transform((p): QuorumProof => ({
  basis: p.basis, view: [...new Set(p.view)].sort(), primary: p.primary, votes: p.votes.map(([v, s]) => [v, s] as [string, string]),
  ...(p.replaces === undefined ? {} : { replaces: p.replaces })
}))
const b64 = (max: number) => z.string().max(max).regex(/^[A-Za-z0-9_-]*$/)
/** Bounded by the spec's own limits: at most 1024 values in a 64 KiB manifest, each with a 16-byte salt. */
const envSealSchema = z.object({
  v: z.literal(1),
  gen: natural,
  key: b64(16),
  eph: b64(64),
  to: z.array(z.object({ peer: id, nonce: b64(32), wrapped: b64(96) })).max(MAX_VIEW),
  box: b64(256 * 1024)
}) satisfies z.ZodType<EnvSeal>

const recordSchema = z.object({
  mission: id,
  deployId: id,
  spec: z.unknown().optional(),
  epoch: natural,
  primary: peer,
  backup: peer,
  view: z.array(id).max(MAX_VIEW),
  released: z.boolean(),
  handoffTo: peer,
  checkpoint: checkpointRefSchema.nullable(),
  replicatedSeq: natural.nullable(),
  removed: z.boolean(),
  // Fields of newer versions: absent in records of older peers.
  started: z.boolean().optional(),
  imageCid: id.nullish(),
  imageArch: id.nullish(),
  restarts: natural.optional(),
  lastFailure: failureSchema,
  grant: optionalGrant,
  removal: optionalGrant,
  proof: proofSchema.optional(),
  envSeal: envSealSchema.optional()
}).transform((r, ctx): MissionRecord => {
  let spec: MissionSpec
  if (r.removed) {
    // A tombstone's spec is not needed (and not kept): whatever was sent, it carries the placeholder.
    spec = tombstoneSpec(r.mission)
  } else {
    try { spec = validateMissionSpec(r.spec) } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['spec'], message: (err as Error).message })
      return z.NEVER
    }
    if (spec.name !== r.mission) ctx.addIssue({ code: 'custom', path: ['spec', 'name'], message: 'must be the mission\'s name' })
  }
  return {
    mission: r.mission,
    deployId: r.deployId,
    spec,
    epoch: r.epoch,
    primary: r.primary,
    backup: r.backup,
    view: [...new Set(r.view)].sort(),
    released: r.released,
    handoffTo: r.handoffTo,
    checkpoint: r.checkpoint,
    replicatedSeq: r.replicatedSeq,
    removed: r.removed,
    started: r.started === true,
    imageCid: r.imageCid ?? null,
    imageArch: r.imageArch ?? null,
    restarts: r.restarts ?? 0,
    lastFailure: r.lastFailure,
    ...(r.grant === undefined ? {} : { grant: r.grant }),
    ...(r.removal === undefined ? {} : { removal: r.removal }),
    ...(r.proof === undefined ? {} : { proof: r.proof }),
    ...(r.envSeal === undefined || r.removed ? {} : { envSeal: { v: 1 as const, gen: r.envSeal.gen, key: r.envSeal.key, eph: r.envSeal.eph, to: r.envSeal.to.map(w => ({ peer: w.peer, nonce: w.nonce, wrapped: w.wrapped })), box: r.envSeal.box } })
  }
})

export function validateRecord (value: unknown): MissionRecord | undefined {
  const result = recordSchema.safeParse(value)
  return result.success ? result.data : undefined
}

// An announce (record and spec) takes ~6 us to check with zod, ~4x the hand-written checks (bench/parse-cost.ts);
// gossipsub's Ed25519 check of the same message costs ~65 us.
const messageSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('announce'),
    record: recordSchema,
    claim: z.object({ votedEpoch: natural, open: z.boolean(), heldBack: z.boolean().optional() })
  }).transform(m => ({
    type: m.type, record: m.record,
    claim: { votedEpoch: m.claim.votedEpoch, open: m.claim.open, ...(m.claim.heldBack === true ? { heldBack: true } : {}) }
  })),
  z.object({
    type: z.literal('claim'), mission: id, deployId: id, epoch: natural, basis: natural,
    held: z.object({ epoch: natural, seq: natural }).nullish()
  }).refine(m => m.basis < m.epoch, { message: 'basis must be below epoch', path: ['basis'] }).transform(m => ({
    type: m.type, mission: m.mission, deployId: m.deployId, epoch: m.epoch, basis: m.basis,
    ...(m.held === undefined ? {} : { held: m.held === null ? null : { epoch: m.held.epoch, seq: m.held.seq } })
  })),
  z.object({
    type: z.literal('vote'), mission: id, epoch: natural, candidate: id, granted: z.boolean(), knownEpoch: natural, newerState: z.unknown().optional(),
    sig: signature.optional()
  }).transform(m => ({
    type: m.type, mission: m.mission, epoch: m.epoch, candidate: m.candidate, granted: m.granted, knownEpoch: m.knownEpoch,
    ...(m.newerState === true ? { newerState: true as const } : {}),
    ...(m.sig === undefined ? {} : { sig: m.sig })
  })),
  z.object({ type: z.literal('ack'), mission: id, epoch: natural, cid: id, seq: natural, checkpointEpoch: natural }),
  z.object({ type: z.literal('fence'), mission: id, epoch: natural, target: id, proof: proofSchema.optional() }).transform(m => ({
    type: m.type, mission: m.mission, epoch: m.epoch, target: m.target, ...(m.proof === undefined ? {} : { proof: m.proof })
  })),
  z.object({ type: z.literal('abandon'), mission: id, epoch: natural }),
  z.object({ type: z.literal('remove'), mission: id, deployId: id, grant: optionalGrant }).transform(m => ({
    type: m.type, mission: m.mission, deployId: m.deployId, ...(m.grant === undefined ? {} : { grant: m.grant })
  })),
  z.object({ type: z.literal('move'), mission: id, deployId: id, to: id, grant: optionalGrant }).transform(m => ({
    type: m.type, mission: m.mission, deployId: m.deployId, to: m.to, ...(m.grant === undefined ? {} : { grant: m.grant })
  }))
]) satisfies z.ZodType<ConsensusMessage>

/** A received message as a ConsensusMessage, or undefined when it is malformed. */
export function validateMessage (value: unknown): ConsensusMessage | undefined {
  const result = messageSchema.safeParse(value)
  return result.success ? result.data : undefined
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
