// The heartbeat every peer gossips: who it is, what board it runs on, its load, and extras from other parts.
import { GossipDrop } from './gossip.ts'
import { describeIssue, natural, nonNegative, plainObject, text, z } from '../schema/schema.ts'
import type { HostCapabilities } from '../boards/detect.ts'
import type { BoardProfile } from '../boards/profiles.ts'

export const HEARTBEAT_TOPIC = 'tandem/heartbeat/1'

/** How a value absent or null in a heartbeat reads: null. */
function nullish<T extends z.ZodType> (schema: T): z.ZodPipe<z.ZodOptional<z.ZodNullable<T>>, z.ZodTransform<z.output<T> | null, z.output<T> | null | undefined>> {
  return schema.nullish().transform(value => value ?? null)
}

const boardSchema = z.object({
  name: text(64),
  arch: text(16),
  cores: nonNegative,
  memoryMb: nonNegative
})
export type HeartbeatBoard = z.infer<typeof boardSchema>

const loadSchema = z.object({
  /** 1-minute load average divided by the number of cores. */
  loadPerCore: nonNegative,
  /** Event-loop lag seen by the failure detector, ms. */
  lagMs: nonNegative,
  rssMb: nonNegative,
  /** Lifeguard local health score (0 = healthy). */
  healthScore: nonNegative
})
export type HeartbeatLoad = z.infer<typeof loadSchema>

const infoShape = {
  addrs: z.array(text(512), { error: 'must be an array of at most 32 multiaddrs' }).max(32, { error: 'must be an array of at most 32 multiaddrs' }),
  board: boardSchema,
  capabilities: z.object({
    criu: z.object({ version: nullish(text(64)), checkOk: nullish(z.boolean({ error: 'must be a boolean' })) }),
    docker: z.object({ available: nullish(z.boolean({ error: 'must be a boolean' })), version: nullish(text(64)) })
  }),
  load: loadSchema,
  /** Fields added by other parts (e.g. `missions`), each from a provider registered with `extend`. */
  extras: plainObject
}

// zod, though this is a peer's hottest parse and zod checks it ~7x slower than the hand-written checks did (2 us
// instead of 0.3 us on x64, bench/parse-cost.ts): that is 5 us instead of 2 us with JSON.parse, next to the ~65 us
// Ed25519 check gossipsub does first. One schema for the type and the checks is worth 3 us a heartbeat.
const heartbeatSchema = z.object({
  v: z.literal(1, { error: 'unsupported heartbeat version' }),
  peerId: text(128),
  incarnation: natural,
  seq: natural,
  sentAt: nonNegative,
  ...infoShape
})

/** What a heartbeat tells about its sender (everything but the sequencing fields). */
export type HeartbeatInfo = z.infer<z.ZodObject<typeof infoShape>>
export type Heartbeat = z.infer<typeof heartbeatSchema>

function parse<T extends z.ZodType> (schema: T, payload: unknown, what: string): z.output<T> {
  const result = schema.safeParse(payload)
  if (!result.success) throw new GossipDrop('malformed', `${what}: ${describeIssue(result.error)}`)
  return result.data
}

/** Validates a decoded heartbeat; the claimed peer id must be the gossip signer's. */
export function validateHeartbeat (payload: unknown, sender: string): Heartbeat {
  const heartbeat = parse(heartbeatSchema, payload, 'heartbeat')
  if (heartbeat.peerId !== sender) throw new GossipDrop('forged', `claims to be ${heartbeat.peerId} but was signed by ${sender}`)
  return heartbeat
}

export const VERDICT_TOPIC = 'tandem/verdict/1'

const verdictSchema = z.object({
  v: z.literal(1, { error: 'unsupported verdict version' }),
  /** The issuer: must be the gossip signer. */
  from: text(128),
  target: text(128),
  /** The target's incarnation and newest heartbeat sequence number known to the issuer. */
  incarnation: natural,
  seq: natural,
  reason: text(200),
  /** The issuer's redial was refused: the target's process exited (absent = not proven). */
  exitProven: z.boolean().optional()
})
/** A signed `dead` verdict, gossiped by the peer that reached it from its own evidence (peer/membership.ts). */
export type VerdictMessage = z.infer<typeof verdictSchema>

/** Validates a decoded verdict; the claimed issuer must be the gossip signer. */
export function validateVerdict (payload: unknown, sender: string): VerdictMessage {
  const verdict = parse(verdictSchema, payload, 'verdict')
  if (verdict.from !== sender) throw new GossipDrop('forged', `verdict claims to be from ${verdict.from} but was signed by ${sender}`)
  return verdict
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
