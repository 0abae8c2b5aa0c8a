// The demo's terminal view: pure functions from a snapshot of the swarm to lines of text.
// No I/O here; demo/terminal.ts writes the result to a stream.
import { COURSE } from '../examples/vehicle/controller.js'
import { shortPeerId } from '../consensus/peer-id.ts'

export type BoardHealth = 'alive' | 'suspect' | 'dead' | 'off'
export type BoardRole = 'primary' | 'backup' | 'idle' | 'fenced'
export type Point = readonly [number, number]

export interface BoardView {
  name: string
  peerId: string
  state: BoardHealth
  role: BoardRole
  /** The mission epoch this board last acted under. */
  epoch?: number | null
}

export interface MissionPanel {
  name: string
  epoch: number
  /** Board names (not peer ids); null while unknown. */
  primary?: string | null
  backup?: string | null
  tick?: number | null
  x?: number | null
  y?: number | null
  speed?: number | null
  /** Radians, counter-clockwise from +x; draws an arrow on the map when present. */
  heading?: number | null
  checkpointAgeMs?: number | null
  checkpointSeq?: number | null
  replicatedSeq?: number | null
  lagSeq?: number | null
  /** How long the newest acknowledged checkpoint took from its start to the backup's ack, ms. */
  replicationMs?: number | null
}

export type EventKind = 'info' | 'ok' | 'warn' | 'fault'

export interface ViewEvent {
  /** Milliseconds since the demo started. */
  atMs: number
  text: string
  kind?: EventKind
}

export interface ViewSnapshot {
  boards: readonly BoardView[]
  mission: MissionPanel
  events: readonly ViewEvent[]
  phase: string
  elapsedMs: number
  /** Waypoints for the mini-map; the vehicle controller's course when absent. */
  course?: readonly Point[]
}

export interface RenderOptions {
  /** ANSI colours (default false). */
  color?: boolean
  /** Event-log lines shown on the screen (default 8; the newest are kept). */
  maxEvents?: number
}

export interface PositionView {
  tick: number
  x: number
  y: number
}

export interface DemoSummary {
  mission: string
  boards: number
  takeover: boolean
  failedBoard?: string | null
  newPrimary?: string | null
  epochBefore?: number | null
  epochAfter?: number | null
  /** Power cut -> the backup declares the primary dead. */
  detectionMs?: number | null
  /** Restore decision -> the restored container runs. */
  restoreMs?: number | null
  /** Last report of the old primary -> first report of the new one. */
  downtimeMs?: number | null
  stateLostTicks?: number | null
  /** Ticks of state the primary's status promised at most to lose, just before the cut (at least one interval). */
  promisedLossTicks?: number
  ticksPerSecond?: number | null
  checkpointIntervalMs?: number | null
  /** Last report of the old primary. */
  positionBefore?: PositionView | null
  /** First report of the new primary. */
  positionAfter?: PositionView | null
  /** True when the new primary's reports match the deterministic trajectory. */
  trajectoryVerified?: boolean | null
  fencedBoard?: string | null
  newBackup?: string | null
  notes?: readonly string[]
}

/** Widest line any render function returns, in visible columns. */
export const MAX_WIDTH = 100
const INNER_WIDTH = 96
/** Width of every line of the boxed screen and summary. */
export const SCREEN_WIDTH = INNER_WIDTH + 2
const LEFT_WIDTH = 58
const MAP_WIDTH = INNER_WIDTH - 2 - LEFT_WIDTH - 3
const MAP_HEIGHT = 9

/** Lost state up to one checkpoint interval plus this (report resolution, dump time) shows green. */
const LOST_STATE_SLACK_MS = 250

