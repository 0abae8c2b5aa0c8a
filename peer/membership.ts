// Membership and failure detection (SWIM-style, with Lifeguard's local health). Pure logic: the clock,
// the probes and the tick are injected, so unit tests drive it deterministically.
//
// Why this design: silence is the cheapest signal and the only one a board that lost power gives. Listening
// to everyone at a fast rate costs O(N²) messages (20 peers at 200 ms: 95 signed messages in and out per peer
// per second, a saturated 2-core host), so the signals are split as in SWIM / memberlist:
// - every peer gossips a signed heartbeat with its profile at a slow rate (1 s): membership and info;
// - every peer sends small direct beats (200 ms, over a long-lived libp2p stream that Noise authenticates) to
//   its k watchers only, its k successors on the ring of live members sorted by peer id; a watcher holds the
//   peer to the short silence bound, everyone else to the long one of the gossiped heartbeat;
// - a peer that concludes `dead` from its own evidence gossips a signed verdict carrying the target's
//   incarnation and heartbeat sequence number; everyone else applies it at once if it comes from one of the
//   target's watchers, and otherwise pings the target itself; an older verdict (a replay) does nothing. An
//   accused peer that is alive refutes it with a new incarnation (SWIM).
// Silence alone is not a verdict: a suspect is pinged directly and through k other peers (our own link may be
// the broken part), and only a suspicion that nobody can refute within the suspicion timeout becomes `dead`.
// A closed connection is a hint that triggers an immediate ping on every peer (all peers hold a connection to
// each other); a refused redial proves the peer's process is gone (SIGKILL, crash) and is `dead` at once.
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
  /**
   * Dead because a redial was refused (here or by the verdict's issuer): nothing listens on its port, its process
   * exited, and its watchdog (peer/watchdog.ts) killed its containers. False in every other case.
   */
  exitProven: boolean
  info: HeartbeatInfo | null
  /** The peer's own Lifeguard health score, from its newest heartbeat or direct beat (0 = healthy). */
  healthScore: number
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
const REFUSED = 'connection refused'

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

/** A `dead` verdict: `target` was found dead in `incarnation`, the newest heartbeat heard from it being `seq`. */
export interface Verdict { target: string, incarnation: number, seq: number, reason: string, exitProven?: boolean }

/**
 * What a received verdict did: `applied` (the target is now dead here), `known` (it already was), `stale`
 * (older than what we heard from the target since: a replay or a refuted suspicion), `stranger` (from a
 * peer that is not a live member), `self` (it accuses this peer, which should refute it), `unknown` (a target
 * we never heard of), `hint` (from a peer that is not one of the target's watchers in our view: we probe the
 * target ourselves instead of taking its word, so one confused peer cannot kill peers it does not watch).
 */
export type VerdictResult = 'applied' | 'known' | 'stale' | 'stranger' | 'self' | 'unknown' | 'hint'

/**
 * The `count` peers after `self` on the ring of `ids` sorted by id (wrapping around): the peers that watch
 * `self`. Every peer computes the same ring from the same membership, so each peer has `count` watchers.
 */
