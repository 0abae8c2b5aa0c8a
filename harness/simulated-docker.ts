// One private Docker daemon per simulated board: own data root, exec root, socket and cgroup.
// kill() is a power cut (every process of the board dies at once), restart() a reboot on the same disk.
import { orphanedEntries, processIdentity, readOrEmpty } from './ownership.ts'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream, existsSync, mkdirSync, openSync, closeSync, readdirSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { readFile, mkdir, writeFile, rm } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type Docker from 'dockerode'
import { dockerFromHost, unixDockerHost } from '../checkpoint/docker-host.ts'
import { onOwnerExit } from './exit-hooks.ts'
import { BASE_IMAGE_CACHE_TAR, CONTENT_LABEL, readBaseImageManifest, type BaseImage } from '../boards/base-images.ts'

export const DOCKERD_PATH = '/usr/sbin/dockerd'
/** Short on purpose: unix socket paths are limited to 108 bytes. */
const RUN_ROOT = '/run/tandem-boards'
const CGROUP_ROOT_NAME = 'tandem-boards'
const CPU_HIERARCHY_V1 = '/sys/fs/cgroup/cpu'
const CPU_PERIOD_US = 100_000
/** /usr/local/sbin first: the CRIU wrapper installed by scripts/provision.sh lives there. */
const DAEMON_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

export interface StartBoardDockerOptions {
  /** The board's own directory: its data root (the board's "disk") and daemon config go under it. */
  dir: string
  /** Board name: letters, digits, '-' and '_', at most 32. */
  name: string
  signal?: AbortSignal
  /** How long to wait for the daemon to answer; default 60 s. */
  startTimeoutMs?: number
}

export interface BoardDocker {
  readonly name: string
  readonly socketPath: string
  /** `unix://<socketPath>`: give it to dockerode / ContainerRuntime / DOCKER_HOST. */
  readonly dockerHost: string
  /** dockerd's PID (changes on restart()). */
  readonly pid: number
  readonly dataRoot: string
  readonly execRoot: string
  readonly logPath: string
  /** How long the last start took until the daemon answered, in ms. */
  readonly startMs: number
  readonly running: boolean
  /** PIDs of every process of this board (dockerd, containerd, shims, container processes), read from its cgroup. */
  processIds (): number[]
  /** Graceful: dockerd stops its containers and exits; then the exec root and cgroups are removed. */
  stop (): Promise<void>
  /** Power cut: SIGKILL dockerd, containerd, the shims and every container process of this board. */
  kill (): Promise<void>
  /**
   * A board that goes silent: every process of it stops in place (no exit, no connection reset); kill() or thaw()
   * after. `alsoPids` (the board's peer process and its children) are moved into the board's cgroup first, so
   * that they freeze and thaw with it, at once, as on a real board.
   */
  freeze (alsoPids?: number[]): void
  /** The frozen board runs again: every process at once (its containers too, unless frozen on their own). */
  thaw (): void
  /**
   * A slow board: every process of it (dockerd, containerd, shims, containers, and `alsoPids`: the peer and its
   * watchdog) shares a CPU quota of `cpus` cores (0.3: 30 % of one core) until unthrottle().
   */
  throttle (cpus: number, alsoPids?: number[]): void
  unthrottle (): void
  /** Power back on after a cut: empty the exec root, unmount stale mounts, start on the same data root. */
  restart (signal?: AbortSignal): Promise<void>
}

export class BoardDockerError extends Error {
  override name = 'BoardDockerError'
}

/** Seconds a container gets between SIGTERM and SIGKILL when its board stops gracefully. */
const CONTAINER_STOP_SECONDS = 2

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/

/** Every board daemon this process started and has not stopped: cleaned up on exit, even after a crash. */
const liveBoards = new Set<SimulatedBoardDocker>()

