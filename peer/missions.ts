// Missions on a peer: wires the consensus state machine (consensus/) to gossip, the membership, the container
// runtime and checkpoints (checkpoint/), level for persisted decisions, and the control API.
import { join } from 'node:path'
import { Level } from 'level'
import { CID } from 'multiformats/cid'
import { ClusterMachine, type SelfInfo } from '../consensus/machine.ts'
import { validateMessage } from '../consensus/messages.ts'
import { ManifestError, parseManifest, type MissionSpec } from '../consensus/manifest.ts'
import type { Action, CheckpointRef, ConsensusConfig, LocalEvent, MissionView, PeerInfo, PersistedState } from '../consensus/types.ts'
import { ContainerRuntime, LABEL_EPOCH, LABEL_MISSION, LABEL_PEER, type MissionSpec as ContainerSpec } from '../checkpoint/runtime.ts'
import { Checkpointer, type LocalBundle } from '../checkpoint/checkpointer.ts'
import { openSwarmBundleStore } from '../checkpoint/swarm-store.ts'
import { GossipDrop } from './gossip.ts'
import { killContainersOf, startWatchdog, type Watchdog } from './watchdog.ts'
import { ApiError } from './api.ts'
import type { Peer } from './daemon.ts'
import type { Member } from './membership.ts'

export const MISSIONS_TOPIC = 'tandem/missions/1'
const STATE_KEY = 'consensus-state'
const MAX_EVENTS_PER_MISSION = 100

export interface MissionEvent { at: number, text: string }

/** One mission as `tandem status --json` and the missions API show it. */
export interface MissionStatus {
  name: string
  epoch: number
  primary: string | null
  backup: string | null
  state: MissionView['state']
  role: MissionView['role']
  lastCheckpoint: { cid: string, seq: number, epoch: number, ageMs: number } | null
  /** Newest checkpoint sequence the backup holds and has acknowledged. */
  replicatedSeq: number | null
  /** Newest checkpoint this peer holds. */
  heldSeq: number | null
  /** Checkpoints the primary took that the backup does not hold yet. */
  replicationLag: number | null
  /** Primary: from the start of the newest acknowledged checkpoint to the backup's ack, ms. */
  replicationLagMs: number | null
  /** Primary: how often checkpoints start (the interval less the replication lag, at least half of it), ms. */
  checkpointPeriodMs: number | null
  spec: MissionSpec
  events: MissionEvent[]
  /** This peer's container of the mission, if it runs one. */
  container: { id: string, epoch: number } | null
  /** The newest checkpoint this peer took (as primary). */
  lastTake: CheckpointTiming | null
}

/** How the newest checkpoint this peer took went, ms and bytes. */
export interface CheckpointTiming { seq: number, pausedMs: number, storeMs: number, totalMs: number, newBytes: number, totalBytes: number, phases: Record<string, number> }

export interface MoveResult { mission: string, to: string, epoch: number, seq: number | null, downtimeMs: number, totalMs: number }

export interface MissionServiceOptions {
  peer: Peer
  consensus?: Partial<ConsensusConfig>
  /** How often the state machine is ticked, ms (default 50). */
  tickIntervalMs?: number
  /** Checkpoints kept per mission (default 3). */
  keepCheckpoints?: number
  log?: (line: string) => void
}

interface Lane { tail: Promise<void> }

/** Turns the manifest's mission into what the container runtime runs. */
function containerSpec (spec: MissionSpec, image: string): ContainerSpec {
  return {
    mission: spec.name,
    image,
    cmd: spec.command,
    env: Object.entries(spec.env).map(([key, value]) => `${key}=${value}`),
    dataPath: spec.data ?? null
  }
}

function peerInfoOf (member: Member): PeerInfo | undefined {
  const info = member.info
  if (info == null) return undefined
  return {
    peerId: member.peerId,
    state: member.state,
    arch: info.board.arch,
    board: info.board.name,
    memoryMb: info.board.memoryMb,
    canCheckpoint: info.capabilities.criu.checkOk === true && info.capabilities.docker.available === true,
    // A refused redial proves the process exited; its watchdog (peer/watchdog.ts) killed its containers.
    gone: member.state === 'dead' && member.reason === 'connection refused'
  }
}

