// Peer ids typed back by a person: the full id, a unique prefix or suffix, or the short form the tables print.
import { UsageError } from './command.ts'
import { printable } from './terminal.ts'

/**
 * The one known id `input` names; a UsageError when it names several (listing them). An input that names no known
 * peer is returned as it is: the peer then refuses it with its own reason (e.g. not an alive board).
 */
export function resolvePeerId (input: string, known: readonly string[]): string {
  const ids = [...new Set(known)]
  if (ids.includes(input)) return input
  const short = /^(.+?)(?:…|\.\.\.)(.+)$/.exec(input)
  const matches = short != null
    ? ids.filter(id => id.startsWith(short[1] as string) && id.endsWith(short[2] as string))
    : input.length < 3 ? [] : ids.filter(id => id.startsWith(input) || id.endsWith(input))
  if (matches.length === 1) return matches[0] as string
  if (matches.length === 0) return input
  throw new UsageError(`'${printable(input)}' matches ${matches.length} peers: ${matches.join(', ')}; give more of the id`)
}
