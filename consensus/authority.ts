// Operator authority: what only the holder of an operator key may do (deploy, remove, move a mission; revoke a
// board), as grants signed with Ed25519. Pure: no I/O; node:crypto only computes (Ed25519 signatures are
// deterministic), so the consensus machine and the gossip validators can call it alike.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto'
import type { MissionSpec } from '../manifest/manifest.ts'
import { natural, text, z } from '../schema/schema.ts'
import type { ConsensusMessage } from './types.ts'

export type OperatorOp = 'deploy' | 'remove' | 'move' | 'revoke'

/**
 * One operator decision, signed. `subject`: the mission (deploy, remove, move) or the revoked peer id (revoke).
 * `deployId`: the deployment it applies to (the deploy grant names the deployment it creates). `spec`: SHA-256 of
 * the canonical JSON of the validated spec (deploy). `to`: the target board (move). `at`: the operator's clock, ms.
 * `key`: the signing public key (raw Ed25519, base64url), one of the keys every board trusts.
 */
export interface OperatorGrant {
  v: 1
  op: OperatorOp
  subject: string
  deployId: string | null
  spec: string | null
  to: string | null
  at: number
  key: string
  sig: string
}

export type UnsignedGrant = Omit<OperatorGrant, 'v' | 'key' | 'sig'>

/** Why a grant (or a record or message that needs one) is refused. */
export type GrantProblem = 'missing' | 'malformed' | 'untrusted-key' | 'bad-signature' | 'mismatch'

export class GrantError extends Error {
  readonly problem: GrantProblem
  constructor (problem: GrantProblem, message: string) {
    super(message)
    this.problem = problem
  }
}

/** First word of a public key file's line. */
export const PUBLIC_KEY_PREFIX = 'tandem-operator-ed25519'
const SIGNED_PREFIX = 'tandem-operator-grant/1\n'
const OPS = ['deploy', 'remove', 'move', 'revoke'] as const satisfies readonly OperatorOp[]
const MAX_FIELD = 256

/** JSON with object keys sorted at every level: the same spec hashes the same on every board. */
export function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(v => canonicalJson(v === undefined ? null : v)).join(',')}]`
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`
  }
  return JSON.stringify(value)
}

export function specDigest (spec: MissionSpec): string {
  return createHash('sha256').update(canonicalJson(spec)).digest('hex')
}

function signedBytes (g: Omit<OperatorGrant, 'sig'>): Buffer {
  return Buffer.from(SIGNED_PREFIX + JSON.stringify([g.v, g.op, g.subject, g.deployId, g.spec, g.to, g.at, g.key]))
}

function publicKeyObject (raw: string): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw }, format: 'jwk' })
}

/** A new operator key pair: the private key as PKCS#8 PEM, the public key as raw base64url. */
export function createOperatorKeyPair (): { privatePem: string, publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicKey: publicKey.export({ format: 'jwk' }).x as string
  }
}

/** An operator's private key (from its PEM file), able to sign grants. */
export class OperatorSigner {
  readonly publicKey: string
  readonly #key: KeyObject

  constructor (privatePem: string) {
    let key: KeyObject
    try {
      key = createPrivateKey(privatePem)
    } catch (err) {
      throw new Error(`not an operator private key (PKCS#8 PEM): ${(err as Error).message}`)
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`operator keys are Ed25519, this one is ${key.asymmetricKeyType ?? 'unknown'}`)
    this.#key = key
    this.publicKey = createPublicKey(key).export({ format: 'jwk' }).x as string
  }

