// `npm run demo`: the vehicle experiment end to end on this machine. Simulated boards (own peer process and Docker
// daemon each) form a private swarm and run the vehicle controller; the primary board loses power; the backup
// restores the newest checkpoint and drives on; the failed board comes back fenced.
import { spawnSync } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { buildImageOn, startSimulatedSwarm, type SimulatedBoard, type SimulatedSwarm } from '../harness/simulated-board.ts'
import { parseManifest } from '../manifest/manifest.ts'
import { TICK_HZ, REPORT_EVERY_TICKS } from '../examples/vehicle/controller.js'
import type { MissionStatus } from '../peer/missions/index.ts'
import { MissionLogWatch, lastRestore, missionContainers, missionOn, sleep, until } from '../harness/observe.ts'
import { chooseMode, TerminalView } from './terminal.ts'
import { measureTakeover, takeoverFigures } from './vehicle-log.ts'
import type { BoardView, DemoSummary, EventKind, ViewEvent, ViewSnapshot } from './view.ts'
import type { MissionEventData, MissionEventKind } from '../consensus/events.ts'

/** The mission events the demo tells of: restores, elections, fencing, stops, images, backups. */
const NARRATED = new Set<MissionEventKind>([
  'restartedAsPrimary', 'selfFenced', 'imageStored', 'imageStoreFailed', 'imageFetchFailed', 'checkpointsFailing', 'replacingBackup', 'staleGiveUp',
  'claimRefused', 'reconfigured', 'elected', 'fenced', 'fenceReceived', 'moveCold', 'handingOver', 'fetchingImage', 'storageFailed', 'containerStarted',
  'stagedRejected', 'restoreRepaired', 'restored', 'restoreRefused', 'finalCheckpointTaken', 'containerStopped', 'staleContainerStopped', 'imageShared',
  'imageShareFailed', 'imageLoaded', 'imageLoadFailed'
])
/** Told as warnings: fencing, stops and failures. */
const WARNED = new Set<MissionEventKind>([
  'restartedAsPrimary', 'selfFenced', 'imageStoreFailed', 'imageFetchFailed', 'moveAborted', 'fetchesFailing', 'fenced', 'fenceReceived', 'handingOver',
  'finalCheckpointTaken', 'containerStopped', 'staleContainerStopped', 'imageShareFailed', 'imageLoadFailed'
])

function narrated (event: MissionEventData): boolean {
  if (event.kind === 'blocked') return event.requirement === 'image' || event.requirement === 'imageMap'
  if (event.kind === 'failed') return event.coldNext
  return NARRATED.has(event.kind)
}
import { shortPeerId } from '../consensus/peer-id.ts'

const REPO = new URL('..', import.meta.url).pathname
const VEHICLE_DIR = join(REPO, 'examples', 'vehicle')
/** Replication (checkpoint start to the backup's ack) counts as keeping up below this share of the interval. */
const KEEPING_UP = 0.6

const USAGE = `usage: npm run demo -- [--boards N] [--kill-after SECONDS] [--no-tty] [--json]

  --boards N            simulated boards, 2 to 6 (default 3)
  --kill-after SECONDS  cut the primary's power this long after the backup holds a checkpoint (default 6)
  --no-tty              plain lines (for logs and CI)
  --json                JSON lines; the last line is the summary
Runs as root on Linux (it starts one Docker daemon per simulated board); provisions the host first if needed.`

class DemoFailure extends Error {}

interface Flags { boards: number, killAfterS: number, noTty: boolean, json: boolean }

