// The mission contract through the CLI and the control API of real peers (on this host's Docker): a malformed
// manifest is refused naming the field; a deployed mission reaches the same view on every peer; show, ls, move, rm.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Docker from 'dockerode'
import { CLI_PATH, spawnSwarm, stopAllPeers, waitFor, type PeerHandle } from '../harness/spawn-peer.ts'
import { LABEL_MISSION } from '../checkpoint/runtime.ts'
import type { MissionStatus, MoveResult } from '../peer/missions/index.ts'
import { dockerMissing, gateOn } from './helpers/requirements.ts'

function cli (peer: PeerHandle, ...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise(resolve => {
    execFile(process.execPath, [CLI_PATH, ...args, '--api', peer.apiAddress, '--data-dir', peer.dataDir], (err, stdout, stderr) => {
      resolve({ code: err == null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

/** Docker's timestamps (ms) of every line a container prints, from now on, as they come. */
async function followTimestamps (docker: Docker, id: string): Promise<number[]> {
  const stamps: number[] = []
  const stream = await docker.getContainer(id).logs({ follow: true, stdout: true, stderr: true, timestamps: true, since: 0 }) as unknown as NodeJS.ReadableStream
  stream.on('data', (chunk: Buffer) => {
    for (const match of chunk.toString('latin1').matchAll(/(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) tick/g)) stamps.push(Date.parse(match[1] as string))
  })
  stream.on('error', () => {})
  return stamps
}

if (gateOn(t, await dockerMissing())) {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-mission-api-'))
  const peers = await spawnSwarm(2)
  t.teardown(async () => {
    await stopAllPeers()
    const docker = new Docker()
    for (const c of await docker.listContainers({ all: true, filters: { label: [`${LABEL_MISSION}=sleeper`] } })) {
      await docker.getContainer(c.Id).remove({ force: true }).catch(() => {})
    }
    await rm(dir, { recursive: true, force: true })
  })
  const [a, b] = peers as [PeerHandle, PeerHandle]
  await waitFor('both peers alive to each other', async () => (await a.status()).peers.some(p => p.peerId === b.peerId && p.state === 'alive'))

  t.test('a malformed manifest is refused, naming the field', async t => {
    const bad = join(dir, 'bad.yaml')
    await writeFile(bad, 'name: sleeper\nimage: tandem/busybox\ncheckpointIntervalMs: fast\n')
    const result = await cli(a, 'mission', 'deploy', bad)
    t.not(result.code, 0, 'the deploy fails')
    t.match(result.stderr, /checkpointIntervalMs/, 'the error names the field')
    const unknown = join(dir, 'unknown.yaml')
    await writeFile(unknown, 'name: sleeper\nimage: tandem/busybox\nreplicas: 3\n')
    t.match((await cli(a, 'mission', 'deploy', unknown)).stderr, /replicas/, 'an unknown field is named')
    t.equal((await cli(a, 'mission', 'deploy', join(dir, 'missing.yaml'))).code, 2, 'a missing file is a usage error')
  })

  t.test('deploy, then every peer sees the mission; show; move; rm', async t => {
    const manifest = join(dir, 'sleeper.yaml')
    // It prints every 50 ms, so the move's real silence can be read from Docker's timestamps of its output.
    await writeFile(manifest, 'name: sleeper\nimage: tandem/busybox\ncommand: [sh, -c, "while true; do echo tick; sleep 0.05; done"]\nenv: {}\ncheckpointIntervalMs: 2000\n')
    const deployed = await cli(a, 'mission', 'deploy', manifest, '--json')
    t.equal(deployed.code, 0, `deploy exits 0 (${deployed.stderr})`)
    const onB = await waitFor('peer b to see the mission running', async () => {
      const list = JSON.parse((await cli(b, 'mission', 'ls', '--json')).stdout || '[]') as MissionStatus[]
      return list.some(m => m.name === 'sleeper' && m.state === 'running' && m.primary != null)
    }, 60_000)
    t.ok(onB >= 0, 'the mission reaches the same view on the other peer')
    const shown = JSON.parse((await cli(b, 'mission', 'show', 'sleeper', '--json')).stdout) as MissionStatus
    const fromA = JSON.parse((await cli(a, 'mission', 'show', 'sleeper', '--json')).stdout) as MissionStatus
    t.equal(shown.epoch, fromA.epoch, 'same epoch on both peers')
    t.equal(shown.primary, fromA.primary, 'same primary on both peers')
    t.ok([a.peerId, b.peerId].includes(shown.primary as string), 'the primary is one of the peers')
    const status = await a.status() as unknown as { missions: MissionStatus[] }
    t.ok(status.missions.some(m => m.name === 'sleeper'), 'tandem status --json lists the mission')
    t.match((await cli(a, 'mission', 'show', 'nope')).stderr, /no mission named 'nope'/, 'an unknown mission is a clear error')
    t.equal((await cli(a, 'mission', 'deploy', manifest)).code, 1, 'deploying the same name twice is refused')

    await waitFor('a replicated checkpoint', async () => {
      const m = JSON.parse((await cli(a, 'mission', 'show', 'sleeper', '--json')).stdout) as MissionStatus
      return m.replicatedSeq != null && m.replicatedSeq >= 1
    }, 60_000)
    const target = shown.primary === a.peerId ? b : a
    const docker = new Docker()
    const before = (await docker.listContainers({ filters: { label: [`${LABEL_MISSION}=sleeper`] } }))[0]!
    const oldOutput = await followTimestamps(docker, before.Id)
    const moved = await cli(a, 'mission', 'move', 'sleeper', '--to', target.peerId, '--json')
    t.equal(moved.code, 0, `move exits 0 (${moved.stderr}; events: ${((JSON.parse((await cli(a, 'mission', 'show', 'sleeper', '--json')).stdout) as MissionStatus).events).slice(-8).map(e => e.text).join(' | ')})`)
    const result = JSON.parse(moved.stdout || '{}') as MoveResult
    const after = (await docker.listContainers({ filters: { label: [`${LABEL_MISSION}=sleeper`] } }))[0]!
    const newOutput = await followTimestamps(docker, after.Id)
    await waitFor('the restored container to print', async () => newOutput.length > 0, 10_000)
    const silenceMs = (newOutput[0] as number) - (oldOutput.at(-1) as number)
    t.equal(result.measuredFrom, 'board reports', 'the downtime comes from the boards\' reports of the stop and the start')
    // Docker stamps a line when it reads it; allow one print period (50 ms) for the first line after the restore.
    t.ok(result.downtimeMs >= silenceMs - 60, `the reported downtime ${result.downtimeMs} ms is not less than the real silence ${Math.round(silenceMs)} ms`)
    t.ok(result.downtimeMs <= result.totalMs, `and within the whole move (${result.totalMs} ms)`)
    const afterMove = JSON.parse((await cli(b, 'mission', 'show', 'sleeper', '--json')).stdout) as MissionStatus
    t.equal(afterMove.primary, target.peerId, 'the target is the primary after the move')
    t.ok(afterMove.epoch > shown.epoch, 'the move bumped the epoch')
    const running = await new Docker().listContainers({ filters: { label: [`${LABEL_MISSION}=sleeper`] } })
    t.equal(running.length, 1, 'one container of the mission runs after the move')
    t.equal(running[0]?.Labels['tandem.peer'], target.peerId, 'it runs for the target peer')
    t.equal((await cli(a, 'mission', 'move', 'sleeper', '--to', 'not-a-peer')).code, 1, 'a move to an unknown peer is refused')

    t.equal((await cli(b, 'mission', 'rm', 'sleeper')).code, 0, 'rm exits 0')
    await waitFor('the mission to be gone on both peers', async () => {
      for (const peer of [a, b]) {
        const list = JSON.parse((await cli(peer, 'mission', 'ls', '--json')).stdout || '[]') as MissionStatus[]
        if (list.some(m => m.name === 'sleeper')) return false
      }
      return true
    }, 30_000)
    const left = await new Docker().listContainers({ filters: { label: [`${LABEL_MISSION}=sleeper`] } })
    t.equal(left.length, 0, 'no container of the mission runs after rm')
  })
}
