// The vehicle controller in its real image on the host's Docker daemon: a SIGTERM stop with a final
// state write and a cold start in a new container from state.json; a CRIU checkpoint and a restore into
// a new container that continues the same trajectory. Needs Docker (experimental), CRIU and tandem/node-base.
import t from 'tap'
import { gateOn } from './helpers/requirements.ts'
import type Docker from 'dockerode'
import { hostDocker, probeDocker } from '../checkpoint/docker-host.ts'
import { cp, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseVehicleLog, measureTakeover, samplesOf, isOnTrajectory, type VehicleLogEntry } from '../demo/vehicle-log.ts'
import { parseState, simulate } from '../examples/vehicle/controller.js'
import { buildImage } from '../harness/simulated-docker.ts'
import { missionSeccompProfile } from '../checkpoint/runtime.ts'

const APP_DIR = join(import.meta.dirname, '..', 'examples', 'vehicle')
const SECCOMP_WITHOUT_IO_URING = JSON.stringify(missionSeccompProfile())
const docker = hostDocker()

async function missingRequirement (): Promise<string | undefined> {
  const probe = await probeDocker(docker)
  if (!probe.available) return `no Docker daemon reachable (${probe.error.message})`
  if (!probe.experimental) return 'the Docker daemon is not in experimental mode (no checkpoints)'
  const images = await docker.listImages({ filters: JSON.stringify({ reference: ['tandem/node-base:latest'] }) })
  if (images.length === 0) return 'image tandem/node-base is missing (run scripts/provision.sh)'
  return undefined
}

if (gateOn(t, await missingRequirement())) await runDockerTests()

/** A non-TTY container's log: 8-byte frame headers, then payload. */
function demultiplex (buffer: Buffer): string {
  let text = ''
  let offset = 0
  while (offset + 8 <= buffer.length) {
    const size = buffer.readUInt32BE(offset + 4)
    if (buffer[offset] === 1) text += buffer.subarray(offset + 8, offset + 8 + size).toString('utf8')
    offset += 8 + size
  }
  return text
}

async function logEntries (container: Docker.Container): Promise<VehicleLogEntry[]> {
  const raw = await container.logs({ stdout: true, stderr: false, follow: false }) as unknown as Buffer
  return parseVehicleLog(demultiplex(raw))
}

