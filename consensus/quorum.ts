// Who elects the next epoch: a majority of a view of 3 or more; in a view of 1 or 2 (two-board mode) all of it, or
// its lone claimant alone. Pure: the machine passes the facts.
import { hrwRank } from './hrw.ts'

/** Majority for views of 3 or more; see quorumReached for views of 1 and 2 (two-board mode). */
export function majority (size: number): number { return Math.floor(size / 2) + 1 }

/** What decides an election on a basis record: its voting members, and how two-board mode goes. */
export interface QuorumBasis {
  /** The members whose votes count (the record's view without revoked boards). */
  voters: readonly string[]
  /** The one member of a view of <= 2 that may win alone (see loneClaimant); evaluated only when needed. */
  loneClaimant: () => string | null
  /** The candidate restarted as the two-board partner and holds back its right to win alone. */
  heldBack: (candidate: string) => boolean
}

/** `granted` (the candidate's own vote included) elect `candidate` on `basis`. */
export function quorumReached (basis: QuorumBasis, candidate: string, granted: ReadonlySet<string>): boolean {
  const view = basis.voters
  const votes = view.filter(p => granted.has(p)).length
  if (view.length >= 3) return votes >= majority(view.length)
  if (view.length === 0) return granted.has(candidate)
  return votes === view.length || (candidate === basis.loneClaimant() && granted.has(candidate) && !basis.heldBack(candidate))
}

/**
 * The one member of a view of <= 2 that may claim the next epoch alone: the only member; the member that is not the
 * primary; with no primary in the view, the first in rendezvous order of those the placement allows (static facts
 * only, so every member picks the same one and two never claim alone).
 */
export function loneClaimant (record: { mission: string, view: readonly string[], primary: string | null }, placementOk: (peerId: string) => boolean): string | null {
  const view = record.view
  if (view.length === 1) return view[0] ?? null
  if (view.length !== 2) return null
  if (record.primary !== null && view.includes(record.primary)) return view.find(p => p !== record.primary) ?? null
  return hrwRank(record.mission, view.filter(placementOk))[0] ?? null
}

/**
 * The next epoch's view differs from its basis by at most one member (as Raft's single-server changes), so majorities
 * of consecutive views always intersect: first the new primary joins, then one dead member leaves, then one joins.
 */
export function stepView (basis: readonly string[], desired: ReadonlySet<string>, self: string): string[] {
  const next = new Set(basis)
  const leaving = basis.find(p => !desired.has(p))
  const joining = [...desired].sort().find(p => !next.has(p))
  if (!next.has(self)) next.add(self)
  else if (leaving !== undefined) next.delete(leaving)
  else if (joining !== undefined) next.add(joining)
  return [...next].sort()
}