function parseFlags (argv: string[]): Flags | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { boards: { type: 'string' }, 'kill-after': { type: 'string' }, 'no-tty': { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true
  })
  if (values.help === true) return 'help'
  if (positionals.length > 0) throw new Error(`unexpected argument '${positionals[0] as string}'`)
  const boards = Number(values.boards ?? 3)
  if (!Number.isInteger(boards) || boards < 2 || boards > 6) throw new Error(`--boards must be a whole number from 2 to 6, got '${values.boards ?? ''}'`)
  const killAfterS = Number(values['kill-after'] ?? 6)
  if (!Number.isFinite(killAfterS) || killAfterS < 0 || killAfterS > 600) throw new Error(`--kill-after must be 0 to 600 seconds, got '${values['kill-after'] ?? ''}'`)
  return { boards, killAfterS, noTty: values['no-tty'] === true, json: values.json === true }
}

/** Runs the provisioning script when the host lacks Docker, CRIU or the base images (its progress goes to stderr). */
function provisionIfNeeded (say: (text: string) => void): void {
  if (spawnSync('bash', [join(REPO, 'scripts/provision.sh'), '--check'], { stdio: 'ignore' }).status === 0) return
  say('host lacks Docker, CRIU or base images: running scripts/provision.sh')
  const result = spawnSync('bash', [join(REPO, 'scripts/provision.sh')], { stdio: ['ignore', process.stderr, process.stderr] })
  if (result.status !== 0) throw new DemoFailure(`provisioning failed (scripts/provision.sh exited ${String(result.status)}); 'npm run demo' needs root on Debian/Ubuntu`)
}

