// `tandem status`: what a peer sees of the swarm, as a table or as JSON.
import { UsageError, type Command } from './command.ts'
import { parseFlags } from './args.ts'
import { API_FLAGS, API_FLAGS_USAGE, connectFromFlags } from './api-flags.ts'
import { outputFormatOf, render } from './output.ts'
import { shortPeerId } from '../../consensus/peer-id.ts'
import { printable } from './terminal.ts'
import type { PeerStatus } from '../daemon.ts'

const USAGE = `usage: tandem status [--api HOST:PORT] [--data-dir DIR] [-o table|wide|json|yaml] [--json]

${API_FLAGS_USAGE}`

function ago (ms: number): string { return ms < 10_000 ? `${ms} ms` : `${Math.round(ms / 1000)} s` }

export function formatStatus (status: PeerStatus, wide = false): string {
  const self = status.self
  const lines = [
    `peer    ${self.peerId}`,
    `board   ${self.board} (${self.arch}, ${self.profile.cores} cores, ${self.profile.memoryMb} MB)`,
    `criu    ${self.capabilities.criu.version ?? 'unknown'} (check ${self.capabilities.criu.checkOk === null ? 'pending' : self.capabilities.criu.checkOk ? 'ok' : 'failed'})`,
    `docker  ${self.capabilities.docker.available === null ? 'pending' : self.capabilities.docker.available ? self.capabilities.docker.version ?? 'yes' : 'unavailable'} at ${self.dockerHost}`,
    `health  score ${self.healthScore}, event loop lag ${self.lagMs} ms`,
    ...self.addrs.map(addr => `addr    ${addr}`),
    ''
  ]
  const rows = [['PEER', 'STATE', 'LAST SEEN', 'BOARD', 'ARCH', 'REASON']]
  for (const peer of [...status.peers].sort((a, b) => a.peerId.localeCompare(b.peerId))) {
    rows.push([shortPeerId(peer.peerId, { wide }), peer.state, ago(peer.lastSeenMs), peer.board ?? '?', peer.arch ?? '?', peer.reason])
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map(row => (row[i] ?? '').length)))
  for (const row of rows) lines.push(row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd())
  if (status.peers.length === 0) lines.push('(no peers seen yet)')
  const drops = Object.entries(status.counters.gossip).flatMap(([topic, c]) =>
    Object.entries(c.dropped).filter(([, n]) => n > 0).map(([reason, n]) => `${topic} ${reason} ${n}`))
  if (drops.length > 0) lines.push('', `dropped gossip: ${drops.join(', ')}`)
  // The missions' `authority` section (peer/missions/service.ts), when the peer runs missions.
  const authority = (status as { authority?: { open: boolean, operatorKeys: string[], holdsOperatorKey: boolean, revoked: string[], refused: Record<string, number> | null } }).authority
  if (authority != null) {
    lines.push('', authority.open
      ? 'operator: NONE (--insecure-open-missions: anyone holding the swarm key deploys)'
      : `operator: ${authority.operatorKeys.length} trusted key(s)${authority.holdsOperatorKey ? ', this board holds one' : ''}${authority.revoked.length > 0 ? `; revoked boards: ${authority.revoked.map(id => shortPeerId(id)).join(', ')}` : ''}`)
    const refused = Object.entries(authority.refused ?? {}).filter(([, n]) => n > 0).map(([reason, n]) => `${reason} ${n}`)
    if (refused.length > 0) lines.push(`refused mission messages: ${refused.join(', ')}`)
  }
  return lines.join('\n')
}

export const command: Command = {
  async run (argv) {
    if (argv.includes('--help') || argv.includes('-h')) { console.log(USAGE); return 0 }
    const { values, positionals } = parseFlags(argv, API_FLAGS, true)
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${printable(positionals[0] as string)}'`)
    const format = outputFormatOf(values)
    const client = await connectFromFlags(values)
    const status = await client.status()
    console.log(await render(format, status, wide => formatStatus(status, wide)))
    return 0
  }
}
