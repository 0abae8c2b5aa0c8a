// Mission output as one stream across failovers and moves (`tandem mission logs`). Each board copies the stdout and
// stderr of its own mission containers as they come (Docker's log stream, followed), keeps them in a bounded
// per-mission store in its data dir (so they outlive the container's removal after a failover, and the peer's
// restart), and gossips them in small batches, so every board holds every board's lines and a power cut loses at
// most the last batch. `GET /v1/missions/:name/logs` first asks every connected peer for its lines
// (/tandem/mission-logs/1.0.0) to fill what gossip missed, merges them in time order and answers; `?after=SEQ` pages
// on in arrival order, for -f.
import { appendFile, mkdir, readdir, readFile, rename, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import { ApiError } from './api.ts'
import type { Peer } from './daemon.ts'
import { GossipDrop } from './gossip.ts'
import { describeIssue, z } from '../schema/schema.ts'
import type { LogLine } from './logger.ts'
import type { MissionRuntime } from './missions/ports.ts'

export const MISSION_LOGS_TOPIC = 'tandem/mission-logs/1'
export const MISSION_LOGS_PROTOCOL = '/tandem/mission-logs/1.0.0'

/** Lines kept per mission in memory and served (oldest dropped first). */
export const MAX_LINES_PER_MISSION = 5000
/** A mission's log file is rotated at this size, keeping one older file: at most 2 x this on disk per mission. */
export const MAX_FILE_BYTES = 1024 * 1024
/** Longer lines are cut (Docker itself splits lines at 16 KiB). */
export const MAX_LINE_CHARS = 2000
/** Missions whose lines a board keeps at most (a member cannot fill the disk with made-up missions). */
export const MAX_MISSIONS = 64
/** Gossip: a batch every this often, each message at most MAX_MESSAGE_BYTES, at most BUDGET_BYTES_PER_S per mission. */
const FLUSH_MS = 250
const MAX_MESSAGE_BYTES = 16 * 1024
const BUDGET_BYTES_PER_S = 32 * 1024
/** How often this board's Docker is listed for mission containers to follow. */
const DISCOVER_MS = 500
/** Lines one peer returns to another's request at most, and how long the asking peer waits for each. */
const MAX_REPLY_LINES = 2000
const ASK_TIMEOUT_MS = 3000

export interface MissionLogEntry {
  /** Wall clock of the board that captured the line (Docker's timestamp), ms. */
  at: number
  /** Peer id of the board whose container printed it. */
  board: string
  /** The container (first 12 hex digits of its id), and the epoch it was started under. */
  container: string
  epoch: number
  /** Line number within the container's output (with `container`, the line's identity across boards). */
  n: number
  stream: 'stdout' | 'stderr'
  text: string
}

/** An entry as this board stores it: `seq` is its arrival order here (the cursor of `?after=`). */
export interface StoredLogEntry extends MissionLogEntry { seq: number }

export interface LogPage { mission: string, lines: StoredLogEntry[], next: number, asked?: number, answered?: number }

const BOARD_PATTERN = /^[1-9A-HJ-NP-Za-km-z]{30,100}$/

/** A line as it travels (gossip) and is kept (the data dir): its board is the sender's, or the stored one. */
const entrySchema = z.object({
  at: z.number(),
  container: z.string().regex(/^[0-9a-f]{1,64}$/),
  epoch: z.int(),
  n: z.int(),
  stream: z.enum(['stdout', 'stderr']),
  text: z.string().transform(text => text.slice(0, MAX_LINE_CHARS))
})

function validEntry (value: unknown, board: string): MissionLogEntry | undefined {
  const result = entrySchema.safeParse(value)
  if (!result.success) return undefined
  const e = result.data
  return { at: e.at, board, container: e.container, epoch: e.epoch, n: e.n, stream: e.stream, text: e.text }
}

const boardSchema = z.object({ board: z.string().regex(BOARD_PATTERN) })

function boardOf (value: unknown): string | undefined {
  const result = boardSchema.safeParse(value)
  return result.success ? result.data.board : undefined
}

const batchSchema = z.object({ mission: z.string().max(128), lines: z.array(z.unknown()) })

/** A batch of log lines gossiped by `sender` (each line's board is the sender); a GossipDrop if it is not one. */
export function validateLogBatch (payload: unknown, sender: string): { mission: string, lines: MissionLogEntry[] } {
  const parsed = batchSchema.safeParse(payload)
  if (!parsed.success) throw new GossipDrop('malformed', `not a mission log batch (${describeIssue(parsed.error)})`)
  const p = parsed.data
  const lines = p.lines.map(l => validEntry(l, sender))
  if (lines.some(l => l == null)) throw new GossipDrop('malformed', 'bad log line')
  return { mission: p.mission, lines: lines as MissionLogEntry[] }
}

/** What another peer asks over MISSION_LOGS_PROTOCOL. */
const requestSchema = z.object({ mission: z.string(), since: z.unknown().optional() })

function before (a: MissionLogEntry, b: MissionLogEntry): boolean {
  return a.at < b.at || (a.at === b.at && (a.container < b.container || (a.container === b.container && a.n < b.n)))
}

/** Every mission's lines on this board: in time order, each line once, bounded in memory and on disk. */
export class MissionLogStore {
  readonly #dir: string | undefined
  readonly #missions = new Map<string, { lines: StoredLogEntry[], keys: Set<string>, fileBytes: number }>()
  #seq = 0
  #writes: Promise<void> = Promise.resolve()
  readonly #pending = new Map<string, string[]>()

  constructor (dir?: string) { this.#dir = dir }

  /** Reads what the data dir kept (the older file first). */
  async load (): Promise<void> {
    if (this.#dir == null) return
    await mkdir(this.#dir, { recursive: true })
    const files = (await readdir(this.#dir)).filter(f => f.endsWith('.jsonl'))
    for (const file of files) {
      const mission = decodeURIComponent(file.slice(0, -'.jsonl'.length))
      for (const name of [`${file}.1`, file]) {
        const text = await readFile(join(this.#dir, name), 'utf8').catch(() => '')
        for (const line of text.split('\n')) {
          if (line === '') continue
          try {
            const raw = JSON.parse(line) as MissionLogEntry
            const entry = validEntry(raw, typeof raw.board === 'string' ? raw.board : '?')
            if (entry != null) this.#insert(mission, entry, false)
          } catch {}
        }
      }
      const state = this.#missions.get(mission)
      if (state != null) state.fileBytes = (await stat(join(this.#dir, file)).catch(() => ({ size: 0 }))).size
    }
  }

  missions (): string[] { return [...this.#missions.keys()] }

  /** Adds lines (those already held are skipped); returns the new ones. */
  add (mission: string, entries: MissionLogEntry[]): StoredLogEntry[] {
    if (!this.#missions.has(mission) && this.#missions.size >= MAX_MISSIONS) return []
    const added: StoredLogEntry[] = []
    for (const entry of entries) {
      const stored = this.#insert(mission, entry, true)
      if (stored != null) added.push(stored)
    }
    if (added.length > 0) this.#schedule(mission)
    return added
  }

  #insert (mission: string, entry: MissionLogEntry, persist: boolean): StoredLogEntry | undefined {
    let state = this.#missions.get(mission)
    if (state == null) { state = { lines: [], keys: new Set(), fileBytes: 0 }; this.#missions.set(mission, state) }
    const key = `${entry.container}:${entry.n}`
    if (state.keys.has(key)) return undefined
    state.keys.add(key)
    const stored: StoredLogEntry = { ...entry, seq: ++this.#seq }
    const lines = state.lines
    let at = lines.length
    while (at > 0 && before(stored, lines[at - 1] as StoredLogEntry)) at--
    lines.splice(at, 0, stored)
    if (lines.length > MAX_LINES_PER_MISSION) {
      for (const old of lines.splice(0, lines.length - MAX_LINES_PER_MISSION)) state.keys.delete(`${old.container}:${old.n}`)
    }
    if (persist && this.#dir != null) {
      const { seq, ...plain } = stored
      let pending = this.#pending.get(mission)
      if (pending == null) { pending = []; this.#pending.set(mission, pending) }
      pending.push(JSON.stringify(plain))
    }
    return stored
  }

  #schedule (mission: string): void {
    const dir = this.#dir
    if (dir == null) return
    this.#writes = this.#writes.then(async () => {
      const pending = this.#pending.get(mission)
      const state = this.#missions.get(mission)
      if (pending == null || pending.length === 0 || state == null) return
      this.#pending.delete(mission)
      const file = join(dir, `${encodeURIComponent(mission)}.jsonl`)
      // Appended in pieces that fill the file up to the bound; then it becomes the older file (the one before dropped).
      let piece: string[] = []
      let pieceBytes = 0
      const write = async (): Promise<void> => {
        if (piece.length === 0) return
        await appendFile(file, piece.join(''))
        state.fileBytes += pieceBytes
        piece = []
        pieceBytes = 0
      }
      for (const line of pending) {
        const bytes = Buffer.byteLength(line) + 1
        if (state.fileBytes + pieceBytes + bytes > MAX_FILE_BYTES) {
          await write()
          await rename(file, `${file}.1`).catch(() => {})
          state.fileBytes = 0
        }
        piece.push(`${line}\n`)
        pieceBytes += bytes
      }
      await write()
    }).catch(() => {})
  }

  /** Waits until what was added is on disk. */
  async flushed (): Promise<void> { await this.#writes }

  /**
   * The mission's lines in time order: `after` a seq (those that arrived since, for -f), `since` a wall-clock time,
   * the last `tail` of them; `next` is the cursor to ask after next time.
   */
  page (mission: string, options: { after?: number, since?: number, tail?: number, board?: string } = {}): LogPage {
    const lines = (this.#missions.get(mission)?.lines ?? []).filter(e =>
      (options.after == null || e.seq > options.after) && (options.since == null || e.at >= options.since) && (options.board == null || e.board === options.board))
    const tail = options.tail
    return { mission, lines: tail != null ? lines.slice(Math.max(0, lines.length - tail)) : lines, next: this.#seq }
  }
}

/** Splits Docker's multiplexed log stream (8-byte frame headers: stream, 0, 0, 0, size) into timestamped lines. */
export class DockerLogParser {
  #pending: Buffer = Buffer.alloc(0)
  readonly #partial = { stdout: '', stderr: '' }

  push (chunk: Buffer): Array<{ at: number, stream: 'stdout' | 'stderr', text: string }> {
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk])
    const out: Array<{ at: number, stream: 'stdout' | 'stderr', text: string }> = []
    let offset = 0
    while (offset + 8 <= this.#pending.length) {
      const size = this.#pending.readUInt32BE(offset + 4)
      if (offset + 8 + size > this.#pending.length) break
      const stream = this.#pending[offset] === 2 ? 'stderr' : 'stdout'
      const payload = this.#pending.subarray(offset + 8, offset + 8 + size).toString('utf8')
      offset += 8 + size
      // With timestamps each frame starts "2026-12-02T12:00:00.123456789Z "; a frame without "\n" is a part of a
      // longer line (Docker cuts at 16 KiB): joined with the next.
      const space = payload.indexOf(' ')
      const stamp = Date.parse(payload.slice(0, space))
      const text = this.#partial[stream] + (space > 0 && Number.isFinite(stamp) ? payload.slice(space + 1) : payload)
      if (!text.endsWith('\n')) { this.#partial[stream] = text.slice(0, MAX_LINE_CHARS); continue }
      this.#partial[stream] = ''
      out.push({ at: Number.isFinite(stamp) ? stamp : Date.now(), stream, text: text.slice(0, -1).slice(0, MAX_LINE_CHARS) })
    }
    this.#pending = this.#pending.subarray(offset)
    return out
  }
}

/** Where the lines of this peer's mission containers come from. */
export type LogSource = Pick<MissionRuntime, 'listOwn' | 'followLogs'>

interface Followed { mission: string, epoch: number, n: number, stream: Readable | undefined }

export interface MissionLogsOptions {
  peer: Peer
  /** This board's containers (none: the board keeps and serves the lines others gossip, and captures none). */
  runtime?: LogSource
  log?: LogLine
}

/** Captures, stores, gossips and serves mission output; returns the function that stops it. */
export class MissionLogs {
  readonly store: MissionLogStore
  readonly #peer: Peer
  readonly #runtime: LogSource | undefined
  readonly #log: LogLine
  readonly #followed = new Map<string, Followed>()
  readonly #outbox = new Map<string, MissionLogEntry[]>()
  readonly #budget = new Map<string, { at: number, bytes: number }>()
  /** Lines not gossiped because a mission printed more than the budget (they stay on this board). */
  unreplicated = 0
  #timers: NodeJS.Timeout[] = []
  #cleanups: Array<() => void | Promise<void>> = []
  #discovering = false
  #stopped = false

  constructor (options: MissionLogsOptions) {
    this.#peer = options.peer
    this.#runtime = options.runtime
    this.#log = options.log ?? (() => {})
    this.store = new MissionLogStore(join(options.peer.config.dataDir, 'mission-logs'))
  }

  async start (): Promise<void> {
    const peer = this.#peer
    await this.store.load()
    this.#cleanups.push(peer.gossip.subscribe(MISSION_LOGS_TOPIC, validateLogBatch, batch => { this.store.add(batch.mission, batch.lines) }, { maxBytes: MAX_MESSAGE_BYTES + 1024 }))

    await peer.node.libp2p.handle(MISSION_LOGS_PROTOCOL, async stream => {
      const signal = AbortSignal.timeout(ASK_TIMEOUT_MS * 2)
      try {
        const lp = lpStream(stream, { maxDataLength: 4096 })
        const request = requestSchema.parse(JSON.parse(new TextDecoder().decode((await lp.read({ signal })).subarray())))
        const since = typeof request.since === 'number' ? request.since : undefined
        // Every board's lines it holds: the asker may have missed a board's gossip that is off now.
        const page = this.store.page(request.mission, { since })
        const lines = page.lines.slice(-MAX_REPLY_LINES).map(({ seq, ...rest }) => rest)
        await lp.write(new TextEncoder().encode(JSON.stringify({ lines })), { signal })
        await stream.close({ signal }).catch(() => {})
      } catch {
        stream.abort(new Error('bad mission logs request'))
      }
    }, { maxInboundStreams: 8 })
    this.#cleanups.push(async () => { await peer.node.libp2p.unhandle(MISSION_LOGS_PROTOCOL).catch(() => {}) })

    peer.api.route('GET', '/v1/missions/:name/logs', async request => {
      const number = (name: string): number | undefined => {
        const text = request.query.get(name)
        if (text == null || text === '') return undefined
        const value = Number(text)
        if (!Number.isFinite(value) || value < 0) throw new ApiError(400, `${name} must be a number >= 0`)
        return value
      }
      const mission = request.params.name as string
      const after = number('after')
      const since = number('since')
      const tail = number('tail')
      let asked: number | undefined
      let answered: number | undefined
      // The first page gathers from every connected board; follow pages (after=) read what gossip brings.
      if (after == null && request.query.get('swarm') !== '0') ({ asked, answered } = await this.gather(mission, since, request.signal))
      return { body: { ...this.store.page(mission, { after, since, tail }), ...(asked != null ? { asked, answered } : {}) } }
    })
    peer.status.extend('missionLogs', () => ({ missions: this.store.missions().length, following: this.#followed.size, unreplicated: this.unreplicated }))

    if (this.#runtime != null) {
      this.#timers.push(setInterval(() => { void this.#discover() }, DISCOVER_MS))
      void this.#discover()
    }
    this.#timers.push(setInterval(() => { this.#flush() }, FLUSH_MS))
  }

  /** Asks every connected peer for its containers' lines of the mission and adds them here. */
  async gather (mission: string, since: number | undefined, signal?: AbortSignal): Promise<{ asked: number, answered: number }> {
    const libp2p = this.#peer.node.libp2p
    const peers = libp2p.getPeers()
    let answered = 0
    await Promise.all(peers.map(async peerId => {
      const timeout = AbortSignal.timeout(ASK_TIMEOUT_MS)
      const both = signal != null ? AbortSignal.any([signal, timeout]) : timeout
      let stream
      try {
        stream = await libp2p.dialProtocol(peerIdFromString(peerId.toString()), MISSION_LOGS_PROTOCOL, { signal: both })
        const lp = lpStream(stream, { maxDataLength: 4 * 1024 * 1024 })
        await lp.write(new TextEncoder().encode(JSON.stringify({ mission, since })), { signal: both })
        const reply = JSON.parse(new TextDecoder().decode((await lp.read({ signal: both })).subarray())) as { lines?: unknown }
        await stream.close({ signal: both }).catch(() => {})
        if (!Array.isArray(reply.lines)) return
        const lines = reply.lines.map(l => validEntry(l, boardOf(l) ?? peerId.toString())).filter((l): l is MissionLogEntry => l != null)
        this.store.add(mission, lines)
        answered++
      } catch {
        // A board without this protocol (older) or too slow: its lines come by gossip, or not at all.
        stream?.abort(new Error('mission logs request failed'))
      }
    }))
    return { asked: peers.length, answered }
  }

  async #discover (): Promise<void> {
    const runtime = this.#runtime
    if (runtime == null || this.#discovering || this.#stopped) return
    this.#discovering = true
    try {
      const list = await runtime.listOwn({}).catch(() => [])
      for (const c of list) {
        if (this.#followed.has(c.id)) continue
        const followed: Followed = { mission: c.mission, epoch: c.epoch, n: 0, stream: undefined }
        this.#followed.set(c.id, followed)
        void this.#follow(runtime, c.id, followed)
      }
      // Forget containers gone long ago (their streams ended), keeping the set bounded.
      if (this.#followed.size > 256) for (const [id, f] of this.#followed) if (f.stream == null && this.#followed.size > 128) this.#followed.delete(id)
    } finally {
      this.#discovering = false
    }
  }

  async #follow (runtime: LogSource, id: string, followed: Followed): Promise<void> {
    let stream: Readable
    try {
      stream = await runtime.followLogs(id)
    } catch (err) {
      this.#log(`mission logs: cannot follow container ${id.slice(0, 12)} of ${followed.mission}: ${(err as Error).message}`, { level: 'warn', mission: followed.mission })
      return
    }
    if (this.#stopped) { stream.destroy(); return }
    followed.stream = stream
    const parser = new DockerLogParser()
    const container = id.slice(0, 12)
    const board = this.#peer.peerId
    stream.on('data', (chunk: Buffer) => {
      const lines = parser.push(chunk).map(l => ({ ...l, board, container, epoch: followed.epoch, n: followed.n++ }))
      if (lines.length === 0) return
      this.store.add(followed.mission, lines)
      let outbox = this.#outbox.get(followed.mission)
      if (outbox == null) { outbox = []; this.#outbox.set(followed.mission, outbox) }
      outbox.push(...lines)
    })
    const done = (): void => { followed.stream = undefined }
    stream.once('end', done)
    stream.once('close', done)
    stream.once('error', done)
  }

  /** Gossips what was captured since the last flush, within each mission's byte budget. */
  #flush (): void {
    const now = Date.now()
    for (const [mission, lines] of this.#outbox) {
      this.#outbox.delete(mission)
      let budget = this.#budget.get(mission)
      if (budget == null || now - budget.at >= 1000) { budget = { at: now, bytes: 0 }; this.#budget.set(mission, budget) }
      let batch: Array<Omit<MissionLogEntry, 'board'>> = []
      let bytes = 0
      const send = (): void => {
        if (batch.length === 0) return
        this.#peer.gossip.publish(MISSION_LOGS_TOPIC, { mission, lines: batch }).catch(() => {})
        batch = []
        bytes = 0
      }
      for (const { board, ...line } of lines) {
        const size = Buffer.byteLength(JSON.stringify(line)) + 1
        if (budget.bytes + size > BUDGET_BYTES_PER_S) { this.unreplicated++; continue }
        if (bytes + size > MAX_MESSAGE_BYTES) send()
        batch.push(line)
        bytes += size
        budget.bytes += size
      }
      send()
    }
  }

  async stop (): Promise<void> {
    this.#stopped = true
    for (const timer of this.#timers) clearInterval(timer)
    this.#flush()
    for (const f of this.#followed.values()) f.stream?.destroy()
    for (const cleanup of this.#cleanups.reverse()) await cleanup()
    await this.store.flushed()
  }
}