async function main (argv: string[]): Promise<number> {
  let flags: Flags | 'help'
  try {
    flags = parseFlags(argv)
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n${USAGE}\n`)
    return 2
  }
  if (flags === 'help') { console.log(USAGE); return 0 }
  if (process.getuid?.() !== 0) {
    process.stderr.write('demo: needs root (it starts one Docker daemon per simulated board and uses CRIU)\n')
    return 1
  }

  const started = Date.now()
  const view = new TerminalView({ output: process.stdout, mode: chooseMode({ json: flags.json, noTty: flags.noTty }, process.stdout) })
  const events: ViewEvent[] = []
  const say = (text: string, kind: EventKind = 'info'): void => {
    const event = { atMs: Date.now() - started, text, kind }
    events.push(event)
    view.event(event)
  }
  const dir = await mkdtemp(join(tmpdir(), 'tandem-demo-'))
  let swarm: SimulatedSwarm | undefined
  let logs: MissionLogWatch | undefined
  let phase = 'starting'
  /** The primary's promise (protection.stalenessBoundMs) just before the power cut. */
  let promisedBoundMs: number | null = null
  const abort = new AbortController()
  const onSignal = (): void => { abort.abort(new DemoFailure('interrupted')) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const summary: DemoSummary = { mission: 'vehicle-controller', boards: flags.boards, takeover: false, notes: [] }
  const notes: string[] = []
  let failure: string | undefined

  // Peer log lines carry exact times of detection; the demo reads them rather than polling.
  const deadAt = new Map<string, number>()
  const onLine = (board: string, line: string): void => {
    const dead = /^(\S+) membership: (\S+) \S+ -> dead \(([^)]*)\)/.exec(line)
    if (dead != null && !deadAt.has(dead[2] as string)) {
      deadAt.set(dead[2] as string, Date.parse(dead[1] as string))
      say(`${board} declares ${shortPeerId(dead[2] as string)} dead (${dead[3] as string})`, 'warn')
    }
  }

  try {
    view.start()
    provisionIfNeeded(say)
    say(`starting ${flags.boards} simulated boards (own Docker daemon and tandem peer each, on loopback)`)
    // Only board-1 has the base images too: the whole image (~130 MB) travels to the others through the swarm.
    swarm = await startSimulatedSwarm({ count: flags.boards, dir, onLine, signal: abort.signal, baseImagesOn: index => index === 0, onProgress: text => { say(text) } })
    const boards = swarm.boards
    await buildImageOn(boards[0]!, VEHICLE_DIR, 'tandem/vehicle', ['Dockerfile', 'controller.js'])
    say('vehicle controller image built on board-1 only: the swarm carries it to the others (no registry)')
    const manifest = await readFile(join(VEHICLE_DIR, 'mission.yaml'), 'utf8')
    const spec = parseManifest(manifest, 'examples/vehicle/mission.yaml')
    summary.checkpointIntervalMs = spec.checkpointIntervalMs
    logs = new MissionLogWatch(boards, spec.name)
    logs.start()

    const statuses = new Map<string, MissionStatus | undefined>()
    const seenEvents = new Set<string>()
    const nameOf = (peerId: string | null | undefined): string | null => peerId == null ? null : boards.find(b => safePeerId(b) === peerId)?.name ?? shortPeerId(peerId)
    const refresh = async (): Promise<void> => {
      await Promise.all(boards.map(async board => {
        const status = await missionOn(board, spec.name)
        statuses.set(board.name, board.isOn ? status : undefined)
        // Events are replicated: every board lists every board's events, each naming where it happened.
        for (const event of status?.events ?? []) {
          const key = `${event.board}|${event.at}|${event.text}`
          if (seenEvents.has(key)) continue
          seenEvents.add(key)
          if (narrated(event.event)) say(`${nameOf(event.board) ?? '?'}: ${event.text}`, WARNED.has(event.event.kind) ? 'warn' : 'ok')
        }
      }))
      view.update(snapshot())
    }
    // The primary's own view is authoritative (it receives the backup's acks); others learn it by gossip later.
    const current = (): MissionStatus | undefined => {
      const known = [...statuses.values()].filter((s): s is MissionStatus => s != null)
      const newest = known.sort((a, b) => b.epoch - a.epoch)[0]
      return known.find(s => s.role === 'primary' && s.epoch === newest?.epoch) ?? newest
    }
    const snapshot = (): ViewSnapshot => {
      const mission = current()
      const latest = logs?.latest()
      const boardViews: BoardView[] = boards.map(board => {
        const id = safePeerId(board) ?? ''
        const role = mission == null ? 'idle' : mission.primary === id ? 'primary' : mission.backup === id ? 'backup' : 'idle'
        return { name: board.name, peerId: id, state: board.isOn ? 'alive' : 'off', role, epoch: statuses.get(board.name)?.epoch ?? null }
      })
      return {
        boards: boardViews,
        mission: {
          name: spec.name,
          epoch: mission?.epoch ?? 0,
          primary: nameOf(mission?.primary),
          backup: nameOf(mission?.backup),
          tick: latest?.tick ?? null,
          x: latest?.x ?? null,
          y: latest?.y ?? null,
          speed: latest?.speed ?? null,
          heading: latest?.heading ?? null,
          checkpointAgeMs: mission?.lastCheckpoint?.ageMs ?? null,
          checkpointSeq: mission?.lastCheckpoint?.seq ?? null,
          replicatedSeq: mission?.replicatedSeq ?? null,
          lagSeq: mission?.replicationLag ?? null,
          replicationMs: mission?.replicationLagMs ?? null
        },
        events,
        phase,
        elapsedMs: Date.now() - started
      }
    }
    const ticker = setInterval(() => { void refresh() }, 200)

    try {
      phase = 'deploying'
      await boards[0]!.peer!.client.request('POST', '/v1/missions', { manifest, filename: 'examples/vehicle/mission.yaml' })
      say(`deployed ${spec.name} (checkpoint every ${spec.checkpointIntervalMs} ms)`)
      phase = 'driving'
      const shownProgress = new Map<string, number>()
      const ready = await until('the mission to be protected (the backup holds the image and a checkpoint)', async () => {
        await refresh()
        const m = current()
        for (const f of m?.imageFetches ?? []) {
          // One line per board and 10 % of the image, so the image is seen travelling.
          const step = f.totalBytes > 0 ? Math.floor(10 * f.fetchedBytes / f.totalBytes) : 0
          if ((shownProgress.get(f.board) ?? -1) >= step) continue
          shownProgress.set(f.board, step)
          say(`${nameOf(f.board) ?? '?'} fetches ${f.image}: ${(f.fetchedBytes / 1e6).toFixed(1)} of ${(f.totalBytes / 1e6).toFixed(1)} MB`)
        }
        return m?.state === 'running' && m.protected ? m : undefined
      }, 180_000)
      say(`${nameOf(ready.primary) ?? '?'} drives, ${nameOf(ready.backup) ?? '?'} stands by with the image and checkpoint #${ready.replicatedSeq ?? '?'}: protected`, 'ok')
      await sleep(flags.killAfterS * 1000, abort.signal)
      // The loss bound holds once replication keeps up. A new primary first stores its image for boards that lack it
      // (a few seconds on a small board), and its checkpoints reach the backup slowly meanwhile: cut after that.
      const interval = spec.checkpointIntervalMs
      const keepingUp = await until('replication to keep up', async () => {
        await refresh()
        const lag = current()?.replicationLagMs
        return lag != null && lag <= KEEPING_UP * interval ? lag : undefined
      }, 30_000, undefined, 200).catch(() => null)
      if (keepingUp == null) say(`replication takes ${current()?.replicationLagMs ?? '?'} ms, more than ${KEEPING_UP * 100} % of the ${interval} ms interval: the backup may hold an older state than that`, 'warn')
      else say(`a checkpoint reaches the backup ${keepingUp} ms after it starts`, 'info')

      // The power cut.
      phase = 'power cut'
      const before = current()!
      const failed = boards.find(b => safePeerId(b) === before.primary)
      if (failed == null) throw new DemoFailure('no primary to cut')
      const oldContainer = (await missionContainers([failed], spec.name)).find(c => c.running)
      const cutAt = Date.now()
      await failed.powerCut()
      say(`POWER CUT on ${failed.name} (primary): peer and Docker daemon killed with their containers`, 'fault')
      summary.failedBoard = failed.name
      summary.epochBefore = before.epoch
      promisedBoundMs = before.protection.stalenessBoundMs

      phase = 'takeover'
      const after = await until('a takeover by another board', async () => {
        await refresh()
        const m = current()
        return m != null && m.epoch > before.epoch && m.primary !== before.primary && m.state === 'running' && m.primary != null ? m : undefined
      }, 60_000)
      const newPrimaryBoard = boards.find(b => safePeerId(b) === after.primary)!
      const newStatus = await until('the new primary to report its container', async () => {
        const s = await missionOn(newPrimaryBoard, spec.name)
        return s?.container != null ? s : undefined
      }, 30_000)
      summary.takeover = true
      summary.newPrimary = newPrimaryBoard.name
      summary.epochAfter = after.epoch
      const detectedAt = deadAt.get(failed.peerId)
      summary.detectionMs = detectedAt != null ? Math.max(0, detectedAt - cutAt) : null
      const restoreEvent = lastRestore(newStatus.events)
      summary.restoreMs = restoreEvent?.ms ?? null
      if (restoreEvent == null) notes.push('the new primary did not restore a checkpoint: it started cold')

      const newContainerId = newStatus.container!.id
      await until('the new primary\'s first report', async () => (logs!.get(newContainerId)?.entries.some(e => e.kind === 'report') ?? false) ? true : undefined, 30_000)
      const measurement = measureTakeover(logs.get(oldContainer?.id ?? '')?.entries ?? [], logs.get(newContainerId)!.entries)
      Object.assign(summary, takeoverFigures(measurement))
      say(`${newPrimaryBoard.name} drives on from tick ${measurement.firstAfter.tick} (last report of ${failed.name}: tick ${measurement.lastBefore.tick}); downtime ${measurement.downtimeMs} ms`, 'ok')

      // The failed board comes back: it must learn the new epoch and run nothing under its old one.
      await sleep(3000, abort.signal)
      phase = 'power back'
      await failed.powerOn(swarm.bootstrapFor(failed))
      say(`${failed.name} powered on again`, 'info')
      const rejoined = await until(`${failed.name} to learn the current epoch`, async () => {
        await refresh()
        const s = statuses.get(failed.name)
        return s != null && s.epoch >= after.epoch ? s : undefined
      }, 60_000)
      const strays = (await missionContainers([failed], spec.name)).filter(c => c.running)
      if (strays.length > 0) throw new DemoFailure(`${failed.name} runs the mission again after its power came back (${strays.map(c => `epoch ${c.epoch}`).join(', ')})`)
      summary.fencedBoard = failed.name
      say(`${failed.name} is fenced: it knows epoch ${rejoined.epoch} and runs nothing under its old epoch ${before.epoch}`, 'ok')
      phase = 'resync'
      const synced = await until('a synced backup', async () => {
        await refresh()
        const m = current()
        return m?.backup != null && m.replicatedSeq != null && m.primary === after.primary ? m : undefined
      }, 60_000).catch(() => undefined)
      summary.newBackup = nameOf(synced?.backup) ?? null
      if (synced != null) say(`${nameOf(synced.backup) ?? '?'} is the synced backup (checkpoint #${synced.replicatedSeq ?? '?'})`, 'ok')
      const running = (await missionContainers(boards, spec.name)).filter(c => c.running)
      if (running.length !== 1) throw new DemoFailure(`${running.length} containers of the mission run at the end (expected exactly one)`)
      phase = 'done'
      await refresh()
    } finally {
      clearInterval(ticker)
    }

    // Pass criteria: a takeover from the newest replicated checkpoint, losing no more than promised; report lines add
    // their resolution. The status says how old the backup's state may be (`protection.stalenessBoundMs`): one interval while
    // replication takes at most half of it, more on a loaded host. The demo holds the takeover to that promise, made
    // just before the cut, and says when it was larger than the interval.
    const intervalTicks = Math.ceil((summary.checkpointIntervalMs ?? 1000) * TICK_HZ / 1000)
    const promisedTicks = Math.max(intervalTicks, Math.ceil((promisedBoundMs ?? 0) * TICK_HZ / 1000))
    const allowedLoss = promisedTicks + REPORT_EVERY_TICKS
    summary.promisedLossTicks = promisedTicks
    if (promisedTicks > intervalTicks) notes.push(`the primary's status promised at most ${promisedBoundMs} ms of state lost, more than the ${summary.checkpointIntervalMs} ms interval: replication took more than half the interval on this host`)
    if (summary.stateLostTicks != null && summary.stateLostTicks > allowedLoss) {
      failure = `state lost ${summary.stateLostTicks} ticks, more than the ${promisedTicks} ticks the primary's status promised at the cut (${intervalTicks} ticks = one interval at least) + ${REPORT_EVERY_TICKS} of report resolution`
    }
    if (summary.trajectoryVerified === false) failure ??= 'the new primary is not on the vehicle\'s trajectory'
  } catch (err) {
    failure = err instanceof DemoFailure || abort.signal.aborted ? (err as Error).message : `${(err as Error).message}`
    if (!(err instanceof DemoFailure) && !abort.signal.aborted) process.stderr.write(`${(err as Error).stack ?? String(err)}\n`)
  } finally {
    logs?.stop()
    say('cleaning up: stopping every peer, Docker daemon and container the demo started')
    await swarm?.stop()
    await rm(dir, { recursive: true, force: true }).catch(() => {})
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
  if (failure != null) notes.push(`FAILED: ${failure}`)
  summary.notes = notes
  view.stop(summary)
  if (failure != null) {
    process.stderr.write(`demo failed: ${failure}\n`)
    return 1
  }
  return 0
}

function safePeerId (board: SimulatedBoard): string | undefined {
  try { return board.peerId } catch { return undefined }
}

main(process.argv.slice(2)).then(code => { process.exitCode = code }, err => {
  process.stderr.write(`demo: ${(err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
})
