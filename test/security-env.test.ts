// Env values stay out of gossip, with real boards (own peer process and Docker daemon each, real CRIU, libp2p,
// Helia) and a real attacker: a raw libp2p node holding the swarm key, outside every view, that overhears every
// mission message. The operator's CLI signs the salted digests; the records carry the values sealed for the view; the
// mission runs with its env on its primary and, after a power cut, on its backup (the container prints its env).
import t from 'tap'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { createSwarmNode } from '../peer/node.ts'
import { startSimulatedSwarm, type SimulatedBoard, type SimulatedSwarm } from '../harness/simulated-board.ts'
import { missionOn, until } from '../harness/observe.ts'
import { CLI_PATH, testOperatorKey } from '../harness/spawn-peer.ts'
import { HEARTBEAT_TOPIC } from '../peer/heartbeat.ts'
import { MISSIONS_TOPIC, type MissionStatus } from '../peer/missions/index.ts'
import { ENV_DIGEST_PREFIX } from '../manifest/env-commitment.ts'
import type { ConsensusMessage } from '../consensus/types.ts'
import { gateDockerCriu, tempDir } from './checkpoint-helpers.ts'

const MISSION = 'envy'
const SECRET = `tok-${randomBytes(12).toString('hex')}`

function cli (board: SimulatedBoard, ...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const peer = board.peer!
  return new Promise(resolve => {
    execFile(process.execPath, [CLI_PATH, ...args, '--api', peer.apiAddress, '--data-dir', peer.dataDir], (err, stdout, stderr) => {
      resolve({ code: err == null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

/** What a board's container of the mission printed (its id: the running one). */
async function printed (board: SimulatedBoard): Promise<{ id: string, text: string } | undefined> {
  const docker = board.dockerClient()
  const [c] = await docker.listContainers({ filters: { label: [`tandem.mission=${MISSION}`] } })
  if (c == null) return undefined
  const logs = await docker.getContainer(c.Id).logs({ stdout: true, stderr: true, follow: false }) as unknown as Buffer
  return { id: c.Id, text: logs.toString('latin1') }
}

/** Every encoding of the secret an honest leak would use. */
const leaks = (text: string): boolean => [SECRET, Buffer.from(SECRET).toString('hex'), Buffer.from(SECRET).toString('base64'), Buffer.from(SECRET).toString('base64url')]
  .some(form => text.includes(form))

if (gateDockerCriu(t)) {
  t.test('an attacker overhearing every mission message finds no env value; primary and backup run with it', async t => {
    const dir = await tempDir(t, 'secenv')
    let swarm: SimulatedSwarm | undefined
    t.teardown(async () => { await swarm?.stop() })
    swarm = await startSimulatedSwarm({ count: 3, dir })
    const boards = swarm.boards

    const attacker = await createSwarmNode({
      privateKey: await generateKeyPair('Ed25519'), dataDir: join(dir, 'attacker'), listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: [], swarmKey: new Uint8Array(await readFile(swarm.swarmKeyFile)), mdns: false
    })
    t.teardown(async () => { await attacker.stop() })
    const pubsub = attacker.libp2p.services.pubsub
    pubsub.subscribe(MISSIONS_TOPIC)
    pubsub.subscribe(HEARTBEAT_TOPIC)
    const overheard: string[] = []
    pubsub.addEventListener('message', event => {
      if (event.detail.topic === MISSIONS_TOPIC) overheard.push(new TextDecoder().decode(event.detail.data))
    })
    for (const b of boards) await attacker.libp2p.dial(multiaddr(b.address()), { signal: AbortSignal.timeout(5000) })
    await until('every board takes the attacker\'s subscription', async () => boards.every(b => pubsub.getSubscribers(MISSIONS_TOPIC).some(id => id.toString() === b.peerId)), 20_000)

    const manifest = join(dir, 'envy.yaml')
    await writeFile(manifest, [
      `name: ${MISSION}`, 'image: tandem/busybox',
      'command: [sh, -c, "i=0; while true; do i=$((i+1)); echo \\"tick $i API_TOKEN=$API_TOKEN MODE=$MODE\\"; sleep 0.2; done"]',
      `env: { API_TOKEN: "${SECRET}", MODE: plain }`, 'checkpointIntervalMs: 1000', ''
    ].join('\n'))
    const deployed = await cli(boards[1]!, 'mission', 'deploy', manifest, '--operator-key', testOperatorKey().privateFile)
    t.equal(deployed.code, 0, `the CLI signs the digests and deploys (${deployed.stderr.trim()})`)

    const running = await until('the mission protected on its primary', async () => {
      const s = await missionOn(boards[0]!, MISSION)
      return s?.state === 'running' && s.protected ? s : undefined
    }, 90_000, async () => JSON.stringify(await missionOn(boards[0]!, MISSION)))
    const primary = boards.find(b => b.peerId === running.primary)!
    const backup = boards.find(b => b.peerId === running.backup)!
    const onPrimary = await until('the primary\'s container prints its env', async () => {
      const p = await printed(primary)
      return p?.text.includes(`API_TOKEN=${SECRET} MODE=plain`) === true ? p : undefined
    }, 20_000)
    t.ok(onPrimary, 'the primary runs the mission with the clear env values')

    const shown = JSON.parse((await cli(backup, 'mission', 'show', MISSION, '--json')).stdout) as MissionStatus
    t.same(shown.env, { API_TOKEN: SECRET, MODE: 'plain' }, 'a view member shows the values')
    t.ok(shown.spec.env.API_TOKEN?.startsWith(ENV_DIGEST_PREFIX), 'its spec (what the operator signed) holds the digest')
    t.match((await cli(backup, 'mission', 'show', MISSION)).stdout, `API_TOKEN=${SECRET}`, 'mission show prints them there')

    const announces = overheard.flatMap(text => {
      const m = JSON.parse(text) as ConsensusMessage
      return m.type === 'announce' && m.record.mission === MISSION ? [m.record] : []
    })
    t.ok(announces.length >= 3, `the attacker overheard ${announces.length} announces of the mission (${overheard.length} messages in all)`)
    t.ok(announces.every(r => r.envSeal != null && r.spec.env.API_TOKEN?.startsWith(ENV_DIGEST_PREFIX) && r.spec.env.MODE?.startsWith(ENV_DIGEST_PREFIX)),
      'every record carries digests and a seal, never the values')
    t.ok(announces.every(r => r.envSeal!.to.every(w => w.peer !== attacker.libp2p.peerId.toString())), 'no seal is wrapped for the attacker')
    t.equal(overheard.filter(leaks).length, 0, `no overheard message holds the value (clear, hex or base64): ${overheard.length} messages`)
    t.equal(overheard.filter(text => text.includes('"plain"')).length, 0, 'nor the short one')

    // A power cut of the primary: the backup restores the checkpoint, and the restored process prints the same env.
    await primary.powerCut()
    const after = await until('the backup takes over', async () => {
      const s = await missionOn(backup, MISSION)
      return s?.primary === backup.peerId && s.state === 'running' && s.epoch > running.epoch && s.container != null ? s : undefined
    }, 60_000, async () => JSON.stringify(await missionOn(backup, MISSION)))
    const restoredPrint = await until('the restored container prints its env', async () => {
      const p = await printed(backup)
      return p != null && p.id === after.container!.id && /tick \d+ API_TOKEN=/.test(p.text) ? p : undefined
    }, 20_000)
    t.match(restoredPrint.text, `API_TOKEN=${SECRET} MODE=plain`, 'after the failover the backup runs it with the same env')
    t.ok(after.events.some(e => e.event.kind === 'restored'), 'from a checkpoint')

    // The dead board leaves the view at the next reconfiguration; the new primary seals the values again for it.
    const resealed = await until('the values sealed again for the smaller view', async () => {
      const s = await missionOn(backup, MISSION)
      return s?.events.some(e => e.event.kind === 'envResealed' && e.event.members === 2) === true ? s : undefined
    }, 60_000, async () => JSON.stringify((await missionOn(backup, MISSION))?.events.slice(-5).map(e => e.text)))
    t.ok(resealed, 'resealed by the new primary')
    const last = overheard.flatMap(text => { const m = JSON.parse(text) as ConsensusMessage; return m.type === 'announce' && m.record.mission === MISSION ? [m.record] : [] }).at(-1)
    await until('an announce with the new seal overheard', async () => {
      const r = overheard.flatMap(text => { const m = JSON.parse(text) as ConsensusMessage; return m.type === 'announce' && m.record.mission === MISSION ? [m.record] : [] }).at(-1)
      return r?.envSeal != null && r.envSeal.to.length === 2 && !r.envSeal.to.some(w => w.peer === primary.peerId) ? r : undefined
    }, 20_000, () => JSON.stringify(last?.envSeal?.to.map(w => w.peer)))
    t.pass('the new seal is no longer wrapped for the dead board')
    t.equal(overheard.filter(leaks).length, 0, `still no value in any of the ${overheard.length} overheard messages`)
    const status = await backup.peer!.status() as unknown as { env: { refused: Record<string, number> } }
    t.same(status.env.refused, {}, 'the members opened every seal and every value matched its digest')

    // The cut board comes back (its persisted records reload): it rejoins the view, the primary seals the values for
    // it again, and it can show them; the attacker still learns nothing.
    await primary.powerOn(swarm.bootstrapFor(primary))
    const current = await until('the values sealed again for the three boards', async () => {
      const s = await missionOn(backup, MISSION)
      return s?.events.some(e => e.event.kind === 'envResealed' && e.event.members === 3) === true ? s : undefined
    }, 90_000, async () => JSON.stringify((await missionOn(backup, MISSION))?.events.slice(-5).map(e => e.text)))
    // Its persisted record's seal (of before the cut) opened for it too: what counts is the current epoch's.
    const back = await until('the returning board opens the current seal', async () => {
      const s = await missionOn(primary, MISSION)
      return s != null && s.epoch >= current.epoch && s.env.API_TOKEN === SECRET ? s : undefined
    }, 30_000, async () => JSON.stringify(await missionOn(primary, MISSION)))
    t.same(back.env, { API_TOKEN: SECRET, MODE: 'plain' }, 'the returning board is a member again and reads the values of the new seal')
    t.equal(overheard.filter(leaks).length, 0, `no value in any of the ${overheard.length} overheard messages`)
  })
}