const ANSI_PATTERN = /\x1b\[[0-9;?]*[A-Za-z]/g
const CONTROL_PATTERN = /[\x00-\x1f\x7f-\x9f]/g

type Style = 'bold' | 'dim' | 'red' | 'green' | 'yellow' | 'blue' | 'magenta' | 'cyan' | 'grey' | 'boldGreen' | 'boldRed'
const STYLE_CODES: Record<Style, string> = {
  bold: '1', dim: '2', red: '31', green: '32', yellow: '33', blue: '34', magenta: '35', cyan: '36', grey: '90',
  boldGreen: '1;32', boldRed: '1;31'
}

const HEALTH_STYLE: Record<BoardHealth, Style> = { alive: 'green', suspect: 'yellow', dead: 'red', off: 'grey' }
const ROLE_STYLE: Record<BoardRole, Style> = { primary: 'boldGreen', backup: 'cyan', idle: 'dim', fenced: 'magenta' }
const EVENT_STYLE: Record<EventKind, Style | undefined> = { info: undefined, ok: 'green', warn: 'yellow', fault: 'boldRed' }

/** Columns a string occupies on a terminal, ANSI sequences excluded. */
export function visibleWidth (text: string): number {
  return [...text.replace(ANSI_PATTERN, '')].length
}

/** Removes ANSI sequences. */
export function stripAnsi (text: string): string {
  return text.replace(ANSI_PATTERN, '')
}

class Painter {
  readonly #color: boolean
  constructor (color: boolean) { this.#color = color }

  paint (text: string, style: Style | undefined): string {
    if (!this.#color || style === undefined || text === '') return text
    return `\x1b[${STYLE_CODES[style]}m${text}\x1b[0m`
  }

  /** Plain text cut or padded to exactly `width` columns, then painted (padding stays unpainted). */
  cell (text: string, width: number, style?: Style, align: 'left' | 'right' = 'left'): string {
    const fitted = fit(text, width)
    const padding = ' '.repeat(width - [...fitted].length)
    return align === 'left' ? this.paint(fitted, style) + padding : padding + this.paint(fitted, style)
  }
}

function sanitize (text: string): string {
  return text.replace(ANSI_PATTERN, '').replace(CONTROL_PATTERN, ' ')
}

/** Cuts plain text to `width` columns, marking a cut with an ellipsis. */
function fit (text: string, width: number): string {
  const characters = [...sanitize(text)]
  if (characters.length <= width) return characters.join('')
  if (width <= 0) return ''
  return characters.slice(0, width - 1).join('') + '…'
}

/** Pads a possibly painted string to `width` visible columns. */
function padVisible (text: string, width: number): string {
  return text + ' '.repeat(Math.max(0, width - visibleWidth(text)))
}

function formatSeconds (ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`
}

function formatMs (ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—'
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`
}

function formatNumber (value: number | null | undefined, decimals: number): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—'
  return value.toFixed(decimals)
}

function formatSeq (value: number | null | undefined): string {
  return value === null || value === undefined ? '—' : `#${value}`
}

function lagStyle (lag: number | null | undefined): Style | undefined {
  if (lag === null || lag === undefined) return undefined
  return lag === 0 ? 'green' : lag === 1 ? 'yellow' : 'red'
}

function checkpointAgeStyle (ageMs: number | null | undefined): Style | undefined {
  if (ageMs === null || ageMs === undefined) return undefined
  return ageMs <= 2000 ? 'green' : ageMs <= 5000 ? 'yellow' : 'red'
}

function boardRows (boards: readonly BoardView[], painter: Painter): string[] {
  const header = painter.paint(`${fit('BOARD', 11).padEnd(11)} ${'PEER'.padEnd(14)} ${'HEALTH'.padEnd(8)} ${'ROLE'.padEnd(8)} EPOCH`, 'bold')
  if (boards.length === 0) return [header, painter.paint('(no boards yet)', 'dim')]
  return [header, ...boards.map(board => [
    painter.cell(board.name, 11, 'bold'),
    painter.cell(shortPeerId(board.peerId, { tail: 4 }), 14, 'grey'),
    painter.cell(board.state, 8, HEALTH_STYLE[board.state]),
    painter.cell(board.role, 8, ROLE_STYLE[board.role]),
    painter.cell(board.epoch === null || board.epoch === undefined ? '—' : String(board.epoch), 5)
  ].join(' '))]
}

function missionRows (mission: MissionPanel, painter: Painter): string[] {
  const label = (text: string): string => painter.paint(text, 'dim')
  const tick = mission.tick === null || mission.tick === undefined ? '—' : String(mission.tick)
  return [
    `${painter.paint(fit(mission.name, 24), 'bold')}  ${label('epoch')} ${painter.paint(String(mission.epoch), 'bold')}`,
    `${label('primary')} ${painter.cell(mission.primary ?? '—', 11, 'boldGreen')} ${label('backup')} ${painter.cell(mission.backup ?? '—', 11, 'cyan')}`,
    `${label('tick')} ${tick.padEnd(8)} ${label('x')} ${formatNumber(mission.x, 2).padStart(7)} ${label('y')} ${formatNumber(mission.y, 2).padStart(7)}  ${label('speed')} ${formatNumber(mission.speed, 1)} m/s`,
    `${label('checkpoint')} ${formatSeq(mission.checkpointSeq)} ${painter.paint(`${formatMs(mission.checkpointAgeMs)} ago`, checkpointAgeStyle(mission.checkpointAgeMs))}` +
      `  ${label('backup has')} ${formatSeq(mission.replicatedSeq)}  ${label('lag')} ${painter.paint(mission.lagSeq === null || mission.lagSeq === undefined ? '—' : String(mission.lagSeq), lagStyle(mission.lagSeq))}` +
      `  ${label('replicated in')} ${formatMs(mission.replicationMs)}`
  ]
}

const ARROWS = ['→', '↗', '↑', '↖', '←', '↙', '↓', '↘'] as const

/** The course as dots on a small grid with the vehicle on it; `width` x `height` characters. */
export function renderMiniMap (course: readonly Point[], vehicle: { x?: number | null, y?: number | null, heading?: number | null }, width: number, height: number, color = false): string[] {
  const painter = new Painter(color)
  const grid = Array.from({ length: height }, () => Array.from({ length: width }, () => ' '))
  if (course.length === 0 || width < 3 || height < 3) return grid.map(row => row.join(''))
  const xs = course.map(point => point[0])
  const ys = course.map(point => point[1])
  const minX = Math.min(...xs)
  const maxX = Math.max(...xs)
  const minY = Math.min(...ys)
  const maxY = Math.max(...ys)
  const column = (x: number): number => Math.round(((x - minX) / Math.max(maxX - minX, 1e-9)) * (width - 1))
  const row = (y: number): number => Math.round(((maxY - y) / Math.max(maxY - minY, 1e-9)) * (height - 1))
  const inside = (c: number, r: number): boolean => c >= 0 && c < width && r >= 0 && r < height

  course.forEach((from, index) => {
    const to = course[(index + 1) % course.length]!
    const steps = Math.max(1, Math.ceil(Math.max(Math.abs(column(to[0]) - column(from[0])), Math.abs(row(to[1]) - row(from[1]))) * 2))
    for (let s = 0; s <= steps; s++) {
      const c = column(from[0] + ((to[0] - from[0]) * s) / steps)
      const r = row(from[1] + ((to[1] - from[1]) * s) / steps)
      if (inside(c, r)) grid[r]![c] = '·'
    }
  })

  const lines = grid.map(cells => cells.join(''))
  const { x, y, heading } = vehicle
  if (typeof x !== 'number' || typeof y !== 'number' || !Number.isFinite(x) || !Number.isFinite(y)) return lines
  const c = Math.min(width - 1, Math.max(0, column(x)))
  const r = Math.min(height - 1, Math.max(0, row(y)))
  const octant = typeof heading === 'number' && Number.isFinite(heading)
    ? ((Math.round(heading / (Math.PI / 4)) % 8) + 8) % 8
    : undefined
  const marker = octant === undefined ? '●' : ARROWS[octant]!
  const cells = [...lines[r]!]
  lines[r] = cells.slice(0, c).join('') + painter.paint(marker, 'boldGreen') + cells.slice(c + 1).join('')
  return lines
}

function boxTop (title: string, right: string): string {
  const fill = INNER_WIDTH - 6 - visibleWidth(title) - visibleWidth(right)
  return `╭─ ${title} ${'─'.repeat(Math.max(1, fill))} ${right} ─╮`
}

function boxLine (content: string): string {
  return `│ ${padVisible(content, INNER_WIDTH - 2)} │`
}

function eventLine (event: ViewEvent, width: number, painter: Painter): string {
  const stamp = `+${(event.atMs / 1000).toFixed(3).padStart(7)} s`
  return `${painter.paint(stamp, 'dim')}  ${painter.cell(event.text, width - stamp.length - 2, event.kind === undefined ? undefined : EVENT_STYLE[event.kind])}`
}

/** The whole screen as lines, each at most MAX_WIDTH visible columns. */
export function renderScreen (snapshot: ViewSnapshot, options: RenderOptions = {}): string[] {
  const painter = new Painter(options.color ?? false)
  const maxEvents = Math.max(0, options.maxEvents ?? 8)

  const title = `${painter.paint('tandem', 'bold')} · ${fit(snapshot.mission.name, 30)}`
  const right = `${painter.paint(fit(snapshot.phase, 30), 'yellow')} · ${formatSeconds(snapshot.elapsedMs)}`
  const lines = [fitTitle(boxTop(title, right))]

  const left = [...boardRows(snapshot.boards, painter), painter.paint('─'.repeat(LEFT_WIDTH), 'dim'), ...missionRows(snapshot.mission, painter)]
  const map = renderMiniMap(snapshot.course ?? COURSE, snapshot.mission, MAP_WIDTH, MAP_HEIGHT, options.color ?? false)
  const rows = Math.max(left.length, map.length)
  for (let i = 0; i < rows; i++) {
    const leftText = left[i] ?? ''
    const leftCell = visibleWidth(leftText) > LEFT_WIDTH ? fit(stripAnsi(leftText), LEFT_WIDTH) : leftText
    lines.push(boxLine(`${padVisible(leftCell, LEFT_WIDTH)} ${painter.paint('│', 'dim')} ${map[i] ?? ''}`))
  }

  lines.push(`├─ ${painter.paint('events', 'bold')} ${'─'.repeat(INNER_WIDTH - 9)}┤`)
  const shown = maxEvents === 0 ? [] : snapshot.events.slice(-maxEvents)
  for (const event of shown) lines.push(boxLine(eventLine(event, INNER_WIDTH - 2, painter)))
  for (let i = shown.length; i < maxEvents; i++) lines.push(boxLine(''))
  lines.push(`╰${'─'.repeat(INNER_WIDTH)}╯`)
  return lines
}

function fitTitle (line: string): string {
  return visibleWidth(line) <= MAX_WIDTH ? line : fit(stripAnsi(line), MAX_WIDTH)
}

/** The screen redrawn in place: cursor home, each line cleared to its end, the rest of the screen cleared. */
export function renderTty (snapshot: ViewSnapshot, options: RenderOptions = {}): string {
  const lines = renderScreen(snapshot, { color: true, ...options })
  return `\x1b[H${lines.map(line => `${line}\x1b[K`).join('\n')}\n\x1b[J`
}

/** One plain log line for an event (`--no-tty`). */
export function renderLine (event: ViewEvent, options: RenderOptions = {}): string {
  const painter = new Painter(options.color ?? false)
  const kind = event.kind ?? 'info'
  return `${painter.paint(`[${(event.atMs / 1000).toFixed(3).padStart(8)} s]`, 'dim')} ${painter.cell(kind, 5, EVENT_STYLE[kind])} ` +
    painter.paint(fit(event.text, MAX_WIDTH - 19), EVENT_STYLE[kind])
}

/** One plain status line for a snapshot (`--no-tty`, e.g. once a second). */
export function renderStatusLine (snapshot: ViewSnapshot, options: RenderOptions = {}): string {
  const painter = new Painter(options.color ?? false)
  const { mission } = snapshot
  const groups: string[] = [`P ${mission.primary ?? '—'}`, `B ${mission.backup ?? '—'}`]
  for (const health of ['suspect', 'dead', 'off'] as const) {
    const names = snapshot.boards.filter(board => board.state === health).map(board => board.name)
    if (names.length > 0) groups.push(`${health} ${names.join(',')}`)
  }
  const roles = groups.join(' ')
  const text = `[${(snapshot.elapsedMs / 1000).toFixed(3).padStart(8)} s] state ${snapshot.phase} e${mission.epoch}` +
    ` tick ${mission.tick ?? '—'} (${formatNumber(mission.x, 1)},${formatNumber(mission.y, 1)})` +
    ` ckpt ${formatSeq(mission.checkpointSeq)} ${formatMs(mission.checkpointAgeMs)} lag ${mission.lagSeq ?? '—'} | ${roles}`
  return painter.paint(fit(text, MAX_WIDTH), undefined)
}

function formatPosition (position: PositionView | null | undefined): string {
  if (position === null || position === undefined) return '—'
  return `tick ${position.tick}  x ${position.x.toFixed(2)}  y ${position.y.toFixed(2)}`
}

/** The end-of-demo summary as boxed lines. */
export function renderSummary (summary: DemoSummary, options: RenderOptions = {}): string[] {
  const painter = new Painter(options.color ?? false)
  const label = (text: string): string => painter.cell(text, 17, 'dim')
  const rows: string[] = []
  const add = (name: string, value: string): void => { rows.push(`${label(name)} ${value}`) }

  if (summary.takeover) {
    const epochs = summary.epochBefore !== null && summary.epochBefore !== undefined && summary.epochAfter !== null && summary.epochAfter !== undefined
      ? ` (epoch ${summary.epochBefore} → ${summary.epochAfter})`
      : ''
    add('takeover', painter.paint(`yes: ${summary.failedBoard ?? '?'} → ${summary.newPrimary ?? '?'}${epochs}`, 'boldGreen'))
  } else {
    add('takeover', painter.paint('NO: the mission was not taken over', 'boldRed'))
  }
  add('detection', `${formatMs(summary.detectionMs).padEnd(9)} ${painter.paint('power cut → backup declares the primary dead', 'dim')}`)
  add('restore', `${formatMs(summary.restoreMs).padEnd(9)} ${painter.paint('checkpoint restored into a new container', 'dim')}`)
  add('downtime', `${painter.paint(formatMs(summary.downtimeMs).padEnd(9), 'bold')} ${painter.paint('last report of the old primary → first of the new', 'dim')}`)

  const lost = summary.stateLostTicks
  if (lost === null || lost === undefined) {
    add('state lost', '—')
  } else {
    const perSecond = summary.ticksPerSecond ?? null
    const seconds = perSecond !== null && perSecond > 0 ? `, ${formatMs((lost / perSecond) * 1000)} of driving` : ''
    const interval = summary.checkpointIntervalMs ?? null
    const withinInterval = interval === null || perSecond === null || (lost / perSecond) * 1000 <= interval + LOST_STATE_SLACK_MS
    const bound = interval === null ? '' : `; checkpoint interval ${interval} ms`
    add('state lost', painter.paint(`${lost} ticks${seconds}${bound}`, withinInterval ? 'green' : 'yellow'))
  }

  add('position before', formatPosition(summary.positionBefore))
  const after = formatPosition(summary.positionAfter)
  const continued = summary.positionAfter === null || summary.positionAfter === undefined
    ? ''
    : summary.positionAfter.tick > 0 && summary.trajectoryVerified !== false
      ? painter.paint(summary.trajectoryVerified === true ? '  continued on the same trajectory' : '  continued, not restarted', 'green')
      : painter.paint('  NOT continued', 'boldRed')
  add('position after', after + continued)
  add('fenced', summary.fencedBoard === null || summary.fencedBoard === undefined ? '—' : painter.paint(`${summary.fencedBoard}: its stale epoch was refused`, 'magenta'))
  add('new backup', summary.newBackup ?? '—')
  for (const note of summary.notes ?? []) add('note', note)

  const title = `${painter.paint('summary', 'bold')} · ${fit(summary.mission, 30)} on ${summary.boards} boards`
  return [
    `╭─ ${title} ${'─'.repeat(Math.max(1, INNER_WIDTH - visibleWidth(title) - 3))}╮`,
    ...rows.map(row => boxLine(visibleWidth(row) > INNER_WIDTH - 2 ? fit(stripAnsi(row), INNER_WIDTH - 2) : row)),
    `╰${'─'.repeat(INNER_WIDTH)}╯`
  ]
}
