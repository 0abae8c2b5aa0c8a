// The gossiped heartbeat, both ways: this peer's own (its profile, load and extras, every heartbeatIntervalMs,
// and at once when it refutes a verdict or a pause with a new incarnation), and the others', verified and fed
// to the member table.
import { loadavg } from 'node:os'
import type { FailureDetectorConfig } from '../config.ts'
import type { Gossip } from '../gossip.ts'
import { GossipDrop } from '../gossip.ts'
import { HEARTBEAT_TOPIC, HeartbeatSource, validateHeartbeat, type Heartbeat, type HeartbeatExtras } from '../heartbeat.ts'
import type { Membership } from '../membership.ts'
import type { LogLine } from '../logger.ts'
import type { BoardProfile } from '../../boards/profiles.ts'
import type { HostCapabilities } from '../../boards/detect.ts'

/** How often the load average and RSS carried by heartbeats are re-read. */
const LOAD_REFRESH_MS = 2000

export interface HeartbeatGossipOptions {
  selfId: string
  board: BoardProfile
  capabilities: () => HostCapabilities
  addrs: () => string[]
  extras: HeartbeatExtras
  gossip: Gossip
  membership: Membership
  config: FailureDetectorConfig
  log: LogLine
  /** A verified heartbeat from `peerId`, which listens on `addrs`. */
  onHeard: (peerId: string, addrs: string[]) => void
}

export class HeartbeatGossip {
  readonly #options: HeartbeatGossipOptions
  readonly #source: HeartbeatSource
  #oversizeLoggedAt = 0

  constructor (options: HeartbeatGossipOptions) {
    this.#options = options
    const { membership, board } = options
    const slowLoad = { at: -Infinity, loadPerCore: 0, rssMb: 0 }
    this.#source = new HeartbeatSource({
      peerId: options.selfId,
      board,
      capabilities: options.capabilities,
      addrs: options.addrs,
      extras: options.extras,
      log: options.log,
      load: () => {
        // The load average and the RSS (a read of /proc/self/statm) change slowly: refresh them at most once
        // per LOAD_REFRESH_MS instead of on every heartbeat.
        const now = performance.now()
        if (now - slowLoad.at >= LOAD_REFRESH_MS) {
          slowLoad.at = now
          slowLoad.loadPerCore = round2((loadavg()[0] ?? 0) / Math.max(1, board.cores ?? 1))
          slowLoad.rssMb = Math.round(process.memoryUsage.rss() / 2 ** 20)
        }
        return { loadPerCore: slowLoad.loadPerCore, lagMs: Math.round(membership.lastLagMs), rssMb: slowLoad.rssMb, healthScore: membership.healthScore }
      }
    })
  }

  /** This peer's incarnation, as its heartbeats and beats carry it. */
  get incarnation (): number { return this.#source.incarnation }

  /** Receives the others' heartbeats; returns the unsubscribe. */
  receive (): () => void {
    const { gossip, membership, config: fd } = this.#options
    return gossip.subscribe<Heartbeat>(HEARTBEAT_TOPIC, (payload, sender) => {
      const heartbeat = validateHeartbeat(payload, sender)
      if (membership.isReplay(heartbeat.peerId, heartbeat.incarnation, heartbeat.seq)) {
        throw new GossipDrop('replayed', `incarnation ${heartbeat.incarnation} seq ${heartbeat.seq} already seen`)
      }
      return heartbeat
    }, heartbeat => {
      const { v, peerId, incarnation, seq, sentAt, ...info } = heartbeat
      membership.heard(peerId, incarnation, seq, info)
      this.#options.onHeard(peerId, info.addrs)
    }, { maxBytes: fd.maxHeartbeatBytes, relay: heartbeat => heartbeat.seq <= fd.heartbeatRelayFirst || heartbeat.seq % fd.heartbeatRelayEvery === 0 })
  }

  /** Publishes every heartbeatIntervalMs; returns the stop function. */
  publishEvery (intervalMs: number): () => void {
    const timer = setInterval(() => { this.publish() }, intervalMs)
    return () => { clearInterval(timer) }
  }

  /** A new incarnation, told at once: the answer to a verdict against this peer, and to a pause. */
  refute (): void {
    this.#source.bumpIncarnation()
    this.publish()
  }

  publish (): void {
    const { gossip, log } = this.#options
    let heartbeat = this.#source.next()
    const limit = this.#options.config.maxHeartbeatBytes
    if (Buffer.byteLength(JSON.stringify(heartbeat)) > limit) {
      // Receivers would drop it as oversized and soon think we are dead: send it without the extras.
      if (Date.now() - this.#oversizeLoggedAt > 60_000) {
        this.#oversizeLoggedAt = Date.now()
        log(`heartbeat: larger than ${limit} bytes with extras (${Object.keys(heartbeat.extras).join(', ')}); sending it without them`, { level: 'warn' })
      }
      heartbeat = { ...heartbeat, extras: {} }
    }
    gossip.publish(HEARTBEAT_TOPIC, heartbeat).catch(err => {
      log(`heartbeat: publish failed: ${(err as Error).message}`, { level: 'warn' })
    })
  }
}

function round2 (n: number): number { return Math.round(n * 100) / 100 }
