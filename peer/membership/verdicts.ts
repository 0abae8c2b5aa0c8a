// Gossiped `dead` verdicts: what a received one does. A verdict from one of the target's watchers is applied at
// once; from anyone else it is a hint to probe the target ourselves; one older than what we heard from the target
// since is a replay or a refuted suspicion. An accused peer that is alive refutes with a new incarnation (SWIM).
import type { Member } from './members.ts'
import { watchersOf } from './watchers.ts'

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

/** What `verdict` from `from` would do given our member table, without doing it. */
export function judgeVerdict (members: ReadonlyMap<string, Member>, selfId: string, watchers: number, verdict: Verdict, from: string): VerdictResult {
  if (verdict.target === selfId) return 'self'
  const issuer = members.get(from)
  if (issuer == null || issuer.state === 'dead') return 'stranger'
  const member = members.get(verdict.target)
  if (member == null) return 'unknown'
  if (verdict.incarnation < member.incarnation || (verdict.incarnation === member.incarnation && verdict.seq < member.seq)) return 'stale'
  if (member.state === 'dead') return 'known'
  return watchersOf(members.values(), selfId, verdict.target, watchers).includes(from) ? 'applied' : 'hint'
}
