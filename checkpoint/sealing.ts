// Confidentiality of checkpoints: bundles are sealed for the mission's view.
//
// A content key (32 random bytes) is made by the primary for the members of the mission's view and wrapped for
// each of them: X25519 with the member's key, which is its libp2p Ed25519 identity converted to Montgomery form
// (so a peer id alone gives the public key to wrap for: nothing new is announced), HKDF-SHA256, AES-256-GCM. The
// wrapped keys (an envelope) travel in the clear root node of each checkpoint. A new key is made whenever the view's
// members change, so a member that left cannot read a later checkpoint.
//
// Blocks are sealed with AES-256-GCM under the content key with a nonce derived from the block (HMAC-SHA256 of the
// plaintext under a second subkey): the same page under the same key seals to the same bytes, so content addressing
// (over the ciphertext) still deduplicates the unchanged pages of successive checkpoints. That reveals to whoever
// holds the blocks which chunks are equal, and nothing of their content (a CID is over ciphertext: a guess of a
// page cannot be checked against it without the key).
import { createCipheriv, createDecipheriv, createHash, createHmac, createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto'
import { ed25519, x25519 } from '@noble/curves/ed25519.js'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { CheckpointError } from './errors.ts'

/** 't' 's' 'b' 1: a sealed block. A dag-cbor node of ours is a map (first byte 0xa0-0xbf), never this. */
export const SEAL_MAGIC = Uint8Array.of(0x74, 0x73, 0x62, 0x01)
export const KEY_ID_BYTES = 8
const NONCE_BYTES = 12
const TAG_BYTES = 16
const HEADER_BYTES = SEAL_MAGIC.byteLength + KEY_ID_BYTES + NONCE_BYTES
/** Bytes a sealed block has more than its plaintext. */
export const SEAL_OVERHEAD = HEADER_BYTES + TAG_BYTES
const WRAP_INFO = 'tandem/bundle-key-wrap/1'

export class SealError extends CheckpointError {
  override name = 'SealError'
}
/** This board is not among the recipients of a sealed checkpoint: it cannot read it. */
export class NotARecipientError extends SealError {
  override name = 'NotARecipientError'
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')

/** A content key: seals and opens blocks. */
export class ContentKey {
  readonly raw: Uint8Array
  /** First bytes of a hash of the key: names it in sealed blocks and envelopes. */
  readonly id: Uint8Array
  readonly idHex: string
  readonly #enc: KeyObject
  readonly #mac: KeyObject
  readonly #header: Buffer

  constructor (raw: Uint8Array) {
    if (raw.byteLength !== 32) throw new SealError('a content key has 32 bytes')
    this.raw = Uint8Array.from(raw)
    this.id = new Uint8Array(createHash('sha256').update('tandem/key-id/1').update(raw).digest().subarray(0, KEY_ID_BYTES))
    this.idHex = hex(this.id)
    this.#enc = createSecretKey(Buffer.from(hkdfSync('sha256', raw, new Uint8Array(0), 'tandem/seal/enc/1', 32)))
    this.#mac = createSecretKey(Buffer.from(hkdfSync('sha256', raw, new Uint8Array(0), 'tandem/seal/nonce/1', 32)))
    this.#header = Buffer.concat([SEAL_MAGIC, this.id])
  }

  static generate (): ContentKey { return new ContentKey(randomBytes(32)) }

  /** Deterministic: the same plaintext under this key gives the same sealed bytes. */
  seal (plain: Uint8Array): Uint8Array {
    const nonce = createHmac('sha256', this.#mac).update(plain).digest().subarray(0, NONCE_BYTES)
    const cipher = createCipheriv('aes-256-gcm', this.#enc, nonce, { authTagLength: TAG_BYTES })
    cipher.setAAD(this.#header)
    const out = Buffer.allocUnsafe(HEADER_BYTES + plain.byteLength + TAG_BYTES)
    this.#header.copy(out, 0)
    nonce.copy(out, this.#header.byteLength)
    const body = cipher.update(plain)
    body.copy(out, HEADER_BYTES)
    const rest = cipher.final()
    rest.copy(out, HEADER_BYTES + body.byteLength)
    cipher.getAuthTag().copy(out, HEADER_BYTES + body.byteLength + rest.byteLength)
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength)
  }

  open (sealed: Uint8Array): Uint8Array {
    if (!isSealed(sealed) || sealed.byteLength < SEAL_OVERHEAD) throw new SealError('not a sealed block')
    if (hex(sealed.subarray(SEAL_MAGIC.byteLength, SEAL_MAGIC.byteLength + KEY_ID_BYTES)) !== this.idHex) throw new SealError('block sealed with another key')
    const nonce = sealed.subarray(SEAL_MAGIC.byteLength + KEY_ID_BYTES, HEADER_BYTES)
    const decipher = createDecipheriv('aes-256-gcm', this.#enc, nonce, { authTagLength: TAG_BYTES })
    decipher.setAAD(this.#header)
    decipher.setAuthTag(sealed.subarray(sealed.byteLength - TAG_BYTES))
    try {
      const a = decipher.update(sealed.subarray(HEADER_BYTES, sealed.byteLength - TAG_BYTES))
      const b = decipher.final()
      const out = b.byteLength === 0 ? a : Buffer.concat([a, b])
      return new Uint8Array(out.buffer, out.byteOffset, out.byteLength)
    } catch {
      throw new SealError(`sealed block does not authenticate under key ${this.idHex}`)
    }
  }
}

export function isSealed (bytes: Uint8Array): boolean {
  return bytes.byteLength >= SEAL_MAGIC.byteLength && bytes[0] === SEAL_MAGIC[0] && bytes[1] === SEAL_MAGIC[1] && bytes[2] === SEAL_MAGIC[2] && bytes[3] === SEAL_MAGIC[3]
}

/** The id (hex) of the key a sealed block names. */
export function sealedKeyId (bytes: Uint8Array): string {
  if (!isSealed(bytes) || bytes.byteLength < HEADER_BYTES) throw new SealError('not a sealed block')
  return hex(bytes.subarray(SEAL_MAGIC.byteLength, SEAL_MAGIC.byteLength + KEY_ID_BYTES))
}

/** One wrapped copy of a content key, for one peer. */
export interface WrappedKey { peer: string, nonce: Uint8Array, wrapped: Uint8Array }

/** The content key of a checkpoint, wrapped for each member of the view; kept in the checkpoint's clear root. */
export interface KeyEnvelope {
  v: 1
  /** Id of the wrapped key (see ContentKey.id). */
  key: Uint8Array
  mission: string
  /** Ephemeral X25519 public key of the wrapper. */
  eph: Uint8Array
  to: WrappedKey[]
}

/** The X25519 public key of a peer, from its Ed25519 peer id. */
export function x25519PublicOf (peerId: string): Uint8Array {
  const key = peerIdFromString(peerId).publicKey
  if (key?.type !== 'Ed25519') throw new SealError(`peer ${peerId} has no Ed25519 identity: no key can be wrapped for it`)
  return ed25519.utils.toMontgomery(key.raw)
}

/** What a board needs to open envelopes wrapped for it: its peer id and its identity converted to X25519. */
export class SealIdentity {
  readonly peerId: string
  readonly #secret: Uint8Array
  readonly #public: Uint8Array

  constructor (peerId: string, ed25519Seed: Uint8Array) {
    this.peerId = peerId
    this.#secret = ed25519.utils.toMontgomerySecret(ed25519Seed.subarray(0, 32))
    this.#public = x25519.getPublicKey(this.#secret)
    if (hex(this.#public) !== hex(x25519PublicOf(peerId))) throw new SealError(`identity key does not belong to ${peerId}`)
  }

  /** From a libp2p Ed25519 private key (raw: 32-byte seed then 32-byte public key). */
  static fromPrivateKey (peerId: string, key: PrivateKey): SealIdentity {
    if (key.type !== 'Ed25519') throw new SealError('checkpoint sealing needs an Ed25519 identity')
    return new SealIdentity(peerId, key.raw)
  }

  /** The content key of `envelope`, or a NotARecipientError. */
  open (envelope: KeyEnvelope): ContentKey {
    const mine = envelope.to.find(w => w.peer === this.peerId)
    if (mine == null) throw new NotARecipientError(`checkpoint of ${envelope.mission} is sealed for ${envelope.to.length} other board(s), not this one (${this.peerId})`)
    const kek = wrapKey(x25519.getSharedSecret(this.#secret, envelope.eph), envelope.eph, this.#public, envelope.key)
    const decipher = createDecipheriv('aes-256-gcm', kek, mine.nonce, { authTagLength: TAG_BYTES })
    decipher.setAAD(wrapAad(envelope))
    decipher.setAuthTag(mine.wrapped.subarray(mine.wrapped.byteLength - TAG_BYTES))
    let raw: Buffer
    try {
      raw = Buffer.concat([decipher.update(mine.wrapped.subarray(0, mine.wrapped.byteLength - TAG_BYTES)), decipher.final()])
    } catch {
      throw new SealError(`the key wrapped for ${this.peerId} in the envelope of ${envelope.mission} does not authenticate`)
    }
    const key = new ContentKey(raw)
    if (key.idHex !== hex(envelope.key)) throw new SealError(`the key wrapped for ${this.peerId} is not key ${hex(envelope.key)}`)
    return key
  }
}

function wrapKey (shared: Uint8Array, eph: Uint8Array, recipient: Uint8Array, keyId: Uint8Array): KeyObject {
  const info = Buffer.concat([Buffer.from(WRAP_INFO), recipient, keyId])
  return createSecretKey(Buffer.from(hkdfSync('sha256', shared, eph, info, 32)))
}

function wrapAad (envelope: Pick<KeyEnvelope, 'key' | 'mission'>): Buffer {
  return Buffer.concat([Buffer.from(WRAP_INFO), envelope.key, Buffer.from(envelope.mission)])
}

/** Wraps `key` for each of `peers` (their peer ids). */
export function wrapFor (key: ContentKey, mission: string, peers: Iterable<string>): KeyEnvelope {
  const ephSecret = x25519.utils.randomSecretKey()
  const eph = x25519.getPublicKey(ephSecret)
  const envelope: KeyEnvelope = { v: 1, key: key.id, mission, eph, to: [] }
  for (const peer of [...new Set(peers)].sort()) {
    const recipient = x25519PublicOf(peer)
    const kek = wrapKey(x25519.getSharedSecret(ephSecret, recipient), eph, recipient, key.id)
    const nonce = randomBytes(NONCE_BYTES)
    const cipher = createCipheriv('aes-256-gcm', kek, nonce, { authTagLength: TAG_BYTES })
    cipher.setAAD(wrapAad(envelope))
    const wrapped = Buffer.concat([cipher.update(key.raw), cipher.final(), cipher.getAuthTag()])
    envelope.to.push({ peer, nonce: new Uint8Array(nonce), wrapped: new Uint8Array(wrapped) })
  }
  return envelope
}

export function asEnvelope (v: unknown): KeyEnvelope {
  const o = v as Partial<KeyEnvelope> | null
  const bytes = (b: unknown, n?: number): boolean => b instanceof Uint8Array && (n == null || b.byteLength === n)
  if (o == null || typeof o !== 'object' || o.v !== 1 || !bytes(o.key, KEY_ID_BYTES) || typeof o.mission !== 'string' || !bytes(o.eph, 32) ||
    !Array.isArray(o.to) || o.to.length > 1024 ||
    !o.to.every(w => w != null && typeof w.peer === 'string' && bytes(w.nonce, NONCE_BYTES) && bytes(w.wrapped, 32 + TAG_BYTES))) {
    throw new SealError('not a valid key envelope')
  }
  return o as KeyEnvelope
}

/**
 * The primary's side: one content key per mission for the current members of its view, made anew when they change
 * (a member that left must not read later checkpoints; one that joined gets the next key).
 */
export class MissionKeys {
  readonly #current = new Map<string, { members: string, key: ContentKey, envelope: KeyEnvelope }>()
  /** Keys made since start (rotations included). */
  made = 0

  keyFor (mission: string, members: Iterable<string>): { key: ContentKey, envelope: KeyEnvelope, rotated: boolean } {
    const sorted = [...new Set(members)].sort()
    if (sorted.length === 0) throw new SealError(`mission ${mission}: no member to seal its checkpoint for`)
    const id = sorted.join(',')
    const current = this.#current.get(mission)
    if (current?.members === id) return { key: current.key, envelope: current.envelope, rotated: false }
    const key = ContentKey.generate()
    const envelope = wrapFor(key, mission, sorted)
    this.#current.set(mission, { members: id, key, envelope })
    this.made++
    return { key, envelope, rotated: current != null }
  }

  forget (mission: string): void { this.#current.delete(mission) }
}
