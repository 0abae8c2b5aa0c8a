// The board's vote signatures: its libp2p Ed25519 identity signs the votes it grants, and the peer ids of the others
// (which embed their Ed25519 public keys) verify theirs (consensus/quorum-proof.ts). Synchronous (node:crypto), with
// the verified signatures remembered: every record is re-announced each second with the same proof.
import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import type { VoteKeys } from '../consensus/quorum-proof.ts'

const CACHE_MAX = 4096

const b64url = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64url')

export class PeerVoteKeys implements VoteKeys {
  readonly #key: KeyObject
  readonly #publicKeys = new Map<string, KeyObject | null>()
  /** `${voter}\n${sig}` -> the statement it verified for. */
  readonly #verified = new Map<string, string>()

  /** From the board's libp2p identity (Ed25519: raw is the 32-byte seed then the 32-byte public key). */
  constructor (identity: PrivateKey) {
    if (identity.type !== 'Ed25519') throw new Error(`vote signatures need an Ed25519 identity, this one is ${identity.type}`)
    const raw = identity.raw
    this.#key = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: b64url(raw.subarray(0, 32)), x: b64url(raw.subarray(32, 64)) }, format: 'jwk' })
  }

  sign (statement: string): string {
    return sign(null, Buffer.from(statement), this.#key).toString('base64url')
  }

  verify (voter: string, statement: string, sig: string): boolean {
    const cacheKey = `${voter}\n${sig}`
    if (this.#verified.get(cacheKey) === statement) return true
    const key = this.#publicKeyOf(voter)
    if (key === null) return false
    let ok = false
    try { ok = verify(null, Buffer.from(statement), key, Buffer.from(sig, 'base64url')) } catch {}
    if (ok) {
      if (this.#verified.size >= CACHE_MAX) this.#verified.clear()
      this.#verified.set(cacheKey, statement)
    }
    return ok
  }

  #publicKeyOf (peerId: string): KeyObject | null {
    let key = this.#publicKeys.get(peerId)
    if (key !== undefined) return key
    key = null
    try {
      const publicKey = peerIdFromString(peerId).publicKey
      if (publicKey?.type === 'Ed25519') key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(publicKey.raw) }, format: 'jwk' })
    } catch {}
    if (this.#publicKeys.size >= CACHE_MAX) this.#publicKeys.clear()
    this.#publicKeys.set(peerId, key)
    return key
  }
}
