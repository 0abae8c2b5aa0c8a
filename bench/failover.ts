// `npm run bench:failover`: repeated power cuts of the primary board on simulated boards (real peers, Docker, CRIU)
// with default settings. Per run: detection, restore, downtime (last report of the old primary to first report of
// the new one), state lost, and whether two containers of the mission ever ran at once. Baseline in the same run:
// the mission restarted cold from its image on a surviving board after the same detection (what an orchestrator
// without checkpoints does).
import { parseArgs } from 'node:util'
import type { Readable } from 'node:stream'
import { startMissionSwarm, MISSION, type MissionSwarm } from '../harness/mission-swarm.ts'
import { lastRestore, missionContainers, missionOn, sleep } from '../harness/observe.ts'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ImageFetchRecord } from '../peer/image-inventory.ts'
import { measureTakeover, parseVehicleLine, samplesOf, type VehicleLogEntry } from '../demo/vehicle-log.ts'
import { demuxLogs } from '../checkpoint/runtime.ts'
import { TICK_HZ } from '../examples/vehicle/controller.js'
import { buildImageOn, type SimulatedBoard } from '../harness/simulated-board.ts'
import { distribution, table, writeResults } from './report.ts'

const USAGE = `usage: npm run bench:failover -- [--runs N] [--boards N] [--quick] [--silent] [--image-on-one-board]

  --runs N     power cuts to measure (default 20; --quick: 5)
  --boards N   simulated boards (default 3)
  --silent     the primary board freezes instead of dying: no process exits, no connection is refused, as a real
               power cut looks from the network (on one host a killed peer's port refuses connections at once)
  --image-on-one-board
               build the vehicle image on board-1 only, the other boards bare (no base images either): measures the
               time from deploy to protected and the bytes the image costs, then a second mission on the same base;
               without it the image is copied to every board first (the prepared case)`

interface Run {
  run: number
  failedBoard: string
  newPrimary: string
  detectionMs: number | null
  restoreMs: number | null
  /** Where the restore went, ms: container create, writing the checkpoint's files, CRIU (docker start). */
  restorePhases: { createMs: number, filesMs: number, criuMs: number } | null
  downtimeMs: number
  stateLostTicks: number
  resumedFrom: string
  checkpointSeq: number | null
  maxConcurrent: number
  baselineColdStartMs: number | null
}

function flags (): { runs: number, boards: number, silent: boolean, imageOnOneBoard: boolean } {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, boards: { type: 'string' }, quick: { type: 'boolean' }, silent: { type: 'boolean' }, 'image-on-one-board': { type: 'boolean' }, help: { type: 'boolean' } } })
  if (values.help === true) { console.log(USAGE); process.exit(0) }
  const runs = Number(values.runs ?? (values.quick === true ? 5 : 20))
  const boards = Number(values.boards ?? 3)
  if (!Number.isInteger(runs) || runs < 1) { console.error(`bench:failover: --runs must be a positive whole number\n${USAGE}`); process.exit(2) }
  if (!Number.isInteger(boards) || boards < 2 || boards > 6) { console.error(`bench:failover: --boards must be 2 to 6\n${USAGE}`); process.exit(2) }
  return { runs, boards, silent: values.silent === true, imageOnOneBoard: values['image-on-one-board'] === true }
}

interface ImageTravel { mission: string, deployToProtectedMs: number, totalBytes: number, fetchedBytes: number, fetchMs: number }

function mb (bytes: number): string { return (bytes / 1e6).toFixed(2) }

async function fetchRecord (board: SimulatedBoard, image: string): Promise<ImageFetchRecord | undefined> {
  const status = await board.peer?.status() as { images?: { fetched?: ImageFetchRecord[] } } | undefined
  return status?.images?.fetched?.findLast(f => f.image === image && f.loaded)
}

