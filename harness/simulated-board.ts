// A simulated board on this host: its own Docker daemon (its "disk" survives a power cut) and its own tandem peer
// process, on loopback; or, with `netns`, the peer in its own network namespace on a private bridge, so a test can
// cut links for real (harness/netns.ts). Used by the chaos tests, the failover benchmark and the demo.
import { readdirSync, readFileSync } from 'node:fs'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { generateKey } from '@libp2p/pnet'
import type Docker from 'dockerode'
import { dockerFromHost, unixDockerHost } from '../checkpoint/docker-host.ts'
import { buildImage, startBoardDocker, loadBaseImages, type BoardDocker } from './simulated-docker.ts'
import { spawnPeer, waitFor, type PeerHandle } from './spawn-peer.ts'
import { SwarmNetwork, type NetnsHost } from './netns.ts'
import { BoardDisk, flipBytes, flipTableValues } from './board-disk.ts'

/** The libp2p port of a peer in its own namespace (every port is free there). */
const NETNS_LISTEN_PORT = 4001

export interface SimulatedBoardOptions {
  /** Board name: letters, digits, '-' and '_'. */
  name: string
  /** Parent directory; the board keeps its disk (Docker data root, peer data dir) under `<dir>/<name>`. */
  dir: string
  swarmKeyFile?: string
  /** Extra environment of the peer process (e.g. failure-detector timings). */
  env?: NodeJS.ProcessEnv
  /** Every output line of the peer process. */
  onLine?: (board: string, line: string) => void
  signal?: AbortSignal
  /** Load tandem/busybox and tandem/node-base into the board's Docker (default true); false: a bare board. */
  baseImages?: boolean
  /**
   * Runs the peer process in this network namespace: libp2p and the control API listen on its address (reached
   * from the root namespace through the bridge). The board's dockerd stays in the root namespace (unix socket).
   */
  network?: NetnsHost
  /**
   * The board's directory (Docker data root, peer data dir, staged checkpoints) on its own tmpfs of this many bytes,
   * so that `fillDisk` fills it for real; default: the parent directory's file system.
   */
  diskBytes?: number
}

/** What `corruptStorage` flipped bytes in. */
export interface CorruptedStorage { blockFiles: number, stagedFiles: number, flippedBytes: number }

async function filesIn (dir: string, pattern: RegExp): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[])
  return names.filter(n => pattern.test(n)).map(n => join(dir, n))
}

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => { resolve(typeof address === 'object' && address != null ? address.port : 0) })
    })
  })
}

export class SimulatedBoard {
  readonly name: string
  readonly dir: string
  readonly docker: BoardDocker
  readonly listenPort: number
  /** The board's place in a private network, when its peer runs in a namespace. */
  readonly network: NetnsHost | undefined
  readonly #options: SimulatedBoardOptions
  /** The board's own disk, with `diskBytes`. */
  readonly disk: BoardDisk | undefined
  #peer: PeerHandle | undefined
  #peerId: string | undefined
  #frozen: number[] = []

  private constructor (options: SimulatedBoardOptions, docker: BoardDocker, listenPort: number, disk: BoardDisk | undefined) {
    this.disk = disk
    this.name = options.name
    this.dir = join(options.dir, options.name)
    this.docker = docker
    this.listenPort = listenPort
    this.network = options.network
    this.#options = options
  }

  /** Starts the board's Docker daemon (with the base images loaded, unless asked not to); the peer starts with `powerOn`. */
  static async create (options: SimulatedBoardOptions): Promise<SimulatedBoard> {
    const disk = options.diskBytes != null ? await BoardDisk.mount(join(options.dir, options.name), options.diskBytes) : undefined
    let docker: BoardDocker | undefined
    try {
      docker = await startBoardDocker({ dir: options.dir, name: options.name, signal: options.signal })
      if (options.baseImages !== false) await loadBaseImages(docker, { signal: options.signal })
      return new SimulatedBoard(options, docker, options.network != null ? NETNS_LISTEN_PORT : await freePort(), disk)
    } catch (err) {
      await docker?.stop().catch(() => {})
      disk?.unmountSync()
      throw err
    }
  }

  /** Fills the board's disk until writes fail with ENOSPC (needs `diskBytes`); returns the filler's size. */
  async fillDisk (): Promise<number> {
    if (this.disk == null) throw new Error(`board ${this.name} has no disk of its own (diskBytes)`)
    return await this.disk.fill()
  }

