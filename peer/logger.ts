// Where a peer's output goes: human-readable text (the default, byte for byte what tools and tests already read) or,
// with `--log-format json`, one pino JSON object per line (time, level, msg, and fields such as peer, mission, epoch).
import type { Logger as Pino } from 'pino'

export type LogFormat = 'text' | 'json'
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json']
export type LogLevel = 'info' | 'warn' | 'error'

/** Structured fields of a line; in json, `level` defaults to what the line's wording says (see levelOf). */
export interface LogFields {
  level?: LogLevel
  mission?: string
  epoch?: number
  /** Another peer the line is about (the logging peer is the logger's own `peer` field). */
  member?: string
  [field: string]: unknown
}

/** A diagnostic line; every part of the peer takes one of these as its `log` option. */
export type LogLine = (line: string, fields?: LogFields) => void

/** The environment variable that carries the format to the peer's child processes (its watchdog). */
export const LOG_FORMAT_ENV = 'TANDEM_LOG_FORMAT'

export function logFormatFromEnv (env: NodeJS.ProcessEnv = process.env): LogFormat {
  return env[LOG_FORMAT_ENV] === 'json' ? 'json' : 'text'
}

/**
 * The level of a line whose caller gave none: most callers pass plain lines (membership, missions), and their
 * wording says when something went wrong.
 */
export function levelOf (line: string): LogLevel {
  if (/\b(failed|cannot|unavailable|refused|unreachable|corrupt|lapsed|longer than)\b/i.test(line)) return 'warn'
  return 'info'
}

/** The part of the peer a line comes from: the word before its first colon (`membership: ...` -> membership). */
function componentOf (line: string): string | undefined {
  return /^([a-z][a-z -]{0,30}?):\s/.exec(line)?.[1]
}

export interface PeerLogger {
  readonly format: LogFormat
  /** Diagnostics, on stderr: `ISO-time line` in text (explicit warnings and errors marked), one JSON object in json. */
  readonly log: LogLine
  /** What the operator starting the peer reads, on stdout: the banner, `ready {...}`, `stopped`. */
  say (message: string, fields?: Record<string, unknown>): void
  /** Fields every later line carries (e.g. the peer id once it is known). */
  bind (fields: Record<string, unknown>): void
}

/** A logger in `format`; json loads pino (about 40 ms) only when asked for. */
export async function openLogger (format: LogFormat, base: Record<string, unknown> = {}): Promise<PeerLogger> {
  if (format === 'json') {
    const { pino } = await import('pino')
    const options = {
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label: string) => ({ level: label }) }
    }
    // Synchronous writes: the peer leaves with process.exit once stopped, and no line may be lost.
    let stdout: Pino = pino(options, pino.destination({ dest: 1, sync: true })).child(base)
    let stderr: Pino = pino(options, pino.destination({ dest: 2, sync: true })).child(base)
    return {
      format,
      log: (line, fields = {}) => {
        const { level = levelOf(line), ...rest } = fields
        const component = componentOf(line)
        stderr[level]({ ...(component != null ? { component } : {}), ...withEpoch(line, rest) }, line)
      },
      say: (message, fields = {}) => { stdout.info(fields, message) },
      bind: fields => {
        stdout = stdout.child(fields)
        stderr = stderr.child(fields)
      }
    }
  }
  return {
    format,
    log: (line, fields = {}) => {
      // Lines as before (`ISO line`), the demo, bench and chaos runner parse them; only a level the caller gave
      // explicitly is marked (WARN, ERROR): a guessed one could land on a line a parser anchors on.
      const level = fields.level ?? 'info'
      process.stderr.write(`${new Date().toISOString()} ${level === 'info' ? '' : `${level.toUpperCase()} `}${line}\n`)
    },
    say: message => { process.stdout.write(`${message}\n`) },
    bind: () => {}
  }
}

/** A line that names an epoch (`epoch 7: primary ...`) carries it as a field when the caller gave none. */
function withEpoch (line: string, fields: Record<string, unknown>): Record<string, unknown> {
  if (fields.epoch !== undefined) return fields
  const epoch = /\bepoch (\d+)\b/.exec(line)?.[1]
  return epoch != null ? { ...fields, epoch: Number(epoch) } : fields
}