/**
 * The vehicle mission was deployed with its image on board-1 only: what its backup fetched. Then a second mission
 * whose image adds one small layer to the vehicle's, built on the primary: only that layer should travel.
 */
async function measureImageTravel (ms: MissionSwarm): Promise<ImageTravel[]> {
  const first = (await ms.anyStatus())!
  const backup = ms.boardOf(first.backup)!
  const firstFetch = await fetchRecord(backup, 'tandem/vehicle:latest')
  const figures: ImageTravel[] = [{ mission: MISSION, deployToProtectedMs: ms.deployToProtectedMs, totalBytes: firstFetch?.totalBytes ?? NaN, fetchedBytes: firstFetch?.fetchedBytes ?? NaN, fetchMs: firstFetch?.ms ?? NaN }]
  const primary = ms.boardOf(first.primary)!
  const context = await mkdtemp(join(tmpdir(), 'tandem-bench-image-'))
  try {
    await writeFile(join(context, 'Dockerfile'), 'FROM tandem/vehicle\nCOPY note.txt /app/note.txt\n')
    await writeFile(join(context, 'note.txt'), 'a second mission on the same base\n')
    await buildImageOn(primary, context, 'tandem/vehicle-b', ['Dockerfile', 'note.txt'])
  } finally {
    await rm(context, { recursive: true, force: true })
  }
  const deployedAt = performance.now()
  await primary.peer!.client.request('POST', '/v1/missions', { manifest: 'name: vehicle-b\nimage: tandem/vehicle-b\nenv: {DATA_DIR: /data}\ndata: /data\n' })
  const second = await ms.waitFor('vehicle-b protected', async () => {
    const s = await missionOn(primary, 'vehicle-b')
    return s?.protected === true ? s : undefined
  }, 120_000)
  const secondFetch = await fetchRecord(ms.boardOf(second.backup)!, 'tandem/vehicle-b:latest')
  figures.push({ mission: 'vehicle-b', deployToProtectedMs: performance.now() - deployedAt, totalBytes: secondFetch?.totalBytes ?? NaN, fetchedBytes: secondFetch?.fetchedBytes ?? NaN, fetchMs: secondFetch?.ms ?? NaN })
  // The failover runs measure the vehicle mission alone.
  await primary.peer!.client.request('DELETE', '/v1/missions/vehicle-b')
  return figures
}

/** First time a surviving peer logged the failed peer as dead, from the peers' own timestamps. */
function detectedAt (ms: MissionSwarm, peerId: string, after: number): number | null {
  for (const line of ms.output) {
    const match = /^\[[^\]]+\] (\S+) membership: (\S+) \S+ -> dead/.exec(line)
    if (match == null || match[2] !== peerId) continue
    const at = Date.parse(match[1] as string)
    if (at >= after) return at
  }
  return null
}

/** Baseline: start the mission's image from scratch on `board`; ms until its first report. */
async function coldStart (board: SimulatedBoard): Promise<number> {
  const docker = board.dockerClient()
  const startedAt = Date.now()
  const container = await docker.createContainer({ Image: 'tandem/vehicle', Env: ['DATA_DIR=/tmp/baseline'], HostConfig: { NetworkMode: 'none' }, Labels: { 'tandem.bench': 'baseline' } })
  try {
    await container.start()
    const stream = await container.logs({ follow: true, stdout: true, stderr: true }) as unknown as Readable
    const first = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error('baseline container printed no report in 30 s')) }, 30_000)
      stream.on('data', (chunk: Buffer) => {
        for (const line of demuxLogs(chunk).split('\n')) {
          const entry = parseVehicleLine(line)
          if (entry?.kind === 'report') { clearTimeout(timer); resolve(entry.sample.wall) }
        }
      })
    })
    stream.destroy()
    return first - startedAt
  } finally {
    await container.remove({ force: true }).catch(() => {})
  }
}

