// A peer's missions, assembled: the components of the MissionService made from the peer and this board's Docker,
// CRIU and swarm store, started in order and stopped in reverse.
import { join } from 'node:path'
import type { ConsensusConfig } from '../../consensus/types.ts'
import { DockerMissionRuntime } from '../../checkpoint/mission-runtime.ts'
import { StoreMissionCheckpoints } from '../../checkpoint/mission-checkpoints.ts'
import { openSwarmBundleStore } from '../../checkpoint/swarm-store.ts'
import type { OperatorConfig } from '../config.ts'
import type { Peer } from '../daemon.ts'
import { ImageInventory } from '../image-inventory.ts'
import { MissionEventLog } from '../mission-events.ts'
import { MissionLogs } from '../mission-logs.ts'
import { Revocations } from '../revocations.ts'
import { serveSwarmEvents } from '../swarm-events.ts'
import { startWatchdog, type Watchdog } from '../watchdog.ts'
import { MissionOperator } from './operator.ts'
import { MissionService } from './service.ts'

export { MISSIONS_TOPIC, MissionService, type MissionComponents } from './service.ts'
export type { CheckpointTiming, ImageFetchStatus, MissionEvent, MissionStatus, MoveResult } from './status.ts'
export { storageExtraOf, type StorageHealth } from './storage.ts'

export interface PeerMissionsOptions {
  peer: Peer
  consensus?: Partial<ConsensusConfig>
  /** How often the state machine is ticked, ms (default 50). */
  tickIntervalMs?: number
  /** Checkpoints kept per mission (default 3). */
  keepCheckpoints?: number
  log?: (line: string) => void
}

export class PeerMissions {
  readonly #options: PeerMissionsOptions
  readonly #log: (line: string) => void
  #service: MissionService | undefined
  #operator: MissionOperator | undefined
  #runtime: DockerMissionRuntime | undefined
  #cleanups: Array<() => void | Promise<void>> = []

  constructor (options: PeerMissionsOptions) {
    this.#options = options
    this.#log = options.log ?? (line => { process.stderr.write(`${new Date().toISOString()} ${line}\n`) })
  }

  get service (): MissionService {
    if (this.#service == null) throw new Error('missions are not started')
    return this.#service
  }

  async start (): Promise<void> {
    const { peer } = this.#options
    const config = peer.config
    const operator = await MissionOperator.load(config.operator)
    this.#operator = operator
    if (operator.open) this.#log('missions: INSECURE: no operator key (--insecure-open-missions): any peer holding the swarm key may deploy, remove and move missions')
    const events = new MissionEventLog({ self: peer.peerId, gossip: peer.gossip, log: this.#log })
    events.start()
    this.#cleanups.push(() => { events.stop() })
    this.#cleanups.push(serveSwarmEvents(peer, events))

    // Docker and CRIU decide whether this board can host missions; a board without them still votes and relays.
    try {
      this.#runtime = await DockerMissionRuntime.open({ dockerHost: config.dockerHost, execRoot: config.dockerExecRoot, stateDir: join(config.dataDir, 'containers'), peerId: peer.peerId })
    } catch (err) {
      this.#log(`missions: Docker at ${config.dockerHost} unavailable (${(err as Error).message}): this board will not host missions`)
    }
    const runtime = this.#runtime
    let watchdog: Watchdog | undefined
    let images: ImageInventory | undefined
    if (runtime != null) {
      watchdog = startWatchdog(config.dockerHost, peer.peerId)
      const inventory = new ImageInventory({ runtime, log: this.#log })
      await inventory.start()
      images = inventory
      this.#cleanups.push(() => { inventory.stop() })
      peer.status.extend('images', () => inventory.status())
    }
    // Mission output kept and gossiped across failovers (`tandem mission logs`, peer/mission-logs.ts).
    const missionLogs = new MissionLogs({ peer, runtime, log: this.#log })
    await missionLogs.start()
    this.#cleanups.push(async () => { await missionLogs.stop() })

    // A block no peer delivers within 5 s on a LAN will not come: the fetch fails and the next checkpoint is tried,
    // instead of the backup falling 30 s behind.
    const { store, stop: stopStore } = await openSwarmBundleStore(peer.node, {
      keep: this.#options.keepCheckpoints,
      blockTimeoutMs: 5000,
      // Checkpoints are sealed for their mission's view; this opens the keys wrapped for this board.
      identity: peer.sealIdentity,
      pinned: () => this.#service?.pinned() ?? []
    })
    this.#cleanups.push(stopStore)
    const checkpoints = runtime != null ? await StoreMissionCheckpoints.open({ runtime: runtime.containers, store, peerId: peer.peerId }) : undefined

    const service = new MissionService({
      peerId: peer.peerId,
      board: peer.board,
      dataDir: config.dataDir,
      gossip: peer.gossip,
      membership: peer.membership,
      api: peer.api,
      status: peer.status,
      heartbeat: peer.heartbeat,
      metrics: peer.metrics,
      criuReady: () => peer.capabilities.criu.checkOk === true,
      events,
      operator,
      voteKeys: peer.voteKeys,
      revocations: hooks => new Revocations({ peer, ...hooks, log: this.#log }),
      runtime,
      checkpoints,
      images,
      watchdog,
      beats: peer.beats,
      identity: peer.sealIdentity,
      log: this.#log
    }, { consensus: this.#options.consensus, tickIntervalMs: this.#options.tickIntervalMs, keepCheckpoints: this.#options.keepCheckpoints })
    this.#service = service
    await service.start()
  }

  async stop (): Promise<void> {
    await this.#service?.stop()
    for (const cleanup of this.#cleanups.reverse()) {
      try { await cleanup() } catch (err) { this.#log(`missions: cleanup failed: ${(err as Error).message}`) }
    }
    this.#cleanups = []
    await this.#runtime?.close()
  }

  /** New operator keys while running (SIGHUP): see MissionOperator.reload. */
  async reloadOperator (operator: OperatorConfig): Promise<void> {
    if (this.#operator == null) throw new Error('missions are not started')
    await this.#operator.reload(operator)
    this.#log(`missions: operator keys reloaded: ${operator.publicKeys.length} trusted${this.#operator.signer != null ? ', this board holds one' : ''}`)
  }
}
