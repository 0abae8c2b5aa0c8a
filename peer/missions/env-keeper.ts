// A board's side of the sealed env values: opens the seal in a record (when wrapped for this board), checks the values
// against the digests the operator signed, hands them to the runner, and re-seals them for the view when this
// board is the primary and the view changed (as checkpoint keys rotate).
import { SealError, NotARecipientError, type SealIdentity } from '../../checkpoint/sealing.ts'
import { openEnv, sealEnv, sealedFor } from '../../checkpoint/env-seal.ts'
import { clearEnv, commitEnv, EnvCommitmentError, isCommitted, type EnvOpenings } from '../../manifest/env-commitment.ts'
import type { MissionSpec } from '../../manifest/manifest.ts'
import type { PeerEvent } from '../../consensus/events.ts'
import type { EnvSeal, LocalEvent, MissionSnapshot } from '../../consensus/types.ts'

export type EnvRefusal = 'not-a-recipient' | 'bad-seal' | 'no-seal' | 'missing-value' | 'extra-value' | 'value-mismatch' | 'malformed'

/** Clear env values could not be had for a start: the runner reports it as a failed start, never runs without. */
export class EnvUnavailableError extends Error {
  override name = 'EnvUnavailableError'
}

type Subject = Pick<MissionSnapshot, 'name' | 'deployId' | 'spec' | 'envSeal'>

export interface EnvKeeperContext {
  peerId: string
  identity: SealIdentity | null
  local: (event: LocalEvent) => void
  record: (mission: string, event: PeerEvent) => void
  log: (line: string) => void
}

export class EnvKeeper {
  readonly #ctx: EnvKeeperContext
  /** Opened and checked values, per mission, of one deployment's seal generation. */
  readonly #opened = new Map<string, { deployId: string, gen: number, openings: EnvOpenings, env: Record<string, string> }>()
  /** The last refusal per mission (one count and one event per seal). */
  readonly #failed = new Map<string, { deployId: string, gen: number, refusal: EnvRefusal, detail: string }>()
  readonly #resealed = new Map<string, string>()
  readonly refused: Partial<Record<EnvRefusal, number>> = {}

  constructor (ctx: EnvKeeperContext) { this.#ctx = ctx }

  /**
   * The spec to gossip for a deploy here and its seal: values committed (with the CLI's salts when it signed the
   * committed spec) and sealed for `peers` and this board. A spec without env gets no seal and stays as it is.
   */
  commit (spec: MissionSpec, peers: string[], salts?: Record<string, string>): { spec: MissionSpec, envSeal?: EnvSeal } {
    if (Object.keys(spec.env).length === 0) return { spec }
    const committed = commitEnv(spec, salts)
    const envSeal = sealEnv(spec.name, committed.openings, [...peers, this.#ctx.peerId], 0)
    return { spec: committed.spec, envSeal }
  }

  /** The clear env of a mission, or null with why not (counted and recorded once per seal). */
  envOf (m: Subject): { env: Record<string, string> } | { error: string } {
    const names = Object.keys(m.spec.env)
    if (names.length === 0 || !isCommitted(m.spec)) return { env: m.spec.env }
    const gen = m.envSeal?.gen ?? -1
    const opened = this.#opened.get(m.name)
    if (opened?.deployId === m.deployId && opened.gen === gen) return { env: opened.env }
    const failed = this.#failed.get(m.name)
    if (failed?.deployId === m.deployId && failed.gen === gen) return { error: failed.detail }
    try {
      if (m.envSeal === undefined) throw new EnvRefused('no-seal', 'the record carries no sealed env values')
      if (this.#ctx.identity === null) throw new EnvRefused('not-a-recipient', 'this board has no identity to open sealed values with')
      let openings: EnvOpenings
      try {
        openings = openEnv(m.name, m.envSeal, this.#ctx.identity)
      } catch (err) {
        if (err instanceof NotARecipientError) throw new EnvRefused('not-a-recipient', `the env values are sealed for ${m.envSeal.to.length} other board(s), not this one`)
        if (err instanceof SealError) throw new EnvRefused('bad-seal', err.message)
        throw err
      }
      let env: Record<string, string>
      try { env = clearEnv(m.spec, openings) } catch (err) {
        if (err instanceof EnvCommitmentError) throw new EnvRefused(err.problem, err.message)
        throw err
      }
      this.#opened.set(m.name, { deployId: m.deployId, gen, openings, env })
      this.#failed.delete(m.name)
      return { env }
    } catch (err) {
      if (!(err instanceof EnvRefused)) throw err
      this.refused[err.refusal] = (this.refused[err.refusal] ?? 0) + 1
      this.#failed.set(m.name, { deployId: m.deployId, gen, refusal: err.refusal, detail: err.message })
      this.#ctx.record(m.name, { kind: 'envRefused', problem: err.refusal, detail: err.message })
      this.#ctx.log(`mission ${m.name}: env values refused (${err.refusal}): ${err.message}`)
      return { error: err.message }
    }
  }

  /** For the runner: the clear env, or an EnvUnavailableError saying why. */
  require (m: Subject): Record<string, string> {
    const got = this.envOf(m)
    if ('error' in got) throw new EnvUnavailableError(`env values unavailable on this board: ${got.error}`)
    return got.env
  }

  /** What `mission show` reveals here: the values when this board can open them, else the names only. */
  shown (m: Subject): Record<string, string | null> {
    if (Object.keys(m.spec.env).length === 0 || !isCommitted(m.spec)) return { ...m.spec.env }
    if (m.envSeal === undefined || !m.envSeal.to.some(w => w.peer === this.#ctx.peerId)) return Object.fromEntries(Object.keys(m.spec.env).map(n => [n, null]))
    const got = this.envOf(m)
    return 'env' in got ? { ...got.env } : Object.fromEntries(Object.keys(m.spec.env).map(n => [n, null]))
  }

  /** The primary seals the values again when the view's members differ from the seal's recipients. */
  reseal (views: readonly MissionSnapshot[]): void {
    for (const m of views) {
      if (m.role !== 'primary' || m.envSeal === undefined || !isCommitted(m.spec) || Object.keys(m.spec.env).length === 0) continue
      const members = [...new Set([...m.view, this.#ctx.peerId])].sort()
      if (sealedFor(m.envSeal).join(',') === members.join(',')) continue
      const mark = `${m.deployId}/${m.envSeal.gen}/${members.join(',')}`
      if (this.#resealed.get(m.name) === mark) continue
      this.#resealed.set(m.name, mark)
      if ('error' in this.envOf(m)) continue
      const { openings } = this.#opened.get(m.name)!
      const seal = sealEnv(m.name, openings, members, m.envSeal.gen + 1)
      this.#ctx.local({ type: 'envSeal', mission: m.name, deployId: m.deployId, seal })
      this.#ctx.record(m.name, { kind: 'envResealed', gen: seal.gen, members: members.length })
    }
  }
}

class EnvRefused extends Error {
  readonly refusal: EnvRefusal
  constructor (refusal: EnvRefusal, message: string) {
    super(message)
    this.refusal = refusal
  }
}
