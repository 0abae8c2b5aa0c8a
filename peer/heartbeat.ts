// The heartbeat every peer gossips: who it is, what board it runs on, its load, and extras from other parts.
import { GossipDrop } from './gossip.ts'
import type { HostCapabilities } from '../boards/detect.ts'
import type { BoardProfile } from '../boards/profiles.ts'

export const HEARTBEAT_TOPIC = 'tandem/heartbeat/1'

export interface HeartbeatBoard {
  name: string
  arch: string
  cores: number
  memoryMb: number
}

export interface HeartbeatLoad {
  /** 1-minute load average divided by the number of cores. */
  loadPerCore: number
  /** Event-loop lag seen by the failure detector, ms. */
  lagMs: number
  rssMb: number
  /** Lifeguard local health score (0 = healthy). */
  healthScore: number
}

/** What a heartbeat tells about its sender (everything but the sequencing fields). */
export interface HeartbeatInfo {
  addrs: string[]
  board: HeartbeatBoard
  capabilities: {
    criu: { version: string | null, checkOk: boolean | null }
    docker: { available: boolean | null, version: string | null }
  }
  load: HeartbeatLoad
  /** Fields added by other parts (e.g. `missions`), each from a provider registered with `extend`. */
  extras: Record<string, unknown>
}

export interface Heartbeat extends HeartbeatInfo {
  v: 1
  peerId: string
  incarnation: number
  seq: number
  sentAt: number
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function fail (what: string): never { throw new GossipDrop('malformed', what) }

function str (value: unknown, what: string, max = 256): string {
  if (typeof value !== 'string' || value.length > max) fail(`${what} must be a string of at most ${max} chars`)
  return value
}

function num (value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) fail(`${what} must be a non-negative number`)
  return value
}

function nullable<T> (value: unknown, check: (v: unknown) => T): T | null {
  return value === null || value === undefined ? null : check(value)
}

function bool (value: unknown, what: string): boolean {
  if (typeof value !== 'boolean') fail(`${what} must be a boolean`)
  return value
}

/** Validates a decoded heartbeat; the claimed peer id must be the gossip signer's. */
export function validateHeartbeat (payload: unknown, sender: string): Heartbeat {
  if (!isRecord(payload)) fail('heartbeat must be an object')
  if (payload.v !== 1) fail(`unsupported heartbeat version ${String(payload.v)}`)
  const peerId = str(payload.peerId, 'peerId', 128)
  if (peerId !== sender) throw new GossipDrop('forged', `claims to be ${peerId} but was signed by ${sender}`)
  const incarnation = num(payload.incarnation, 'incarnation')
  const seq = num(payload.seq, 'seq')
  if (!Number.isInteger(incarnation) || !Number.isInteger(seq)) fail('incarnation and seq must be integers')
  if (!Array.isArray(payload.addrs) || payload.addrs.length > 32) fail('addrs must be an array of at most 32 multiaddrs')
  const addrs = payload.addrs.map((addr, i) => str(addr, `addrs[${i}]`, 512))
  const board = isRecord(payload.board) ? payload.board : fail('board must be an object')
  const capabilities = isRecord(payload.capabilities) ? payload.capabilities : fail('capabilities must be an object')
  const criu = isRecord(capabilities.criu) ? capabilities.criu : fail('capabilities.criu must be an object')
  const docker = isRecord(capabilities.docker) ? capabilities.docker : fail('capabilities.docker must be an object')
  const load = isRecord(payload.load) ? payload.load : fail('load must be an object')
  const extras = isRecord(payload.extras) ? payload.extras : fail('extras must be an object')
  return {
    v: 1,
    peerId,
    incarnation,
    seq,
    sentAt: num(payload.sentAt, 'sentAt'),
    addrs,
    board: {
      name: str(board.name, 'board.name', 64),
      arch: str(board.arch, 'board.arch', 16),
      cores: num(board.cores, 'board.cores'),
      memoryMb: num(board.memoryMb, 'board.memoryMb')
    },
    capabilities: {
      criu: { version: nullable(criu.version, v => str(v, 'criu.version', 64)), checkOk: nullable(criu.checkOk, v => bool(v, 'criu.checkOk')) },
      docker: { available: nullable(docker.available, v => bool(v, 'docker.available')), version: nullable(docker.version, v => str(v, 'docker.version', 64)) }
    },
    load: {
      loadPerCore: num(load.loadPerCore, 'load.loadPerCore'),
      lagMs: num(load.lagMs, 'load.lagMs'),
      rssMb: num(load.rssMb, 'load.rssMb'),
      healthScore: num(load.healthScore, 'load.healthScore')
    },
    extras
  }
}

