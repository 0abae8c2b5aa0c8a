// The one short form of a peer id, for tables, logs and events: `12D3KooW…abcdef`. Any unique prefix or suffix of it
// (or the form itself) resolves back to the peer (peer/commands/output.ts resolvePeerId).

/**
 * `12D3KooW…` plus the last `tail` characters; ids short enough to print whole are printed whole, as is any with
 * `wide`. `tailOnly`: just the last `tail` characters, the inline form of event wording and log lines (`from jwam4c`).
 */
export function shortPeerId (peerId: string | null | undefined, options: { wide?: boolean, tail?: number, tailOnly?: boolean } = {}): string {
  if (peerId == null) return '-'
  const tail = options.tail ?? 6
  if (options.tailOnly === true && options.wide !== true) return peerId.length > 2 * tail ? peerId.slice(-tail) : peerId
  return options.wide === true || peerId.length <= HEAD + tail + 2 ? peerId : `${peerId.slice(0, HEAD)}…${peerId.slice(-tail)}`
}

const HEAD = 8