export async function startBoardDocker (options: StartBoardDockerOptions): Promise<BoardDocker> {
  if (typeof options.name !== 'string' || !NAME_PATTERN.test(options.name)) {
    throw new BoardDockerError(`invalid board name ${JSON.stringify(options.name)}: use 1-32 letters, digits, '-' or '_'`)
  }
  if (typeof options.dir !== 'string' || options.dir === '') throw new BoardDockerError('board dir is required')
  if (!existsSync(DOCKERD_PATH)) throw new BoardDockerError(`${DOCKERD_PATH} not found: run scripts/provision.sh as root`)
  if (process.getuid?.() !== 0) throw new BoardDockerError('simulated board daemons need root (dockerd)')
  if (existsSync('/run/containerd/containerd.sock')) {
    throw new BoardDockerError('a system containerd runs at /run/containerd/containerd.sock: every board dockerd would share it; stop it first')
  }
  reapOrphanBoards()
  const board = new SimulatedBoardDocker(resolve(options.dir), options.name, options.startTimeoutMs ?? 60_000)
  await board.start(options.signal)
  return board
}

/**
 * Board daemons whose owning process died without cleaning up (killed by SIGKILL, say) are killed,
 * unmounted and removed. Boards of live processes, other test runs included, are left alone.
 */
export function reapOrphanBoards (): number {
  let reaped = 0
  for (const token of orphanedEntries(RUN_ROOT)) {
    const runDir = join(RUN_ROOT, token)
    const cgroups = BoardCgroups.create(token)
    cgroups.killAll()
    cgroups.waitEmptySync(5_000)
    unmountUnder([join(runDir, 'exec'), readOrEmpty(join(runDir, 'data-root')).trim()].filter(dir => dir !== ''))
    rmSync(runDir, { recursive: true, force: true })
    cgroups.remove()
    reaped++
  }
  return reaped
}

class SimulatedBoardDocker implements BoardDocker {
  readonly name: string
  readonly socketPath: string
  readonly dockerHost: string
  readonly dataRoot: string
  readonly execRoot: string
  readonly logPath: string
  readonly #boardDir: string
  readonly #runDir: string
  readonly #pidFile: string
  readonly #configFile: string
  readonly #cgroups: BoardCgroups
  readonly #startTimeoutMs: number
  #child: ChildProcess | undefined
  #exited: Promise<void> = Promise.resolve()
  #pid = 0
  #startMs = 0