export function ringSuccessors (ids: Iterable<string>, self: string, count: number): string[] {
  const ring = [...new Set([...ids, self])].sort()
  const at = ring.indexOf(self)
  const successors: string[] = []
  for (let i = 1; i < ring.length && successors.length < count; i++) successors.push(ring[(at + i) % ring.length] as string)
  return successors
}

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
  readonly #directPathListeners = new Set<Listener<{ peerId: string }>>()
  readonly #verdictListeners = new Set<Listener<Verdict>>()
  readonly #accusedListeners = new Set<Listener<Verdict & { from: string }>>()
  /** Peers whose direct beats we receive (we are one of their watchers): held to the short silence bound. */
  readonly #beating = new Set<string>()
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
  /**
   * A probe reached the peer through others but not directly: the direct connection is likely dead though still
   * listed (a link cut with DROP leaves it half-open), and beats on it go nowhere.
   */
  onDirectPathLost (listener: Listener<{ peerId: string }>): () => void {
    this.#directPathListeners.add(listener)
    return () => { this.#directPathListeners.delete(listener) }
  }

  onPause (listener: Listener<{ pausedMs: number }>): () => void {
    this.#pauseListeners.add(listener)
    return () => { this.#pauseListeners.delete(listener) }
  }

  /** Called with each `dead` verdict this peer reaches from its own evidence, to be gossiped. */
  onVerdict (listener: Listener<Verdict>): () => void {
    this.#verdictListeners.add(listener)
    return () => { this.#verdictListeners.delete(listener) }
  }

  /** Called when a verdict accuses this peer: if its incarnation is ours, refute with a new incarnation. */
  onAccused (listener: Listener<Verdict & { from: string }>): () => void {
    this.#accusedListeners.add(listener)
    return () => { this.#accusedListeners.delete(listener) }
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
        peerId, state: 'alive', incarnation, seq, lastHeardAt: now, lastSeenWallMs: this.#wallNow(), stateSince: now, reason: 'joined', exitProven: false, info,
        healthScore: info?.load.healthScore ?? 0
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
    if (info != null) {
      member.info = info
      member.healthScore = info.load.healthScore
    }
    if (member.state !== 'alive') this.#transition(member, 'alive', restarted ? 'new incarnation' : 'heartbeat')
    return { accepted: true, reason: 'fresh' }
  }

  /**
   * A direct beat from `peerId` (over an authenticated stream, so no replay check): a sign of life, and from
   * now on the peer is held to the short silence bound (suspectAfterMs) until its beats end.
   */
  beat (peerId: string, incarnation: number, healthScore = 0): void {
    if (peerId === this.selfId) return
    this.#beating.add(peerId)
    const member = this.#members.get(peerId)
    // Unknown peers are learnt from their gossiped heartbeat, which carries their profile.
    if (member == null || incarnation < member.incarnation) return
    const restarted = incarnation > member.incarnation
    if (restarted) {
      member.incarnation = incarnation
      member.seq = 0
    }
    member.lastHeardAt = this.#now()
    member.lastSeenWallMs = this.#wallNow()
    member.healthScore = healthScore
    if (member.state !== 'alive') this.#transition(member, 'alive', restarted ? 'new incarnation' : 'beat')
  }

  /** The peer stopped sending us direct beats (it picked other watchers, or the stream closed). */
  beatsEnded (peerId: string): void {
    this.#beating.delete(peerId)
  }

  /** Whether we watch `peerId` (we receive its direct beats). */
  watches (peerId: string): boolean { return this.#beating.has(peerId) }

  /** The peers that should watch this one: its successors on the ring of members not known dead. */
  watchers (): string[] { return this.#watchersOf(this.selfId) }

  /** What `verdict` would do with this verdict, without doing it (for the gossip validator). */
  judgeVerdict (verdict: Verdict, from: string): VerdictResult {
    if (verdict.target === this.selfId) return 'self'
    const issuer = this.#members.get(from)
    if (issuer == null || issuer.state === 'dead') return 'stranger'
    const member = this.#members.get(verdict.target)
    if (member == null) return 'unknown'
    if (verdict.incarnation < member.incarnation || (verdict.incarnation === member.incarnation && verdict.seq < member.seq)) return 'stale'
    if (member.state === 'dead') return 'known'
    return this.#watchersOf(verdict.target).includes(from) ? 'applied' : 'hint'
  }

  /** The watchers of `peerId` in our view: its successors on the ring of members not known dead, and us. */
  #watchersOf (peerId: string): string[] {
    const live: string[] = []
    for (const member of this.#members.values()) if (member.state !== 'dead') live.push(member.peerId)
    return ringSuccessors([...live, this.selfId], peerId, this.config.watchers)
  }

  /** A verified verdict from `from` (the gossip signer). */
  verdict (verdict: Verdict, from: string): VerdictResult {
    const result = this.judgeVerdict(verdict, from)
    if (result === 'self') {
      for (const listener of this.#accusedListeners) listener({ ...verdict, from })
    } else if (result === 'applied') {
      const member = this.#members.get(verdict.target) as Member
      // A refused redial is proof whoever saw it (peer/missions/peer-info.ts reads it as `gone`).
      const exitProven = verdict.exitProven === true
      this.#transition(member, 'dead', exitProven ? REFUSED : `verdict of ${from.slice(-8)}: ${verdict.reason}`, exitProven)
    } else if (result === 'hint') {
      // As for a closed connection: a direct ping now; refused is dead, no answer starts a suspicion round.
      const member = this.#members.get(verdict.target) as Member
      if (member.state === 'alive') this.#startProbe(member, false)
    }
    return result
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
      // Watchers hold a peer to its direct beats; everyone else to its slower gossiped heartbeat.
      const bound = this.#beating.has(member.peerId) ? this.config.suspectAfterMs : this.config.gossipSuspectAfterMs
      if (member.state === 'alive' && silence > bound * mult) {
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
          this.#concludeDead(member, `no answer for ${Math.round(now - member.lastHeardAt)} ms`)
        }
      } else if (member.state === 'dead' && now - member.stateSince > this.config.deadRetentionMs) {
        this.#members.delete(member.peerId)
        this.#beating.delete(member.peerId)
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
   * A peer that reported in its last heartbeat or beat that it is itself running late (Lifeguard health
   * score > 0) gets proportionally more time before it is suspected and declared dead, up to
   * maxRemoteHealthScore. Beats carry the score too, so a watcher learns it within a beat interval.
   */
  #remoteMultiplier (member: Member): number {
    return 1 + Math.min(member.healthScore, this.config.maxRemoteHealthScore)
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
      if (directOutcome === 'timeout' && outcome === 'ack') {
        this.#raiseHealthScore(this.#now(), `others reached ${target} but we could not`)
        for (const listener of this.#directPathListeners) listener({ peerId: target })
      }
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
      this.#concludeDead(member, REFUSED, true)
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

  /** `dead` on our own evidence: tell everyone (they would otherwise wait for their own, slower, bound). */
  #concludeDead (member: Member, reason: string, exitProven = false): void {
    this.#transition(member, 'dead', reason, exitProven)
    const verdict: Verdict = { target: member.peerId, incarnation: member.incarnation, seq: member.seq, reason, ...(exitProven ? { exitProven } : {}) }
    for (const listener of this.#verdictListeners) {
      try {
        listener(verdict)
      } catch (err) {
        this.#log(`membership: verdict listener failed: ${(err as Error).stack ?? String(err)}`)
      }
    }
  }

  #transition (member: Member, state: MemberState, reason: string, exitProven = false): void {
    const previous = member.state
    if (previous === state) return
    member.state = state
    member.stateSince = this.#now()
    member.reason = reason
    member.exitProven = state === 'dead' && exitProven
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