export const VERDICT_TOPIC = 'tandem/verdict/1'

/** A signed `dead` verdict, gossiped by the peer that reached it from its own evidence (peer/membership.ts). */
export interface VerdictMessage {
  v: 1
  /** The issuer: must be the gossip signer. */
  from: string
  target: string
  /** The target's incarnation and newest heartbeat sequence number known to the issuer. */
  incarnation: number
  seq: number
  reason: string
  /** The issuer's redial was refused: the target's process exited (absent = not proven). */
  exitProven?: boolean
}

/** Validates a decoded verdict; the claimed issuer must be the gossip signer. */
export function validateVerdict (payload: unknown, sender: string): VerdictMessage {
  if (!isRecord(payload)) fail('verdict must be an object')
  if (payload.v !== 1) fail(`unsupported verdict version ${String(payload.v)}`)
  const from = str(payload.from, 'from', 128)
  if (from !== sender) throw new GossipDrop('forged', `verdict claims to be from ${from} but was signed by ${sender}`)
  const incarnation = num(payload.incarnation, 'incarnation')
  const seq = num(payload.seq, 'seq')
  if (!Number.isInteger(incarnation) || !Number.isInteger(seq)) fail('incarnation and seq must be integers')
  return { v: 1, from, target: str(payload.target, 'target', 128), incarnation, seq, reason: str(payload.reason, 'reason', 200), ...(payload.exitProven === true ? { exitProven: true } : {}) }
}

export type ExtrasProvider = () => unknown

/** Fields other parts add to every heartbeat (e.g. the missions a peer holds and their roles). */
export class HeartbeatExtras {
  readonly #providers = new Map<string, ExtrasProvider>()

  /** Adds `extras[name]` to every heartbeat; the provider is called for each heartbeat and must be cheap. */
  extend (name: string, provider: ExtrasProvider): void {
    if (this.#providers.has(name)) throw new Error(`heartbeat extra '${name}' is already registered`)
    this.#providers.set(name, provider)
  }

  collect (log: (line: string) => void): Record<string, unknown> {
    const extras: Record<string, unknown> = {}
    for (const [name, provider] of this.#providers) {
      try {
        extras[name] = provider()
      } catch (err) {
        log(`heartbeat: extra '${name}' failed: ${(err as Error).message}`)
      }
    }
    return extras
  }
}

/** Builds this peer's heartbeats: a fresh incarnation per process life, a growing sequence number. */
export class HeartbeatSource {
  readonly #peerId: string
  readonly #board: BoardProfile
  readonly #capabilities: () => HostCapabilities
  readonly #load: () => HeartbeatLoad
  readonly #addrs: () => string[]
  readonly #extras: HeartbeatExtras
  readonly #log: (line: string) => void
  #incarnation: number
  #seq = 0

  constructor (options: {
    peerId: string
    board: BoardProfile
    capabilities: () => HostCapabilities
    load: () => HeartbeatLoad
    addrs: () => string[]
    extras: HeartbeatExtras
    log?: (line: string) => void
  }) {
    this.#extras = options.extras
    this.#peerId = options.peerId
    this.#board = options.board
    this.#capabilities = options.capabilities
    this.#load = options.load
    this.#addrs = options.addrs
    this.#log = options.log ?? (() => {})
    // Wall-clock milliseconds: a restarted process always starts above its previous life.
    this.#incarnation = Date.now()
  }

  get incarnation (): number { return this.#incarnation }

  /** A new incarnation (after a detected pause) tells everyone this is a new life of the same peer. */
  bumpIncarnation (): void {
    this.#incarnation = Math.max(this.#incarnation + 1, Date.now())
    // The sequence keeps counting: only a new process starts at 1 (its first heartbeats are relayed to
    // announce it, see heartbeatRelayFirst); a refutation after a pause or a verdict need not be.
  }

  next (): Heartbeat {
    const extras = this.#extras.collect(this.#log)
    const capabilities = this.#capabilities()
    return {
      v: 1,
      peerId: this.#peerId,
      incarnation: this.#incarnation,
      seq: ++this.#seq,
      sentAt: Date.now(),
      addrs: this.#addrs(),
      board: { name: this.#board.name, arch: this.#board.arch, cores: this.#board.cores, memoryMb: this.#board.memoryMb },
      capabilities: {
        criu: { version: capabilities.criu.version, checkOk: capabilities.criu.checkOk },
        docker: { available: capabilities.docker.available, version: capabilities.docker.version }
      },
      load: this.#load(),
      extras
    }
  }
}