async function waitForEntries (container: Docker.Container, done: (entries: VehicleLogEntry[]) => boolean, what: string): Promise<VehicleLogEntry[]> {
  const deadline = Date.now() + 30_000
  for (;;) {
    const entries = await logEntries(container)
    if (done(entries)) return entries
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; log: ${JSON.stringify(entries.slice(-3))}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

function lastTick (entries: VehicleLogEntry[]): number {
  return samplesOf(entries).at(-1)?.tick ?? -1
}

async function runDockerTests (): Promise<void> {
  const image = `tandem/vehicle-test:${process.pid}`
  const containers: Docker.Container[] = []
  const work = await mkdtemp(join(tmpdir(), 'tandem-vehicle-docker-'))
  t.teardown(async () => {
    for (const container of containers) await container.remove({ force: true }).catch(() => {})
    await docker.getImage(image).remove({ force: true }).catch(() => {})
    await rm(work, { recursive: true, force: true })
  })

  let built = false
  await t.test('examples/vehicle builds offline FROM tandem/node-base', async t => {
    const error = await buildImage(docker, APP_DIR, ['Dockerfile', 'controller.js'], image).then(() => undefined, (err: unknown) => err)
    t.equal(error, undefined, 'no build error')
    built = (await docker.listImages({ filters: JSON.stringify({ reference: [image] }) })).length === 1
    t.ok(built, `image ${image} exists`)
  })
  if (!built) return

  async function createVehicle (dataDir: string, options: { seccomp?: boolean } = {}): Promise<Docker.Container> {
    const container = await docker.createContainer({
      Image: image,
      NetworkDisabled: true,
      HostConfig: {
        NetworkMode: 'none',
        Binds: [`${dataDir}:/data`],
        ...(options.seccomp === true ? { SecurityOpt: [`seccomp=${SECCOMP_WITHOUT_IO_URING}`] } : {})
      }
    })
    containers.push(container)
    return container
  }

  await t.test('SIGTERM writes the final state; a new container cold-starts from state.json', async t => {
    const dataDir = join(work, 'cold')
    await mkdir(dataDir)
    const first = await createVehicle(dataDir)
    await first.start()
    await waitForEntries(first, entries => lastTick(entries) >= 60, 'tick 60')
    await first.stop({ t: 10 })
    const stopped = await first.inspect()
    t.equal(stopped.State.ExitCode, 0, 'docker stop (SIGTERM) exits 0')
    const saved = parseState(JSON.parse(await readFile(join(dataDir, 'state.json'), 'utf8')))
    if (typeof saved === 'string') throw new Error(saved)
    t.same(saved, simulate(saved.tick), 'state.json holds the exact state')
    t.match((await logEntries(first)).at(-1), { kind: 'event', event: { event: 'stop', tick: saved.tick } })

    const second = await createVehicle(dataDir)
    await second.start()
    const entries = await waitForEntries(second, entries => samplesOf(entries).length >= 3, 'three reports')
    t.match(entries[0], { kind: 'event', event: { event: 'cold-start', fromTick: saved.tick } })
    t.ok(samplesOf(entries).every(isOnTrajectory), 'the cold-started container continues the trajectory')
    await second.stop({ t: 10 })
  })

  await t.test('a CRIU checkpoint restored into a new container continues the same trajectory', async t => {
    const oldData = join(work, 'old')
    const newData = join(work, 'new')
    await mkdir(oldData)
    const primary = await createVehicle(oldData, { seccomp: true })
    await primary.start()
    await waitForEntries(primary, entries => lastTick(entries) >= 60, 'tick 60')

    // The dump freezes the process somewhere between the last report before the call and the first one after it
    // returns (it reported tick 80 after a dump of tick ~70 returned, on a loaded CI host).
    const tickBeforeCheckpoint = lastTick(await logEntries(primary))
    const dumpStarted = performance.now()
    const checkpointable = primary as unknown as { createCheckpoint: (options: object) => Promise<unknown> }
    await checkpointable.createCheckpoint({ CheckpointID: 'vehicle-1', Exit: false })
    const dumpMs = performance.now() - dumpStarted
    const tickAtCheckpoint = lastTick(await logEntries(primary))
    await waitForEntries(primary, entries => lastTick(entries) >= tickAtCheckpoint + 20, 'two more reports after the checkpoint')
    await primary.kill({ signal: 'SIGKILL' })
    const before = await logEntries(primary)

    // What the checkpoint part does between boards: the data dir and the checkpoint travel to the new container.
    await cp(oldData, newData, { recursive: true })
    const backup = await createVehicle(newData, { seccomp: true })
    const dataRoot = (await docker.info() as { DockerRootDir: string }).DockerRootDir
    await cp(join(dataRoot, 'containers', primary.id, 'checkpoints', 'vehicle-1'), join(dataRoot, 'containers', backup.id, 'checkpoints', 'vehicle-1'), { recursive: true })
    const restoreStarted = performance.now()
    // The checkpoint name goes in the query only: Docker refuses a start request with a body.
    await backup.start({ _query: { checkpoint: 'vehicle-1' }, _body: {} } as object)
    const restoreMs = performance.now() - restoreStarted

    const after = await waitForEntries(backup, entries => samplesOf(entries).length >= 3, 'three reports from the restored container')
    t.notOk(after.some(entry => entry.kind === 'event'), 'no start event: the process was restored, not started')
    const takeover = measureTakeover(before, after)
    t.equal(takeover.resumedFrom, 'checkpoint')
    t.ok(takeover.firstAfter.tick >= tickBeforeCheckpoint && takeover.firstAfter.tick <= tickAtCheckpoint + 10,
      `resumed at the checkpoint (first report tick ${takeover.firstAfter.tick}, the dump between ticks ${tickBeforeCheckpoint} and ${tickAtCheckpoint})`)
    t.ok(takeover.stateLostTicks >= 20, `the ticks run after the checkpoint are lost (${takeover.stateLostTicks})`)
    t.equal(takeover.trajectoryVerified, true, 'the restored process is on the deterministic trajectory')
    t.comment(`checkpoint (leave running) ${dumpMs.toFixed(0)} ms, restore start ${restoreMs.toFixed(0)} ms`)

    await waitForEntries(backup, entries => lastTick(entries) >= takeover.firstAfter.tick + 50, 'a second of driving after restore')
    const saved = parseState(JSON.parse(await readFile(join(newData, 'state.json'), 'utf8')))
    if (typeof saved === 'string') throw new Error(saved)
    t.ok(saved.tick > takeover.firstAfter.tick - 10, 'the restored process keeps writing state.json in its new data dir')
  })
}
