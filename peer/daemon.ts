// The tandem peer: one libp2p/Helia node, heartbeat gossip, membership with failure detection, control API.
import { readFile } from 'node:fs/promises'
import { getPriority, loadavg, setPriority } from 'node:os'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { SealIdentity } from '../checkpoint/sealing.ts'
import type { PeerId, PeerInfo } from '@libp2p/interface'
import { createSwarmNode, type SwarmNode } from './node.ts'
import { pnetCipherMemory } from './pnet-cipher-fix.ts'
import { Gossip, GossipDrop, type TopicCounters } from './gossip.ts'
import { Membership, type MemberState } from './membership.ts'
import { Libp2pProber } from './probe.ts'
import { HEARTBEAT_TOPIC, HeartbeatExtras, HeartbeatSource, VERDICT_TOPIC, validateHeartbeat, validateVerdict, type Heartbeat, type HeartbeatInfo, type VerdictMessage } from './heartbeat.ts'
import { BeatLink } from './beats.ts'
import { ControlApi } from './api.ts'
import { serveDashboard, type Dashboard } from './dashboard.ts'
import { StatusRegistry } from './status.ts'
import { METRICS_CONTENT_TYPE, PeerMetrics } from './metrics.ts'
import type { LogLine } from './logger.ts'
import { apiTokenPath, ConfigError, validatePeerConfig, type PeerConfig } from './config.ts'
import { DataDirLock, ensureDataDir, loadOrCreateApiToken, loadOrCreateIdentity, newApiToken, writeApiToken } from './identity.ts'
import { CapabilityProbe, UNKNOWN_CAPABILITIES, detectBoard, UnknownBoardError, type HostCapabilities } from '../boards/detect.ts'
import type { BoardProfile } from '../boards/profiles.ts'
import { LONELY_AFTER_MS, lonelyReport, tcpReachable } from './lonely.ts'

export interface PeerStatusEntry {
  peerId: string
  state: MemberState
  /** Milliseconds since the last sign of life (heartbeat or answered probe). */
  lastSeenMs: number
  /** Wall-clock time of the last sign of life, ms since epoch. */
  lastSeenAt: number
  /** Milliseconds in the current state, the wall-clock time it began, and why it was entered. */
  stateForMs: number
  stateSinceAt: number
  reason: string
  incarnation: number
  board: string | null
  arch: string | null
  connected: boolean
  info: HeartbeatInfo | null
}

export interface PeerStatus {
  self: {
    peerId: string
    board: string
    arch: string
    addrs: string[]
    incarnation: number
    profile: BoardProfile
    capabilities: HostCapabilities
    healthScore: number
    lagMs: number
    dockerHost: string
    startedAt: number
    /** Open libp2p connections, and how many of those peers gossip heartbeats with us. */
    connections: number
    heartbeatSubscribers: number
    /** Peers we send direct beats to (our watchers), and peers whose beats we receive (we watch them). */
    watchers: string[]
    watching: string[]
  }
  peers: PeerStatusEntry[]
  counters: { gossip: Record<string, TopicCounters>, pauses: number }
  /** Sections added with `peer.status.extend(name, provider)`, e.g. `missions`. */
  [section: string]: unknown
}

const DEFAULT_NICENESS = -10

/** How long the peer with the larger id waits for the other one to dial before it dials itself. */
const DIAL_GRACE_MS = 4000
/**
 * How often a member declared dead is dialled again. A link cut long enough for a verdict drops the connection, and
 * nothing else dials it back: after a 28 s bridge partition healed, the primary held its backup dead for 28 s more
 * and fenced itself when its other member died. As often as live members are checked: a mission's majority may be
 * this very link once the next fault cuts another. A board that is really off refuses or times out: cheap.
 */
const DEAD_REDIAL_MS = 2000
/** At most one forced reconnect per peer this often (a flapping link must not churn connections). */
const RECONNECT_MIN_MS = 5000

