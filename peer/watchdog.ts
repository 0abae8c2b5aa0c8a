// A peer's watchdog: a small process beside the peer, with its own event loop, that enforces the peer's fencing.
//
// 1. The lease. The peer renews a lease over the watchdog's stdin on every tick of its consensus machine (every
//    50 ms): `lease <validForMs> <sentAtWallMs> <containerId,containerId,...|->`, the ids of the mission containers
//    it runs. While the lease is valid the watchdog learns each container's freezer cgroup (one Docker inspect per
//    new container: its init pid, then /proc/<pid>/cgroup). When no renewal comes in time (the peer's event loop is
//    stopped: SIGSTOP, a long stall, a frozen board), the watchdog freezes the containers through the cgroup
//    freezer at once, with neither the peer nor a responsive dockerd, and kills them (SIGKILL to every process of
//    the frozen cgroup, then a thaw so the pending SIGKILL lands before any code runs) after `graceMs`, or as soon as
//    the peer renews again (a peer that was stopped past its lease self-fences anyway). A frozen container is never
//    thawed alive. The validity (`leaseValidityMs`, 650 ms of the consensus's 700 ms lease) ends well before another
//    board may take over: that needs the detector's `dead` plus `primarySilenceMs` (1.1 s) of silence, then a restore.
//    The lease is checked against both the wall clock (the renewal's own send time: it keeps running while the whole
//    board is frozen) and the monotonic clock (a wall clock stepped back extends nothing), on every timer wake
//    (every 20 ms) and before every renewal is applied, so that after a thaw the old lease is judged first.
// 2. The peer died (end-of-file without "bye": SIGKILL, crash, OOM): its containers are killed through their
//    cgroups and removed through Docker. A container must never outlive the peer that fences it.
// 3. "bye": the peer is stopping cleanly and has removed its containers itself; the watchdog leaves.
//
// Usage (started by the peer, not by people): node peer/watchdog.ts DOCKER_HOST PEER_ID
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { flushCompileCache } from 'node:module'
import { setPriority } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { logFormatFromEnv, openLogger, type PeerLogger } from './logger.ts'
import { WatchdogDocker } from '../checkpoint/engine-api.ts'

const GOODBYE = 'bye'
const FREEZER_ROOT = '/sys/fs/cgroup/freezer'
/** How often the watchdog wakes to check its lease, ms. */
export const CHECK_INTERVAL_MS = 20
/** A frozen container is killed this long after its lease ran out, if the peer has not come back before. */
export const DEFAULT_GRACE_MS = 2000
/** How long a killed container's cgroup is watched and killed again until it is empty. */
const REAP_FOR_MS = 30_000

export { leaseValidityMs } from './config.ts'

export interface Watchdog {
  readonly pid: number
  /**
   * Renews the lease for `validForMs` from now: the watchdog freezes `containerIds` (this peer's running mission
   * containers) if the next renewal does not come in time. Called on every tick of the consensus machine.
   */
  renew (validForMs: number, containerIds: readonly string[]): void
  /** The peer is stopping cleanly: the watchdog leaves without touching anything. */
  dismiss (): void
}

/** Starts the watchdog of a peer in its own process group (a Ctrl-C to the peer's terminal does not reach it). */
export function startWatchdog (dockerHost: string, peerId: string, options: { graceMs?: number } = {}): Watchdog {
  const args = [fileURLToPath(import.meta.url), dockerHost, peerId]
  if (options.graceMs != null) args.push(String(options.graceMs))
  const child: ChildProcess = spawn(process.execPath, args, {
    stdio: ['pipe', 'ignore', 'inherit'],
    detached: true
  })
  child.unref()
  const stdin = child.stdin as NodeJS.WritableStream & { writable: boolean }
  stdin.on('error', () => {})
  ;(stdin as unknown as { _handle?: { unref?: () => void } })._handle?.unref?.()
  let dismissed = false
  return {
    pid: child.pid ?? -1,
    renew: (validForMs, containerIds) => {
      if (dismissed || !stdin.writable) return
      stdin.write(`lease ${Math.round(validForMs)} ${Date.now()} ${containerIds.length > 0 ? containerIds.join(',') : '-'}\n`)
    },
    dismiss: () => {
      if (dismissed) return
      dismissed = true
      stdin.end(`${GOODBYE}\n`)
    }
  }
}