  sign (fields: UnsignedGrant): OperatorGrant {
    const unsigned = { v: 1 as const, ...fields, key: this.publicKey }
    return { ...unsigned, sig: sign(null, signedBytes(unsigned), this.#key).toString('base64url') }
  }
}

/** Public keys from a key file's text: one per line (`tandem-operator-ed25519 KEY [comment]`), `#` comments. */
export function parsePublicKeys (text: string): string[] {
  const keys: string[] = []
  for (const [i, line] of text.split('\n').entries()) {
    const trimmed = line.trim()
    if (trimmed === '' || trimmed.startsWith('#')) continue
    const [prefix, key] = trimmed.split(/\s+/)
    if (prefix !== PUBLIC_KEY_PREFIX || key === undefined || !/^[A-Za-z0-9_-]{43}$/.test(key)) {
      throw new Error(`line ${i + 1}: expected '${PUBLIC_KEY_PREFIX} <43 base64url characters>'`)
    }
    try { publicKeyObject(key) } catch (err) { throw new Error(`line ${i + 1}: not an Ed25519 public key (${(err as Error).message})`) }
    keys.push(key)
  }
  return keys
}

export function formatPublicKey (publicKey: string, comment = ''): string {
  return `${PUBLIC_KEY_PREFIX} ${publicKey}${comment === '' ? '' : ` ${comment}`}\n`
}

const grantField = text(MAX_FIELD, 1)
const grantSchema = z.object({
  v: z.literal(1),
  op: z.enum(OPS),
  subject: grantField,
  deployId: grantField.nullable(),
  spec: grantField.nullable(),
  to: grantField.nullable(),
  at: natural,
  key: grantField,
  sig: grantField
}) satisfies z.ZodType<OperatorGrant>

/** A grant received from the network, or undefined when malformed (its signature is not checked here). */
export function validateGrant (value: unknown): OperatorGrant | undefined {
  const result = grantSchema.safeParse(value)
  return result.success ? result.data : undefined
}

/** What a grant must say to authorize an operation. */
export interface GrantExpectation { op: OperatorOp, subject: string, deployId?: string, spec?: MissionSpec, to?: string }

/**
 * The operator keys a board trusts (several during a rotation: add the new key to every board, re-sign, drop the
 * old one). `open`: no keys configured and the board was started for development with every operation allowed.
 */
export class OperatorKeys {
  readonly open: boolean
  readonly #trusted: Map<string, KeyObject>
  /** Signatures already verified (signature -> signed bytes): each record is re-announced every second. */
  readonly #verified = new Map<string, string>()

  constructor (publicKeys: readonly string[], options: { open?: boolean } = {}) {
    this.open = options.open === true && publicKeys.length === 0
    this.#trusted = new Map(publicKeys.map(k => [k, publicKeyObject(k)]))
  }

  get keys (): string[] { return [...this.#trusted.keys()] }

  /** Throws GrantError unless `grant` is a valid signature of a trusted key saying what `expected` says. */
  check (grant: OperatorGrant | null | undefined, expected: GrantExpectation): void {
    if (this.open) return
    if (grant == null) throw new GrantError('missing', `${expected.op} of ${expected.subject} carries no operator grant`)
    const key = this.#trusted.get(grant.key)
    if (key === undefined) throw new GrantError('untrusted-key', `${expected.op} of ${expected.subject}: grant signed by an untrusted key ${grant.key.slice(0, 8)}…`)
    const bytes = signedBytes(grant)
    if (this.#verified.get(grant.sig) !== bytes.toString('latin1')) {
      let ok = false
      try { ok = verify(null, bytes, key, Buffer.from(grant.sig, 'base64url')) } catch {}
      if (!ok) throw new GrantError('bad-signature', `${expected.op} of ${expected.subject}: the operator signature does not verify`)
      if (this.#verified.size >= 4096) this.#verified.clear()
      this.#verified.set(grant.sig, bytes.toString('latin1'))
    }
    const mismatch = grant.op !== expected.op ? `it grants ${grant.op}`
      : grant.subject !== expected.subject ? `it names ${grant.subject}`
        : expected.deployId !== undefined && grant.deployId !== expected.deployId ? `it is for deployment ${grant.deployId ?? 'none'}`
          : expected.spec !== undefined && grant.spec !== specDigest(expected.spec) ? 'the spec differs from the one signed'
            : expected.to !== undefined && grant.to !== expected.to ? `it moves to ${grant.to ?? 'nowhere'}`
              : null
    if (mismatch !== null) throw new GrantError('mismatch', `${expected.op} of ${expected.subject} (deployment ${expected.deployId ?? '-'}) refused: ${mismatch}`)
  }

  /** check() as a predicate. */
  allows (grant: OperatorGrant | null | undefined, expected: GrantExpectation): boolean {
    try { this.check(grant, expected); return true } catch { return false }
  }
}

/** A deployment id for a new deploy grant: the key's prefix, the operator's time and a random suffix. */
export function newDeployId (publicKey: string, at: number, random: string): string {
  return `op-${publicKey.slice(0, 8)}@${at}.${random}`
}

/** A signed move is honoured this long after the operator signed it (its repeats are harmless within). */
export const MOVE_GRANT_TTL_MS = 10 * 60_000

/**
 * The operator's part of a mission message, checked without state (the gossip validator drops what fails, with a
 * counted reason): every record carries the deploy grant of its deployment and spec, a tombstone its removal, a
 * remove and a move their own grant (a move for at most MOVE_GRANT_TTL_MS after it was signed). Claims, votes, acks,
 * fences and abandons need none: the machine judges their senders (who may speak for a mission).
 */
export function checkMessageAuthority (keys: OperatorKeys, message: ConsensusMessage, now: number): void {
  if (keys.open) return
  switch (message.type) {
    case 'announce': {
      const r = message.record
      if (r.removed) keys.check(r.removal, { op: 'remove', subject: r.mission, deployId: r.deployId })
      else keys.check(r.grant, { op: 'deploy', subject: r.mission, deployId: r.deployId, spec: r.spec })
      return
    }
    case 'remove': keys.check(message.grant, { op: 'remove', subject: message.mission, deployId: message.deployId }); return
    case 'move':
      keys.check(message.grant, { op: 'move', subject: message.mission, deployId: message.deployId, to: message.to })
      if (Math.abs(now - message.grant!.at) > MOVE_GRANT_TTL_MS) throw new GrantError('mismatch', `move of ${message.mission} signed ${Math.round((now - message.grant!.at) / 1000)} s ago: expired`)
  }
}
