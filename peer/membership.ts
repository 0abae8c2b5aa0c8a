// Membership and failure detection (SWIM-style, with Lifeguard's local health). Pure logic: the clock,
// the probes and the tick are injected, so unit tests drive it deterministically.
//
// Why this design: heartbeats arrive every ~200 ms over gossipsub, so silence is the cheapest signal and the
// only one a board that lost power gives. Silence alone is not a verdict: a suspect is pinged directly and
// through k other peers (our own link or gossip path may be the broken part), and only a suspicion that
// nobody can refute within the suspicion timeout becomes `dead`. A closed connection is a hint that triggers
// an immediate ping; a refused redial proves the peer's process is gone (SIGKILL, crash) and is `dead` at once.
// A peer that is itself slow (event loop late, many suspects at once) stretches its timeouts instead of
// accusing others (Lifeguard's local health multiplier), and a process that was paused does not count the
// time it was paused as anyone else's silence.
import type { FailureDetectorConfig } from './config.ts'
import type { HeartbeatInfo } from './heartbeat.ts'

export type MemberState = 'alive' | 'suspect' | 'dead'
export type ProbeOutcome = 'ack' | 'refused' | 'timeout'

export interface Member {
  peerId: string
  state: MemberState
  /** Incarnation of the peer's process (grows on restart and after a detected pause). */
  incarnation: number
  /** Sequence number of the newest heartbeat heard in this incarnation. */
  seq: number
  /** Local clock (ms) of the last sign of life: a heartbeat or a successful probe. */
  lastHeardAt: number
  /** Wall-clock time (ms since epoch) of the last sign of life. */
  lastSeenWallMs: number
  /** Local clock (ms) when the current state began. */
  stateSince: number
  /** Why the current state was entered, e.g. `silent`, `refused`, `heartbeat`. */
  reason: string
  info: HeartbeatInfo | null
}

export interface MembershipChange {
  peerId: string
  state: MemberState
  previous: MemberState | null
  reason: string
}

/** A change with its wall-clock time (ms since epoch), as kept in the recent history. */
export interface MembershipEvent extends MembershipChange { at: number }

const HISTORY_LENGTH = 1000

/** Probes a peer. Implementations must resolve (never reject) within about the given timeout. */
export interface Prober {
  /** Direct ping: `refused` when its addresses refuse connections (no process listening). */
  direct (peerId: string, timeoutMs: number): Promise<ProbeOutcome>
  /** Asks `via` to ping `target`: `ack` if `via` reached it. */
  indirect (via: string, target: string, timeoutMs: number): Promise<ProbeOutcome>
}

export type Clock = () => number
type Listener<E> = (event: E) => void

export interface MembershipOptions {
  selfId: string
  config: FailureDetectorConfig
  prober: Prober
  /** Monotonic milliseconds (performance.now in production). */
  now?: Clock
  wallNow?: Clock
  random?: () => number
  log?: (line: string) => void
}

export interface HeardResult { accepted: boolean, reason: 'new' | 'fresh' | 'replayed' }

export class Membership {
  readonly selfId: string
  readonly config: FailureDetectorConfig
  readonly #prober: Prober
  readonly #now: Clock
  readonly #wallNow: Clock
  readonly #random: () => number
  readonly #log: (line: string) => void
  readonly #members = new Map<string, Member>()
  readonly #probing = new Map<string, { startedAt: number, done: boolean, outcome: ProbeOutcome | null }>()
  readonly #changeListeners = new Set<Listener<MembershipChange>>()
  readonly #pauseListeners = new Set<Listener<{ pausedMs: number }>>()
  readonly #history: MembershipEvent[] = []
  #timer: NodeJS.Timeout | undefined
  #lastTickAt: number | null = null
  #healthScore = 0
  #healthChangedAt = 0
  #lastLagMs = 0
  #pauses = 0

  constructor (options: MembershipOptions) {
    this.selfId = options.selfId
    this.config = options.config
    this.#prober = options.prober
    this.#now = options.now ?? (() => performance.now())
    this.#wallNow = options.wallNow ?? Date.now
    this.#random = options.random ?? Math.random
    this.#log = options.log ?? (() => {})
  }

  start (): void {
    this.#lastTickAt = this.#now()
    this.#timer = setInterval(() => { this.tick() }, this.config.tickIntervalMs)
  }

