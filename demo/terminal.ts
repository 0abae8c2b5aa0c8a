// Writes the demo's view to a stream in one of three modes:
//  tty   - the boxed screen redrawn in place at most every `refreshMs`;
//  lines - one plain line per event plus a status line every `statusEveryMs` (`--no-tty`);
//  json  - one JSON object per line: {type: 'event'|'snapshot'|'summary', ...} (`--json`).
import {
  SCREEN_WIDTH, renderLine, renderScreen, renderStatusLine, renderSummary, renderTty,
  type DemoSummary, type ViewEvent, type ViewSnapshot
} from './view.ts'

export type TerminalMode = 'tty' | 'lines' | 'json'

export interface TextOutput {
  write: (text: string) => unknown
}

export interface TerminalViewOptions {
  output: TextOutput
  mode: TerminalMode
  /** ANSI colours; default: on in tty mode, off otherwise. */
  color?: boolean
  /** Shortest time between two redraws in tty mode (default 100 ms). */
  refreshMs?: number
  /** Time between status lines in lines mode and snapshots in json mode (default 1000 ms). */
  statusEveryMs?: number
  /** Event-log lines on the tty screen (default 8). */
  maxEvents?: number
  /** Clock for throttling; injectable for tests. */
  now?: () => number
}

/**
 * The mode for the demo's flags and its stdout: json for --json; lines for --no-tty, a pipe, or a
 * terminal too narrow for the screen (wrapped lines would break the in-place redraw); tty otherwise.
 */
export function chooseMode (flags: { json?: boolean, noTty?: boolean }, stdout: { isTTY?: boolean, columns?: number }): TerminalMode {
  if (flags.json === true) return 'json'
  if (flags.noTty === true || stdout.isTTY !== true) return 'lines'
  if (stdout.columns !== undefined && stdout.columns < SCREEN_WIDTH) return 'lines'
  return 'tty'
}

const HIDE_CURSOR = '\x1b[?25l'
const SHOW_CURSOR = '\x1b[?25h'
const CLEAR_SCREEN = '\x1b[2J\x1b[H'

export class TerminalView {
  readonly #output: TextOutput
  readonly #mode: TerminalMode
  readonly #color: boolean
  readonly #refreshMs: number
  readonly #statusEveryMs: number
  readonly #maxEvents: number
  readonly #now: () => number
  #latest: ViewSnapshot | undefined
  #lastDrawAt = Number.NEGATIVE_INFINITY
  #lastStatusAt = Number.NEGATIVE_INFINITY
  #pendingDraw: ReturnType<typeof setTimeout> | undefined
  #running = false

  constructor (options: TerminalViewOptions) {
    this.#output = options.output
    this.#mode = options.mode
    this.#color = options.color ?? options.mode === 'tty'
    this.#refreshMs = options.refreshMs ?? 100
    this.#statusEveryMs = options.statusEveryMs ?? 1000
    this.#maxEvents = options.maxEvents ?? 8
    this.#now = options.now ?? Date.now
  }

  start (): void {
    if (this.#running) return
    this.#running = true
    if (this.#mode === 'tty') this.#output.write(HIDE_CURSOR + CLEAR_SCREEN)
  }

  /** A new snapshot of the swarm; drawn now or soon, depending on the mode and throttling. */
  update (snapshot: ViewSnapshot): void {
    if (!this.#running) return
    this.#latest = snapshot
    const now = this.#now()
    if (this.#mode === 'tty') {
      if (now - this.#lastDrawAt >= this.#refreshMs) {
        this.#draw()
      } else if (this.#pendingDraw === undefined) {
        this.#pendingDraw = setTimeout(() => { this.#pendingDraw = undefined; this.#draw() }, this.#refreshMs - (now - this.#lastDrawAt))
      }
      return
    }
    if (now - this.#lastStatusAt < this.#statusEveryMs) return
    this.#lastStatusAt = now
    this.#output.write(this.#mode === 'json'
      ? JSON.stringify({ type: 'snapshot', ...snapshot }) + '\n'
      : renderStatusLine(snapshot, { color: this.#color }) + '\n')
  }

  /** An event for the log. The tty screen shows events from snapshots; the other modes print each one here. */
  event (event: ViewEvent): void {
    if (!this.#running || this.#mode === 'tty') return
    this.#output.write(this.#mode === 'json'
      ? JSON.stringify({ type: 'event', ...event }) + '\n'
      : renderLine(event, { color: this.#color }) + '\n')
  }

  /** Draws the final screen (tty), restores the cursor and prints the summary. */
  stop (summary?: DemoSummary): void {
    if (!this.#running) return
    this.#running = false
    if (this.#pendingDraw !== undefined) clearTimeout(this.#pendingDraw)
    this.#pendingDraw = undefined
    if (this.#mode === 'tty') {
      if (this.#latest !== undefined) {
        this.#output.write(renderTty(this.#latest, { color: this.#color, maxEvents: this.#maxEvents }))
      }
      this.#output.write(SHOW_CURSOR)
    }
    if (summary === undefined) return
    this.#output.write(this.#mode === 'json'
      ? JSON.stringify({ type: 'summary', ...summary }) + '\n'
      : renderSummary(summary, { color: this.#color }).join('\n') + '\n')
  }

  #draw (): void {
    if (!this.#running || this.#latest === undefined) return
    this.#lastDrawAt = this.#now()
    this.#output.write(renderTty(this.#latest, { color: this.#color, maxEvents: this.#maxEvents }))
  }
}

/** The screen as plain text, e.g. for a final dump into a log file. */
export function screenText (snapshot: ViewSnapshot, maxEvents?: number): string {
  return renderScreen(snapshot, { color: false, ...(maxEvents === undefined ? {} : { maxEvents }) }).join('\n')
}