  constructor (dir: string, name: string, startTimeoutMs: number) {
    const token = createHash('sha256').update(`${dir}\0${name}`).digest('hex').slice(0, 12)
    this.name = name
    this.#boardDir = join(dir, name)
    this.dataRoot = join(this.#boardDir, 'data-root')
    this.logPath = join(this.#boardDir, 'dockerd.log')
    this.#configFile = join(this.#boardDir, 'daemon.json')
    this.#runDir = join(RUN_ROOT, token)
    this.execRoot = join(this.#runDir, 'exec')
    this.socketPath = join(this.#runDir, 'docker.sock')
    this.#pidFile = join(this.#runDir, 'dockerd.pid')
    this.dockerHost = `unix://${this.socketPath}`
    this.#cgroups = BoardCgroups.create(token)
    this.#startTimeoutMs = startTimeoutMs
  }

  get pid (): number { return this.#pid }
  get startMs (): number { return this.#startMs }
  get running (): boolean { return this.#child != null && this.#child.exitCode == null && this.#child.signalCode == null }

  async start (signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    if (this.running) throw new BoardDockerError(`board ${this.name}: dockerd already runs (pid ${this.#pid})`)
    await mkdir(this.dataRoot, { recursive: true })
    await mkdir(this.execRoot, { recursive: true })
    const owner = readOrEmpty(join(this.#runDir, 'owner')).trim()
    if (owner !== '' && !owner.startsWith(`${process.pid} `) && processIdentity(Number(owner.split(' ')[0])) === owner) {
      throw new BoardDockerError(`board ${this.name} in ${this.dataRoot} is already run by process ${owner.split(' ')[0]}`)
    }
    await writeFile(join(this.#runDir, 'owner'), `${processIdentity(process.pid) ?? process.pid}\n`)
    await writeFile(join(this.#runDir, 'data-root'), `${this.dataRoot}\n`)
    // Own config file so /etc/docker/daemon.json is not read; everything else is on the command line.
    await writeFile(this.#configFile, JSON.stringify({ 'log-level': 'warn', 'shutdown-timeout': 5 }, null, 2) + '\n')
    this.#cgroups.prepare()
    const args = [
      '--config-file', this.#configFile, '--data-root', this.dataRoot, '--exec-root', this.execRoot,
      '-H', this.dockerHost, '--pidfile', this.#pidFile, '--bridge=none', '--iptables=false', '--ip-masq=false',
      '--experimental', '--cgroup-parent', this.#cgroups.containerParent
    ]
    const logFd = openSync(this.logPath, 'a')
    const started = performance.now()
    // The shell joins the board's cgroup and then becomes dockerd: containerd and the shims inherit it.
    const child = spawn('/bin/sh', ['-c', `${this.#cgroups.joinCommand()} && exec "$0" "$@"`, DOCKERD_PATH, ...args], {
      stdio: ['ignore', logFd, logFd],
      env: { ...process.env, PATH: DAEMON_PATH, DOCKER_HOST: this.dockerHost }
    })
    closeSync(logFd)
    this.#child = child
    this.#pid = child.pid ?? 0
    this.#exited = new Promise(resolve => { child.once('exit', () => { resolve() }) })
    liveBoards.add(this)
    installExitHandlers()
    try {
      await this.#waitUntilAnswering(child, signal)
    } catch (err) {
      await this.kill()
      throw err
    }
    this.#startMs = performance.now() - started
  }

  async #waitUntilAnswering (child: ChildProcess, signal?: AbortSignal): Promise<void> {
    const docker = dockerFromHost(unixDockerHost(this.socketPath))
    const deadline = Date.now() + this.#startTimeoutMs
    for (;;) {
      if (signal?.aborted === true) throw new BoardDockerError(`board ${this.name}: start aborted`)
      if (child.exitCode != null || child.signalCode != null) {
        throw new BoardDockerError(`board ${this.name}: dockerd exited (${child.exitCode ?? child.signalCode}) while starting: ${await this.#logTail()}`)
      }
      if (existsSync(this.socketPath)) {
        try {
          await docker.ping()
          return
        } catch {}
      }
      if (Date.now() > deadline) {
        throw new BoardDockerError(`board ${this.name}: dockerd did not answer within ${this.#startTimeoutMs} ms: ${await this.#logTail()}`)
      }
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  }

  async #logTail (): Promise<string> {
    const log = await readFile(this.logPath, 'utf8').catch(() => '')
    return log.trim().split('\n').slice(-5).join(' | ') || `(no log at ${this.logPath})`
  }

  processIds (): number[] { return this.#cgroups.pids() }

  async stop (): Promise<void> {
    if (this.running && this.#child != null) {
      await this.#stopContainers()
      this.#child.kill('SIGTERM')
      const stopped = await Promise.race([
        this.#exited.then(() => true),
        new Promise<boolean>(resolve => setTimeout(() => { resolve(false) }, 30_000).unref())
      ])
      if (!stopped) await this.kill()
    }
    this.#cgroups.killAll()
    await this.#exited
    this.#cleanupAfterDeath()
    rmSync(this.#runDir, { recursive: true, force: true })
    this.#cgroups.remove()
    liveBoards.delete(this)
  }

  async #stopContainers (): Promise<void> {
    const docker = dockerFromHost(unixDockerHost(this.socketPath))
    try {
      const running = await docker.listContainers()
      await Promise.all(running.map(async container => {
        await docker.getContainer(container.Id).stop({ t: CONTAINER_STOP_SECONDS }).catch(() => {})
      }))
    } catch {}
  }

  freeze (alsoPids: number[] = []): void {
    this.#cgroups.adopt(alsoPids)
    this.#cgroups.freeze()
  }

  thaw (): void {
    this.#cgroups.thaw()
    this.#cgroups.releaseAdopted()
  }

  throttle (cpus: number, alsoPids: number[] = []): void {
    if (!(cpus > 0)) throw new BoardDockerError(`board ${this.name}: a CPU quota of ${cpus} cores`)
    this.#cgroups.throttle(cpus, alsoPids)
  }

  unthrottle (): void { this.#cgroups.unthrottle() }

  async kill (): Promise<void> {
    this.#cgroups.killAll()
    if (this.running) this.#child?.kill('SIGKILL')
    await this.#exited
    await this.#cgroups.waitEmpty(10_000)
  }

  async restart (signal?: AbortSignal): Promise<void> {
    if (this.running) await this.kill()
    this.#cleanupAfterDeath()
    await rm(this.execRoot, { recursive: true, force: true })
    await rm(this.socketPath, { force: true })
    await rm(this.#pidFile, { force: true })
    await this.start(signal)
  }

  /** What a reboot does: stale mounts under the data root and the exec root disappear. */
  #cleanupAfterDeath (): void {
    unmountUnder([this.execRoot, this.dataRoot])
    this.#cgroups.removeContainerCgroups()
  }

  /** Synchronous last-resort cleanup for process exit. */
  emergencyCleanup (): void {
    this.#cgroups.killAll()
    try { this.#child?.kill('SIGKILL') } catch {}
    this.#cgroups.waitEmptySync(5_000)
    unmountUnder([this.execRoot, this.dataRoot])
    rmSync(this.#runDir, { recursive: true, force: true })
    this.#cgroups.remove()
    liveBoards.delete(this)
  }
}

// ---------- cgroups: the board's processes, found by membership, never by name ----------

abstract class BoardCgroups {
  static create (token: string): BoardCgroups {
    return existsSync('/sys/fs/cgroup/cgroup.controllers') ? new UnifiedCgroups(token) : new LegacyFreezerCgroups(token)
  }

  /** Docker's --cgroup-parent for this board's containers. */
  readonly containerParent: string
  protected readonly token: string

  constructor (token: string) {
    this.token = token
    this.containerParent = `/${CGROUP_ROOT_NAME}/${token}/containers`
  }

  /** Directory of the whole board (daemon + containers) in the tracking hierarchy. */
  protected abstract boardDir (): string
  abstract prepare (): void
  /** A shell command that moves the calling shell ($$) into the board's daemon cgroup. */
  joinCommand (): string { return `echo $$ > ${join(this.boardDir(), 'daemon', 'cgroup.procs')}` }
  abstract killAll (): void
  /** Stops every process of the board in place. */
  abstract freeze (): void
  /** Runs the board again (only the board's own freeze: a cgroup frozen on its own below stays frozen). */
  abstract thaw (): void
  /** Processes moved into the board's `peer` cgroup, with the cgroup they came from. */
  readonly #adopted = new Map<number, string>()

  /** Moves outside processes (the peer and its watchdog) into the board's tracking cgroup, to freeze with it. */
  adopt (pids: number[]): void {
    const dir = join(this.boardDir(), 'peer')
    mkdirSync(dir, { recursive: true })
    for (const pid of pids) {
      const from = this.cgroupOf(pid)
      if (from == null) continue
      try {
        writeFileSync(join(dir, 'cgroup.procs'), String(pid))
        this.#adopted.set(pid, from)
      } catch {}
    }
  }

  /** Puts adopted processes back where they were (after a thaw). */
  releaseAdopted (): void {
    for (const [pid, from] of this.#adopted) writeQuietly(join(from, 'cgroup.procs'), String(pid))
    this.#adopted.clear()
  }

  /** The directory of a process's cgroup in the tracking hierarchy. */
  protected abstract cgroupOf (pid: number): string | undefined

  /** The whole board (and `alsoPids`) under a CPU quota of `cpus` cores per 100 ms period. */
  abstract throttle (cpus: number, alsoPids: number[]): void
  /** Removes the quota; processes moved for it go back where they were. */
  abstract unthrottle (): void

  pids (): number[] {
    const pids: number[] = []
    for (const dir of cgroupTree(this.boardDir())) {
      const text = readOrEmpty(join(dir, 'cgroup.procs'))
      for (const line of text.split('\n')) if (line !== '') pids.push(Number(line))
    }
    return pids
  }

  async waitEmpty (timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (this.pids().length > 0) {
      if (Date.now() > deadline) throw new BoardDockerError(`processes survive in cgroup ${this.boardDir()}: ${this.pids().join(' ')}`)
      this.killAll()
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  }

  waitEmptySync (timeoutMs: number): void {
    const deadline = Date.now() + timeoutMs
    while (this.pids().length > 0 && Date.now() < deadline) {
      this.killAll()
      spawnSync('sleep', ['0.02'])
    }
  }

  removeContainerCgroups (): void {
    for (const dir of cgroupTree(this.containerDirs()).reverse()) rmdirQuietly(dir)
  }

  remove (): void {
    this.unthrottle()
    for (const root of this.allHierarchies()) {
      for (const dir of cgroupTree(join(root, CGROUP_ROOT_NAME, this.token)).reverse()) rmdirQuietly(dir)
    }
  }

  protected containerDirs (): string { return join(this.boardDir(), 'containers') }
  protected abstract allHierarchies (): string[]
}

/** cgroup v1: the freezer hierarchy tracks the board; freezing first means no process forks away during the kill. */
class LegacyFreezerCgroups extends BoardCgroups {
  protected boardDir (): string { return join('/sys/fs/cgroup/freezer', CGROUP_ROOT_NAME, this.token) }

  prepare (): void {
    mkdirSync(join(this.boardDir(), 'daemon'), { recursive: true })
  }

  freeze (): void {
    writeQuietly(join(this.boardDir(), 'freezer.state'), 'FROZEN')
  }

  thaw (): void {
    writeQuietly(join(this.boardDir(), 'freezer.state'), 'THAWED')
  }

  protected cgroupOf (pid: number): string | undefined {
    const line = readOrEmpty(`/proc/${pid}/cgroup`).split('\n').find(l => l.split(':')[1]?.split(',').includes('freezer') === true)
    return line == null ? undefined : join('/sys/fs/cgroup/freezer', line.split(':')[2] ?? '/')
  }

  killAll (): void {
    const state = join(this.boardDir(), 'freezer.state')
    if (!existsSync(state)) return
    writeQuietly(state, 'FROZEN')
    const deadline = Date.now() + 2_000
    while (readOrEmpty(state).trim() === 'FREEZING' && Date.now() < deadline) spawnSync('sleep', ['0.01'])
    for (const pid of this.pids()) {
      try { process.kill(pid, 'SIGKILL') } catch {}
    }
    // A container paused by Docker (e.g. during a checkpoint) sits in its own frozen cgroup below the board's:
    // thaw the whole subtree, or its processes never receive the SIGKILL.
    for (const dir of cgroupTree(this.boardDir())) writeQuietly(join(dir, 'freezer.state'), 'THAWED')
  }

  protected allHierarchies (): string[] {
    return readdirSync('/sys/fs/cgroup').map(name => join('/sys/fs/cgroup', name)).filter(dir => isDirectory(dir))
  }

  /** Where processes were before throttle() moved them into the board's cpu cgroup. */
  readonly #throttled = new Map<number, string>()

  /** The board in the cpu hierarchy: Docker puts the containers below it (--cgroup-parent), the rest is moved in. */
  #cpuDir (): string { return join(CPU_HIERARCHY_V1, CGROUP_ROOT_NAME, this.token) }

  throttle (cpus: number, alsoPids: number[]): void {
    if (!existsSync(join(CPU_HIERARCHY_V1, 'cpu.cfs_quota_us'))) throw new BoardDockerError(`no cgroup v1 cpu controller at ${CPU_HIERARCHY_V1}`)
    const adopted = join(this.#cpuDir(), 'adopted')
    mkdirSync(adopted, { recursive: true })
    writeFileSync(join(this.#cpuDir(), 'cpu.cfs_period_us'), String(CPU_PERIOD_US))
    writeFileSync(join(this.#cpuDir(), 'cpu.cfs_quota_us'), String(Math.max(1000, Math.round(cpus * CPU_PERIOD_US))))
    for (const pid of [...this.pids(), ...alsoPids]) {
      const from = cpuCgroupV1Of(pid)
      if (from == null || from === this.#cpuDir() || from.startsWith(this.#cpuDir() + '/')) continue
      try {
        writeFileSync(join(adopted, 'cgroup.procs'), String(pid))
        this.#throttled.set(pid, from)
      } catch {}
    }
  }

  unthrottle (): void {
    writeQuietly(join(this.#cpuDir(), 'cpu.cfs_quota_us'), '-1')
    const fallback = [...this.#throttled.values()][0] ?? CPU_HIERARCHY_V1
    // Processes forked meanwhile (a shim, runc, criu) follow their parent back out.
    for (const line of readOrEmpty(join(this.#cpuDir(), 'adopted', 'cgroup.procs')).split('\n')) {
      if (line === '') continue
      writeQuietly(join(this.#throttled.get(Number(line)) ?? fallback, 'cgroup.procs'), line)
    }
    this.#throttled.clear()
  }
}

function cpuCgroupV1Of (pid: number): string | undefined {
  const line = readOrEmpty(`/proc/${pid}/cgroup`).split('\n').find(l => l.split(':')[1]?.split(',').includes('cpu') === true)
  return line == null ? undefined : join(CPU_HIERARCHY_V1, line.split(':')[2] ?? '/')
}

/** cgroup v2: cgroup.kill kills the whole subtree at once. */
class UnifiedCgroups extends BoardCgroups {
  protected boardDir (): string { return join('/sys/fs/cgroup', CGROUP_ROOT_NAME, this.token) }

  prepare (): void {
    mkdirSync(join(this.boardDir(), 'daemon'), { recursive: true })
    mkdirSync(join(this.boardDir(), 'containers'), { recursive: true })
    const controllers = readOrEmpty('/sys/fs/cgroup/cgroup.controllers').trim().split(/\s+/).filter(Boolean)
    const enable = controllers.map(name => `+${name}`).join(' ')
    for (const dir of [join('/sys/fs/cgroup', CGROUP_ROOT_NAME), this.boardDir(), join(this.boardDir(), 'containers')]) {
      writeQuietly(join(dir, 'cgroup.subtree_control'), enable)
    }
  }

  freeze (): void {
    writeQuietly(join(this.boardDir(), 'cgroup.freeze'), '1')
  }

  thaw (): void {
    writeQuietly(join(this.boardDir(), 'cgroup.freeze'), '0')
  }

  protected cgroupOf (pid: number): string | undefined {
    const line = readOrEmpty(`/proc/${pid}/cgroup`).split('\n').find(l => l.startsWith('0::'))
    return line == null ? undefined : join('/sys/fs/cgroup', line.slice(3))
  }

  killAll (): void {
    writeQuietly(join(this.boardDir(), 'cgroup.kill'), '1')
  }

  protected allHierarchies (): string[] { return ['/sys/fs/cgroup'] }

  throttle (cpus: number, alsoPids: number[]): void {
    this.adopt(alsoPids)
    writeFileSync(join(this.boardDir(), 'cpu.max'), `${Math.max(1000, Math.round(cpus * CPU_PERIOD_US))} ${CPU_PERIOD_US}`)
  }

  unthrottle (): void {
    writeQuietly(join(this.boardDir(), 'cpu.max'), `max ${CPU_PERIOD_US}`)
    this.releaseAdopted()
  }
}

function cgroupTree (root: string): string[] {
  if (!isDirectory(root)) return []
  const dirs = [root]
  for (const entry of readdirSync(root, { withFileTypes: true })) {
    if (entry.isDirectory()) dirs.push(...cgroupTree(join(root, entry.name)))
  }
  return dirs
}

function isDirectory (path: string): boolean {
  try { return statSync(path).isDirectory() } catch { return false }
}

function writeQuietly (path: string, value: string): void {
  try { writeFileSync(path, value) } catch {}
}

function rmdirQuietly (path: string): void {
  try { rmdirSync(path) } catch {}
}

/** Lazily unmounts every mount point under the given directories, deepest first. */
function unmountUnder (dirs: string[]): void {
  const mountPoints = readOrEmpty('/proc/self/mountinfo').split('\n')
    .map(line => line.split(' ')[4])
    .filter((point): point is string => point != null)
    .map(point => point.replace(/\\(\d{3})/g, (_match, octal: string) => String.fromCharCode(parseInt(octal, 8))))
    .filter(point => dirs.some(dir => point === dir || point.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length)
  for (const point of mountPoints) spawnSync('umount', ['-l', point], { stdio: 'ignore' })
}

// ---------- images ----------

/** Builds `tag` from the files of `context` in a daemon, offline (never pulls: no registry is reachable); its id. */
export async function buildImage (docker: Docker, context: string, files: string[], tag: string): Promise<string> {
  const stream = await docker.buildImage({ context, src: files }, { t: tag, pull: false, rm: true } as Docker.ImageBuildOptions)
  const output = await new Promise<Array<{ error?: string }>>((resolve, reject) => {
    docker.modem.followProgress(stream, (error: Error | null, lines: Array<{ error?: string }>) => { error == null ? resolve(lines) : reject(error) })
  })
  const failure = output.find(line => line.error != null)
  if (failure != null) throw new Error(`building ${tag} from ${context} failed: ${String(failure.error)}`)
  return (await docker.getImage(tag).inspect()).Id
}

// ---------- base images ----------

export interface LoadBaseImagesResult {
  /** false when the board already had every current base image. */
  loaded: boolean
  images: BaseImage[]
  ms: number
}

/** Loads tandem/busybox and tandem/node-base into a board's daemon unless it already has the current ones. */
export async function loadBaseImages (
  board: Pick<BoardDocker, 'socketPath' | 'name'>,
  options: { signal?: AbortSignal, tarPath?: string, manifestPath?: string } = {}
): Promise<LoadBaseImagesResult> {
  const started = performance.now()
  const images = await readBaseImageManifest(options.manifestPath)
  const tarPath = options.tarPath ?? BASE_IMAGE_CACHE_TAR
  const docker = dockerFromHost(unixDockerHost(board.socketPath))
  if (await hasImages(docker, images)) return { loaded: false, images, ms: performance.now() - started }
  if (!existsSync(tarPath)) throw new BoardDockerError(`no base image cache (${tarPath}): run scripts/provision.sh as root`)
  options.signal?.throwIfAborted()
  const progress = await docker.loadImage(createReadStream(tarPath), { quiet: true })
  await new Promise<void>((resolve, reject) => {
    let failure: string | undefined
    const onAbort = (): void => { (progress as unknown as { destroy: (err: Error) => void }).destroy(new BoardDockerError('image load aborted')) }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    progress.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.includes('"error"')) failure = line
      }
    })
    progress.on('error', reject)
    progress.on('end', () => {
      options.signal?.removeEventListener('abort', onAbort)
      if (failure != null) reject(new BoardDockerError(`docker load into board ${board.name} failed: ${failure}`))
      else resolve()
    })
  })
  if (!await hasImages(docker, images)) throw new BoardDockerError(`board ${board.name}: base images still missing after docker load`)
  return { loaded: true, images, ms: performance.now() - started }
}

async function hasImages (docker: Docker, images: BaseImage[]): Promise<boolean> {
  for (const image of images) {
    try {
      const info = await docker.getImage(image.ref).inspect()
      if (info.Config?.Labels?.[CONTENT_LABEL] !== image.contentHash) return false
    } catch {
      return false
    }
  }
  return true
}

// ---------- cleanup on exit ----------

function cleanupAllBoards (): void {
  for (const board of [...liveBoards]) {
    try { board.emergencyCleanup() } catch {}
  }
}

let exitHandlersInstalled = false

/** Installed when the first board starts, so that merely importing this module changes no signal handling. */
function installExitHandlers (): void {
  if (exitHandlersInstalled) return
  exitHandlersInstalled = true
  onOwnerExit(cleanupAllBoards)
}
