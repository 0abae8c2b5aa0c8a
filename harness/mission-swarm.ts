// A swarm of simulated boards running the vehicle-controller mission (real peers, Docker, CRIU): chaos tests and
// the failover benchmark drive it.
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildImageOn, startSimulatedSwarm, shareMissionImage, type SimulatedBoard, type SimulatedSwarm } from './simulated-board.ts'
import { MissionLogWatch, missionContainers, missionOn, until } from './observe.ts'
import type { MissionStatus } from '../peer/missions.ts'

export const MISSION = 'vehicle-controller'
export const VEHICLE_DIR = new URL('../examples/vehicle/', import.meta.url).pathname

export interface MissionSwarm {
  swarm: SimulatedSwarm
  boards: SimulatedBoard[]
  logs: MissionLogWatch
  /** Output lines of every peer, for diagnosis when a test fails. */
  output: string[]
  status (board: SimulatedBoard): Promise<MissionStatus | undefined>
  /** The mission as its primary sees it (else the newest view any powered board has). */
  anyStatus (): Promise<MissionStatus | undefined>
  boardOf (peerId: string | null | undefined): SimulatedBoard | undefined
  running (): Promise<Array<{ board: string, id: string, epoch: number }>>
  waitFor<T> (what: string, check: () => Promise<T | undefined | false>, timeoutMs?: number): Promise<T>
  /** From the deploy request to the mission reported `protected`, ms. */
  deployToProtectedMs: number
  stop (): Promise<void>
}

export interface MissionSwarmOptions {
  checkpointIntervalMs?: number
  /**
   * Where the vehicle image is before the deploy: built on the first board only (default; the swarm carries it),
   * or copied to every board first (the prepared case, for a baseline).
   */
  image?: 'one-board' | 'every-board'
  /** Boards other than the first start without the base images too (default false): the whole image must travel. */
  bareBoards?: boolean
  /** The vehicle reports every this many ticks (default 10; 1 = every 20 ms, for chaos runs). */
  reportEveryTicks?: number
  /** Extra environment of every peer process (e.g. failure-detector settings). */
  peerEnv?: NodeJS.ProcessEnv
  /** Each board's peer in its own network namespace, so `swarm.partition`/`cut`/`heal` cut links for real. */
  netns?: boolean
  /** Every output line of every peer process (the swarm keeps only the last few thousand in `output`). */
  onLine?: (board: string, line: string) => void
  /** Each board on its own tmpfs of this many bytes, so a test can fill its disk (SimulatedBoard.fillDisk). */
  diskBytes?: number
}

/** Starts `count` boards, builds the vehicle image, deploys the mission and waits until it is `protected`. */
export async function startMissionSwarm (count: number, options: MissionSwarmOptions = {}): Promise<MissionSwarm> {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-chaos-'))
  const output: string[] = []
  const swarm = await startSimulatedSwarm({
    count,
    dir,
    baseImagesOn: index => index === 0 || options.bareBoards !== true,
    env: options.peerEnv,
    netns: options.netns,
    diskBytes: options.diskBytes,
    onLine: (board, line) => {
      output.push(`[${board}] ${line}`)
      if (output.length > 5000) output.splice(0, 1000)
      options.onLine?.(board, line)
    }
  }).catch(async err => { await rm(dir, { recursive: true, force: true }); throw err })
  const boards = swarm.boards
  const logs = new MissionLogWatch(boards, MISSION)
  const ms: MissionSwarm = {
    swarm,
    boards,
    logs,
    output,
    status: async board => await missionOn(board, MISSION),
    anyStatus: async () => {
      // The primary's own view is authoritative (it receives the backup's acks); others learn it by gossip later.
      const known = (await Promise.all(boards.map(async board => await missionOn(board, MISSION)))).filter((s): s is MissionStatus => s != null)
      const newest = known.sort((a, b) => b.epoch - a.epoch)[0]
      return known.find(s => s.role === 'primary' && s.epoch === newest?.epoch) ?? newest
    },
    boardOf: peerId => boards.find(b => safePeerId(b) === peerId),
    running: async () => (await missionContainers(boards, MISSION)).filter(c => c.running),
    waitFor: async (what, check, timeoutMs = 60_000) => await until(what, check, timeoutMs, async () => {
      const views = await Promise.all(boards.map(async b => `${b.name}${b.isOn ? '' : '(off)'}: ${JSON.stringify(summary(await missionOn(b, MISSION)))}`))
      return `${views.join('; ')}\n--- last peer output ---\n${output.slice(-60).join('\n')}`
    }, 100),
    deployToProtectedMs: NaN,
    stop: async () => {
      logs.stop()
      await swarm.stop()
      await rm(dir, { recursive: true, force: true })
    }
  }
  try {
    if (options.image === 'every-board') await shareMissionImage(boards, VEHICLE_DIR, 'tandem/vehicle', ['Dockerfile', 'controller.js'])
    else await buildImageOn(boards[0]!, VEHICLE_DIR, 'tandem/vehicle', ['Dockerfile', 'controller.js'])
    let manifest = await readFile(join(VEHICLE_DIR, 'mission.yaml'), 'utf8')
    if (options.checkpointIntervalMs != null) manifest = manifest.replace(/checkpointIntervalMs:\s*\d+/, `checkpointIntervalMs: ${options.checkpointIntervalMs}`)
    if (options.reportEveryTicks != null) manifest = manifest.replace(/DATA_DIR: \/data/, `DATA_DIR: /data\n  REPORT_EVERY_TICKS: "${options.reportEveryTicks}"`)
    logs.start()
    const deployedAt = performance.now()
    await boards[0]!.peer!.client.request('POST', '/v1/missions', { manifest })
    await ms.waitFor('the mission to be protected (its backup holds the image and a checkpoint)', async () => {
      const status = await ms.anyStatus()
      return status?.state === 'running' && status.protected ? status : undefined
    }, 180_000)
    ms.deployToProtectedMs = performance.now() - deployedAt
    return ms
  } catch (err) {
    await ms.stop()
    throw err
  }
}

function safePeerId (board: SimulatedBoard): string | undefined {
  try { return board.peerId } catch { return undefined }
}

export function summary (status: MissionStatus | undefined): object | undefined {
  if (status == null) return undefined
  return {
    state: status.state,
    epoch: status.epoch,
    primary: status.primary?.slice(-6),
    backup: status.backup?.slice(-6),
    checkpoint: status.lastCheckpoint?.seq,
    replicated: status.replicatedSeq,
    held: status.heldSeq,
    protected: status.protected,
    protection: status.protection.reason,
    reason: status.reason
  }
}
