// Detects which board this host is and what it can run (CRIU, Docker) without blocking startup.
import { readFile } from 'node:fs/promises'
import { availableParallelism, totalmem } from 'node:os'
import { dockerFromHost, probeCriu, probeDocker } from '../checkpoint/docker-host.ts'
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

async function criuCapability (timeoutMs: number, signal?: AbortSignal): Promise<HostCapabilities['criu']> {
  const probe = await probeCriu({ timeoutMs, signal, check: true })
  if (probe.missing) return { version: null, checkOk: false, error: 'criu not installed' }
  if (probe.check == null) return { version: null, checkOk: false, error: probe.versionError ?? 'criu did not run' }
  const lastLine = `${probe.check.stdout}${probe.check.stderr}`.trim().split('\n').at(-1) ?? ''
  return probe.check.exitCode === 0
    ? { version: probe.version, checkOk: true }
    : { version: probe.version, checkOk: false, error: probe.check.exitCode == null ? probe.check.error ?? lastLine : lastLine }
}

async function dockerCapability (dockerHost: string, timeoutMs: number): Promise<HostCapabilities['docker']> {
  try {
    const probe = await probeDocker(dockerFromHost(dockerHost, { timeoutMs }), { timeoutMs })
    return probe.available ? { available: true, version: probe.version.Version ?? null } : { available: false, version: null, error: probe.error.message }
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
      criuCapability(this.#timeoutMs, this.#abort.signal),
      dockerCapability(this.#dockerHost, this.#timeoutMs)
    ])
    if (!this.#abort.signal.aborted) this.#current = { criu, docker, checkedAt: Date.now() }
  }
}