// ---------- the watchdog process ----------

/** The freezer cgroup directory of a process, from /proc/<pid>/cgroup (cgroup v1). */
export function freezerDirOf (pid: number): string | undefined {
  let text: string
  try { text = readFileSync(`/proc/${pid}/cgroup`, 'utf8') } catch { return undefined }
  for (const line of text.split('\n')) {
    const [, controllers, path] = line.split(':')
    if (controllers?.split(',').includes('freezer') === true && path != null) {
      const dir = join(FREEZER_ROOT, path)
      return path !== '/' && existsSync(join(dir, 'freezer.state')) ? dir : undefined
    }
  }
  return undefined
}

function cgroupTree (root: string): string[] {
  const dirs = [root]
  try {
    for (const entry of readdirSync(root, { withFileTypes: true })) if (entry.isDirectory()) dirs.push(...cgroupTree(join(root, entry.name)))
  } catch {}
  return dirs
}

function pidsIn (dir: string): number[] {
  const pids: number[] = []
  for (const d of cgroupTree(dir)) {
    let text = ''
    try { text = readFileSync(join(d, 'cgroup.procs'), 'utf8') } catch {}
    for (const line of text.split('\n')) if (line !== '') pids.push(Number(line))
  }
  return pids
}

function writeState (dir: string, state: 'FROZEN' | 'THAWED'): boolean {
  try { writeFileSync(join(dir, 'freezer.state'), state); return true } catch { return false }
}

function readState (dir: string): string {
  try { return readFileSync(join(dir, 'freezer.state'), 'utf8').trim() } catch { return 'GONE' }
}

function isDir (path: string): boolean {
  try { return statSync(path).isDirectory() } catch { return false }
}

interface Known { dir: string | undefined, learning: boolean, triedAt: number }
interface Doomed { id: string, dir: string, frozenAt: number, confirmedAt: number | undefined }

class LeaseEnforcer {
  readonly #dockerHost: string
  readonly #peerId: string
  readonly #graceMs: number
  readonly #docker: WatchdogDocker
  readonly #log: (line: string) => void
  /** The current lease: ids, and when it ends on the wall clock (sender's time) and on the monotonic clock. */
  #ids: string[] = []
  #wallDeadline = Infinity
  #monoDeadline = Infinity
  #lastSentAt = 0
  #lapsed = false
  readonly #known = new Map<string, Known>()
  readonly #doomed = new Map<string, Doomed>()
  /** Containers this watchdog froze or killed: never thawed alive, never leased again. */
  readonly #fenced = new Set<string>()
  /** Killed containers whose cgroups still hold processes. */
  readonly #dying = new Map<string, { dir: string, since: number, passes: number }>()
  #reaper: NodeJS.Timeout | undefined
  #timer: NodeJS.Timeout | undefined

  constructor (dockerHost: string, peerId: string, graceMs: number, logger: PeerLogger) {
    this.#log = line => { logger.log(`tandem watchdog: ${line}`, { component: 'watchdog' }) }
    this.#dockerHost = dockerHost
    this.#peerId = peerId
    this.#graceMs = graceMs
    this.#docker = new WatchdogDocker(dockerHost, peerId)
  }

  start (): void {
    this.#timer = setInterval(() => { this.check() }, CHECK_INTERVAL_MS)
  }

