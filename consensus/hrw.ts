// Rendezvous (highest-random-weight) hashing: every peer ranks candidates for a mission identically, no messages.

/** 64-bit FNV-1a of a string (UTF-16 code units), as a bigint. */
export function fnv1a64 (text: string): bigint {
  let hash = 0xcbf29ce484222325n
  for (let i = 0; i < text.length; i++) {
    hash ^= BigInt(text.charCodeAt(i))
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn
  }
  return hash
}

/** Candidates ordered by descending weight for this mission; equal weights fall back to peer id order. */
export function hrwRank (mission: string, peers: Iterable<string>): string[] {
  const weighted = [...new Set(peers)].map(peer => ({ peer, weight: fnv1a64(`${mission}\u0000${peer}`) }))
  weighted.sort((a, b) => a.weight === b.weight ? (a.peer < b.peer ? -1 : 1) : (a.weight > b.weight ? -1 : 1))
  return weighted.map(w => w.peer)
}