function samePeerInfo (a: PeerInfo | undefined, b: PeerInfo): boolean {
  return a !== undefined && a.state === b.state && a.gone === b.gone && a.arch === b.arch && a.board === b.board &&
    a.memoryMb === b.memoryMb && a.canCheckpoint === b.canCheckpoint
}

export class MissionService {
  readonly #peer: Peer
  readonly #log: (line: string) => void
  readonly #options: MissionServiceOptions
  #db: Level<string, string> | undefined
  #runtime: ContainerRuntime | undefined
  #checkpointer: Checkpointer | undefined
  #machine: ClusterMachine | undefined
  #selfInfo: SelfInfo | undefined
  readonly #fedPeers = new Map<string, PeerInfo>()
  readonly #containers = new Map<string, { id: string, epoch: number }>()
  readonly #lastTake = new Map<string, CheckpointTiming>()
  /** Missions whose checkpoints were seen to take longer than their interval (said once). */
  readonly #overrunWarned = new Set<string>()
  readonly #bundles = new Map<string, LocalBundle>()
  readonly #events = new Map<string, MissionEvent[]>()
  readonly #lanes = new Map<string, Lane>()
  readonly #fetchLanes = new Map<string, Lane>()
  /** Staging runs beside fetching (a fetch, and so the ack, never waits for it); only the newest is staged. */
  readonly #stageLanes = new Map<string, Lane>()
  readonly #wantedStage = new Map<string, string>()
  /** Newest checkpoint the machine asked to fetch per mission: queued fetches of older ones are skipped. */
  readonly #wantedFetch = new Map<string, string>()
  #persistChain: Promise<void> = Promise.resolve()
  #actionChain: Promise<void> = Promise.resolve()
  #watchdog: Watchdog | undefined
  #dockerExperimental = false
  #timers: NodeJS.Timeout[] = []
  #cleanups: Array<() => void | Promise<void>> = []
  readonly #abort = new AbortController()
  #stopped = false

  constructor (options: MissionServiceOptions) {
    this.#peer = options.peer
    this.#options = options
    this.#log = options.log ?? (line => { process.stderr.write(`${new Date().toISOString()} ${line}\n`) })
  }