  stop (): void { clearInterval(this.#timer) }

  /** On every wake: a lapsed lease freezes its containers; frozen containers past the grace are killed. */
  check (): void {
    const wall = Date.now()
    const mono = performance.now()
    if (!this.#lapsed && (wall > this.#wallDeadline || mono > this.#monoDeadline)) {
      this.#lapsed = true
      this.#freezeAll(`lease lapsed ${wall - this.#wallDeadline} ms ago (last renewal sent ${wall - this.#lastSentAt} ms ago)`)
    }
    for (const doomed of this.#doomed.values()) {
      const state = readState(doomed.dir)
      if (state === 'GONE') { this.#doomed.delete(doomed.id); continue }
      if (state === 'FROZEN' && doomed.confirmedAt == null) {
        doomed.confirmedAt = performance.now()
        this.#log(`container ${doomed.id.slice(0, 12)} frozen ${Math.round(doomed.confirmedAt - doomed.frozenAt)} ms after the freeze was asked`)
      }
      // Something else (e.g. CRIU ending a dump with --leave-running) may thaw it: freeze it again.
      if (state === 'THAWED') writeState(doomed.dir, 'FROZEN')
      if (mono - doomed.frozenAt >= this.#graceMs) this.#kill(doomed, 'grace over, peer still silent')
    }
  }

  /** One line from the peer. The old lease is judged before the renewal applies (after a thaw both wake at once). */
  line (text: string): void {
    const parts = text.trim().split(' ')
    if (parts[0] !== 'lease') return
    const validFor = Number(parts[1])
    const sentAt = Number(parts[2])
    if (!Number.isFinite(validFor) || !Number.isFinite(sentAt)) return
    this.check()
    // The renewal itself shows whether the peer outlived its lease (its own clock, sent with it): a renewal sent
    // after the previous one's end means the peer was stopped meanwhile, even if this process is only now reading.
    if (!this.#lapsed && sentAt > this.#wallDeadline) {
      this.#lapsed = true
      this.#freezeAll(`renewal sent ${sentAt - this.#wallDeadline} ms after the lease's end`)
    }
    if (this.#lapsed) {
      // The peer is back after its lease ended: it self-fences; its frozen containers are killed now, never thawed.
      for (const doomed of [...this.#doomed.values()]) this.#kill(doomed, 'peer back after its lease lapsed')
      this.#lapsed = false
    }
    const ids = parts[3] == null || parts[3] === '-' ? [] : parts[3].split(',').filter(id => id !== '' && !this.#fenced.has(id))
    this.#ids = ids
    this.#lastSentAt = sentAt
    this.#wallDeadline = sentAt + validFor
    this.#monoDeadline = performance.now() + validFor
    for (const id of [...this.#known.keys()]) if (!ids.includes(id)) this.#known.delete(id)
    for (const id of ids) this.#learn(id)
  }

  /** The peer died: every container it leased is killed through its cgroup, then everything it owns is removed. */
  async peerDied (): Promise<void> {
    this.stop()
    for (const id of this.#ids) {
      const dir = this.#known.get(id)?.dir
      if (dir != null && !this.#doomed.has(id)) this.#doomed.set(id, { id, dir, frozenAt: performance.now(), confirmedAt: undefined })
      if (dir != null) writeState(dir, 'FROZEN')
    }
    for (const doomed of [...this.#doomed.values()]) this.#kill(doomed, 'peer died')
    try {
      const killed = await this.#docker.removeAllOfPeer()
      if (killed > 0) this.#log(`peer ${this.#peerId} died; removed its ${killed} mission container(s)`)
    } catch (err) {
      // The daemon died with the peer (a power cut): its containers died too.
      this.#log(`peer ${this.#peerId} died; Docker at ${this.#dockerHost} unreachable (${(err as Error).message})`)
    }
  }

  /** A clean goodbye: containers frozen by a lapsed lease are still killed (never left frozen, never thawed). */
  goodbye (): void {
    this.stop()
    for (const doomed of [...this.#doomed.values()]) this.#kill(doomed, 'peer left')
  }

  #freezeAll (why: string): void {
    const started = performance.now()
    const frozen: string[] = []
    for (const id of this.#ids) {
      const dir = this.#known.get(id)?.dir
      this.#fenced.add(id)
      if (dir == null) {
        // Not learned yet (started less than a Docker round trip ago): Docker must do it, whenever it answers.
        this.#log(`${why}: container ${id.slice(0, 12)} has no known cgroup; asking Docker to kill it`)
        void this.#docker.kill(id).catch(() => {})
        continue
      }
      writeState(dir, 'FROZEN')
      this.#doomed.set(id, { id, dir, frozenAt: started, confirmedAt: undefined })
      frozen.push(id.slice(0, 12))
    }
    this.#ids = []
    if (frozen.length > 0) this.#log(`${why}: froze ${frozen.join(', ')}`)
  }

  #kill (doomed: Doomed, why: string): void {
    // A frozen process keeps a SIGKILL pending: send it to every process of the cgroup, then thaw, so that each dies
    // on its way back to user space without running another instruction of the mission.
    writeState(doomed.dir, 'FROZEN')
    const pids = pidsIn(doomed.dir)
    for (const pid of pids) { try { process.kill(pid, 'SIGKILL') } catch {} }
    for (const dir of cgroupTree(doomed.dir)) writeState(dir, 'THAWED')
    this.#doomed.delete(doomed.id)
    this.#log(`${why}: killed container ${doomed.id.slice(0, 12)} (${pids.length} process(es)) ${Math.round(performance.now() - doomed.frozenAt)} ms after freezing it`)
    this.#dying.set(doomed.id, { dir: doomed.dir, since: performance.now(), passes: 0 })
    this.#reaper ??= setInterval(() => { this.#reap() }, CHECK_INTERVAL_MS).unref()
  }

  /**
   * Until a killed container's cgroup is empty: processes still forking when the signal went out, and a cgroup frozen
   * again after the kill's thaw (a CRIU dump in flight restores the freezer state it found), whose pending SIGKILL
   * would otherwise never land: Docker then lists the container running for ever and no stop can end it.
   */
  #reap (): void {
    for (const [id, dying] of this.#dying) {
      const left = isDir(dying.dir) ? pidsIn(dying.dir) : []
      const ageMs = performance.now() - dying.since
      if (left.length === 0 || ageMs > REAP_FOR_MS) {
        this.#dying.delete(id)
        if (left.length > 0) this.#log(`container ${id.slice(0, 12)}: ${left.length} process(es) survive ${Math.round(ageMs)} ms of SIGKILL and thaw`)
        else if (dying.passes > 1) this.#log(`container ${id.slice(0, 12)}: gone after ${dying.passes} kill passes (${Math.round(ageMs)} ms)`)
        continue
      }
      dying.passes++
      writeState(dying.dir, 'FROZEN')
      for (const pid of left) { try { process.kill(pid, 'SIGKILL') } catch {} }
      for (const dir of cgroupTree(dying.dir)) writeState(dir, 'THAWED')
    }
    if (this.#dying.size === 0 && this.#reaper != null) { clearInterval(this.#reaper); this.#reaper = undefined }
  }

  /** Learns a leased container's freezer cgroup from its init pid while the lease is valid (Docker answers). */
  #learn (id: string): void {
    const known = this.#known.get(id)
    if (known?.dir != null && isDir(known.dir)) return
    if (known?.learning === true || (known != null && performance.now() - known.triedAt < 200)) return
    const entry: Known = { dir: undefined, learning: true, triedAt: performance.now() }
    this.#known.set(id, entry)
    this.#docker.initPidOf(id, 2000)
      .then(pid => { if (pid != null) entry.dir = freezerDirOf(pid) })
      .catch(() => {})
      .finally(() => { entry.learning = false; entry.triedAt = performance.now() })
  }
}

async function main (dockerHost: string, peerId: string, graceMs: number): Promise<void> {
  // On a thaw every process of the board becomes runnable at once: the enforcer must run first. nice -20 is the
  // highest weight the fair scheduler gives (the peer asks for -10; the mission runs at 0).
  try { setPriority(-20) } catch {}
  // The peer passes its --log-format down through the environment (LOG_FORMAT_ENV).
  const enforcer = new LeaseEnforcer(dockerHost, peerId, graceMs, await openLogger(logFormatFromEnv(), { peer: peerId }))
  enforcer.start()
  flushCompileCache()
  let pending = ''
  let goodbye = false
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk: string) => {
    pending += chunk
    let newline = pending.indexOf('\n')
    while (newline >= 0) {
      const line = pending.slice(0, newline)
      pending = pending.slice(newline + 1)
      if (line.trim() === GOODBYE) goodbye = true
      else if (!goodbye) enforcer.line(line)
      newline = pending.indexOf('\n')
    }
  })
  await new Promise(resolve => process.stdin.once('end', resolve))
  if (goodbye || pending.trim() === GOODBYE) enforcer.goodbye()
  else await enforcer.peerDied()
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [dockerHost, peerId, grace] = process.argv.slice(2)
  if (dockerHost == null || peerId == null) {
    process.stderr.write('usage: node peer/watchdog.ts DOCKER_HOST PEER_ID [GRACE_MS]\n')
    process.exitCode = 2
  } else {
    await main(dockerHost, peerId, grace != null ? Number(grace) : DEFAULT_GRACE_MS)
  }
}
