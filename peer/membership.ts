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
import { shortPeerId } from '../consensus/peer-id.ts'
import type { FailureDetectorConfig } from './config.ts'
import type { HeartbeatInfo } from './heartbeat.ts'
import type { Clock, HeardResult, Member, MemberState, MembershipChange, MembershipEvent } from './membership/members.ts'
import { LocalHealth } from './membership/local-health.ts'
import { ProbeRounds, type ProbeOutcome, type ProbeRound, type Prober } from './membership/probes.ts'
import { judgeVerdict, type Verdict, type VerdictResult } from './membership/verdicts.ts'
import { watchersOf } from './membership/watchers.ts'

export type { Clock, HeardResult, Member, MemberState, MembershipChange, MembershipEvent } from './membership/members.ts'
export type { ProbeOutcome, Prober } from './membership/probes.ts'
export type { Verdict, VerdictResult } from './membership/verdicts.ts'
export { ringSuccessors } from './membership/watchers.ts'

const HISTORY_LENGTH = 1000
const REFUSED = 'connection refused'

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

/** The member table and its state transitions: signs of life, silence, probe outcomes and verdicts move members. */
export class Membership {
  readonly selfId: string
  readonly config: FailureDetectorConfig
  readonly #now: Clock
  readonly #wallNow: Clock
  readonly #log: (line: string) => void
  readonly #members = new Map<string, Member>()
  readonly #health: LocalHealth
  readonly #probes: ProbeRounds
  readonly #changeListeners = new Set<Listener<MembershipChange>>()
  readonly #pauseListeners = new Set<Listener<{ pausedMs: number }>>()
  readonly #directPathListeners = new Set<Listener<{ peerId: string }>>()
  readonly #verdictListeners = new Set<Listener<Verdict>>()
  readonly #accusedListeners = new Set<Listener<Verdict & { from: string }>>()
  /** Peers whose direct beats we receive (we are one of their watchers): held to the short silence bound. */
  readonly #beating = new Set<string>()
  readonly #history: MembershipEvent[] = []
  #timer: NodeJS.Timeout | undefined

