// `tandem mission logs NAME [-f] [--since DURATION] [--tail N]`: the mission's stdout and stderr as one stream across
// failovers and moves, from any peer (peer/mission-logs.ts gathers every board's lines); each change of container is
// marked `--- epoch N: primary BOARD ---`. -f keeps printing, through takeovers, until Ctrl-C.
import { UsageError } from './command.ts'
import { parseFlags } from './args.ts'
import { API_FLAGS, API_FLAGS_USAGE, connectFromFlags } from './api-flags.ts'
import { outputFormatOf } from './output.ts'
import { shortPeerId } from '../../consensus/peer-id.ts'
import { printable } from './terminal.ts'
import type { LogPage, StoredLogEntry } from '../mission-logs.ts'

export const LOGS_USAGE = `usage: tandem mission logs NAME [-f|--follow] [--since DURATION] [--tail N] [--api HOST:PORT] [--data-dir DIR] [-o table|wide|json]

  -f, --follow        keep printing lines as they come, through failovers and moves (Ctrl-C to stop)
  --since DURATION    only lines of the last DURATION (e.g. 30s, 5m, 2h, 1d) or since a date (2026-12-02T12:00:00Z)
  --tail N            only the last N lines (then follows on with -f)
  -o json, --json     one JSON object per line (NDJSON), without the epoch marks
${API_FLAGS_USAGE.split('\n').filter(line => !line.includes('--json') && !line.includes('-o FORMAT')).join('\n')}
  -o wide             full peer ids`

const FOLLOW_POLL_MS = 500

/** A duration ("90s", "5m", "1h30m", "500ms", "2d") or a date, as the wall-clock time it starts from. */
export function parseSince (text: string, now = Date.now()): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
  if (/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(text)) {
    let ms = 0
    for (const [, value, , unit] of text.matchAll(/(\d+(\.\d+)?)(ms|s|m|h|d)/g)) ms += Number(value) * (units[unit as string] as number)
    return now - ms
  }
  const date = Date.parse(text)
  if (Number.isFinite(date) && /\d{4}-\d{2}-\d{2}/.test(text)) return date
  throw new UsageError(`--since: '${printable(text)}' is neither a duration (30s, 5m, 2h, 1d) nor a date`)
}

/** Prints lines, marking each change of container with its epoch and board; keeps the last container between calls. */
export class LogFormatter {
  #container: string | undefined
  readonly #wide: boolean
  constructor (wide = false) { this.#wide = wide }

  format (lines: StoredLogEntry[]): string[] {
    const out: string[] = []
    for (const line of lines) {
      if (line.container !== this.#container) {
        this.#container = line.container
        out.push(`--- epoch ${line.epoch}: primary ${shortPeerId(line.board, { wide: this.#wide })} (container ${line.container}) ---`)
      }
      out.push(`${new Date(line.at).toISOString()} ${line.stream === 'stderr' ? 'E' : ' '} ${printable(line.text)}`)
    }
    return out
  }
}

export async function runMissionLogs (argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...API_FLAGS, follow: { type: 'boolean', short: 'f' }, since: { type: 'string' }, tail: { type: 'string' } }, true)
  const [name, extra] = positionals
  if (name == null) throw new UsageError(`missing mission NAME\n${LOGS_USAGE}`)
  if (extra != null) throw new UsageError(`unexpected argument '${printable(extra)}'`)
  const since = values.since != null ? parseSince(values.since) : undefined
  let tail: number | undefined
  if (values.tail != null) {
    tail = Number(values.tail)
    if (!Number.isSafeInteger(tail) || tail < 0) throw new UsageError('--tail must be a whole number >= 0')
  }
  const format = outputFormatOf(values)
  if (format === 'yaml') throw new UsageError('mission logs prints text or NDJSON (-o json), not YAML')
  const client = await connectFromFlags(values)
  const path = (query: Record<string, number | undefined>): string => {
    const params = Object.entries(query).filter(([, v]) => v != null).map(([k, v]) => `${k}=${v as number}`).join('&')
    return `/v1/missions/${encodeURIComponent(name)}/logs${params === '' ? '' : `?${params}`}`
  }
  const formatter = new LogFormatter(format === 'wide')
  // Each line once, also when the peer restarted and numbers its arrivals anew.
  const printed = new Set<string>()
  const print = (all: StoredLogEntry[]): void => {
    const lines = all.filter(line => {
      const key = `${line.container}:${line.n}`
      if (printed.has(key)) return false
      printed.add(key)
      if (printed.size > 100_000) printed.delete(printed.values().next().value as string)
      return true
    })
    if (format === 'json') { for (const line of lines) process.stdout.write(`${JSON.stringify(line)}\n`); return }
    const text = formatter.format(lines)
    if (text.length > 0) process.stdout.write(`${text.join('\n')}\n`)
  }
  let page = await client.request<LogPage>('GET', path({ since, tail }), undefined, { timeoutMs: 15_000 })
  print(page.lines)
  if (page.lines.length === 0 && values.follow !== true && format !== 'json') process.stderr.write(`(no output of mission ${printable(name)} on the boards asked: ${page.answered ?? 0} of ${page.asked ?? 0} answered besides this one)\n`)
  if (values.follow !== true) return 0
  const stop = new AbortController()
  const onSignal = (): void => { stop.abort() }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  let next = page.next
  let failing = false
  while (!stop.signal.aborted) {
    await new Promise(resolve => { const timer = setTimeout(resolve, FOLLOW_POLL_MS); stop.signal.addEventListener('abort', () => { clearTimeout(timer); resolve(undefined) }, { once: true }) })
    if (stop.signal.aborted) break
    try {
      page = await client.request<LogPage>('GET', path({ after: next, since }))
      failing = false
      // Lines gossiped from another board arrive a little later than this board's own: print each page in time order.
      print(page.lines.sort((a, b) => a.at - b.at))
      next = page.next < next ? 0 : page.next
    } catch (err) {
      if (!failing) process.stderr.write(`tandem mission logs: ${printable((err as Error).message)} (retrying)\n`)
      failing = true
    }
  }
  return 0
}
