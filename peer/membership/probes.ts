// SWIM probes of one peer: a direct ping, and with `withIndirect` the same asked of k random other peers at once
// (our own link may be the broken part). One round per peer at a time; the detector (peer/membership.ts) reads
// the outcome.
import type { FailureDetectorConfig } from '../config.ts'

export type ProbeOutcome = 'ack' | 'refused' | 'timeout'

/** Probes a peer. Implementations must resolve (never reject) within about the given timeout. */
export interface Prober {
  /** Direct ping: `refused` when its addresses refuse connections (no process listening). */
  direct (peerId: string, timeoutMs: number): Promise<ProbeOutcome>
  /** Asks `via` to ping `target`: `ack` if `via` reached it. */
  indirect (via: string, target: string, timeoutMs: number): Promise<ProbeOutcome>
}

export interface ProbeRound { startedAt: number, done: boolean, outcome: ProbeOutcome | null }

export interface ProbeRoundsOptions {
  prober: Prober
  config: FailureDetectorConfig
  now: () => number
  random: () => number
  /** Lifeguard's multiplier of the timeouts (peer/membership/local-health.ts). */
  multiplier: () => number
  /** The peers that may ping `target` for us: the live members other than it. */
  helpersFor: (target: string) => string[]
  /** Others reached `target` but we could not directly. */
  onDirectPathLost: (target: string) => void
  onSettled: (target: string, round: ProbeRound, outcome: ProbeOutcome) => void
}

export class ProbeRounds {
  readonly #options: ProbeRoundsOptions
  readonly #rounds = new Map<string, ProbeRound>()

  constructor (options: ProbeRoundsOptions) {
    this.#options = options
  }

  get (peerId: string): ProbeRound | undefined { return this.#rounds.get(peerId) }
  delete (peerId: string): void { this.#rounds.delete(peerId) }

  /** Starts a round unless one is in flight. */
  start (target: string, withIndirect: boolean): void {
    if (this.#rounds.get(target)?.done === false) return
    const { prober, config, multiplier } = this.#options
    const round: ProbeRound = { startedAt: this.#options.now(), done: false, outcome: null }
    this.#rounds.set(target, round)
    const helpers = withIndirect ? this.#pickHelpers(target) : []
    const direct = prober.direct(target, config.probeTimeoutMs * multiplier())
    const indirect = helpers.map(async via => await prober.indirect(via, target, config.indirectProbeTimeoutMs * multiplier()))
    void settleProbes(direct, indirect).then(({ outcome, directOutcome }) => {
      round.done = true
      round.outcome = outcome
      if (directOutcome === 'timeout' && outcome === 'ack') this.#options.onDirectPathLost(target)
      this.#options.onSettled(target, round, outcome)
    })
  }

  #pickHelpers (target: string): string[] {
    const candidates = this.#options.helpersFor(target)
    for (let i = candidates.length - 1; i > 0; i--) {
      const j = Math.floor(this.#options.random() * (i + 1))
      const swap = candidates[i] as string
      candidates[i] = candidates[j] as string
      candidates[j] = swap
    }
    return candidates.slice(0, this.#options.config.indirectProbes)
  }
}

/** Resolves on the first `ack`, otherwise once all probes are in: `refused` if the direct probe was refused. */
async function settleProbes (direct: Promise<ProbeOutcome>, indirect: Array<Promise<ProbeOutcome>>): Promise<{ outcome: ProbeOutcome, directOutcome: ProbeOutcome }> {
  const safe = (p: Promise<ProbeOutcome>): Promise<ProbeOutcome> => p.catch(() => 'timeout' as const)
  const directSafe = safe(direct)
  const all = [directSafe, ...indirect.map(safe)]
  return await new Promise(resolve => {
    let pending = all.length
    let directOutcome: ProbeOutcome = 'timeout'
    let resolved = false
    void directSafe.then(outcome => { directOutcome = outcome })
    for (const probe of all) {
      void probe.then(outcome => {
        pending--
        if (resolved) return
        if (outcome === 'ack') {
          resolved = true
          resolve({ outcome: 'ack', directOutcome })
        } else if (outcome === 'refused' && probe === directSafe) {
          // Nothing listens where the peer was: the indirect answers cannot change that.
          resolved = true
          resolve({ outcome: 'refused', directOutcome: 'refused' })
        } else if (pending === 0) {
          resolved = true
          resolve({ outcome: 'timeout', directOutcome })
        }
      })
    }
  })
}
