// Commitments to a mission's env values: what the operator signs and every board gossips in place of the values.
//
// Each value is replaced in the spec by `tandem-env-sha256:<hex>`, the SHA-256 of a domain tag, a random 16-byte
// salt, and the name and value. The salt is secret (it travels only inside the values sealed for the view): with a
// public salt a guessable value ("password") could be checked against its digest. A spec without env is unchanged,
// so its grant digest is the one it had before commitments existed. Pure: node:crypto only computes.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { MissionSpec } from './manifest.ts'

export const ENV_DIGEST_PREFIX = 'tandem-env-sha256:'
const DOMAIN = 'tandem/env-commitment/1\n'
const SALT_BYTES = 16

/** What opens one commitment: the salt (hex) and the clear value. */
export interface EnvOpening { salt: string, value: string }
export type EnvOpenings = Record<string, EnvOpening>

/** Why clear values do not match the committed spec. */
export type EnvProblem = 'missing-value' | 'extra-value' | 'value-mismatch' | 'malformed'

export class EnvCommitmentError extends Error {
  readonly problem: EnvProblem
  constructor (problem: EnvProblem, message: string) {
    super(message)
    this.problem = problem
  }
}

export function envDigest (name: string, opening: EnvOpening): string {
  return ENV_DIGEST_PREFIX + createHash('sha256').update(DOMAIN).update(Buffer.from(opening.salt, 'hex')).update(JSON.stringify([name, opening.value])).digest('hex')
}

export const isEnvDigest = (value: string): boolean => /^tandem-env-sha256:[0-9a-f]{64}$/.test(value)

/** Whether a spec's env is committed (every value a digest). A spec without env counts as committed. */
export function isCommitted (spec: MissionSpec): boolean {
  return Object.values(spec.env).every(isEnvDigest)
}

/** A fresh random salt per name of `env` (hex), for the CLI to send with the manifest it signed. */
export function newSalts (env: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.keys(env).map(name => [name, randomBytes(SALT_BYTES).toString('hex')]))
}

/**
 * The spec with every env value replaced by its commitment, and the openings. `salts`: one per name (from the CLI
 * that signed the committed spec), else fresh ones.
 */
export function commitEnv (spec: MissionSpec, salts?: Record<string, string>): { spec: MissionSpec, openings: EnvOpenings } {
  const chosen = salts ?? newSalts(spec.env)
  const openings: EnvOpenings = {}
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(spec.env)) {
    const salt = chosen[name]
    if (typeof salt !== 'string' || !/^[0-9a-f]{32}$/.test(salt)) throw new EnvCommitmentError('malformed', `env ${name}: no salt of ${SALT_BYTES} bytes (32 hex digits)`)
    openings[name] = { salt, value }
    env[name] = envDigest(name, openings[name])
  }
  return { spec: { ...spec, env }, openings }
}

/** Throws EnvCommitmentError unless `openings` open exactly the commitments of `spec.env`. */
export function checkOpenings (spec: MissionSpec, openings: EnvOpenings): void {
  const names = Object.keys(spec.env)
  for (const name of names) {
    const opening = openings[name]
    if (opening == null) throw new EnvCommitmentError('missing-value', `env ${name}: no sealed value`)
    if (typeof opening.salt !== 'string' || typeof opening.value !== 'string' || !/^[0-9a-f]{32}$/.test(opening.salt)) throw new EnvCommitmentError('malformed', `env ${name}: malformed opening`)
    const want = Buffer.from(spec.env[name] as string)
    const got = Buffer.from(envDigest(name, opening))
    if (want.byteLength !== got.byteLength || !timingSafeEqual(want, got)) throw new EnvCommitmentError('value-mismatch', `env ${name}: the sealed value does not match the digest the operator signed`)
  }
  const extra = Object.keys(openings).find(name => !Object.hasOwn(spec.env, name))
  if (extra !== undefined) throw new EnvCommitmentError('extra-value', `env ${extra}: sealed but not in the signed spec`)
}

/** The clear env of a committed spec, once its openings were checked. */
export function clearEnv (spec: MissionSpec, openings: EnvOpenings): Record<string, string> {
  checkOpenings(spec, openings)
  return Object.fromEntries(Object.keys(spec.env).map(name => [name, (openings[name] as EnvOpening).value]))
}
