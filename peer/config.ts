// Every setting of a peer in one place, with the defaults tuned for a LAN of small boards
// (in the spirit of hashicorp/memberlist's Config: DefaultLANConfig).
import { join } from 'node:path'
import { DEFAULT_CONSENSUS_CONFIG, type ConsensusConfig } from '../consensus/types.ts'

export const DEFAULT_API_HOST = '127.0.0.1'
export const DEFAULT_API_PORT = 7461
export const DEFAULT_LISTEN = ['/ip4/0.0.0.0/tcp/4011']

/** Timings of the heartbeat gossip and the failure detector. All durations in milliseconds. */
export interface FailureDetectorConfig {
  /**
   * How often a peer gossips its signed heartbeat (profile, load, extras) to every other peer. 1000 ms: it
   * carries membership and info, not the fast liveness signal (that is `beatIntervalMs`); every peer verifies
   * an Ed25519 signature per heartbeat, so N peers cost N-1 verifications per second each (at 200 ms, 20
   * peers saturated a 2-core host). ~0.5 KB per heartbeat.
   */
  heartbeatIntervalMs: number
  /**
   * Every peer keeps a direct connection to every other, so gossipsub need not relay heartbeats: relaying
   * multiplies the messages each peer handles by the mesh degree (~6). Only the first `heartbeatRelayFirst`
   * heartbeats of a peer's life (a new or restarted peer announces itself to peers not connected to it yet,
   * which then dial it) and every n-th one after them are relayed. 10 = once every 10 s.
   */
  heartbeatRelayEvery: number
  /** See heartbeatRelayEvery. 5: a new peer is relayed for its first 5 s. */
  heartbeatRelayFirst: number
  /**
   * How many peers watch each peer: its successors on the ring of live members sorted by peer id. A peer
   * sends direct beats to its watchers only; a watcher that finds it dead gossips a verdict to everyone.
   * 3: one watcher's own trouble (busy, its link down) is covered by two others, at 3 x 5 beats/s per peer.
   */
  watchers: number
  /**
   * How often a peer sends a direct beat (8 bytes on a long-lived stream per watcher; Noise authenticates
   * the connection, so no signature). 200 ms: five chances per second to be heard by each watcher.
   */
  beatIntervalMs: number
  /**
   * Silence after which a watched peer (one whose beats we receive) becomes `suspect` and is probed.
   * 3 beats: one lost or late beat (a GC pause, a busy queue) never raises a suspicion on its own.
   */
  suspectAfterMs: number
  /**
   * Silence of the gossiped heartbeat after which a peer we do not watch becomes `suspect`: the fallback
   * when all its watchers failed or their verdict was lost. 3.5 heartbeats.
   */
  gossipSuspectAfterMs: number
  /** Timeout of the direct libp2p ping to a suspect. A LAN round trip is ~1 ms; a busy board answers within 100 ms. */
  probeTimeoutMs: number
  /** How many other peers are asked to ping a suspect for us (SWIM indirect probes): a bad link of ours is not a death. */
  indirectProbes: number
  /** How long we wait for the indirect probers' verdict (their own ping timeout plus a round trip). */
  indirectProbeTimeoutMs: number
  /**
   * Time a peer stays `suspect` without any sign of life before it is `dead`. With the defaults a silent
   * peer is dead on its watchers 600 + 500 ms after its last beat, i.e. 0.9-1.15 s after it froze, and on
   * everyone else a gossip hop later (target: 1.5 s p99).
   */
  suspicionTimeoutMs: number
  /** How often the detector looks at its members; also the resolution of its timings. */
  tickIntervalMs: number
  /**
   * Lifeguard local health: when our own event loop runs late by more than this, we are the slow one;
   * each late tick raises the local health score, which stretches our timeouts instead of accusing others.
   * 150 ms: GC and a busy CPU cause lags of tens of ms that the suspicion margins already absorb. A late
   * tick's delay is not counted as anyone's silence; a lag beyond suspectAfterMs / 2 is a pause (SIGSTOP,
   * VM freeze), after which the peer announces a new incarnation.
   */
  lagThresholdMs: number
  /** Timeouts are multiplied by (1 + score); the score is capped here (memberlist: AwarenessMaxMultiplier 8). */
  maxHealthScore: number
  /** The score decays by one after this long without a late tick. */
  healthDecayMs: number
  /**
   * Heartbeats carry the sender's own health score; a peer that says it is running late gets its timeouts
   * stretched by (1 + its score), at most by (1 + this). 2: a struggling board is declared dead within ~3 s.
   */
  maxRemoteHealthScore: number
  /** A closed connection triggers an immediate probe; a refused redial then proves the peer's process is gone. */
  probeOnDisconnect: boolean
  /** Dead peers stay listed (so a status shows who died) for this long. */
  deadRetentionMs: number
  /** Largest heartbeat payload accepted, in bytes. */
  maxHeartbeatBytes: number
}

