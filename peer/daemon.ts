// The tandem peer: one libp2p/Helia node, heartbeat gossip, membership with failure detection, control API.
// This file is the start and stop order; each mechanism lives in peer/daemon/ (connections, heartbeats,
// verdicts, status, the swarm key, the lonely warning) and peer/membership.ts.
import { getPriority, setPriority } from 'node:os'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { SealIdentity } from '../checkpoint/sealing.ts'
import { PeerVoteKeys } from './vote-keys.ts'
import { createSwarmNode, type SwarmNode } from './node.ts'
import { pnetCipherMemory } from './pnet-cipher-fix.ts'
import { Gossip } from './gossip.ts'
import { Membership } from './membership.ts'
import { Libp2pProber } from './probe.ts'
import { HeartbeatExtras } from './heartbeat.ts'
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
import { ConnectionKeeper } from './daemon/connections.ts'
import { HeartbeatGossip } from './daemon/heartbeats.ts'
import { gossipVerdicts } from './daemon/verdicts.ts'
import { assembleStatus, type PeerStatus } from './daemon/status.ts'
import { readSwarmKey } from './daemon/swarm-key.ts'
import { warnWhenLonely } from './daemon/lonely-warning.ts'

export type { PeerStatus, PeerStatusEntry } from './daemon/status.ts'
export { readSwarmKey } from './daemon/swarm-key.ts'

const DEFAULT_NICENESS = -10

/** How often the metrics are set from a status snapshot between scrapes. */
const METRICS_REFRESH_MS = 1000

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
  #voteKeys: PeerVoteKeys | undefined
  #gossip: Gossip | undefined
  #membership: Membership | undefined
  #beats: BeatLink | undefined
  #capabilities: CapabilityProbe | undefined
  #board: BoardProfile | undefined
  #heartbeats: HeartbeatGossip | undefined
  #cleanups: Array<() => void | Promise<void>> = []
  #startedAt = 0
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
  /** This board's identity as it signs its votes and checks the others' (peer/vote-keys.ts). */
  get voteKeys (): PeerVoteKeys { return this.#running(this.#voteKeys, 'vote keys') }
  get gossip (): Gossip { return this.#running(this.#gossip, 'gossip') }
  get membership (): Membership { return this.#running(this.#membership, 'membership') }
  /** Direct beats to watchers and their acknowledgements (what a primary's lease counts from). */
  get beats (): BeatLink { return this.#running(this.#beats, 'beats') }
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
    const board = this.#board
    this.#raisePriority(config.niceness ?? DEFAULT_NICENESS)
    const narrowed = await ensureDataDir(config.dataDir)
    if (narrowed != null) this.#log(`security: ${narrowed}`)
    await this.#lock.acquire()
    this.#cleanups.push(async () => { await this.#lock.release() })
    const privateKey = await loadOrCreateIdentity(config.dataDir)
    this.#onIdentity?.(peerIdFromPrivateKey(privateKey).toString())
    this.#sealIdentity = SealIdentity.fromPrivateKey(peerIdFromPrivateKey(privateKey).toString(), privateKey)
    this.#voteKeys = new PeerVoteKeys(privateKey)

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
    await prober.start()
    this.#cleanups.push(async () => { await prober.stop() })

    const membership = new Membership({ selfId, config: fd, prober, log: this.#log })
    this.#membership = membership
    const connections = new ConnectionKeeper({ libp2p, membership, bootstrap: config.bootstrap, log: this.#log, stopping: () => this.#state === 'stopping' })

    const heartbeats = new HeartbeatGossip({
      selfId,
      board,
      capabilities: () => capabilities.current(),
      addrs: () => this.addrs(),
      extras: this.heartbeat,
      gossip,
      membership,
      config: fd,
      log: this.#log,
      onHeard: (peerId, addrs) => { connections.ensureConnected(peerId, addrs) }
    })
    this.#heartbeats = heartbeats
    this.#cleanups.push(heartbeats.receive())
    this.#cleanups.push(...gossipVerdicts({ selfId, gossip, membership, heartbeats, log: this.#log }))
    this.#cleanups.push(connections.watchEvents())

    membership.start()
    this.#cleanups.push(() => { membership.stop() })
    const beats = new BeatLink({
      libp2p,
      intervalMs: fd.beatIntervalMs,
      incarnation: () => heartbeats.incarnation,
      healthScore: () => membership.healthScore,
      watchers: () => membership.watchers(),
      onBeat: (peerId, incarnation, healthScore) => membership.beat(peerId, incarnation, healthScore),
      onEnd: peerId => { membership.beatsEnded(peerId) },
      log: this.#log
    })
    this.#beats = beats
    await beats.start()
    this.#cleanups.push(async () => { await beats.stop() })
    // A direct path that fails while others reach the peer: drop the connection (it may be half-open after a cut)
    // and dial again, so beats and the lease's majority do not run through a third board.
    this.#cleanups.push(membership.onDirectPathLost(({ peerId }) => { connections.directPathLost(peerId) }))
    this.#cleanups.push(membership.onPause(() => {
      heartbeats.refute()
      beats.beat()
    }))

    this.#cleanups.push(heartbeats.publishEvery(fd.heartbeatIntervalMs))
    this.#cleanups.push(connections.maintain())
    heartbeats.publish()

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
    this.#cleanups.push(warnWhenLonely({
      libp2p,
      membership,
      config,
      bootstrapErrors: connections.bootstrapErrors,
      addrs: () => this.addrs(),
      running: () => this.#state === 'running',
      startedAt: this.#startedAt,
      log: this.#log
    }))
  }

  #raisePriority (niceness: number): void {
    try {
      if (getPriority() > niceness) setPriority(niceness)
    } catch (err) {
      this.#log(`peer: cannot raise scheduling priority to ${niceness} (${(err as Error).message}); a saturated CPU may delay heartbeats`, { level: 'warn' })
    }
  }

  /** The status object of `GET /v1/status`. */
  async statusObject (): Promise<PeerStatus> {
    return await assembleStatus(this, {
      incarnation: () => this.#heartbeats?.incarnation ?? 0,
      startedAt: () => this.#startedAt,
      watchers: () => this.#beats?.targets() ?? []
    })
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
