// Who watches whom: every peer computes the same ring from the same membership, so each peer has the same
// `count` watchers in everyone's view. A watcher receives the peer's direct beats (peer/beats.ts), and its
// verdict on the peer is taken at its word (peer/membership/verdicts.ts).
import type { Member } from './members.ts'

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

/** The watchers of `peerId` in our view: its successors on the ring of members not known dead, and us. */
export function watchersOf (members: Iterable<Member>, selfId: string, peerId: string, count: number): string[] {
  const live: string[] = []
  for (const member of members) if (member.state !== 'dead') live.push(member.peerId)
  return ringSuccessors([...live, selfId], peerId, count)
}