export const DEFAULT_FAILURE_DETECTOR: FailureDetectorConfig = {
  heartbeatIntervalMs: 1000,
  heartbeatRelayEvery: 10,
  heartbeatRelayFirst: 5,
  watchers: 3,
  beatIntervalMs: 200,
  suspectAfterMs: 600,
  gossipSuspectAfterMs: 3500,
  probeTimeoutMs: 250,
  indirectProbes: 2,
  indirectProbeTimeoutMs: 400,
  suspicionTimeoutMs: 500,
  tickIntervalMs: 50,
  lagThresholdMs: 150,
  maxHealthScore: 8,
  healthDecayMs: 1000,
  maxRemoteHealthScore: 2,
  probeOnDisconnect: true,
  deadRetentionMs: 24 * 3600_000,
  maxHeartbeatBytes: 16 * 1024
}

export interface ApiAddress { host: string, port: number }

/**
 * Who may deploy, remove and move missions and revoke boards (consensus/authority.ts): the operator public keys
 * this board trusts (several during a rotation), the operator private key it holds (its control API then signs
 * requests itself; its public part is trusted too), or `open` (development only: anyone holding the swarm key).
 */
export interface OperatorConfig {
  publicKeys: string[]
  /** PKCS#8 PEM of the operator private key this board holds. */
  privateKeyFile?: string
  open: boolean
}

export interface PeerConfig {
  dataDir: string
  listen: string[]
  bootstrap: string[]
  api: ApiAddress
  /** Path of the pre-shared swarm key file; absent = open swarm. */
  swarmKeyFile?: string
  /** Board profile name; absent = detect the host. */
  board?: string
  mdns: boolean
  /** Docker Engine of this board, handed to the checkpoint runtime. */
  dockerHost: string
  /** That daemon's `--exec-root`, where its runc keeps container state (checkpoints call runc directly). */
  dockerExecRoot?: string
  /**
   * Scheduling priority the peer asks for (nice value; default -10, applied when permitted). A mission
   * container that saturates the board's CPU must not starve the process that answers pings and sends
   * heartbeats, or the board would look dead while it works.
   */
  niceness?: number
  failureDetector: FailureDetectorConfig
  /**
   * Timings of the per-mission consensus machine. Its lease and its primary-silence wait depend on the failure
   * detector's: build them with consensusConfigFor(failureDetector); validatePeerConfig refuses a mismatch.
   */
  consensus: ConsensusConfig
  /** Absent: no operator key, nothing may be deployed (an in-process peer of a test that runs no missions). */
  operator?: OperatorConfig
}

export class ConfigError extends Error {}

export function defaultDockerHost (env: NodeJS.ProcessEnv = process.env): string {
  return env.DOCKER_HOST != null && env.DOCKER_HOST !== '' ? env.DOCKER_HOST : 'unix:///var/run/docker.sock'
}