  stop (): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  /** Subscribes to state changes; returns an unsubscribe function. */
  on (listener: Listener<MembershipChange>): () => void {
    this.#changeListeners.add(listener)
    return () => { this.#changeListeners.delete(listener) }
  }

  /** Called when this process notices it was paused (SIGSTOP, VM freeze): it should refute by a new incarnation. */
  onPause (listener: Listener<{ pausedMs: number }>): () => void {
    this.#pauseListeners.add(listener)
    return () => { this.#pauseListeners.delete(listener) }
  }

  list (): Member[] { return [...this.#members.values()].map(member => ({ ...member })) }
  get (peerId: string): Member | undefined {
    const member = this.#members.get(peerId)
    return member == null ? undefined : { ...member }
  }

  /** The most recent state changes (oldest first), for diagnostics and the bench. */
  history (): MembershipEvent[] { return this.#history.map(event => ({ ...event })) }

  /** Lifeguard local health score: 0 is healthy; timeouts are multiplied by (1 + score). */
  get healthScore (): number { return this.#healthScore }
  get lastLagMs (): number { return this.#lastLagMs }
  get pauses (): number { return this.#pauses }
  #multiplier (): number { return 1 + this.#healthScore }

  /** True when this (incarnation, seq) is not newer than what we already heard from the peer. */
  isReplay (peerId: string, incarnation: number, seq: number): boolean {
    const member = this.#members.get(peerId)
    if (member == null) return false
    return incarnation < member.incarnation || (incarnation === member.incarnation && seq <= member.seq)
  }

  /** A verified heartbeat from `peerId`. */
  heard (peerId: string, incarnation: number, seq: number, info: HeartbeatInfo | null = null): HeardResult {
    if (peerId === this.selfId) return { accepted: false, reason: 'replayed' }
    const now = this.#now()
    const member = this.#members.get(peerId)
    if (member == null) {
      this.#members.set(peerId, {
        peerId, state: 'alive', incarnation, seq, lastHeardAt: now, lastSeenWallMs: this.#wallNow(), stateSince: now, reason: 'joined', info
      })
      this.#emit({ peerId, state: 'alive', previous: null, reason: 'joined' })
      return { accepted: true, reason: 'new' }
    }
    if (this.isReplay(peerId, incarnation, seq)) return { accepted: false, reason: 'replayed' }
    const restarted = incarnation > member.incarnation
    member.incarnation = incarnation
    member.seq = seq
    member.lastHeardAt = now
    member.lastSeenWallMs = this.#wallNow()
    if (info != null) member.info = info
    if (member.state !== 'alive') this.#transition(member, 'alive', restarted ? 'new incarnation' : 'heartbeat')
    return { accepted: true, reason: 'fresh' }
  }

  /** All connections to the peer closed: probe it now instead of waiting for silence. */
  disconnected (peerId: string): void {
    const member = this.#members.get(peerId)
    if (member == null || member.state === 'dead' || !this.config.probeOnDisconnect) return
    this.#startProbe(member, false)
  }

  /** Evaluates every member; called every tickIntervalMs. */
  tick (): void {
    const now = this.#now()
    this.#updateLocalHealth(now)
    for (const member of this.#members.values()) {
      const mult = this.#multiplier() * this.#remoteMultiplier(member)
      const silence = now - member.lastHeardAt
      if (member.state === 'alive' && silence > this.config.suspectAfterMs * mult) {
        this.#transition(member, 'suspect', `silent for ${Math.round(silence)} ms`)
        this.#noteSuspicionLoad(now)
        this.#startProbe(member, true)
      } else if (member.state === 'suspect') {
        const probe = this.#probing.get(member.peerId)
        const suspectedFor = now - member.stateSince
        if (probe == null) {
          this.#startProbe(member, true)
        } else if (probe.done && suspectedFor >= this.config.suspicionTimeoutMs * mult) {
          this.#probing.delete(member.peerId)
          this.#transition(member, 'dead', `no answer for ${Math.round(now - member.lastHeardAt)} ms`)
        }
      } else if (member.state === 'dead' && now - member.stateSince > this.config.deadRetentionMs) {
        this.#members.delete(member.peerId)
      }
    }
  }

  #updateLocalHealth (now: number): void {
    const last = this.#lastTickAt
    this.#lastTickAt = now
    if (last == null) { this.#healthChangedAt = now; return }
    const lag = Math.max(0, now - last - this.config.tickIntervalMs)
    this.#lastLagMs = lag
    if (lag > this.config.lagThresholdMs) {
      // We were not running (paused or starved): nobody's silence during that time is evidence against them.
      for (const member of this.#members.values()) {
        member.lastHeardAt += lag
        if (member.state === 'suspect') member.stateSince += lag
      }
    }
    if (lag > this.config.suspectAfterMs / 2) {
      this.#pauses++
      this.#log(`membership: this process was paused for ${Math.round(lag)} ms`)
      for (const listener of this.#pauseListeners) listener({ pausedMs: lag })
    } else if (lag > this.config.lagThresholdMs) {
      this.#raiseHealthScore(now, `event loop late by ${Math.round(lag)} ms`)
    } else if (this.#healthScore > 0 && now - this.#healthChangedAt >= this.config.healthDecayMs) {
      this.#healthScore--
      this.#healthChangedAt = now
    }
  }

  #raiseHealthScore (now: number, why: string): void {
    if (this.#healthScore < this.config.maxHealthScore) {
      this.#healthScore++
      this.#log(`membership: local health score ${this.#healthScore} (${why})`)
    }
    this.#healthChangedAt = now
  }

  /**
   * A peer that reported in its last heartbeat that it is itself running late (Lifeguard health score > 0)
   * gets proportionally more time before it is suspected and declared dead, up to maxRemoteHealthScore.
   */
  #remoteMultiplier (member: Member): number {
    return 1 + Math.min(member.info?.load.healthScore ?? 0, this.config.maxRemoteHealthScore)
  }

  /** Many peers suspect at once more likely means our own trouble than theirs. */
  #noteSuspicionLoad (now: number): void {
    const live = [...this.#members.values()].filter(member => member.state !== 'dead')
    const suspects = live.filter(member => member.state === 'suspect').length
    if (suspects >= 2 && suspects * 2 >= live.length) this.#raiseHealthScore(now, `${suspects} of ${live.length} peers suspect`)
  }

  #startProbe (member: Member, withIndirect: boolean): void {
    if (this.#probing.get(member.peerId)?.done === false) return
    const probe = { startedAt: this.#now(), done: false, outcome: null as ProbeOutcome | null }
    this.#probing.set(member.peerId, probe)
    const target = member.peerId
    const helpers = withIndirect ? this.#pickHelpers(target) : []
    const direct = this.#prober.direct(target, this.config.probeTimeoutMs * this.#multiplier())
    const indirect = helpers.map(async via => await this.#prober.indirect(via, target, this.config.indirectProbeTimeoutMs * this.#multiplier()))
    void settleProbes(direct, indirect).then(({ outcome, directOutcome }) => {
      probe.done = true
      probe.outcome = outcome
      if (directOutcome === 'timeout' && outcome === 'ack') this.#raiseHealthScore(this.#now(), `others reached ${target} but we could not`)
      this.#probeFinished(target, probe, outcome)
    })
  }

  #probeFinished (peerId: string, probe: { startedAt: number }, outcome: ProbeOutcome): void {
    const member = this.#members.get(peerId)
    if (member == null || member.state === 'dead' || this.#probing.get(peerId) !== probe) return
    const now = this.#now()
    if (outcome === 'ack') {
      this.#probing.delete(peerId)
      member.lastHeardAt = Math.max(member.lastHeardAt, now)
      if (member.state !== 'alive') this.#transition(member, 'alive', 'answered probe')
    } else if (outcome === 'refused' && member.lastHeardAt <= probe.startedAt) {
      this.#probing.delete(peerId)
      this.#transition(member, 'dead', 'connection refused')
    } else if (member.state === 'alive' && member.lastHeardAt <= probe.startedAt) {
      // A disconnect probe that timed out: suspect now, the suspicion round decides.
      this.#probing.delete(peerId)
      this.#transition(member, 'suspect', 'disconnected and no answer')
      this.#startProbe(member, true)
    } else if (member.state === 'alive') {
      this.#probing.delete(peerId)
    }
  }

  #pickHelpers (target: string): string[] {
    const candidates = [...this.#members.values()].filter(member => member.state === 'alive' && member.peerId !== target).map(member => member.peerId)
    for (let i = candidates.length - 1; i > 0; i--) {
      const j = Math.floor(this.#random() * (i + 1))
      const swap = candidates[i] as string
      candidates[i] = candidates[j] as string
      candidates[j] = swap
    }
    return candidates.slice(0, this.config.indirectProbes)
  }

  #transition (member: Member, state: MemberState, reason: string): void {
    const previous = member.state
    if (previous === state) return
    member.state = state
    member.stateSince = this.#now()
    member.reason = reason
    if (state !== 'suspect') this.#probing.delete(member.peerId)
    this.#log(`membership: ${member.peerId} ${previous} -> ${state} (${reason})`)
    this.#emit({ peerId: member.peerId, state, previous, reason })
  }

  #emit (change: MembershipChange): void {
    this.#history.push({ ...change, at: this.#wallNow() })
    if (this.#history.length > HISTORY_LENGTH) this.#history.splice(0, this.#history.length - HISTORY_LENGTH)
    for (const listener of this.#changeListeners) {
      try {
        listener(change)
      } catch (err) {
        this.#log(`membership: listener failed: ${(err as Error).stack ?? String(err)}`)
      }
    }
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