/** How often the metrics are set from a status snapshot between scrapes. */
const METRICS_REFRESH_MS = 1000

/** How often the load average and RSS carried by heartbeats are re-read. */
const LOAD_REFRESH_MS = 2000

const SWARM_KEY_PATTERN = /^\/key\/swarm\/psk\/1\.0\.0\/\r?\n\/base16\/\r?\n[0-9a-fA-F]{64}\s*$/

/** Reads and checks a pre-shared swarm key file (libp2p pnet format). */
export async function readSwarmKey (path: string): Promise<Uint8Array> {
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (err) {
    throw new ConfigError(`cannot read swarm key ${path}: ${(err as Error).message}`)
  }
  if (!SWARM_KEY_PATTERN.test(bytes.toString('utf8'))) {
    throw new ConfigError(`swarm key ${path} is not a libp2p pre-shared key (expected '/key/swarm/psk/1.0.0/', '/base16/', 64 hex digits)`)
  }
  return new Uint8Array(bytes)
}

export interface PeerOptions {
  log?: LogLine
  /** Called with the peer id as soon as the identity is loaded (the logger then names the peer on every line). */
  onIdentity?: (peerId: string) => void
  /** A new API token instead of the one the data dir keeps across restarts. */
  rotateApiToken?: boolean
}

export class Peer {
  readonly config: PeerConfig
  /** Top-level fields added to `GET /v1/status`. */
  readonly status: StatusRegistry
  /** Boards the operator revoked (peer/revocations.ts): no connection, no gossip. */
  readonly refusedPeers = new Set<string>()
  /** Fields added to every heartbeat's `extras`. */
  readonly heartbeat: HeartbeatExtras
  /** The control API; add routes with `api.route(method, path, handler)`. */
  readonly api: ControlApi
  /** Prometheus metrics served at `GET /metrics`, set from status snapshots (see metrics.ts). */
  readonly metrics: PeerMetrics
  /** The web dashboard at /ui/ (peer/dashboard.ts). */
  readonly #dashboard: Dashboard
  #token: string
  readonly #rotateApiToken: boolean
  readonly #log: LogLine
  readonly #onIdentity: ((peerId: string) => void) | undefined
  readonly #lock: DataDirLock
  #node: SwarmNode | undefined
  #sealIdentity: SealIdentity | undefined
  #gossip: Gossip | undefined
  #membership: Membership | undefined
  #prober: Libp2pProber | undefined
  #beats: BeatLink | undefined
  #capabilities: CapabilityProbe | undefined
  #board: BoardProfile | undefined
  #source: HeartbeatSource | undefined
  #heartbeatTimer: NodeJS.Timeout | undefined
  #reconnectTimer: NodeJS.Timeout | undefined
  #cleanups: Array<() => void | Promise<void>> = []
  readonly #lastDialAt = new Map<string, number>()
  readonly #lastReconnectAt = new Map<string, number>()
  readonly #directPathLostAt = new Map<string, number>()
  readonly #unconnectedSince = new Map<string, number>()
  readonly #unsubscribedChecks = new Map<string, number>()
  /** The last error of each bootstrap address's dial, and connections opened since start (for the lonely report). */
  readonly #bootstrapErrors: Record<string, string> = {}
  #connectionsOpened = 0
  #startedAt = 0
  #oversizeLoggedAt = 0
  #state: 'new' | 'starting' | 'running' | 'stopping' | 'stopped' = 'new'

