// Lifeguard's local health (memberlist's awareness): a peer that is itself slow (event loop late, many suspects
// at once, others reach a peer it cannot) raises its score and stretches its timeouts by (1 + score) instead of
// accusing others; the score decays by one every healthDecayMs of on-time ticks. A tick far too late means this
// process was paused (SIGSTOP, VM freeze): the caller refutes with a new incarnation.
import type { FailureDetectorConfig } from '../config.ts'
import type { Member } from './members.ts'

/** How late a tick was: `late` when the process was not running on time, `paused` when it was stopped. */
export interface TickLag { lagMs: number, late: boolean, paused: boolean }

export class LocalHealth {
  readonly #config: FailureDetectorConfig
  readonly #log: (line: string) => void
  #lastTickAt: number | null = null
  #score = 0
  #changedAt = 0
  #lastLagMs = 0
  #pauses = 0

  constructor (config: FailureDetectorConfig, log: (line: string) => void) {
    this.#config = config
    this.#log = log
  }

  /** The score: 0 is healthy; timeouts are multiplied by (1 + score). */
  get score (): number { return this.#score }
  get lastLagMs (): number { return this.#lastLagMs }
  get pauses (): number { return this.#pauses }
  multiplier (): number { return 1 + this.#score }

  /** The ticks start now (their lateness is measured from here). */
  started (now: number): void { this.#lastTickAt = now }

  /** Measures this tick's lateness and updates the score accordingly. */
  tick (now: number): TickLag {
    const last = this.#lastTickAt
    this.#lastTickAt = now
    if (last == null) { this.#changedAt = now; return { lagMs: 0, late: false, paused: false } }
    const lag = Math.max(0, now - last - this.#config.tickIntervalMs)
    this.#lastLagMs = lag
    const late = lag > this.#config.lagThresholdMs
    const paused = lag > this.#config.suspectAfterMs / 2
    if (paused) {
      this.#pauses++
      this.#log(`membership: this process was paused for ${Math.round(lag)} ms`)
    } else if (late) {
      this.raise(now, `event loop late by ${Math.round(lag)} ms`)
    } else if (this.#score > 0 && now - this.#changedAt >= this.#config.healthDecayMs) {
      this.#score--
      this.#changedAt = now
    }
    return { lagMs: lag, late, paused }
  }

  raise (now: number, why: string): void {
    if (this.#score < this.#config.maxHealthScore) {
      this.#score++
      this.#log(`membership: local health score ${this.#score} (${why})`)
    }
    this.#changedAt = now
  }

  /**
   * A peer that reported in its last heartbeat or beat that it is itself running late (Lifeguard health
   * score > 0) gets proportionally more time before it is suspected and declared dead, up to
   * maxRemoteHealthScore. Beats carry the score too, so a watcher learns it within a beat interval.
   */
  remoteMultiplier (member: Member): number {
    return 1 + Math.min(member.healthScore, this.#config.maxRemoteHealthScore)
  }

  /** Many peers suspect at once more likely means our own trouble than theirs. */
  noteSuspicionLoad (now: number, members: Iterable<Member>): void {
    const live = [...members].filter(member => member.state !== 'dead')
    const suspects = live.filter(member => member.state === 'suspect').length
    if (suspects >= 2 && suspects * 2 >= live.length) this.raise(now, `${suspects} of ${live.length} peers suspect`)
  }
}
