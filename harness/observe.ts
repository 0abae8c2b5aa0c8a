// Watching a mission across simulated boards from the outside: its status on each peer, its containers on each
// board's Docker daemon, and the vehicle controller's output (followed live, since a power cut takes the logs).
import type { Readable } from 'node:stream'
import type { SimulatedBoard } from './simulated-board.ts'
import { LABEL_EPOCH, LABEL_MISSION, demuxLogs } from '../checkpoint/runtime.ts'
import type { MissionStatus } from '../peer/missions/index.ts'
import { parseVehicleLine, samplesOf, type VehicleLogEntry, type VehicleSample } from '../demo/vehicle-log.ts'
import type { EventOf, MissionEventData } from '../consensus/events.ts'

/** The mission as one board's peer sees it, or undefined (board off, mission unknown, API slow). */
export async function missionOn (board: SimulatedBoard, mission: string): Promise<MissionStatus | undefined> {
  const peer = board.peer
  if (peer == null) return undefined
  try {
    return await peer.client.request<MissionStatus>('GET', `/v1/missions/${encodeURIComponent(mission)}`, undefined, { timeoutMs: 2000 })
  } catch {
    return undefined
  }
}

export interface MissionContainerOnBoard { board: string, id: string, epoch: number, running: boolean }

/** Every container of the mission on the boards that have power. */
export async function missionContainers (boards: SimulatedBoard[], mission: string): Promise<MissionContainerOnBoard[]> {
  const found: MissionContainerOnBoard[] = []
  for (const board of boards) {
    if (!board.docker.running) continue
    // A frozen board's daemon accepts the connection and never answers: bound every look.
    const list = await board.dockerClient().listContainers({ all: true, filters: { label: [`${LABEL_MISSION}=${mission}`] }, abortSignal: AbortSignal.timeout(1000) } as object).catch(() => [])
    // A container paused for a checkpoint still holds the mission's state: it counts as running.
    for (const c of list) found.push({ board: board.name, id: c.Id, epoch: Number(c.Labels[LABEL_EPOCH] ?? -1), running: c.State === 'running' || c.State === 'paused' })
  }
  return found
}

export interface FollowedContainer {
  board: string
  id: string
  epoch: number
  /** When the follower first saw the container (Date.now()). */
  seenAt: number
  entries: VehicleLogEntry[]
}

/** Follows the output of every container of a mission on every board, as it appears. */
export class MissionLogWatch {
  readonly #boards: SimulatedBoard[]
  readonly #mission: string
  readonly #followed = new Map<string, FollowedContainer>()
  readonly #streams = new Set<Readable>()
  #timer: NodeJS.Timeout | undefined
  #polling = false

  constructor (boards: SimulatedBoard[], mission: string) {
    this.#boards = boards
    this.#mission = mission
  }

  start (intervalMs = 100): void {
    this.#timer = setInterval(() => { void this.#poll() }, intervalMs)
    void this.#poll()
  }

  stop (): void {
    clearInterval(this.#timer)
    for (const stream of this.#streams) stream.destroy()
    this.#streams.clear()
  }

  containers (): FollowedContainer[] { return [...this.#followed.values()].sort((a, b) => a.seenAt - b.seenAt) }

  get (id: string): FollowedContainer | undefined { return this.#followed.get(id) }

  /** The newest vehicle report of any container. */
  latest (): (VehicleSample & { container: FollowedContainer }) | undefined {
    let best: (VehicleSample & { container: FollowedContainer }) | undefined
    for (const container of this.#followed.values()) {
      const last = samplesOf(container.entries).at(-1)
      if (last != null && (best == null || last.wall > best.wall)) best = { ...last, container }
    }
    return best
  }

  async #poll (): Promise<void> {
    if (this.#polling) return
    this.#polling = true
    try {
      for (const board of this.#boards) {
        if (!board.docker.running) continue
        const docker = board.dockerClient()
        const list = await docker.listContainers({ filters: { label: [`${LABEL_MISSION}=${this.#mission}`] }, abortSignal: AbortSignal.timeout(1000) } as object).catch(() => [])
        for (const c of list) {
          if (this.#followed.has(c.Id)) continue
          const followed: FollowedContainer = { board: board.name, id: c.Id, epoch: Number(c.Labels[LABEL_EPOCH] ?? -1), seenAt: Date.now(), entries: [] }
          this.#followed.set(c.Id, followed)
          try {
            const stream = await docker.getContainer(c.Id).logs({ follow: true, stdout: true, stderr: true }) as unknown as Readable
            this.#streams.add(stream)
            let pending = Buffer.alloc(0)
            stream.on('data', (chunk: Buffer) => {
              pending = Buffer.concat([pending, chunk])
              // Docker multiplexes stdout/stderr in frames of an 8-byte header plus payload.
              let offset = 0
              while (offset + 8 <= pending.length) {
                const size = pending.readUInt32BE(offset + 4)
                if (offset + 8 + size > pending.length) break
                offset += 8 + size
              }
              const complete = pending.subarray(0, offset)
              pending = pending.subarray(offset)
              for (const line of demuxLogs(complete).split('\n')) {
                const entry = parseVehicleLine(line)
                if (entry != null) followed.entries.push(entry)
              }
            })
            stream.on('error', () => {})
            stream.on('close', () => { this.#streams.delete(stream) })
          } catch {
            // The container vanished between list and attach: nothing to follow.
          }
        }
      }
    } finally {
      this.#polling = false
    }
  }
}

export async function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, ms)
    signal?.addEventListener('abort', () => { clearTimeout(timer); reject(signal.reason) }, { once: true })
  })
}

/** Polls until `check` yields a value (not undefined/false) or the time runs out; throws with `describe()`. */
export async function until<T> (what: string, check: () => Promise<T | undefined | false>, timeoutMs: number, describe?: () => Promise<string> | string, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined && value !== false) return value
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${describe != null ? `: ${await describe()}` : ''}`)
    await sleep(intervalMs)
  }
}

/** A restore as the new primary's event reports it (peer/missions/runner.ts records it). */
export type RestoreReport = EventOf<'restored'>

/** The newest restore among a mission's events, or null when the mission did not restore a checkpoint. */
export function lastRestore (events: Array<{ event: MissionEventData }>): RestoreReport | null {
  return events.map(e => e.event).findLast(e => e.kind === 'restored') ?? null
}