export function parseApiAddress (text: string): ApiAddress {
  const match = /^(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})$/.exec(text)
  const port = Number(match?.[2])
  if (match == null || port > 65535) throw new ConfigError(`--api expects HOST:PORT, got '${text}'`)
  return { host: (match[1] as string).replace(/^\[|\]$/g, ''), port }
}

export function formatApiAddress (address: ApiAddress): string {
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`
}

export function apiTokenPath (dataDir: string): string { return join(dataDir, 'api-token') }

/** Checks a failure detector config; throws ConfigError naming the bad field. */
export function validateFailureDetector (config: FailureDetectorConfig): FailureDetectorConfig {
  for (const [key, value] of Object.entries(config)) {
    if (typeof value === 'boolean') continue
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new ConfigError(`failure detector: ${key} must be a non-negative number`)
  }
  if (config.heartbeatRelayEvery < 1) throw new ConfigError('failure detector: heartbeatRelayEvery must be >= 1')
  if (config.heartbeatIntervalMs < 10) throw new ConfigError('failure detector: heartbeatIntervalMs must be >= 10')
  if (config.tickIntervalMs < 5) throw new ConfigError('failure detector: tickIntervalMs must be >= 5')
  if (config.beatIntervalMs < 10) throw new ConfigError('failure detector: beatIntervalMs must be >= 10')
  if (!Number.isInteger(config.watchers) || config.watchers < 1) throw new ConfigError('failure detector: watchers must be an integer >= 1')
  if (config.suspectAfterMs < 2 * config.beatIntervalMs) throw new ConfigError('failure detector: suspectAfterMs must be at least two beat intervals')
  if (config.gossipSuspectAfterMs < 2 * config.heartbeatIntervalMs) throw new ConfigError('failure detector: gossipSuspectAfterMs must be at least two heartbeat intervals')
  return config
}

/** The watchdog's lease ends this much before the consensus lease, so the watchdog freezes the containers first. */
export const WATCHDOG_LEASE_MARGIN_MS = 50

/** The lease the peer grants its watchdog (peer/watchdog.ts): a little less than the consensus lease. */
export function leaseValidityMs (consensus?: Partial<ConsensusConfig>): number {
  return (consensus?.leaseMs ?? DEFAULT_CONSENSUS_CONFIG.leaseMs) - WATCHDOG_LEASE_MARGIN_MS
}

/** How long a silent peer takes to be declared dead by its watchers: suspected, then not refuted. */
export function detectorDeadTimeMs (detector: FailureDetectorConfig): number {
  return detector.suspectAfterMs + detector.suspicionTimeoutMs
}

/**
 * The consensus timings that go with a failure detector: a primary's lease is the detector's suspect time plus the
 * self-fence grace (it fences itself before anyone may count it dead), a primary is taken over only after a silence
 * of the detector's dead time, and a peer the detector never reported is not counted dead before that time either.
 * With DEFAULT_FAILURE_DETECTOR this is DEFAULT_CONSENSUS_CONFIG.
 */
export function consensusConfigFor (detector: FailureDetectorConfig, overrides: Partial<ConsensusConfig> = {}): ConsensusConfig {
  const selfFenceGraceMs = overrides.selfFenceGraceMs ?? DEFAULT_CONSENSUS_CONFIG.selfFenceGraceMs
  return {
    ...DEFAULT_CONSENSUS_CONFIG,
    leaseMs: detector.suspectAfterMs + selfFenceGraceMs,
    primarySilenceMs: detectorDeadTimeMs(detector),
    unknownPeerDeadMs: Math.max(DEFAULT_CONSENSUS_CONFIG.unknownPeerDeadMs, detectorDeadTimeMs(detector)),
    ...overrides
  }
}

/**
 * Refuses timings that contradict each other (as etcd-raft's Config.validate does), with the reason; called when a
 * peer starts. Returns the config.
 */
export function validatePeerConfig (config: PeerConfig): PeerConfig {
  if (config.dataDir === '') throw new ConfigError('dataDir must not be empty')
  if (!Number.isInteger(config.api.port) || config.api.port < 0 || config.api.port > 65535) throw new ConfigError(`api.port must be an integer 0-65535, got ${config.api.port}`)
  const detector = validateFailureDetector(config.failureDetector)
  validateConsensus(config.consensus, detector)
  return config
}

function validateConsensus (consensus: ConsensusConfig, detector: FailureDetectorConfig): void {
  const fail = (problem: string): never => { throw new ConfigError(`consensus: ${problem}`) }
  for (const [key, value] of Object.entries(consensus)) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) fail(`${key} must be a non-negative number`)
  }
  for (const key of ['announceIntervalMs', 'claimTimeoutMs', 'fetchRetryMs', 'checkpointTimeoutMs', 'startTimeoutMs', 'imageTimeoutMs'] as const) {
    if (consensus[key] <= 0) fail(`${key} must be above 0`)
  }
  const deadTime = detectorDeadTimeMs(detector)
  if (consensus.selfFenceGraceMs >= detector.suspicionTimeoutMs) {
    fail(`selfFenceGraceMs (${consensus.selfFenceGraceMs}) must be below the failure detector's suspicionTimeoutMs (${detector.suspicionTimeoutMs}): a primary cut off from its majority must stop before the others may count it dead`)
  }
  if (consensus.leaseMs >= deadTime) {
    fail(`leaseMs (${consensus.leaseMs}) must be below the failure detector's dead time (suspectAfterMs + suspicionTimeoutMs = ${deadTime}): a frozen primary must fence itself before anyone takes over`)
  }
  if (leaseValidityMs(consensus) <= 0) fail(`leaseMs (${consensus.leaseMs}) leaves the watchdog no lease (${leaseValidityMs(consensus)} ms)`)
  if (consensus.primarySilenceMs < deadTime) {
    fail(`primarySilenceMs (${consensus.primarySilenceMs}) must be at least the failure detector's dead time (${deadTime}): messages from a primary are signs of life the detector may not have counted yet`)
  }
  if (consensus.unknownPeerDeadMs < deadTime) {
    fail(`unknownPeerDeadMs (${consensus.unknownPeerDeadMs}) must be at least the failure detector's dead time (${deadTime})`)
  }
  if (consensus.fetchBackoffMs > consensus.fetchBackoffMaxMs) fail(`fetchBackoffMs (${consensus.fetchBackoffMs}) must not exceed fetchBackoffMaxMs (${consensus.fetchBackoffMaxMs})`)
  if (consensus.restartBackoffMs > consensus.restartBackoffMaxMs) fail(`restartBackoffMs (${consensus.restartBackoffMs}) must not exceed restartBackoffMaxMs (${consensus.restartBackoffMaxMs})`)
}

/** Reads failure detector overrides from the environment (TANDEM_FD_<CAMEL_CASE_AS_SNAKE>=ms), for experiments. */
export function failureDetectorFromEnv (env: NodeJS.ProcessEnv = process.env): FailureDetectorConfig {
  const config: Record<string, number | boolean> = { ...DEFAULT_FAILURE_DETECTOR }
  for (const key of Object.keys(DEFAULT_FAILURE_DETECTOR)) {
    const name = `TANDEM_FD_${key.replace(/[A-Z]/g, c => `_${c}`).toUpperCase()}`
    const value = env[name]
    if (value == null || value === '') continue
    if (typeof config[key] === 'boolean') config[key] = value === 'true' || value === '1'
    else {
      const n = Number(value)
      if (!Number.isFinite(n)) throw new ConfigError(`${name} must be a number, got '${value}'`)
      config[key] = n
    }
  }
  return validateFailureDetector(config as unknown as FailureDetectorConfig)
}
