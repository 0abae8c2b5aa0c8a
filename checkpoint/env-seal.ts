// A mission's env values sealed for its view, as checkpoints are (checkpoint/sealing.ts): a fresh content key per
// seal, wrapped for each peer with X25519 from its Ed25519 identity; the openings (salt and value per name) sealed
// under it as JSON. Gossiped in the mission record; only the peers it is wrapped for can open it.
import { asEnvelope, ContentKey, SealError, wrapFor, type KeyEnvelope, type SealIdentity } from './sealing.ts'
import type { EnvSeal } from '../consensus/types.ts'
import type { EnvOpenings } from '../manifest/env-commitment.ts'

const b64 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url')
const bytes = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64url'))

/** Seals `openings` for `peers` (their peer ids); `gen` orders it after the seal it replaces. */
export function sealEnv (mission: string, openings: EnvOpenings, peers: Iterable<string>, gen: number): EnvSeal {
  const key = ContentKey.generate()
  const envelope = wrapFor(key, mission, peers)
  return {
    v: 1,
    gen,
    key: b64(envelope.key),
    eph: b64(envelope.eph),
    to: envelope.to.map(w => ({ peer: w.peer, nonce: b64(w.nonce), wrapped: b64(w.wrapped) })),
    box: b64(key.seal(Buffer.from(JSON.stringify(openings))))
  }
}

/** The peers a seal is wrapped for, sorted. */
export const sealedFor = (seal: EnvSeal): string[] => seal.to.map(w => w.peer).sort()

/**
 * The openings sealed in `seal`, or a NotARecipientError (not wrapped for this board) or a SealError (a copy or the
 * box that does not authenticate, or not JSON openings). They still have to be checked against the spec's digests.
 */
export function openEnv (mission: string, seal: EnvSeal, identity: SealIdentity): EnvOpenings {
  // Checked as a sealed checkpoint's envelope is: a key, an ephemeral key or a copy of the wrong length is a SealError
  // here, not a RangeError from the curve's code (the record's schema checks only that they are base64url).
  const envelope: KeyEnvelope = asEnvelope({
    v: 1,
    key: bytes(seal.key),
    mission,
    eph: bytes(seal.eph),
    to: seal.to.map(w => ({ peer: w.peer, nonce: bytes(w.nonce), wrapped: bytes(w.wrapped) }))
  })
  const key = identity.open(envelope)
  let parsed: unknown
  try { parsed = JSON.parse(Buffer.from(key.open(bytes(seal.box))).toString()) } catch (err) {
    if (err instanceof SealError) throw err
    throw new SealError(`the sealed env of ${mission} is not JSON`)
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new SealError(`the sealed env of ${mission} is not a mapping`)
  return parsed as EnvOpenings
}