  constructor (config: PeerConfig, options: PeerOptions = {}) {
    this.config = config
    this.#log = options.log ?? (line => { process.stderr.write(`${new Date().toISOString()} ${line}\n`) })
    this.#onIdentity = options.onIdentity
    this.#lock = new DataDirLock(config.dataDir)
    // Until start reads the data dir's token: a random one nobody knows.
    this.#token = newApiToken()
    this.#rotateApiToken = options.rotateApiToken === true
    this.api = new ControlApi({ token: this.#token, log: this.#log })
    this.status = new StatusRegistry(['self', 'peers', 'counters'])
    this.heartbeat = new HeartbeatExtras()
    this.api.route('GET', '/v1/status', async () => ({ body: await this.statusObject() }))
    this.api.route('GET', '/v1/membership/events', () => ({ body: { events: this.membership.history() } }))
    // Resource limits at the edges (test/security-edges.test.ts): what the private network's cipher holds, the API's connections.
    this.status.extend('limits', () => ({ pnetCipher: pnetCipherMemory(), api: this.api.connectionFigures() }))
    this.api.route('POST', '/v1/api-token/rotate', async () => {
      const token = newApiToken()
      await writeApiToken(this.config.dataDir, token)
      this.#token = token
      this.api.useToken(token)
      this.#log('api: token rotated on request', { level: 'warn' })
      return { body: { rotated: true, path: apiTokenPath(this.config.dataDir) } }
    })
    this.metrics = new PeerMetrics()
    this.api.route('GET', '/metrics', async () => {
      this.metrics.update(await this.statusObject())
      return { text: { contentType: METRICS_CONTENT_TYPE, content: await this.metrics.text() } }
    })
    this.#dashboard = serveDashboard(this)
  }

  #running<T> (value: T | undefined, what: string): T {
    if (value == null) throw new Error(`peer is not started (${what})`)
    return value
  }

  get node (): SwarmNode { return this.#running(this.#node, 'node') }
  /** This board's identity as checkpoint sealing uses it (X25519 from its Ed25519 key): opens keys wrapped for it. */
  get sealIdentity (): SealIdentity { return this.#running(this.#sealIdentity, 'seal identity') }
  get gossip (): Gossip { return this.#running(this.#gossip, 'gossip') }
  get membership (): Membership { return this.#running(this.#membership, 'membership') }
  get board (): BoardProfile { return this.#running(this.#board, 'board') }
  get peerId (): string { return this.node.libp2p.peerId.toString() }
  get capabilities (): HostCapabilities { return this.#capabilities?.current() ?? UNKNOWN_CAPABILITIES }
  get token (): string { return this.#token }

  addrs (): string[] { return this.node.libp2p.getMultiaddrs().map(String) }

  async start (): Promise<void> {
    if (this.#state !== 'new') throw new Error(`peer cannot start from state ${this.#state}`)
    this.#state = 'starting'
    try {
      await this.#start()
      this.#state = 'running'
    } catch (err) {
      await this.#teardown()
      this.#state = 'stopped'
      throw err
    }
  }

  async #start (): Promise<void> {
    const config = validatePeerConfig(this.config)
    const swarmKey = config.swarmKeyFile != null ? await readSwarmKey(config.swarmKeyFile) : undefined
    try {
      this.#board = await detectBoard(config.board)
    } catch (err) {
      if (err instanceof UnknownBoardError) throw new ConfigError(err.message)
      throw err
    }
    this.#raisePriority(config.niceness ?? DEFAULT_NICENESS)
    const narrowed = await ensureDataDir(config.dataDir)
    if (narrowed != null) this.#log(`security: ${narrowed}`)
    await this.#lock.acquire()
    this.#cleanups.push(async () => { await this.#lock.release() })
    const privateKey = await loadOrCreateIdentity(config.dataDir)
    this.#onIdentity?.(peerIdFromPrivateKey(privateKey).toString())
    this.#sealIdentity = SealIdentity.fromPrivateKey(peerIdFromPrivateKey(privateKey).toString(), privateKey)

    const capabilities = new CapabilityProbe({ dockerHost: config.dockerHost })
    this.#capabilities = capabilities
    capabilities.start()
    this.#cleanups.push(async () => { await capabilities.stop() })

    const fd = config.failureDetector
    const node = await createSwarmNode({
      privateKey,
      dataDir: config.dataDir,
      listen: config.listen,
      bootstrap: config.bootstrap,
      swarmKey,
      mdns: config.mdns,
      refusePeer: peerId => this.refusedPeers.has(peerId)
    })
    this.#node = node
    this.#cleanups.push(async () => { await node.stop() })
    const libp2p = node.libp2p
    const selfId = libp2p.peerId.toString()

    const gossip = new Gossip(libp2p.services.pubsub, this.#log)
    gossip.refuseSenders(peerId => this.refusedPeers.has(peerId))
    this.#gossip = gossip
    const prober = new Libp2pProber(libp2p, fd.probeTimeoutMs)
    this.#prober = prober
    await prober.start()
    this.#cleanups.push(async () => { await prober.stop() })

    const membership = new Membership({ selfId, config: fd, prober, log: this.#log })
    this.#membership = membership

    const slowLoad = { at: -Infinity, loadPerCore: 0, rssMb: 0 }
    const source = new HeartbeatSource({
      peerId: selfId,
      board: this.#board,
      capabilities: () => capabilities.current(),
      addrs: () => this.addrs(),
      extras: this.heartbeat,
      log: this.#log,
      load: () => {
        // The load average and the RSS (a read of /proc/self/statm) change slowly: refresh them at most once
        // per LOAD_REFRESH_MS instead of on every heartbeat.
        const now = performance.now()
        if (now - slowLoad.at >= LOAD_REFRESH_MS) {
          slowLoad.at = now
          slowLoad.loadPerCore = round2((loadavg()[0] ?? 0) / Math.max(1, this.#board?.cores ?? 1))
          slowLoad.rssMb = Math.round(process.memoryUsage.rss() / 2 ** 20)
        }
        return { loadPerCore: slowLoad.loadPerCore, lagMs: Math.round(membership.lastLagMs), rssMb: slowLoad.rssMb, healthScore: membership.healthScore }
      }
    })
    this.#source = source

    this.#cleanups.push(gossip.subscribe<Heartbeat>(HEARTBEAT_TOPIC, (payload, sender) => {
      const heartbeat = validateHeartbeat(payload, sender)
      if (membership.isReplay(heartbeat.peerId, heartbeat.incarnation, heartbeat.seq)) {
        throw new GossipDrop('replayed', `incarnation ${heartbeat.incarnation} seq ${heartbeat.seq} already seen`)
      }
      return heartbeat
    }, heartbeat => {
      const { v, peerId, incarnation, seq, sentAt, ...info } = heartbeat
      membership.heard(peerId, incarnation, seq, info)
      this.#ensureConnected(peerId, info.addrs)
    }, { maxBytes: fd.maxHeartbeatBytes, relay: heartbeat => heartbeat.seq <= fd.heartbeatRelayFirst || heartbeat.seq % fd.heartbeatRelayEvery === 0 }))

    // Verdicts: what we find dead ourselves is told to everyone; what others find is applied here unless we
    // heard from the target since (a replayed or refuted verdict is dropped as `replayed`).
    this.#cleanups.push(gossip.subscribe<VerdictMessage>(VERDICT_TOPIC, (payload, sender) => {
      const verdict = validateVerdict(payload, sender)
      const judged = membership.judgeVerdict(verdict, sender)
      if (judged === 'stale') throw new GossipDrop('replayed', `verdict on ${verdict.target} incarnation ${verdict.incarnation} seq ${verdict.seq} is older than what we heard`)
      if (judged === 'stranger') throw new GossipDrop('stranger', `verdict from ${sender}, not a live member`)
      return verdict
    }, (verdict, sender) => { membership.verdict(verdict, sender) }, { maxBytes: 1024 }))
    this.#cleanups.push(membership.onVerdict(verdict => {
      gossip.publish(VERDICT_TOPIC, { v: 1, from: selfId, ...verdict } satisfies VerdictMessage).catch(err => {
        this.#log(`verdict: publish failed: ${(err as Error).message}`, { level: 'warn' })
      })
    }))
    this.#cleanups.push(membership.onAccused(verdict => {
      if (verdict.incarnation < source.incarnation) return
      this.#log(`membership: ${verdict.from} found this peer dead (${verdict.reason}); refuting with a new incarnation`, { level: 'warn', member: verdict.from })
      source.bumpIncarnation()
      this.#publishHeartbeat()
    }))

    const onDisconnect = (event: CustomEvent<PeerId>): void => { membership.disconnected(event.detail.toString()) }
    const onDiscovery = (event: CustomEvent<PeerInfo>): void => {
      const id = event.detail.id.toString()
      if (id !== selfId && membership.get(id)?.state !== 'dead') {
        void libp2p.peerStore.merge(event.detail.id, { multiaddrs: event.detail.multiaddrs }).catch(() => {})
          .then(() => { this.#ensureConnected(id, []) })
      }
    }
    libp2p.addEventListener('peer:disconnect', onDisconnect)
    libp2p.addEventListener('peer:discovery', onDiscovery)
    this.#cleanups.push(() => {
      libp2p.removeEventListener('peer:disconnect', onDisconnect)
      libp2p.removeEventListener('peer:discovery', onDiscovery)
    })

    membership.start()
    this.#cleanups.push(() => { membership.stop() })
    const beats = new BeatLink({
      libp2p,
      intervalMs: fd.beatIntervalMs,
      incarnation: () => source.incarnation,
      healthScore: () => membership.healthScore,
      watchers: () => membership.watchers(),
      onBeat: (peerId, incarnation, healthScore) => { membership.beat(peerId, incarnation, healthScore) },
      onEnd: peerId => { membership.beatsEnded(peerId) },
      log: this.#log
    })
    this.#beats = beats
    await beats.start()
    this.#cleanups.push(async () => { await beats.stop() })
    // A direct path that fails while others reach the peer: drop the connection (it may be half-open after a cut)
    // and dial again, so beats and the lease's majority do not run through a third board.
    this.#cleanups.push(membership.onDirectPathLost(({ peerId }) => { this.#onDirectPathLost(peerId) }))
    this.#cleanups.push(membership.onPause(() => {
      source.bumpIncarnation()
      this.#publishHeartbeat()
      beats.beat()
    }))

    this.#heartbeatTimer = setInterval(() => { this.#publishHeartbeat() }, fd.heartbeatIntervalMs)
    this.#cleanups.push(() => { clearInterval(this.#heartbeatTimer) })
    // Members we hear through gossip but hold no connection to are dialled, so pings and close hints work.
    this.#reconnectTimer = setInterval(() => {
      for (const member of membership.list()) {
        if (member.state !== 'dead') this.#ensureConnected(member.peerId, member.info?.addrs ?? [])
        else this.#redialDead(member.peerId)
      }
      // A first bootstrap dial can fail (the bootstrap peer busy or not up yet): keep trying while alone.
      if (libp2p.getConnections().length === 0) this.#dialBootstrap()
      this.#resetSilentConnections()
    }, 2000)
    this.#cleanups.push(() => { clearInterval(this.#reconnectTimer) })
    this.#publishHeartbeat()

    this.#token = await loadOrCreateApiToken(config.dataDir, { rotate: this.#rotateApiToken })
    this.api.useToken(this.#token)
    await this.api.start(config.api)
    this.#cleanups.push(async () => { await this.api.stop() })
    // Between scrapes too: a failover is counted when this peer sees a mission's primary change to itself.
    const metricsTimer = setInterval(() => {
      this.statusObject().then(status => { this.metrics.update(status) }, () => {})
    }, METRICS_REFRESH_MS)
    this.#cleanups.push(() => { clearInterval(metricsTimer) })
    this.#cleanups.push(this.#dashboard.start())
    this.#startedAt = Date.now()
    // Alone since start: say once why that may be (peer/lonely.ts).
    const onOpen = (): void => { this.#connectionsOpened++ }
    libp2p.addEventListener('connection:open', onOpen)
    const lonelyAfterMs = Number(process.env.TANDEM_LONELY_AFTER_MS ?? LONELY_AFTER_MS)
    const lonelyTimer = setTimeout(() => { void (async () => {
      if (membership.list().length > 0 || this.#state !== 'running') return
      // A dial that timed out: a port that answers TCP means the handshake hung (another swarm key), not a dead host.
      const reachable: Record<string, boolean> = {}
      for (const addr of Object.keys(this.#bootstrapErrors)) {
        const ok = await tcpReachable(addr)
        if (ok != null) reachable[addr] = ok
      }
      if (membership.list().length > 0 || this.#state !== 'running') return
      this.#log(lonelyReport({
        tcpReachable: reachable,
        swarmKeyFile: config.swarmKeyFile ?? null,
        bootstrap: config.bootstrap,
        bootstrapErrors: this.#bootstrapErrors,
        mdns: config.mdns,
        listen: this.addrs(),
        connectionsOpened: this.#connectionsOpened,
        aloneForMs: Date.now() - this.#startedAt
      }), { level: 'warn' })
    })() }, lonelyAfterMs)
    lonelyTimer.unref()
    this.#cleanups.push(() => { clearTimeout(lonelyTimer); libp2p.removeEventListener('connection:open', onOpen) })
  }

  #raisePriority (niceness: number): void {
    try {
      if (getPriority() > niceness) setPriority(niceness)
    } catch (err) {
      this.#log(`peer: cannot raise scheduling priority to ${niceness} (${(err as Error).message}); a saturated CPU may delay heartbeats`, { level: 'warn' })
    }
  }

  #publishHeartbeat (): void {
    const source = this.#source
    const gossip = this.#gossip
    if (source == null || gossip == null) return
    let heartbeat = source.next()
    const limit = this.config.failureDetector.maxHeartbeatBytes
    if (Buffer.byteLength(JSON.stringify(heartbeat)) > limit) {
      // Receivers would drop it as oversized and soon think we are dead: send it without the extras.
      if (Date.now() - this.#oversizeLoggedAt > 60_000) {
        this.#oversizeLoggedAt = Date.now()
        this.#log(`heartbeat: larger than ${limit} bytes with extras (${Object.keys(heartbeat.extras).join(', ')}); sending it without them`, { level: 'warn' })
      }
      heartbeat = { ...heartbeat, extras: {} }
    }
    gossip.publish(HEARTBEAT_TOPIC, heartbeat).catch(err => {
      this.#log(`heartbeat: publish failed: ${(err as Error).message}`, { level: 'warn' })
    })
  }

  /**
   * Dials a peer we hear of but hold no connection to. Two peers that dial each other at once end up with two
   * connections, and when one of them closes gossipsub loses its streams with that peer for good; so only the
   * peer with the smaller id dials at once, the other one only if still unconnected after a grace period.
   */
  #ensureConnected (peerId: string, addrs: string[]): void {
    const libp2p = this.#node?.libp2p
    if (libp2p == null) return
    if (libp2p.getConnections(peerIdFromString(peerId)).length > 0) {
      this.#unconnectedSince.delete(peerId)
      return
    }
    const now = Date.now()
    const since = this.#unconnectedSince.get(peerId) ?? now
    this.#unconnectedSince.set(peerId, since)
    if (libp2p.peerId.toString() > peerId && now - since < DIAL_GRACE_MS) return
    if (now - (this.#lastDialAt.get(peerId) ?? 0) < 1000) return
    this.#lastDialAt.set(peerId, now)
    const id = peerIdFromString(peerId)
    const multiaddrs = addrs.flatMap(addr => {
      try { return [multiaddr(addr).decapsulateCode(421)] } catch { return [] }
    })
    void libp2p.peerStore.merge(id, { multiaddrs }).catch(() => {}).then(() => { this.#dial(peerId) })
  }

  /**
   * A connection whose gossipsub stream never came up (the remote was too busy to negotiate it) carries
   * pings but no heartbeats. After two checks without a heartbeat subscription, close it and dial again.
   */
  #resetSilentConnections (): void {
    const libp2p = this.#node?.libp2p
    if (libp2p == null) return
    const subscribed = new Set(libp2p.services.pubsub.getSubscribers(HEARTBEAT_TOPIC).map(String))
    for (const peer of libp2p.getPeers()) {
      const id = peer.toString()
      if (subscribed.has(id)) { this.#unsubscribedChecks.delete(id); continue }
      const checks = (this.#unsubscribedChecks.get(id) ?? 0) + 1
      this.#unsubscribedChecks.set(id, checks)
      if (checks < 2) continue
      this.#unsubscribedChecks.delete(id)
      this.#log(`swarm: connection to ${id} carries no gossip; reconnecting`, { member: id })
      this.#hangUpAndRedial(id)
    }
  }

  /** Closes every connection to the peer; the smaller id dials again at once, the other side as #ensureConnected does. */
  #hangUpAndRedial (peerId: string): void {
    const libp2p = this.#node?.libp2p
    if (libp2p == null) return
    void libp2p.hangUp(peerIdFromString(peerId)).catch(() => {}).then(() => {
      this.#lastDialAt.delete(peerId)
      if (libp2p.peerId.toString() < peerId) this.#dial(peerId)
    })
  }

  #onDirectPathLost (peerId: string): void {
    const libp2p = this.#node?.libp2p
    if (libp2p == null || this.#state === 'stopping') return
    const now = Date.now()
    // Twice in a row within RECONNECT_MIN_MS: one late answer on a loaded board is no reason to drop a connection.
    const previous = this.#directPathLostAt.get(peerId)
    this.#directPathLostAt.set(peerId, now)
    if (previous === undefined || now - previous > RECONNECT_MIN_MS) return
    if (!this.#reconnectAllowed(peerId, now)) return
    if (libp2p.getConnections(peerIdFromString(peerId)).length > 0) this.#log(`swarm: ${peerId} reached through others but not directly: reconnecting`, { member: peerId })
    this.#hangUpAndRedial(peerId)
  }

  /** At most one hang-up and redial of a peer every RECONNECT_MIN_MS; true (and counted) when this one may go. */
  #reconnectAllowed (peerId: string, now: number): boolean {
    if (now - (this.#lastReconnectAt.get(peerId) ?? 0) < RECONNECT_MIN_MS) return false
    this.#lastReconnectAt.set(peerId, now)
    return true
  }

  #redialDead (peerId: string): void {
    const libp2p = this.#node?.libp2p
    if (libp2p == null || this.#state === 'stopping') return
    if (libp2p.getConnections(peerIdFromString(peerId)).length > 0) {
      // Dead over an open connection: a cut that dropped packets left it half-open, and TCP's retransmission back-off
      // delivered again only 11 s after the heal (two boards, no third to notice the lost direct path). Hang it up and
      // dial afresh, at most every RECONNECT_MIN_MS.
      const now = Date.now()
      if (!this.#reconnectAllowed(peerId, now)) return
      this.#log(`swarm: ${peerId} is dead over an open connection: reconnecting`, { member: peerId })
      this.#hangUpAndRedial(peerId)
      return
    }
    // Only the smaller id, as in #ensureConnected: two dials at once leave gossipsub without streams.
    if (libp2p.peerId.toString() > peerId) return
    const now = Date.now()
    if (now - (this.#lastDialAt.get(peerId) ?? 0) < DEAD_REDIAL_MS) return
    this.#lastDialAt.set(peerId, now)
    // Quiet: a board that is off fails this every time.
    libp2p.dial(peerIdFromString(peerId), { signal: AbortSignal.timeout(5000) }).catch(() => {})
  }

  #dialBootstrap (): void {
    const libp2p = this.#node?.libp2p
    if (libp2p == null) return
    for (const addr of this.config.bootstrap) {
      libp2p.dial(multiaddr(addr), { signal: AbortSignal.timeout(5000) }).catch(err => {
        this.#bootstrapErrors[addr] = errorText(err)
        this.#log(`swarm: bootstrap dial ${addr} failed: ${(err as Error).message}`, { level: 'warn' })
      })
    }
  }

  #dial (peerId: string): void {
    const libp2p = this.#node?.libp2p
    if (libp2p == null || this.#state === 'stopping') return
    libp2p.dial(peerIdFromString(peerId), { signal: AbortSignal.timeout(5000) }).catch(err => {
      this.#log(`swarm: dial ${peerId} failed: ${(err as Error).message}`, { level: 'warn', member: peerId })
    })
  }

  /** The status object of `GET /v1/status`. */
  async statusObject (): Promise<PeerStatus> {
    const membership = this.membership
    const libp2p = this.node.libp2p
    const board = this.board
    const now = performance.now()
    const wallNow = Date.now()
    const peers: PeerStatusEntry[] = membership.list().map(member => ({
      peerId: member.peerId,
      state: member.state,
      lastSeenMs: Math.max(0, Math.round(now - member.lastHeardAt)),
      lastSeenAt: member.lastSeenWallMs,
      stateForMs: Math.round(now - member.stateSince),
      stateSinceAt: Math.round(wallNow - (now - member.stateSince)),
      reason: member.reason,
      incarnation: member.incarnation,
      board: member.info?.board.name ?? null,
      arch: member.info?.board.arch ?? null,
      connected: libp2p.getConnections(peerIdFromString(member.peerId)).length > 0,
      info: member.info
    }))
    const sections = await this.status.collect()
    return {
      ...sections,
      self: {
        peerId: this.peerId,
        board: board.name,
        arch: board.arch,
        addrs: this.addrs(),
        incarnation: this.#source?.incarnation ?? 0,
        profile: board,
        capabilities: this.capabilities,
        healthScore: membership.healthScore,
        lagMs: Math.round(membership.lastLagMs),
        dockerHost: this.config.dockerHost,
        startedAt: this.#startedAt,
        connections: libp2p.getConnections().length,
        heartbeatSubscribers: libp2p.services.pubsub.getSubscribers(HEARTBEAT_TOPIC).length,
        watchers: this.#beats?.targets() ?? [],
        watching: membership.list().filter(member => membership.watches(member.peerId)).map(member => member.peerId)
      },
      peers,
      counters: { gossip: this.gossip.counters(), pauses: membership.pauses }
    }
  }

  async stop (): Promise<void> {
    if (this.#state === 'stopped' || this.#state === 'stopping') return
    this.#state = 'stopping'
    await this.#teardown()
    this.#state = 'stopped'
  }

  async #teardown (): Promise<void> {
    const cleanups = this.#cleanups.reverse()
    this.#cleanups = []
    for (const cleanup of cleanups) {
      try {
        await cleanup()
      } catch (err) {
        this.#log(`peer: cleanup failed: ${(err as Error).message}`, { level: 'error' })
      }
    }
  }
}

/** An error's message with the messages (or codes) of the errors it wraps, which say why a dial failed. */
function errorText (err: unknown, depth = 0): string {
  if (err == null || typeof err !== 'object' || depth > 4) return String(err)
  const e = err as { message?: unknown, code?: unknown, errors?: unknown, cause?: unknown }
  const parts = [typeof e.message === 'string' && e.message !== '' ? e.message : String(e.code ?? 'error')]
  if (Array.isArray(e.errors)) for (const inner of e.errors.slice(0, 3)) parts.push(errorText(inner, depth + 1))
  if (e.cause != null) parts.push(errorText(e.cause, depth + 1))
  return [...new Set(parts)].join(': ').slice(0, 300)
}

function round2 (n: number): number { return Math.round(n * 100) / 100 }