async function main (): Promise<void> {
  const { runs, boards: boardCount, silent, imageOnOneBoard } = flags()
  const failure = silent ? 'silent failures (board frozen: no exit, no refused connection)' : 'power cuts (peer and Docker daemon killed)'
  console.log(`bench:failover: ${runs} ${failure} of the primary on ${boardCount} simulated boards (default settings)`)
  const ms = await startMissionSwarm(boardCount, imageOnOneBoard ? { image: 'one-board', bareBoards: true } : { image: 'every-board' })
  const imageFigures = imageOnOneBoard ? await measureImageTravel(ms) : null
  const results: Run[] = []
  const interval = (await ms.anyStatus())?.spec.checkpointIntervalMs ?? 1000
  try {
    for (let run = 1; run <= runs; run++) {
      const steady = await ms.waitFor(`run ${run}: a running mission with a synced backup`, async () => {
        const s = await ms.anyStatus()
        return s?.state === 'running' && s.backup != null && s.replicatedSeq != null && s.lastCheckpoint != null &&
          s.lastCheckpoint.seq - s.replicatedSeq <= 1 && ms.boards.every(b => b.isOn) ? s : undefined
      }, 120_000)
      // Cut at a random phase of the checkpoint cycle.
      await sleep(1500 + Math.random() * interval)
      const primary = ms.boardOf(steady.primary)!
      const oldContainer = (await ms.running()).find(c => c.board === primary.name)
      let maxConcurrent = 0
      let sampling = true
      const sampler = (async () => {
        while (sampling) {
          maxConcurrent = Math.max(maxConcurrent, (await missionContainers(ms.boards, MISSION)).filter(c => c.running).length)
          await sleep(50)
        }
      })()
      const cutAt = Date.now()
      if (silent) primary.freeze()
      else await primary.powerCut()
      const after = await ms.waitFor(`run ${run}: takeover`, async () => {
        for (const board of ms.boards.filter(b => b.isOn)) {
          const s = await ms.status(board)
          if (s?.primary === board.peerId && s.state === 'running' && s.epoch > steady.epoch && s.container != null) return { board, status: s }
        }
        return undefined
      }, 60_000)
      const newEntries = async (): Promise<VehicleLogEntry[]> => ms.logs.get(after.status.container!.id)?.entries ?? []
      await ms.waitFor(`run ${run}: first report of the new primary`, async () => samplesOf(await newEntries()).length > 0 ? true : undefined, 30_000)
      const m = measureTakeover(ms.logs.get(oldContainer?.id ?? '')?.entries ?? [], await newEntries())
      const restore = lastRestore(after.status.events)
      const detection = detectedAt(ms, primary.peerId, cutAt)
      await sleep(500)
      sampling = false
      await sampler
      if (silent) await primary.powerCut()
      const bystander = ms.boards.find(b => b.isOn && b !== after.board)
      const baselineColdStartMs = bystander != null ? await coldStart(bystander).catch(() => null) : null
      const result: Run = {
        run,
        failedBoard: primary.name,
        newPrimary: after.board.name,
        detectionMs: detection != null ? detection - cutAt : null,
        restoreMs: restore?.ms ?? null,
        restorePhases: restore?.phases ?? null,
        downtimeMs: m.downtimeMs,
        stateLostTicks: m.stateLostTicks,
        resumedFrom: m.resumedFrom,
        checkpointSeq: restore?.seq ?? null,
        maxConcurrent,
        baselineColdStartMs
      }
      results.push(result)
      console.log(`run ${run}/${runs}: ${primary.name} cut, ${after.board.name} took over (${m.resumedFrom}) detection ${result.detectionMs ?? '?'} ms, restore ${result.restoreMs ?? '?'} ms, downtime ${m.downtimeMs} ms, lost ${m.stateLostTicks} ticks, max concurrent ${maxConcurrent}`)
      await primary.powerOn(ms.swarm.bootstrapFor(primary))
      await ms.waitFor(`run ${run}: ${primary.name} back and fenced`, async () => {
        const s = await ms.status(primary)
        return s != null && s.epoch >= after.status.epoch ? true : undefined
      }, 60_000)
    }
  } finally {
    await ms.stop()
  }

  const downtime = distribution(results.map(r => r.downtimeMs))
  const detection = distribution(results.flatMap(r => r.detectionMs ?? []))
  const restore = distribution(results.flatMap(r => r.restoreMs ?? []))
  const lost = distribution(results.map(r => r.stateLostTicks))
  const phase = (key: 'createMs' | 'filesMs' | 'criuMs'): ReturnType<typeof distribution> => distribution(results.flatMap(r => r.restorePhases?.[key] ?? []))
  const [create, files, criu] = [phase('createMs'), phase('filesMs'), phase('criuMs')]
  const cold = distribution(results.flatMap(r => r.baselineColdStartMs ?? []))
  const baselineDowntime = distribution(results.flatMap(r => r.baselineColdStartMs != null && r.detectionMs != null ? [r.detectionMs + r.baselineColdStartMs] : []))
  const intervalTicks = interval * TICK_HZ / 1000
  const dualPrimaryRuns = results.filter(r => r.maxConcurrent > 1).length
  const fromCheckpoint = results.filter(r => r.resumedFrom === 'checkpoint').length
  console.log('')
  console.log(table([
    ['metric', 'n', 'p50', 'p99', 'max', 'target'],
    ['detection (power cut -> dead), ms', detection.n, detection.p50, detection.p99, detection.max, ''],
    ['restore (CRIU, new container), ms', restore.n, restore.p50, restore.p99, restore.max, ''],
    ['  of which: container create, ms', create.n, create.p50, create.p99, create.max, ''],
    ['  of which: checkpoint files written, ms', files.n, files.p50, files.p99, files.max, ''],
    ['  of which: CRIU restore (docker start), ms', criu.n, criu.p50, criu.p99, criu.max, ''],
    ['downtime tandem, ms', downtime.n, downtime.p50, downtime.p99, downtime.max, 'p50 <= 1500, p99 <= 3000'],
    ['state lost tandem, ticks', lost.n, lost.p50, lost.p99, lost.max, `<= ${intervalTicks} (one interval)`],
    ['baseline cold start from image, ms', cold.n, cold.p50, cold.p99, cold.max, ''],
    ['downtime baseline (detection + cold start), ms', baselineDowntime.n, baselineDowntime.p50, baselineDowntime.p99, baselineDowntime.max, ''],
    ['state lost baseline', results.length, 'everything', 'everything', '', '']
  ]))
  console.log(`\nruns resumed from a checkpoint: ${fromCheckpoint}/${results.length}; runs with two containers running at once: ${dualPrimaryRuns}; 1 tick = ${1000 / TICK_HZ} ms`)
  if (imageFigures != null) {
    console.log('\nimage built on board-1 only, the other boards bare:')
    console.log(table([
      ['mission', 'deploy -> protected, ms', 'layers the backup lacked, MB', 'fetched over the swarm, MB', 'fetch + load, ms'],
      ...imageFigures.map(f => [f.mission, Math.round(f.deployToProtectedMs), mb(f.totalBytes), mb(f.fetchedBytes), f.fetchMs])
    ]))
  }
  const name = `${silent ? 'failover-silent' : 'failover'}${imageOnOneBoard ? '-image-on-one-board' : ''}`
  const path = await writeResults(name, { failure, boards: boardCount, checkpointIntervalMs: interval, tickHz: TICK_HZ, image: imageFigures, summary: { detection, restore, downtime, stateLostTicks: lost, baselineColdStart: cold, baselineDowntime, dualPrimaryRuns, fromCheckpoint }, runs: results })
  console.log(`results: ${path}`)
}

main().catch(err => {
  console.error(`bench:failover: ${(err as Error).stack ?? String(err)}`)
  process.exitCode = 1
})