  /** Frees what `fillDisk` took. */
  async freeDisk (): Promise<void> { await this.disk?.free() }

  /**
   * Flips bytes in what the board stored for checkpoints: its blockstore's table files (`blocks`) and the CRIU page
   * images staged for a takeover (`staged`), as a failing disk would.
   */
  async corruptStorage (what: { blocks: boolean, staged: boolean }): Promise<CorruptedStorage> {
    const blockFiles = what.blocks ? await filesIn(join(this.peerDataDir, 'blocks'), /\.ldb$/) : []
    const stagedFiles: string[] = []
    if (what.staged) {
      const standby = join(this.docker.dataRoot, 'tandem-standby')
      for (const mission of await readdir(standby).catch(() => [] as string[])) stagedFiles.push(...await filesIn(join(standby, mission, 'criu'), /^pages-\d+\.img$/))
    }
    // In the tables, only the stored blocks' bytes (values), never LevelDB's keys or indexes (see tableValues).
    const flippedBytes = await flipTableValues(blockFiles, 64) + await flipBytes(stagedFiles, { perFile: 8 })
    return { blockFiles: blockFiles.length, stagedFiles: stagedFiles.length, flippedBytes }
  }

  get peer (): PeerHandle | undefined { return this.#peer }
  /** Stays known after a power cut (the identity is on the board's disk). */
  get peerId (): string {
    if (this.#peerId == null) throw new Error(`board ${this.name} has never started its peer`)
    return this.#peerId
  }

  get isOn (): boolean { return this.#peer != null }
  get peerDataDir (): string { return join(this.dir, 'peer') }
  /** The peer's IPv4 address: 127.0.0.1, or its namespace's address. */
  get ip (): string { return this.network?.address ?? '127.0.0.1' }
  address (): string { return `/ip4/${this.ip}/tcp/${this.listenPort}/p2p/${this.peerId}` }

  /** Starts the peer (and the Docker daemon, if the board had lost power). */
  async powerOn (bootstrap: string[]): Promise<PeerHandle> {
    if (this.#peer != null) return this.#peer
    if (!this.docker.running) await this.docker.restart(this.#options.signal)
    await mkdir(this.peerDataDir, { recursive: true })
    const peer = await spawnPeer({
      dataDir: this.peerDataDir,
      removeDataDir: false,
      listen: [`/ip4/${this.ip}/tcp/${this.listenPort}`],
      api: `${this.ip}:0`,
      netns: this.network?.nsPath,
      bootstrap,
      swarmKey: this.#options.swarmKeyFile,
      dockerHost: this.docker.dockerHost,
      dockerExecRoot: this.docker.execRoot,
      env: this.#options.env,
      onLine: line => { this.#options.onLine?.(this.name, line) }
    })
    this.#peer = peer
    this.#peerId = peer.peerId
    return peer
  }

  /**
   * A power cut: the peer with every process it started and the Docker daemon with all its containers die at once,
   * with no goodbye. The peer's processes are SIGKILLed before the first await (a caller may act right after the
   * call, while the daemon still dies).
   */
  async powerCut (): Promise<void> {
    const peer = this.#peer
    this.#peer = undefined
    this.#frozen = []
    // The whole tree, not the peer alone: a checkpoint in flight has the peer's runc and CRIU running, and orphaned
    // they dumped on after the "cut" (CI: both still alive 15 s later). Stopped first, so none forks away meanwhile.
    const tree = peer == null || peer.pid <= 0 ? [] : stoppedTree(peer.pid)
    for (const pid of tree) { try { process.kill(pid, 'SIGKILL') } catch {} }
    for (const pid of tree) { try { process.kill(pid, 'SIGCONT') } catch {} }
    await this.docker.kill()
    if (peer != null) {
      await peer.exited
      await peer.stop()
    }
  }

  /**
   * A silent failure, as a real power cut looks from the network: the peer and every process of the board stop in
   * place, so nothing answers and nothing resets a connection. The peer process and its watchdog join the board's
   * cgroup and freeze with it. Finish with `powerCut()` or `thaw()`.
   */
  freeze (): void {
    const peer = this.#peer
    const processes = peer == null ? [] : processTree(peer.pid)
    this.docker.freeze(processes)
    // Where the peer could not join the board's cgroup, it stops by signal.
    for (const pid of processes) if (!this.docker.processIds().includes(pid)) { try { process.kill(pid, 'SIGSTOP') } catch {} }
    this.#frozen = processes
  }

  /** The end of a freeze: every process of the board (the peer, its watchdog, dockerd, the containers) runs again at once. */
  thaw (): void {
    this.docker.thaw()
    for (const pid of this.#frozen) { try { process.kill(pid, 'SIGCONT') } catch {} }
    this.#frozen = []
  }

  /**
   * A slow board: the peer, its watchdog, dockerd and the containers share `cpus` of a core (a CPU quota on the
   * board's cgroup), until `unthrottle()`.
   */
  throttle (cpus: number): void {
    this.docker.throttle(cpus, this.#peer == null ? [] : processTree(this.#peer.pid))
  }

  unthrottle (): void { this.docker.unthrottle() }

  /** Stops the peer only (SIGTERM, as systemd does); the Docker daemon keeps running. `powerOn` starts it again. */
  async stopPeer (): Promise<void> {
    const peer = this.#peer
    this.#peer = undefined
    await peer?.stop()
  }

  /** Clean shutdown of the peer and the daemon. */
  async shutdown (): Promise<void> {
    const peer = this.#peer
    this.#peer = undefined
    await peer?.stop()
    await this.docker.stop()
    this.disk?.unmountSync()
  }

  /** A dockerode client of this board's daemon. */
  dockerClient (): Docker { return dockerFromHost(unixDockerHost(this.docker.socketPath)) }
}

/** A process and all its descendants (the peer and its watchdog), from /proc. */
export function processTree (pid: number): number[] {
  // Never -1, 0 or 1: signalled, those would reach every process, the caller's group, or init.
  if (!Number.isSafeInteger(pid) || pid <= 1) return []
  const found = [pid]
  for (let i = 0; i < found.length; i++) {
    const parent = found[i] as number
    let tasks: string[] = []
    try { tasks = readdirSync(`/proc/${parent}/task`) } catch {}
    for (const task of tasks) {
      let children = ''
      try { children = readFileSync(`/proc/${parent}/task/${task}/children`, 'utf8') } catch {}
      for (const child of children.trim().split(/\s+/)) if (child !== '' && !found.includes(Number(child))) found.push(Number(child))
    }
  }
  return found
}

/** SIGSTOPs `pid` and its descendants until no new one appears (a stopped process cannot fork); returns them all. */
function stoppedTree (pid: number): number[] {
  if (!Number.isSafeInteger(pid) || pid <= 1) throw new Error(`not a process to cut: ${pid}`)
  const stopped = new Set<number>()
  for (let round = 0; round < 10; round++) {
    const fresh = processTree(pid).filter(p => !stopped.has(p))
    if (fresh.length === 0) break
    for (const p of fresh) { try { process.kill(p, 'SIGSTOP') } catch {} stopped.add(p) }
  }
  return [...stopped]
}

/** Builds an image on one board only, as a user does; the swarm carries it to the others. */
export async function buildImageOn (board: SimulatedBoard, contextDir: string, tag: string, files: string[]): Promise<void> {
  await buildImage(board.dockerClient(), contextDir, files, tag)
}

/** Builds the image on the first board and copies it to every other one (the prepared case, for baselines). */
export async function shareMissionImage (boards: SimulatedBoard[], contextDir: string, tag: string, files: string[]): Promise<void> {
  const [first, ...rest] = boards
  if (first == null) return
  await buildImageOn(first, contextDir, tag, files)
  const docker = first.dockerClient()
  for (const board of rest) {
    const archive = await docker.getImage(tag).get()
    const load = await board.dockerClient().loadImage(archive, { quiet: true })
    await new Promise<void>((resolve, reject) => { load.on('end', resolve); load.on('error', reject); load.resume() })
  }
}

export interface SimulatedSwarm {
  boards: SimulatedBoard[]
  swarmKeyFile: string
  /** The private network of the boards (with `netns: true`), else undefined. */
  network: SwarmNetwork | undefined
  /** Addresses of the boards that are on, except `except`. */
  bootstrapFor (except?: SimulatedBoard): string[]
  /**
   * Boards in different groups cannot reach each other (packets dropped both ways, inside each board's namespace);
   * links within a group, and of boards in no group, stay as they are. Needs `netns: true`.
   */
  partition (groups: SimulatedBoard[][]): Promise<void>
  /** Cuts the one link between a and b (e.g. a bridge partition: a sees c, c sees b, a does not see b). */
  cut (a: SimulatedBoard, b: SimulatedBoard): Promise<void>
  /** Restores the link between a and b. */
  join (a: SimulatedBoard, b: SimulatedBoard): Promise<void>
  /** Every link works again. */
  heal (): Promise<void>
  /** Stops every peer and daemon, also those whose power was cut, and removes the network. */
  stop (): Promise<void>
}

export interface SimulatedSwarmOptions {
  count: number
  dir: string
  env?: NodeJS.ProcessEnv
  onLine?: (board: string, line: string) => void
  signal?: AbortSignal
  /** Called as each stage completes (daemons up, peers up, converged). */
  onProgress?: (text: string) => void
  /** Which boards get the base images (default all): e.g. `i => i === 0` for bare boards besides the first. */
  baseImagesOn?: (index: number) => boolean
  /** Each board's peer in its own network namespace on a private bridge (harness/netns.ts), so links can be cut. */
  netns?: boolean
  /** Each board on its own tmpfs of this many bytes (see SimulatedBoardOptions.diskBytes). */
  diskBytes?: number
}

/** A flapping link: `times` rounds of cut for `downMs`, then joined for `upMs`. Ends joined. */
export async function flap (swarm: SimulatedSwarm, a: SimulatedBoard, b: SimulatedBoard, options: { times: number, downMs: number, upMs: number, signal?: AbortSignal }): Promise<void> {
  for (let i = 0; i < options.times && options.signal?.aborted !== true; i++) {
    await swarm.cut(a, b)
    await new Promise(resolve => setTimeout(resolve, options.downMs))
    await swarm.join(a, b)
    await new Promise(resolve => setTimeout(resolve, options.upMs))
  }
}

/** Starts `count` boards named board-1..N in a private swarm and waits until every peer sees every other alive. */
export async function startSimulatedSwarm (options: SimulatedSwarmOptions): Promise<SimulatedSwarm> {
  await mkdir(options.dir, { recursive: true })
  const swarmKeyFile = join(options.dir, 'swarm.key')
  const key = new Uint8Array(95)
  generateKey(key)
  await writeFile(swarmKeyFile, key, { mode: 0o600 })
  const boards: SimulatedBoard[] = []
  const network = options.netns === true ? await SwarmNetwork.create({ count: options.count }) : undefined
  const net = (): SwarmNetwork => {
    if (network == null) throw new Error('links can only be cut in a swarm started with netns: true')
    return network
  }
  const hostOf = (board: SimulatedBoard): NetnsHost => {
    if (board.network == null) throw new Error(`board ${board.name} is not in the swarm's network`)
    return board.network
  }
  const swarm: SimulatedSwarm = {
    boards,
    swarmKeyFile,
    network,
    bootstrapFor: except => boards.filter(b => b !== except && b.isOn).map(b => b.address()),
    partition: async groups => { await net().partition(groups.map(group => group.map(hostOf))) },
    cut: async (a, b) => { await net().cut(hostOf(a), hostOf(b)) },
    join: async (a, b) => { await net().join(hostOf(a), hostOf(b)) },
    heal: async () => { await network?.heal() },
    stop: async () => {
      await Promise.allSettled(boards.map(async board => { await board.shutdown() }))
      network?.destroySync()
    }
  }
  try {
    const names = Array.from({ length: options.count }, (_, i) => `board-${i + 1}`)
    const created = await Promise.allSettled(names.map(async (name, index) => await SimulatedBoard.create({
      name, dir: options.dir, swarmKeyFile, env: options.env, onLine: options.onLine, signal: options.signal, baseImages: options.baseImagesOn?.(index) ?? true,
      network: network?.host(index),
      diskBytes: options.diskBytes
    })))
    for (const result of created) if (result.status === 'fulfilled') boards.push(result.value)
    const failed = created.find(r => r.status === 'rejected')
    if (failed != null) throw (failed as PromiseRejectedResult).reason
    options.onProgress?.(`${boards.length} board Docker daemons up`)
    for (const board of boards) await board.powerOn(swarm.bootstrapFor(board))
    options.onProgress?.(`${boards.length} peers up`)
    await waitFor('every peer sees every other alive', async () => {
      for (const board of boards) {
        const status = await board.peer!.status()
        const alive = status.peers.filter(p => p.state === 'alive').length
        if (alive < boards.length - 1) return false
      }
      return true
    }, 30_000, 100)
    options.onProgress?.('swarm converged: every peer sees every other alive')
    return swarm
  } catch (err) {
    await swarm.stop()
    throw err
  }
}
