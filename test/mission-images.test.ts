// Missions nobody prepared for, on simulated boards (own peer process and Docker daemon each, real CRIU, real libp2p):
// an image built on one board only travels through the swarm before the mission counts as protected, and a power
// cut then fails over from a checkpoint; a second image on the same base sends only its new layers. Bad input and
// hopeless missions are refused or blocked with a reason, and a crash loop backs off instead of churning epochs.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startMissionSwarm, type MissionSwarm } from '../harness/mission-swarm.ts'
import { buildImageOn, startSimulatedSwarm, type SimulatedBoard, type SimulatedSwarm } from '../harness/simulated-board.ts'
import { lastRestore, missionOn, until } from '../harness/observe.ts'
import { samplesOf } from '../demo/vehicle-log.ts'
import { CLI_PATH } from '../harness/spawn-peer.ts'
import { ApiRequestError } from '../peer/api-client.ts'
import type { MissionStatus } from '../peer/missions/index.ts'
import type { ImageFetchRecord } from '../peer/image-inventory.ts'
import { gateDockerCriu } from './checkpoint-helpers.ts'
import { overlaps, promisedTicks as promisedTicksOf, regressions } from '../chaos/history.ts'

/** One checkpoint interval of the vehicle (50 ticks at 50 Hz, 1000 ms) plus the 10-tick resolution of its reports. */
const MAX_TICKS_LOST = 60
/** What the primary's status promised it would lose at most: one interval, or its honest bound when it said more. */
const promisedTicks = (status: MissionStatus | undefined): number =>
  promisedTicksOf(status?.protection.stalenessBoundMs ?? null, { floorTicks: MAX_TICKS_LOST, resolutionTicks: 10 })

async function fetchedOn (board: SimulatedBoard, image: string): Promise<ImageFetchRecord | undefined> {
  const status = await board.peer?.status().catch(() => undefined) as { images?: { fetched?: ImageFetchRecord[] } } | undefined
  return status?.images?.fetched?.findLast(f => f.image === image && f.loaded)
}