  get machine (): ClusterMachine {
    if (this.#machine == null) throw new Error('missions are not started')
    return this.#machine
  }

  async start (): Promise<void> {
    const peer = this.#peer
    const dataDir = peer.config.dataDir
    const db = new Level<string, string>(join(dataDir, 'missions'), { valueEncoding: 'utf8' })
    await db.open()
    this.#db = db
    this.#cleanups.push(async () => { await db.close() })

    // Docker and CRIU decide whether this board can host missions; a board without them still votes and relays.
    const runtime = new ContainerRuntime({ dockerHost: peer.config.dockerHost, execRoot: peer.config.dockerExecRoot, stateDir: join(dataDir, 'containers') })
    try {
      const info = await runtime.start()
      this.#dockerExperimental = info.experimental
      if (!info.experimental) this.#log(`missions: Docker at ${peer.config.dockerHost} has no checkpoints (experimental off): this board will not host missions`)
      this.#runtime = runtime
    } catch (err) {
      this.#log(`missions: Docker at ${peer.config.dockerHost} unavailable (${(err as Error).message}): this board will not host missions`)
    }

    if (this.#runtime != null) this.#watchdog = startWatchdog(peer.config.dockerHost, peer.peerId)

    // A block no peer delivers within 5 s on a LAN will not come: the fetch fails and the next checkpoint is tried,
    // instead of the backup falling 30 s behind.
    const { store, stop: stopStore } = await openSwarmBundleStore(peer.node, { keep: this.#options.keepCheckpoints, blockTimeoutMs: 5000 })
    this.#cleanups.push(stopStore)
    if (this.#runtime != null) {
      const checkpointer = new Checkpointer({ runtime: this.#runtime, store })
      await checkpointer.start()
      this.#checkpointer = checkpointer
    }

    const board = peer.board
    this.#selfInfo = { peerId: peer.peerId, arch: board.arch, board: board.name, memoryMb: board.memoryMb, canCheckpoint: this.#canCheckpointHere() }
    const persisted = await this.#loadState()
    if (this.#runtime != null) await this.#stopStrayContainers(persisted)
    this.#machine = new ClusterMachine({ self: this.#selfInfo, now: Date.now(), config: this.#options.consensus, persisted })

    this.#cleanups.push(peer.gossip.subscribe(MISSIONS_TOPIC, payload => {
      const message = validateMessage(payload)
      if (message === undefined) throw new GossipDrop('malformed', `not a consensus message: ${JSON.stringify(payload).slice(0, 300)}`)
      return message
    }, (message, sender) => {
      this.#input(machine => { machine.receive(Date.now(), sender, message) })
    }, { maxBytes: 256 * 1024 }))

    this.#cleanups.push(peer.membership.on(() => { this.#feedPeers() }))
    const tickMs = this.#options.tickIntervalMs ?? 50
    this.#timers.push(setInterval(() => {
      // `criu check` runs in the peer's background capability probe; the machine reads its SelfInfo as it changes.
      if (this.#selfInfo != null) this.#selfInfo.canCheckpoint = this.#canCheckpointHere()
      this.#feedPeers()
      this.#input(machine => { machine.tick(Date.now()) })
    }, tickMs))
    if (this.#runtime != null) this.#timers.push(setInterval(() => { void this.#watchContainers() }, 1000))

    peer.status.extend('missions', () => this.list())
    peer.heartbeat.extend('missions', () => this.machine.view(Date.now())
      .filter(v => v.role !== 'member' && v.state !== 'removed')
      .map(v => ({ name: v.name, role: v.role, epoch: v.epoch })))
    this.#routes()
    this.#feedPeers()
    this.#input(machine => { machine.tick(Date.now()) })
  }

  async stop (): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    this.#abort.abort()
    for (const timer of this.#timers) clearInterval(timer)
    await this.#actionChain.catch(() => {})
    await Promise.allSettled([...this.#lanes.values(), ...this.#fetchLanes.values(), ...this.#stageLanes.values()].map(async lane => { await lane.tail }))
    await this.#persistChain.catch(() => {})
    // No container may outlive its peer: nobody would fence it while another board takes the mission over.
    if (this.#runtime != null) {
      await killContainersOf(this.#peer.config.dockerHost, this.#peer.peerId).catch(err => {
        this.#log(`missions: could not stop this peer's containers: ${(err as Error).message}`)
      })
    }
    this.#watchdog?.dismiss()
    for (const cleanup of this.#cleanups.reverse()) {
      try { await cleanup() } catch (err) { this.#log(`missions: cleanup failed: ${(err as Error).message}`) }
    }
    await this.#runtime?.close()
  }

  #canCheckpointHere (): boolean {
    return this.#runtime != null && this.#dockerExperimental && this.#peer.capabilities.criu.checkOk === true
  }

  // ---- inputs -------------------------------------------------------------------------------------------------

  /** Feeds the machine and applies what it decided. All machine inputs go through here. */
  #input (feed: (machine: ClusterMachine) => void): void {
    if (this.#stopped || this.#machine == null) return
    feed(this.#machine)
    const actions = this.#machine.takeActions()
    if (actions.length > 0) this.#actionChain = this.#actionChain.then(async () => { await this.#apply(actions) })
  }

  #local (event: LocalEvent): void {
    this.#input(machine => { machine.local(Date.now(), event) })
  }

  #feedPeers (): void {
    if (this.#machine == null) return
    for (const member of this.#peer.membership.list()) {
      const info = peerInfoOf(member)
      if (info === undefined || samePeerInfo(this.#fedPeers.get(info.peerId), info)) continue
      this.#fedPeers.set(info.peerId, info)
      this.#input(machine => { machine.peerChanged(Date.now(), info) })
    }
  }

  // ---- actions ------------------------------------------------------------------------------------------------

  async #apply (actions: Action[]): Promise<void> {
    for (const action of actions) {
      switch (action.type) {
        case 'persist':
          // Every decision is durable before anything that depends on it happens.
          await this.#persist(action.state)
          break
        case 'publish':
          this.#peer.gossip.publish(MISSIONS_TOPIC, action.message).catch(err => {
            this.#log(`missions: publish ${action.message.type} failed: ${(err as Error).message}`)
          })
          break
        case 'event':
          this.#recordEvent(action.mission, action.text)
          break
        case 'fetchCheckpoint':
          this.#wantedFetch.set(action.mission, action.checkpoint.cid)
          this.#inLane(this.#fetchLanes, action.mission, async () => { await this.#fetch(action.mission, action.checkpoint) })
          break
        case 'startFresh':
        case 'restore':
        case 'checkpoint':
        case 'stopContainer':
        case 'runningEpoch':
        case 'forget':
          this.#inLane(this.#lanes, action.mission, async () => { await this.#containerAction(action) })
          break
      }
    }
  }

  #inLane (lanes: Map<string, Lane>, mission: string, work: () => Promise<void>): void {
    let lane = lanes.get(mission)
    if (lane == null) {
      lane = { tail: Promise.resolve() }
      lanes.set(mission, lane)
    }
    lane.tail = lane.tail.then(work).catch(err => { this.#log(`missions: ${mission}: ${(err as Error).stack ?? String(err)}`) })
  }

  async #persist (state: PersistedState): Promise<void> {
    const db = this.#db
    if (db == null) return
    this.#persistChain = this.#persistChain.then(async () => { await db.put(STATE_KEY, JSON.stringify(state), { sync: true } as object) })
    await this.#persistChain
  }

  async #loadState (): Promise<PersistedState | undefined> {
    const text = await this.#db?.get(STATE_KEY)
    if (text == null) return undefined
    try {
      const state = JSON.parse(text) as PersistedState
      if (state.version !== 1) throw new Error(`unknown version ${String(state.version)}`)
      return state
    } catch (err) {
      throw new Error(`persisted mission state in ${join(this.#peer.config.dataDir, 'missions')} is unreadable (${(err as Error).message}); move it aside to rejoin with no memory of missions`)
    }
  }

  async #containerAction (action: Exclude<Action, { type: 'persist' | 'publish' | 'event' | 'fetchCheckpoint' }>): Promise<void> {
    const runtime = this.#runtime
    const peerId = this.#peer.peerId
    const signal = this.#abort.signal
    switch (action.type) {
      case 'startFresh': {
        if (runtime == null) { this.#local({ type: 'restoreFailed', mission: action.mission, epoch: action.epoch, error: 'no Docker on this board' }); return }
        try {
          const spec = containerSpec(action.spec, action.image)
          const id = action.dataFrom != null && this.#bundles.has(action.dataFrom.cid)
            ? await this.#startWithData(spec, action.epoch, this.#bundles.get(action.dataFrom.cid) as LocalBundle)
            : await runtime.startFresh(spec, { mission: action.mission, peerId, epoch: action.epoch }, { signal })
          this.#containers.set(action.mission, { id, epoch: action.epoch })
          this.#local({ type: 'containerStarted', mission: action.mission, epoch: action.epoch })
        } catch (err) {
          this.#local({ type: 'restoreFailed', mission: action.mission, epoch: action.epoch, error: (err as Error).message })
        }
        return
      }
      case 'restore': {
        const checkpointer = this.#checkpointer
        if (checkpointer == null) { this.#local({ type: 'restoreFailed', mission: action.mission, epoch: action.epoch, error: 'no Docker on this board' }); return }
        try {
          const source = this.#bundles.get(action.checkpoint.cid) ?? CID.parse(action.checkpoint.cid)
          const result = await checkpointer.restore(source, { peerId, epoch: action.epoch, signal })
          this.#containers.set(action.mission, { id: result.containerId, epoch: action.epoch })
          const { createMs, filesMs, criuMs } = result.phases
          this.#recordEvent(action.mission, `restored checkpoint #${action.checkpoint.seq} in ${Math.round(result.ms)} ms (create ${createMs}, files ${filesMs}, CRIU ${criuMs})${result.staged ? ', files staged ahead' : ''}${result.imageLoaded ? ', image loaded from the swarm' : ''}`)
          this.#local({ type: 'containerStarted', mission: action.mission, epoch: action.epoch })
        } catch (err) {
          this.#local({ type: 'restoreFailed', mission: action.mission, epoch: action.epoch, error: (err as Error).message })
        }
        return
      }
      case 'checkpoint': {
        const container = this.#containers.get(action.mission)
        const checkpointer = this.#checkpointer
        if (container == null || checkpointer == null) {
          this.#local({ type: 'checkpointFailed', mission: action.mission, epoch: action.epoch, seq: action.seq, error: 'no container of the mission runs here' })
          return
        }
        try {
          const parent = this.machine.view().find(v => v.name === action.mission)?.held?.cid
          const takeStart = performance.now()
          const result = await checkpointer.take(container.id, { mission: action.mission, epoch: action.epoch, seq: action.seq, parent: parent != null ? CID.parse(parent) : null, signal })
          const intervalMs = this.machine.view().find(v => v.name === action.mission)?.spec.checkpointIntervalMs ?? Infinity
          const tookMs = performance.now() - takeStart
          if (tookMs > intervalMs && !this.#overrunWarned.has(action.mission)) {
            this.#overrunWarned.add(action.mission)
            this.#recordEvent(action.mission, `checkpoint #${action.seq} took ${Math.round(tookMs)} ms, longer than checkpointIntervalMs ${intervalMs}: checkpoints follow each other back to back and state lost on a failure can exceed one interval`)
          }
          this.#lastTake.set(action.mission, {
            seq: action.seq,
            pausedMs: result.stats.pausedMs,
            storeMs: result.stats.storeMs,
            totalMs: Math.round(performance.now() - takeStart),
            newBytes: result.manifest.sizes.newBytes,
            totalBytes: result.manifest.sizes.totalBytes,
            phases: result.stats.phases
          })
          if (action.stop) {
            await runtime?.stop(container.id)
            this.#containers.delete(action.mission)
          }
          this.#local({ type: 'checkpointTaken', mission: action.mission, epoch: action.epoch, seq: action.seq, cid: result.cid.toString() })
        } catch (err) {
          this.#local({ type: 'checkpointFailed', mission: action.mission, epoch: action.epoch, seq: action.seq, error: (err as Error).message })
        }
        return
      }
      case 'stopContainer': {
        const container = this.#containers.get(action.mission)
        this.#containers.delete(action.mission)
        if (container != null && runtime != null) {
          await runtime.stop(container.id).catch(err => { this.#log(`missions: stopping ${container.id} failed: ${(err as Error).message}`) })
          this.#recordEvent(action.mission, `container of epoch ${container.epoch} stopped: ${action.reason}`)
        }
        // A container this process did not start (e.g. before a daemon restart) is fenced too.
        if (runtime != null) {
          for (const stray of await runtime.listMission(action.mission).catch(() => [])) {
            await runtime.stop(stray.id).catch(() => {})
          }
        }
        return
      }
      case 'runningEpoch': {
        const container = this.#containers.get(action.mission)
        if (container != null) container.epoch = action.epoch
        return
      }
      case 'forget': {
        this.#bundles.forEach((bundle, cid) => { if (bundle.manifest.mission === action.mission) this.#bundles.delete(cid) })
        await this.#checkpointer?.unstage(action.mission).catch(() => {})
        await this.#checkpointer?.store.prune(action.mission, 0).catch(() => {})
        this.#events.delete(action.mission)
      }
    }
  }

  async #fetch (mission: string, ref: CheckpointRef): Promise<void> {
    const checkpointer = this.#checkpointer
    if (checkpointer == null) { this.#local({ type: 'fetchFailed', mission, cid: ref.cid, error: 'no Docker on this board' }); return }
    if (this.#bundles.has(ref.cid)) { this.#local({ type: 'checkpointFetched', mission, cid: ref.cid, seq: ref.seq }); return }
    if (this.#wantedFetch.get(mission) !== ref.cid) return
    try {
      const primary = this.machine.view().find(v => v.name === mission)?.primary
      const bundle = await checkpointer.fetch(CID.parse(ref.cid), {
        signal: AbortSignal.any([this.#abort.signal, AbortSignal.timeout(60_000)]),
        providers: primary != null && primary !== this.#peer.peerId ? [primary] : undefined
      })
      this.#bundles.set(ref.cid, bundle)
      this.#trimBundles(mission)
      this.#local({ type: 'checkpointFetched', mission, cid: ref.cid, seq: ref.seq })
      // A takeover then only moves the files into place. A failure only costs that head start.
      this.#wantedStage.set(mission, ref.cid)
      this.#inLane(this.#stageLanes, mission, async () => {
        if (this.#wantedStage.get(mission) !== ref.cid) return
        await checkpointer.stage(bundle, { signal: this.#abort.signal }).catch(err => {
          this.#log(`missions: ${mission}: staging checkpoint #${ref.seq} failed: ${(err as Error).message}`)
        })
      })
    } catch (err) {
      this.#log(`missions: ${mission}: fetch of checkpoint #${ref.seq} ${ref.cid} failed: ${(err as Error).message}`)
      this.#local({ type: 'fetchFailed', mission, cid: ref.cid, error: (err as Error).message })
    }
  }

  /** Cold start from the image with the data directory of a checkpoint (no CRIU): the cross-architecture path. */
  async #startWithData (spec: ContainerSpec, epoch: number, bundle: LocalBundle): Promise<string> {
    const runtime = this.#runtime as ContainerRuntime
    const store = (this.#checkpointer as Checkpointer).store
    const id = await runtime.create(spec, { mission: spec.mission, peerId: this.#peer.peerId, epoch }, { signal: this.#abort.signal })
    if (spec.dataPath != null) {
      const name = (await runtime.inspect(id)).Name.replace(/^\//, '')
      await store.materializeTree(bundle.manifest.trees.data, runtime.dataDirFor(name), { signal: this.#abort.signal })
    }
    await runtime.docker.getContainer(id).start()
    return id
  }

  #trimBundles (mission: string): void {
    const keep = this.#options.keepCheckpoints ?? 3
    const ofMission = [...this.#bundles.entries()].filter(([, b]) => b.manifest.mission === mission)
      .sort(([, a], [, b]) => (b.manifest.epoch - a.manifest.epoch) || (b.manifest.seq - a.manifest.seq))
    for (const [cid] of ofMission.slice(keep)) this.#bundles.delete(cid)
  }

  /** Reports containers that exited on their own; the machine decides what follows. */
  async #watchContainers (): Promise<void> {
    const runtime = this.#runtime
    if (runtime == null || this.#stopped) return
    for (const [mission, container] of this.#containers) {
      let running: boolean
      try {
        running = (await runtime.inspect(container.id)).State.Running === true
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode !== 404) continue
        running = false
      }
      if (!running && this.#containers.get(mission) === container) {
        this.#containers.delete(mission)
        this.#local({ type: 'containerExited', mission, epoch: container.epoch, reason: 'the process exited' })
      }
    }
  }

  /** At start no container of this peer may run: the machine decides afresh what this board runs. */
  async #stopStrayContainers (persisted: PersistedState | undefined): Promise<void> {
    const runtime = this.#runtime as ContainerRuntime
    const list = await runtime.docker.listContainers({ all: true, filters: { label: [LABEL_MISSION, `${LABEL_PEER}=${this.#peer.peerId}`] } }).catch(() => [])
    for (const c of list) {
      const mission = c.Labels[LABEL_MISSION] ?? '?'
      const epoch = c.Labels[LABEL_EPOCH] ?? '?'
      await runtime.stop(c.Id).catch(err => { this.#log(`missions: cannot remove stale container ${c.Id}: ${(err as Error).message}`) })
      if (c.State === 'running') this.#recordEvent(mission, `stale container of epoch ${epoch} stopped at daemon start (known epoch ${persisted?.missions[mission]?.record.epoch ?? 'none'})`)
    }
  }

  #recordEvent (mission: string, text: string): void {
    let events = this.#events.get(mission)
    if (events == null) {
      events = []
      this.#events.set(mission, events)
    }
    events.push({ at: Date.now(), text })
    if (events.length > MAX_EVENTS_PER_MISSION) events.splice(0, events.length - MAX_EVENTS_PER_MISSION)
    this.#log(`mission ${mission}: ${text}`)
  }

  // ---- views and API --------------------------------------------------------------------------------------------

  list (): MissionStatus[] {
    const now = Date.now()
    return this.machine.view(now).filter(v => v.state !== 'removed').map(v => this.#statusOf(v, now))
  }

  #statusOf (v: MissionView, now: number): MissionStatus {
    const last = v.lastCheckpoint
    return {
      name: v.name,
      epoch: v.epoch,
      primary: v.primary,
      backup: v.backup,
      state: v.state,
      role: v.role,
      lastCheckpoint: last == null ? null : { cid: last.cid, seq: last.seq, epoch: last.epoch, ageMs: Math.max(0, now - last.atMs) },
      replicatedSeq: v.replicatedSeq,
      heldSeq: v.held?.seq ?? null,
      replicationLag: last == null ? null : last.seq - (v.replicatedSeq ?? 0),
      replicationLagMs: v.replicationLagMs,
      checkpointPeriodMs: v.checkpointPeriodMs,
      spec: v.spec,
      events: this.#events.get(v.name) ?? [],
      container: this.#containers.get(v.name) ?? null,
      lastTake: this.#lastTake.get(v.name) ?? null
    }
  }

  #find (name: string): MissionStatus {
    const mission = this.list().find(m => m.name === name)
    if (mission == null) throw new ApiError(404, `no mission named '${name}'`)
    return mission
  }

  async #waitFor (name: string, done: (m: MissionStatus | undefined) => boolean, timeoutMs: number, signal: AbortSignal): Promise<MissionStatus | undefined> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const mission = this.list().find(m => m.name === name)
      if (done(mission) || Date.now() >= deadline || signal.aborted) return mission
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  }

  #routes (): void {
    const api = this.#peer.api
    api.route('GET', '/v1/missions', () => ({ body: this.list() }))
    api.route('GET', '/v1/missions/:name', request => ({ body: this.#find(request.params.name as string) }))
    api.route('POST', '/v1/missions', async request => {
      const body = request.body as { manifest?: unknown, filename?: unknown } | undefined
      if (body == null || typeof body.manifest !== 'string') throw new ApiError(400, 'body must be {"manifest": "<YAML or JSON text>"}')
      let spec: MissionSpec
      try {
        spec = parseManifest(body.manifest, typeof body.filename === 'string' ? body.filename : undefined)
      } catch (err) {
        if (err instanceof ManifestError) throw new ApiError(400, err.message)
        throw err
      }
      const existing = this.list().find(m => m.name === spec.name)
      if (existing != null) throw new ApiError(409, `mission '${spec.name}' already runs (epoch ${existing.epoch}); remove it first`)
      this.#local({ type: 'deploy', spec })
      const mission = await this.#waitFor(spec.name, m => m?.primary != null, 5000, request.signal)
      return { status: 201, body: mission ?? this.#find(spec.name) }
    })
    api.route('DELETE', '/v1/missions/:name', request => {
      const name = request.params.name as string
      this.#find(name)
      this.#local({ type: 'remove', mission: name })
      return { body: { removed: name } }
    })
    api.route('POST', '/v1/missions/:name/move', async request => {
      const name = request.params.name as string
      const to = (request.body as { to?: unknown } | undefined)?.to
      if (typeof to !== 'string' || to === '') throw new ApiError(400, 'body must be {"to": "<peer id>"}')
      const before = this.#find(name)
      if (before.primary === to) throw new ApiError(409, `mission '${name}' already runs on ${to}`)
      const member = this.#peer.membership.list().find(m => m.peerId === to)
      if (to !== this.#peer.peerId && member?.state !== 'alive') throw new ApiError(409, `peer ${to} is not alive in this swarm`)
      const started = Date.now()
      this.#local({ type: 'move', mission: name, to })
      // Downtime as this peer observes it: from the source's final checkpoint to the new epoch running.
      let finalSeq = before.lastCheckpoint?.seq ?? null
      let finalSeqSeenAt = started
      let requestedAt = started
      const after = await this.#waitFor(name, m => {
        if (m != null && m.epoch === before.epoch && (m.lastCheckpoint?.seq ?? null) !== finalSeq) {
          finalSeq = m.lastCheckpoint?.seq ?? null
          finalSeqSeenAt = Date.now()
        }
        const refused = m?.events.find(e => e.at >= started && /move refused/.test(e.text))
        if (refused != null) throw new ApiError(409, refused.text)
        // The request reaches the primary by gossip: repeat it until the mission moves (a repeat is harmless).
        if (m != null && m.epoch === before.epoch && Date.now() - requestedAt >= 1000) {
          requestedAt = Date.now()
          this.#local({ type: 'move', mission: name, to })
        }
        return m != null && m.primary === to && m.state === 'running'
      }, 60_000, request.signal)
      if (after == null || after.primary !== to || after.state !== 'running') {
        throw new ApiError(504, `move of '${name}' to ${to} did not complete within 60 s (state ${after?.state ?? 'unknown'}, primary ${after?.primary ?? 'none'}); see 'tandem mission show ${name}'`)
      }
      const now = Date.now()
      const result: MoveResult = { mission: name, to, epoch: after.epoch, seq: finalSeq, downtimeMs: now - finalSeqSeenAt, totalMs: now - started }
      return { body: result }
    })
  }
}