  constructor (options: MembershipOptions) {
    this.selfId = options.selfId
    this.config = options.config
    this.#now = options.now ?? (() => performance.now())
    this.#wallNow = options.wallNow ?? Date.now
    this.#log = options.log ?? (() => {})
    this.#health = new LocalHealth(this.config, this.#log)
    this.#probes = new ProbeRounds({
      prober: options.prober,
      config: this.config,
      now: this.#now,
      random: options.random ?? Math.random,
      multiplier: () => this.#health.multiplier(),
      helpersFor: target => [...this.#members.values()].filter(member => member.state === 'alive' && member.peerId !== target).map(member => member.peerId),
      onDirectPathLost: target => {
        this.#health.raise(this.#now(), `others reached ${target} but we could not`)
        for (const listener of this.#directPathListeners) listener({ peerId: target })
      },
      onSettled: (target, round, outcome) => { this.#probeFinished(target, round, outcome) }
    })
  }

  start (): void {
    this.#health.started(this.#now())
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

  /**
   * A probe reached the peer through others but not directly: the direct connection is likely dead though still
   * listed (a link cut with DROP leaves it half-open), and beats on it go nowhere.
   */
  onDirectPathLost (listener: Listener<{ peerId: string }>): () => void {
    this.#directPathListeners.add(listener)
    return () => { this.#directPathListeners.delete(listener) }
  }

  /** Called when this process notices it was paused (SIGSTOP, VM freeze): it should refute by a new incarnation. */
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
  get healthScore (): number { return this.#health.score }
  get lastLagMs (): number { return this.#health.lastLagMs }
  get pauses (): number { return this.#health.pauses }

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
        peerId, state: 'alive', incarnation, seq, lastHeardAt: now, lastReceivedAt: now, lastSeenWallMs: this.#wallNow(), stateSince: now, reason: 'joined', exitProven: false, info,
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
    member.lastReceivedAt = now
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
   * now on the peer is held to the short silence bound (suspectAfterMs) until its beats end. Returns whether it
   * counted as a sign of life (the beat link acknowledges only those).
   */
  beat (peerId: string, incarnation: number, healthScore = 0): boolean {
    if (peerId === this.selfId) return false
    this.#beating.add(peerId)
    const member = this.#members.get(peerId)
    // Unknown peers are learnt from their gossiped heartbeat, which carries their profile.
    if (member == null || incarnation < member.incarnation) return false
    const restarted = incarnation > member.incarnation
    if (restarted) {
      member.incarnation = incarnation
      member.seq = 0
    }
    member.lastHeardAt = this.#now()
    member.lastReceivedAt = member.lastHeardAt
    member.lastSeenWallMs = this.#wallNow()
    member.healthScore = healthScore
    if (member.state !== 'alive') this.#transition(member, 'alive', restarted ? 'new incarnation' : 'beat')
    return true
  }

  /** The peer stopped sending us direct beats (it picked other watchers, or the stream closed). */
  beatsEnded (peerId: string): void {
    this.#beating.delete(peerId)
  }

  /** Whether we watch `peerId` (we receive its direct beats). */
  watches (peerId: string): boolean { return this.#beating.has(peerId) }

  /** The peers that should watch this one: its successors on the ring of members not known dead. */
  watchers (): string[] { return watchersOf(this.#members.values(), this.selfId, this.selfId, this.config.watchers) }

  /** What `verdict` would do with this verdict, without doing it (for the gossip validator). */
  judgeVerdict (verdict: Verdict, from: string): VerdictResult {
    return judgeVerdict(this.#members, this.selfId, this.config.watchers, verdict, from)
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
      this.#transition(member, 'dead', exitProven ? REFUSED : `verdict of ${shortPeerId(from, { tailOnly: true, tail: 8 })}: ${verdict.reason}`, exitProven)
    } else if (result === 'hint') {
      // As for a closed connection: a direct ping now; refused is dead, no answer starts a suspicion round.
      const member = this.#members.get(verdict.target) as Member
      if (member.state === 'alive') this.#probes.start(member.peerId, false)
    }
    return result
  }

  /** All connections to the peer closed: probe it now instead of waiting for silence. */
  disconnected (peerId: string): void {
    const member = this.#members.get(peerId)
    if (member == null || member.state === 'dead' || !this.config.probeOnDisconnect) return
    this.#probes.start(member.peerId, false)
  }

  /** Evaluates every member; called every tickIntervalMs. */
  tick (): void {
    const now = this.#now()
    const { lagMs, late, paused } = this.#health.tick(now)
    if (late) {
      // We were not running (paused or starved): nobody's silence during that time is evidence against them.
      for (const member of this.#members.values()) {
        member.lastHeardAt += lagMs
        if (member.state === 'suspect') member.stateSince += lagMs
      }
    }
    if (paused) for (const listener of this.#pauseListeners) listener({ pausedMs: lagMs })
    for (const member of this.#members.values()) {
      const mult = this.#health.multiplier() * this.#health.remoteMultiplier(member)
      const silence = now - member.lastHeardAt
      // Watchers hold a peer to its direct beats; everyone else to its slower gossiped heartbeat.
      const bound = this.#beating.has(member.peerId) ? this.config.suspectAfterMs : this.config.gossipSuspectAfterMs
      if (member.state === 'alive' && silence > bound * mult) {
        this.#transition(member, 'suspect', `silent for ${Math.round(silence)} ms`)
        this.#health.noteSuspicionLoad(now, this.#members.values())
        this.#probes.start(member.peerId, true)
      } else if (member.state === 'suspect') {
        const probe = this.#probes.get(member.peerId)
        const suspectedFor = now - member.stateSince
        if (probe == null) {
          this.#probes.start(member.peerId, true)
        } else if (probe.done && suspectedFor >= this.config.suspicionTimeoutMs * mult) {
          this.#probes.delete(member.peerId)
          this.#concludeDead(member, `no answer for ${Math.round(now - member.lastHeardAt)} ms`)
        }
      } else if (member.state === 'dead' && now - member.stateSince > this.config.deadRetentionMs) {
        this.#members.delete(member.peerId)
        this.#beating.delete(member.peerId)
      }
    }
  }

  #probeFinished (peerId: string, probe: ProbeRound, outcome: ProbeOutcome): void {
    const member = this.#members.get(peerId)
    if (member == null || member.state === 'dead' || this.#probes.get(peerId) !== probe) return
    const now = this.#now()
    if (outcome === 'ack') {
      this.#probes.delete(peerId)
      member.lastHeardAt = Math.max(member.lastHeardAt, now)
      member.lastReceivedAt = now
      if (member.state !== 'alive') this.#transition(member, 'alive', 'answered probe')
    } else if (outcome === 'refused' && member.lastHeardAt <= probe.startedAt) {
      this.#probes.delete(peerId)
      this.#concludeDead(member, REFUSED, true)
    } else if (member.state === 'alive' && member.lastHeardAt <= probe.startedAt) {
      // A disconnect probe that timed out: suspect now, the suspicion round decides.
      this.#probes.delete(peerId)
      this.#transition(member, 'suspect', 'disconnected and no answer')
      this.#probes.start(member.peerId, true)
    } else if (member.state === 'alive') {
      this.#probes.delete(peerId)
    }
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
    if (state !== 'suspect') this.#probes.delete(member.peerId)
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
