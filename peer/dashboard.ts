// The web dashboard (`tandem ui`): static files of peer/ui/ served at /ui/ without the token (they hold nothing
// secret; the page takes the token from its URL and sends it as the bearer token with every call), and
// GET /v1/dashboard (with the token): the swarm's boards, the missions, and a timeline of checkpoints and failovers.
// The page follows the event stream with GET /v1/events?after=SEQ&wait=S (a long poll, peer/swarm-events.ts).
import { readFile } from 'node:fs/promises'
import { loadavg } from 'node:os'
import { ApiError, type ApiResponse } from './api.ts'
import { kindOf, type SwarmEventKind } from './swarm-events.ts'
import type { Peer } from './daemon.ts'
import type { MissionStatus } from './missions/index.ts'

const UI_DIR = new URL('./ui/', import.meta.url)
/** The files of peer/ui/ the peer serves, and their content types: nothing else is read from disk. */
const ASSETS: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8'
}
/**
 * Every asset comes from the peer itself (works offline, no CDN); the page may only call its own peer. No framing
 * (clickjacking) and no referrer: the first URL carries the token.
 */
const ASSET_HEADERS: Record<string, string> = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store'
}
/** How often the checkpoint sampler looks at the missions, ms. */
const SAMPLE_MS = 1000
/** Timeline entries kept (checkpoints and failovers of every mission). */
const TIMELINE_LENGTH = 600
const FAILOVER_KINDS = new Set<SwarmEventKind>(['takeover', 'election', 'fencing', 'move'])

export interface DashboardBoard {
  peerId: string
  self: boolean
  /** Board profile (e.g. raspberry-pi-4, x86-generic), null until its first heartbeat. */
  board: string | null
  arch: string | null
  cores: number | null
  memoryMb: number | null
  state: 'alive' | 'suspect' | 'dead'
  /** Why it is in that state (the failure detector's words). */
  reason: string
  stateSinceAt: number
  lastSeenMs: number
  connected: boolean
  load: { loadPerCore: number, rssMb: number, lagMs: number } | null
  criu: boolean | null
  /** Missions this board is primary or backup of. */
  roles: Array<{ mission: string, role: 'primary' | 'backup' }>
}

export interface DashboardMission {
  name: string
  state: MissionStatus['state']
  epoch: number
  primary: string | null
  backup: string | null
  protected: boolean
  /** What is missing while not protected. */
  protection: string | null
  reason: string | null
  restarts: number
  image: MissionStatus['spec']['image']
  checkpointIntervalMs: number
  checkpoint: { seq: number, epoch: number, ageMs: number } | null
  replicatedSeq: number | null
  replicationLag: number | null
  replicationLagMs: number | null
  /** This peer's standing in it. */
  role: MissionStatus['role']
}

export interface TimelineEntry {
  /** Wall clock, ms (a checkpoint's: when it was taken; an event's: its board's clock). */
  at: number
  mission: string
  kind: 'checkpoint' | SwarmEventKind
  board: string | null
  epoch: number | null
  seq: number | null
  text: string
}

export interface DashboardView {
  at: number
  self: string
  boards: DashboardBoard[]
  missions: DashboardMission[]
  timeline: TimelineEntry[]
}

/** Checkpoints seen by sampling the missions (periodic checkpoints are no events): one entry per new seq. */
export class CheckpointTimeline {
  readonly #entries: TimelineEntry[] = []
  readonly #last = new Map<string, string>()

