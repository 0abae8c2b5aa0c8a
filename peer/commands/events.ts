// `tandem events [-f] [--json] [--mission NAME]`: the swarm's events as one peer's journal holds them (every
// board's mission events, gossiped, and that peer's membership changes); a table, or NDJSON with --json.
import { UsageError, type Command } from './command.ts'
import { parseFlags } from './args.ts'
import { API_FLAGS, API_FLAGS_USAGE, connectFromFlags } from './api-flags.ts'
import { printable, table } from './terminal.ts'
import { outputFormatOf } from './output.ts'
import { shortPeerId } from '../../consensus/peer-id.ts'
import type { SwarmEvent } from '../swarm-events.ts'

const USAGE = `usage: tandem events [-f|--follow] [--mission NAME] [--api HOST:PORT] [--data-dir DIR] [-o table|wide|json|yaml] [--json]

  -f, --follow      keep printing events as they come (Ctrl-C to stop)
  --mission NAME    only that mission's events
  --json, -o json   one JSON object per line (NDJSON); -o yaml: one YAML document per event
${API_FLAGS_USAGE.split('\n').filter(line => !line.includes('--json') && !line.includes('-o FORMAT')).join('\n')}
  -o wide           the table with full peer ids`

const FOLLOW_POLL_MS = 1000

export function formatEvents (events: SwarmEvent[], header = true, wide = false): string {
  const rows = header ? [['TIME', 'BOARD', 'KIND', 'MISSION', 'EVENT']] : []
  for (const e of events) rows.push([new Date(e.at).toISOString(), shortPeerId(e.board, { wide }), e.kind, e.mission ?? '-', e.text])
  if (rows.length === 0) return ''
  // Follow mode prints rows as they come: pad as the header would, not to the page's widest cell.
  if (!header) return rows.map(row => row.map(printable).join('  ')).join('\n')
  return table(rows)
}

export const command: Command = {
  async run (argv) {
    if (argv.includes('--help') || argv.includes('-h')) { console.log(USAGE); return 0 }
    const { values, positionals } = parseFlags(argv, { ...API_FLAGS, follow: { type: 'boolean', short: 'f' }, mission: { type: 'string' } }, true)
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${printable(positionals[0] as string)}'`)
    const format = outputFormatOf(values)
    const client = await connectFromFlags(values)
    const query = (after: number): string => `/v1/events?after=${after}${values.mission != null ? `&mission=${encodeURIComponent(values.mission)}` : ''}`
    const print = async (events: SwarmEvent[], first: boolean): Promise<void> => {
      if (format === 'json') { for (const e of events) process.stdout.write(`${JSON.stringify(e)}\n`); return }
      if (format === 'yaml') { const { stringify } = await import('yaml'); for (const e of events) process.stdout.write(`---\n${stringify(e)}`); return }
      const text = formatEvents(events, first, format === 'wide')
      if (text !== '') process.stdout.write(`${text}\n`)
      else if (first && values.follow !== true) process.stdout.write('(no events)\n')
    }
    let page = await client.request<{ events: SwarmEvent[], next: number }>('GET', query(0))
    await print(page.events, true)
    if (values.follow !== true) return 0
    const stop = new AbortController()
    const onSignal = (): void => { stop.abort() }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    while (!stop.signal.aborted) {
      await new Promise(resolve => { const timer = setTimeout(resolve, FOLLOW_POLL_MS); stop.signal.addEventListener('abort', () => { clearTimeout(timer); resolve(undefined) }, { once: true }) })
      if (stop.signal.aborted) break
      try {
        page = await client.request<{ events: SwarmEvent[], next: number }>('GET', query(page.next))
        await print(page.events, false)
      } catch (err) {
        // The peer restarting or busy: keep following; its journal starts again from 1 after a restart.
        process.stderr.write(`tandem events: ${printable((err as Error).message)} (retrying)\n`)
        page = { events: [], next: 0 }
      }
    }
    return 0
  }
}