function cli (board: SimulatedBoard, ...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const peer = board.peer!
  return new Promise(resolve => {
    execFile(process.execPath, [CLI_PATH, ...args, '--api', peer.apiAddress, '--data-dir', peer.dataDir], (err, stdout, stderr) => {
      resolve({ code: err == null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

if (gateDockerCriu(t)) {
  t.test('an image built on one board of three, on bare boards: protected, then a power cut fails over from a checkpoint', async t => {
    let ms: MissionSwarm | undefined
    t.teardown(async () => { await ms?.stop() })
    // Boards 2 and 3 lack even tandem/node-base: the whole image (~140 MB) must travel before the backup is ready.
    ms = await startMissionSwarm(3, { bareBoards: true })
    const protectedStatus = (await ms.anyStatus())!
    t.ok(protectedStatus.protected, `protected ${Math.round(ms.deployToProtectedMs)} ms after the deploy (${JSON.stringify(protectedStatus.protection)})`)
    const primary = ms.boardOf(protectedStatus.primary)!
    const backup = ms.boardOf(protectedStatus.backup)!
    t.equal(primary.name, 'board-1', 'the board that built the image runs the mission')
    const loaded = await fetchedOn(backup, 'tandem/vehicle:latest')
    t.ok(loaded != null && loaded.fetchedBytes > 50e6, `the backup loaded the image from the swarm (${loaded?.fetchedBytes ?? 0} bytes fetched)`)

    // Cut the power as soon as the mission reports protected.
    const oldContainer = (await ms.running()).find(c => c.board === primary.name)
    const lastTickBefore = samplesOf(ms.logs.get(oldContainer?.id ?? '')?.entries ?? []).at(-1)?.tick ?? 0
    // A loaded host stretches checkpoints: the status then says so (withinInterval false, with its bound), and that
    // promise is what the takeover is held to.
    const promise = promisedTicks(await ms.status(primary))
    await primary.powerCut()
    const after = await ms.waitFor(`${backup.name} takes over`, async () => {
      const s = await ms!.status(backup)
      return s?.primary === backup.peerId && s.state === 'running' && s.epoch > protectedStatus.epoch && s.container != null ? s : undefined
    }, 60_000)
    const restored = lastRestore(after.events)
    t.ok(restored, `the backup restored a checkpoint (events: ${after.events.slice(-6).map(e => e.text).join(' | ')})`)
    const firstAfter = await ms.waitFor('the restored vehicle reports', async () => samplesOf(ms!.logs.get(after.container!.id)?.entries ?? [])[0])
    t.ok(firstAfter.tick > 0 && lastTickBefore - firstAfter.tick <= promise,
      `the vehicle continues at tick ${firstAfter.tick} (last report before the cut: ${lastTickBefore}; promised at most ${promise} ticks lost)`)
    t.same(overlaps(ms.logs.containers()), [], 'never two copies of the mission reporting at once')
    t.same(regressions(ms.logs.containers(), promise), [], `no state going back beyond what the status promised (${promise} ticks)`)

    // A second image built FROM the same base, on the new primary's board: the other live board fetches its new layer only.
    const newPrimary = backup
    const other = ms.boards.find(b => b !== primary && b !== newPrimary)!
    const context = await mkdtemp(join(tmpdir(), 'tandem-vehicle-b-'))
    t.teardown(async () => { await rm(context, { recursive: true, force: true }) })
    await writeFile(join(context, 'Dockerfile'), 'FROM tandem/vehicle\nCOPY note.txt /app/note.txt\n')
    await writeFile(join(context, 'note.txt'), 'a second mission on the same base\n')
    await buildImageOn(newPrimary, context, 'tandem/vehicle-b', ['Dockerfile', 'note.txt'])
    const manifest = 'name: vehicle-b\nimage: tandem/vehicle-b\nenv: {DATA_DIR: /data}\ndata: /data\ncheckpointIntervalMs: 1000\n'
    await newPrimary.peer!.client.request('POST', '/v1/missions', { manifest })
    const second = await until('vehicle-b protected', async () => {
      const s = await missionOn(newPrimary, 'vehicle-b')
      return s?.protected === true ? s : undefined
    }, 120_000, async () => JSON.stringify(await missionOn(newPrimary, 'vehicle-b')))
    t.equal(second.backup, other.peerId, 'the other live board is the backup of vehicle-b')
    const secondLoad = await fetchedOn(other, 'tandem/vehicle-b:latest')
    t.ok(secondLoad != null && secondLoad.fetchedBytes < 1e6,
      `only the new layer crossed the network: ${secondLoad?.fetchedBytes ?? '?'} bytes fetched (first image: ${loaded?.fetchedBytes ?? '?'})`)
  })

  t.test('refusals, blocked missions and crash loops on three boards', async t => {
    const dir = await mkdtemp(join(tmpdir(), 'tandem-missions-'))
    let swarm: SimulatedSwarm | undefined
    t.teardown(async () => {
      await swarm?.stop()
      await rm(dir, { recursive: true, force: true })
    })
    swarm = await startSimulatedSwarm({ count: 3, dir })
    const boards = swarm.boards
    const [one, two, three] = boards as [SimulatedBoard, SimulatedBoard, SimulatedBoard]
    const deploy = async (board: SimulatedBoard, manifest: string): Promise<MissionStatus> =>
      await board.peer!.client.request<MissionStatus>('POST', '/v1/missions', { manifest })
    const statusOf = async (name: string): Promise<MissionStatus | undefined> => {
      const views = (await Promise.all(boards.map(async b => await missionOn(b, name)))).filter((s): s is MissionStatus => s != null)
      return views.find(s => s.role === 'primary') ?? views.sort((a, b) => b.epoch - a.epoch)[0]
    }
    const runningEvents = (s: MissionStatus | undefined): number => (s?.events ?? []).filter(e => e.mark?.kind === 'running').length

    await deploy(one, 'name: steady\nimage: tandem/busybox\ncommand: [sh, -c, "while true; do sleep 1; done"]\n')
    const steady = await until('steady running', async () => { const s = await statusOf('steady'); return s?.state === 'running' ? s : undefined }, 60_000)

    await t.test('an image no live board has is refused at deploy, naming it', async t => {
      const error = await deploy(two, 'name: nowhere\nimage: tandem/nope:1\n').then(() => null, (err: unknown) => err)
      t.ok(error instanceof ApiRequestError && error.status === 422, `the API answers 422 (${String(error)})`)
      t.match(String(error), /tandem\/nope:1/, 'the message names the image')
      const file = join(dir, 'nowhere.yaml')
      await writeFile(file, 'name: nowhere\nimage: tandem/nope:1\n')
      const result = await cli(two, 'mission', 'deploy', file)
      t.equal(result.code, 1, 'the CLI exits 1')
      t.match(result.stderr, /tandem\/nope:1/, 'and names the image')
    })

    await t.test('a 600 KB manifest is refused before parsing; running missions are unaffected', async t => {
      const env = Array.from({ length: 12_000 }, (_, i) => `  VAR_${i}: "${'x'.repeat(36)}"`).join('\n')
      const big = `name: huge\nimage: tandem/busybox\nenv:\n${env}\n`
      t.ok(big.length > 600_000, `the manifest is ${big.length} bytes`)
      const error = await deploy(one, big).then(() => null, (err: unknown) => err)
      t.ok(error instanceof ApiRequestError && error.status === 413, `the API answers 413 (${String(error).slice(0, 200)})`)
      const file = join(dir, 'huge.yaml')
      await writeFile(file, big)
      const result = await cli(one, 'mission', 'deploy', file)
      t.equal(result.code, 2, 'the CLI refuses it with exit code 2')
      t.match(result.stderr, new RegExp(`${big.length} bytes`), 'naming its size')
      await new Promise(resolve => setTimeout(resolve, 3000))
      const now = await statusOf('steady')
      t.equal(now?.epoch, steady.epoch, 'the running mission kept its epoch')
      t.equal(now?.primary, steady.primary, 'and its primary')
      t.notOk(boards.some(b => b.peer == null), 'every peer is up')
    })

    await t.test('a placement no board meets is blocked with the reason and claims no epoch', async t => {
      await deploy(one, 'name: giant\nimage: tandem/busybox\nplacement: {minMemoryMb: 1000000}\n')
      const blocked = await until('giant blocked', async () => { const s = await statusOf('giant'); return s?.state === 'blocked' ? s : undefined }, 20_000)
      t.match(blocked.reason, /minMemoryMb/, `the reason names the placement (${blocked.reason})`)
      await new Promise(resolve => setTimeout(resolve, 5000))
      t.equal((await statusOf('giant'))?.epoch, blocked.epoch, 'no epoch claimed while nothing changes')
      await one.peer!.client.request('DELETE', '/v1/missions/giant')
    })

    await t.test('an image removed from every board after deploy: blocked with the reason, until a board has it again', async t => {
      // An alias of tandem/busybox on board-1 only: removing the tag removes the image as far as placement goes.
      await one.dockerClient().getImage('tandem/busybox').tag({ repo: 'tandem/gone', tag: '1' })
      await deploy(one, 'name: gone\nimage: tandem/gone:1\ncommand: [sh, -c, "while true; do sleep 1; done"]\n')
      const running = await until('gone protected', async () => { const s = await statusOf('gone'); return s?.protected === true ? s : undefined }, 60_000,
        async () => JSON.stringify(await statusOf('gone')))
      t.equal(running.primary, one.peerId, 'the board that has the image runs it')
      const backup = boards.find(b => b.peerId === running.backup)!

      // One copy lost while others exist: the swarm brings it back from a board that holds it.
      await backup.dockerClient().getImage('tandem/gone:1').remove()
      const healed = await until('the backup to hold the image again', async () => {
        const images = await backup.dockerClient().listImages({ filters: JSON.stringify({ reference: ['tandem/gone:1'] }) })
        const s = await statusOf('gone')
        return images.length > 0 && s?.protected === true ? s : undefined
      }, 30_000, async () => JSON.stringify(await statusOf('gone')))
      t.ok(healed.protected, 'the backup fetched the image again and the mission is protected again')

      // Every copy removed at once: a board that lost its copy waits for the heartbeats to tell who still holds one
      // (imageRefetchHoldMs), and then finds none to fetch it from.
      await Promise.all(boards.map(async board => { await board.dockerClient().getImage('tandem/gone:1').remove().catch(() => {}) }))
      await new Promise(resolve => setTimeout(resolve, 6000))
      t.equal((await statusOf('gone'))?.protected, false, 'no longer protected: the backup lacks the image')
      const container = (await one.dockerClient().listContainers({ filters: { label: ['tandem.mission=gone'] } }))[0]
      t.ok(container, 'the container still runs (removing an image does not stop it)')
      const epochAtKill = (await statusOf('gone'))?.epoch ?? 0
      await one.dockerClient().getContainer(container!.Id).kill().catch(() => {})
      const killedAt = Date.now()
      const blocked = await until('gone blocked', async () => { const s = await statusOf('gone'); return s?.state === 'blocked' ? s : undefined }, 20_000,
        async () => JSON.stringify(await statusOf('gone')))
      t.match(blocked.reason, /tandem\/gone:1 is on no live board/, `the reason names the image (${blocked.reason})`)
      await new Promise(resolve => setTimeout(resolve, Math.max(0, 20_000 - (Date.now() - killedAt))))
      const later = await statusOf('gone')
      t.ok((later?.epoch ?? 0) - epochAtKill <= 3, `at most 3 epochs in 20 s (epoch ${epochAtKill} -> ${later?.epoch})`)
      t.equal(later?.state, 'blocked', 'still blocked')
      // Something changes: a board has the image again, and the mission runs there.
      await three.dockerClient().getImage('tandem/busybox').tag({ repo: 'tandem/gone', tag: '1' })
      const back = await until('gone running again', async () => { const s = await statusOf('gone'); return s?.state === 'running' ? s : undefined }, 30_000)
      t.equal(back.primary, three.peerId, 'the mission runs again where the image is')
      await one.peer!.client.request('DELETE', '/v1/missions/gone')
    })

    await t.test('a container that exits after 0.5 s backs off instead of churning', async t => {
      const deployedAt = Date.now()
      await deploy(two, 'name: crasher\nimage: tandem/busybox\ncommand: [sh, -c, "echo up; sleep 0.5; exit 3"]\n')
      let sawBackoff: MissionStatus | undefined
      while (Date.now() - deployedAt < 30_000) {
        const s = await statusOf('crasher')
        if (s?.state === 'backoff') sawBackoff ??= s
        await new Promise(resolve => setTimeout(resolve, 250))
      }
      const final = await statusOf('crasher')
      const starts = Math.max(...await Promise.all(boards.map(async b => runningEvents(await missionOn(b, 'crasher')))))
      t.ok(starts >= 2 && starts <= 8, `${starts} starts in 30 s (at most 8)`)
      t.ok(sawBackoff, `the mission was seen in state backoff (${sawBackoff?.reason ?? ''})`)
      t.ok((final?.restarts ?? 0) >= 2, `restarts counted: ${final?.restarts}`)
      t.match(final?.lastFailure?.reason ?? '', /code 3/, `the last failure says why: ${final?.lastFailure?.reason}`)
      t.ok(boards.some(b => b.peerId === final?.lastFailure?.board), 'and names the board')
      await two.peer!.client.request('DELETE', '/v1/missions/crasher')
    })
  })
}