  observe (missions: MissionStatus[], now = Date.now()): void {
    for (const m of missions) {
      const c = m.lastCheckpoint
      if (c == null) continue
      const key = `${c.epoch}.${c.seq}`
      if (this.#last.get(m.name) === key) continue
      this.#last.set(m.name, key)
      this.#entries.push({ at: now - c.ageMs, mission: m.name, kind: 'checkpoint', board: m.primary, epoch: c.epoch, seq: c.seq, text: `checkpoint #${c.seq} (epoch ${c.epoch})` })
    }
    if (this.#entries.length > TIMELINE_LENGTH) this.#entries.splice(0, this.#entries.length - TIMELINE_LENGTH)
  }

  entries (): TimelineEntry[] { return [...this.#entries] }
}

/** The timeline: sampled checkpoints and the missions' failover events (elections, takeovers, fencing, moves). */
export function timelineOf (checkpoints: TimelineEntry[], missions: MissionStatus[]): TimelineEntry[] {
  const failovers: TimelineEntry[] = []
  for (const m of missions) {
    for (const e of m.events) {
      const kind = kindOf(e.event)
      if (!FAILOVER_KINDS.has(kind)) continue
      const epoch = e.event.kind === 'elected' || e.event.kind === 'reconfigured' ? e.event.epoch : (e.mark?.epoch ?? null)
      failovers.push({ at: e.at, mission: m.name, kind, board: e.board, epoch, seq: null, text: e.text })
    }
  }
  return [...checkpoints, ...failovers].sort((a, b) => a.at - b.at).slice(-TIMELINE_LENGTH)
}

function missionOf (m: MissionStatus): DashboardMission {
  return {
    name: m.name,
    state: m.state,
    epoch: m.epoch,
    primary: m.primary,
    backup: m.backup,
    protected: m.protected,
    protection: m.protection.reason,
    reason: m.reason,
    restarts: m.restarts,
    image: m.spec.image,
    checkpointIntervalMs: m.spec.checkpointIntervalMs,
    checkpoint: m.lastCheckpoint == null ? null : { seq: m.lastCheckpoint.seq, epoch: m.lastCheckpoint.epoch, ageMs: m.lastCheckpoint.ageMs },
    replicatedSeq: m.replicatedSeq,
    replicationLag: m.replicationLag,
    replicationLagMs: m.replicationLagMs,
    role: m.role
  }
}

export interface Dashboard {
  /** Starts the checkpoint sampler (when the peer runs); returns its stop. */
  start: () => () => void
}

/** Registers the dashboard's routes on the peer's control API. */
export function serveDashboard (peer: Peer): Dashboard {
  const checkpoints = new CheckpointTimeline()
  const missions = async (): Promise<MissionStatus[]> => {
    const section = await peer.status.section('missions')
    return Array.isArray(section) ? section as MissionStatus[] : []
  }

  const asset = async (name: string): Promise<ApiResponse> => {
    const contentType = ASSETS[name]
    if (contentType == null) throw new ApiError(404, `no dashboard file ${name}`)
    const content = await readFile(new URL(name, UI_DIR), 'utf8')
    return { text: { contentType, content }, headers: ASSET_HEADERS }
  }
  peer.api.route('GET', '/ui', async () => await asset('index.html'), { public: true })
  peer.api.route('GET', '/ui/:file', async request => await asset(request.params.file as string), { public: true })

  peer.api.route('GET', '/v1/dashboard', async () => {
    const status = await peer.statusObject()
    const list = Array.isArray(status.missions) ? status.missions as MissionStatus[] : []
    checkpoints.observe(list)
    const roles = (peerId: string): DashboardBoard['roles'] => list.flatMap((m): DashboardBoard['roles'] =>
      m.primary === peerId ? [{ mission: m.name, role: 'primary' }] : m.backup === peerId ? [{ mission: m.name, role: 'backup' }] : [])
    const self = status.self
    const selfBoard: DashboardBoard = {
      peerId: self.peerId,
      self: true,
      board: self.board,
      arch: self.arch,
      cores: self.profile.cores,
      memoryMb: self.profile.memoryMb,
      state: 'alive',
      reason: 'this peer',
      stateSinceAt: self.startedAt,
      lastSeenMs: 0,
      connected: true,
      load: {
        loadPerCore: Math.round((loadavg()[0] ?? 0) / Math.max(1, self.profile.cores) * 100) / 100,
        rssMb: Math.round(process.memoryUsage.rss() / 2 ** 20),
        lagMs: self.lagMs
      },
      criu: self.capabilities.criu.checkOk,
      roles: roles(self.peerId)
    }
    const others: DashboardBoard[] = status.peers.map(p => ({
      peerId: p.peerId,
      self: false,
      board: p.board,
      arch: p.arch,
      cores: p.info?.board.cores ?? null,
      memoryMb: p.info?.board.memoryMb ?? null,
      state: p.state,
      reason: p.reason,
      stateSinceAt: p.stateSinceAt,
      lastSeenMs: p.lastSeenMs,
      connected: p.connected,
      load: p.info == null ? null : { loadPerCore: p.info.load.loadPerCore, rssMb: p.info.load.rssMb, lagMs: p.info.load.lagMs },
      criu: p.info?.capabilities.criu.checkOk ?? null,
      roles: roles(p.peerId)
    }))
    const view: DashboardView = {
      at: Date.now(),
      self: self.peerId,
      boards: [selfBoard, ...others],
      missions: list.map(missionOf),
      timeline: timelineOf(checkpoints.entries(), list)
    }
    return { body: view }
  })

  return {
    start: () => {
      // Checkpoints while nobody has the page open are on its timeline too.
      const timer = setInterval(() => { missions().then(list => { checkpoints.observe(list) }, () => {}) }, SAMPLE_MS)
      timer.unref()
      return () => { clearInterval(timer) }
    }
  }
}
