// Detects which board this host is and what it can run (CRIU, Docker) without blocking startup.
import { readFile } from 'node:fs/promises'
import { execFile } from 'node:child_process'
import { availableParallelism, totalmem } from 'node:os'
import Docker from 'dockerode'
import { BOARD_PROFILES, boardNames, findBoard, isGeneric, type BoardProfile } from './profiles.ts'
import type { Architecture } from '../manifest/manifest.ts'

export class UnknownBoardError extends Error {}

/** Facts read from the host that decide which profile matches. */
export interface HostIdentity {
  deviceTreeModel: string | null
  cpuinfo: string
  arch: string
}

export async function readHostIdentity (): Promise<HostIdentity> {
  const [deviceTreeModel, cpuinfo] = await Promise.all([
    readFile('/proc/device-tree/model', 'utf8').then(text => text.replace(/\0/g, '').trim(), () => null),
    readFile('/proc/cpuinfo', 'utf8').catch(() => '')
  ])
  return { deviceTreeModel, cpuinfo, arch: process.arch }
}

/** Picks the profile matching a host: device tree model first, then cpuinfo, then the architecture. */
export function matchBoard (host: HostIdentity): BoardProfile {
  const model = (host.deviceTreeModel ?? '').toLowerCase()
  const cpuinfo = host.cpuinfo.toLowerCase()
  const byName = (name: string): BoardProfile => findBoard(name) as BoardProfile
  if (model.includes('raspberry pi model b') && !model.includes('model b+') && !/pi [2-9]/.test(model)) return byName('raspberry-pi-b')
  if (model.includes('beaglebone black')) return byName('beaglebone-black')
  if (model.includes('odroid-xu3') || model.includes('odroid xu3')) return byName('odroid-xu3')
  if (cpuinfo.includes('edison') || /atom\(tm\) cpu z34/.test(cpuinfo)) return byName('intel-edison')
  if (/hardware\s*:\s*odroid-xu3/.test(cpuinfo)) return byName('odroid-xu3')
  return host.arch === 'arm64' ? byName('generic-arm64') : byName('generic-amd64')
}

/** The host's board: `override` (a profile name, for simulated boards) or the detected one. */
export async function detectBoard (override?: string, host?: HostIdentity): Promise<BoardProfile> {
  if (override != null) {
    const profile = findBoard(override)
    if (profile == null) throw new UnknownBoardError(`unknown board '${override}' (known: ${boardNames().join(', ')})`)
    return measured(profile)
  }
  return measured(matchBoard(host ?? await readHostIdentity()))
}

function measured (profile: BoardProfile): BoardProfile {
  if (!isGeneric(profile)) return { ...profile }
  return { ...profile, arch: process.arch as Architecture, cores: availableParallelism(), memoryMb: Math.round(totalmem() / 2 ** 20) }
}

export { BOARD_PROFILES }

/** What the host can do for missions; `null` means not known yet (detection still running). */
export interface HostCapabilities {
  criu: { version: string | null, checkOk: boolean | null, error?: string }
  docker: { available: boolean | null, version: string | null, error?: string }
  checkedAt: number | null
}

export const UNKNOWN_CAPABILITIES: HostCapabilities = {
  criu: { version: null, checkOk: null },
  docker: { available: null, version: null },
  checkedAt: null
}

function run (file: string, args: string[], timeoutMs: number, signal?: AbortSignal): Promise<{ code: number, output: string }> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, signal }, (err, stdout, stderr) => {
      const output = `${stdout}${stderr}`
      if (err == null) { resolve({ code: 0, output }); return }
      const code = (err as NodeJS.ErrnoException).code
      if (typeof code === 'number') { resolve({ code, output }); return }
      reject(err)
    })
  })
}

export async function probeCriu (timeoutMs: number, signal?: AbortSignal): Promise<HostCapabilities['criu']> {
  try {
    const version = await run('criu', ['--version'], timeoutMs, signal)
    const match = /Version:\s*([\w.\-]+)/.exec(version.output)
    const check = await run('criu', ['check'], timeoutMs, signal)
    const lastLine = check.output.trim().split('\n').at(-1) ?? ''
    return check.code === 0
      ? { version: match?.[1] ?? null, checkOk: true }
      : { version: match?.[1] ?? null, checkOk: false, error: lastLine }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    return { version: null, checkOk: false, error: code === 'ENOENT' ? 'criu not installed' : String((err as Error).message) }
  }
}

/** Builds a dockerode client from a Docker host URL (`unix:///path` or `tcp://host:port`). */
export function dockerClient (dockerHost: string, timeoutMs?: number): Docker {
  const url = new URL(dockerHost)
  if (url.protocol === 'unix:') return new Docker({ socketPath: url.pathname, timeout: timeoutMs })
  if (url.protocol === 'tcp:' || url.protocol === 'http:') {
    return new Docker({ host: url.hostname, port: Number(url.port || 2375), protocol: 'http', timeout: timeoutMs })
  }
  throw new Error(`unsupported Docker host '${dockerHost}' (use unix:///path or tcp://host:port)`)
}

export async function probeDocker (dockerHost: string, timeoutMs: number): Promise<HostCapabilities['docker']> {
  try {
    const version = await dockerClient(dockerHost, timeoutMs).version() as { Version?: string }
    return { available: true, version: version.Version ?? null }
  } catch (err) {
    return { available: false, version: null, error: (err as Error).message }
  }
}

/**
 * Detects CRIU and Docker in the background and keeps the last answer: `current()` never waits.
 * `criu check` can take a second on a small board, so startup must not depend on it.
 */
export class CapabilityProbe {
  readonly #dockerHost: string
  readonly #refreshMs: number
  readonly #timeoutMs: number
  #current: HostCapabilities = UNKNOWN_CAPABILITIES
  #timer: NodeJS.Timeout | undefined
  #abort = new AbortController()
  #running: Promise<void> | undefined

  constructor (options: { dockerHost: string, refreshMs?: number, timeoutMs?: number }) {
    this.#dockerHost = options.dockerHost
    this.#refreshMs = options.refreshMs ?? 60_000
    this.#timeoutMs = options.timeoutMs ?? 10_000
  }

  current (): HostCapabilities { return this.#current }

  start (): void {
    this.#abort = new AbortController()
    this.#running = this.refresh()
    this.#timer = setInterval(() => { this.#running = this.refresh() }, this.#refreshMs)
    this.#timer.unref()
  }

  async stop (): Promise<void> {
    clearInterval(this.#timer)
    this.#abort.abort()
    await this.#running?.catch(() => {})
  }

  async refresh (): Promise<void> {
    const [criu, docker] = await Promise.all([
      probeCriu(this.#timeoutMs, this.#abort.signal),
      probeDocker(this.#dockerHost, this.#timeoutMs)
    ])
    if (!this.#abort.signal.aborted) this.#current = { criu, docker, checkedAt: Date.now() }
  }
}
