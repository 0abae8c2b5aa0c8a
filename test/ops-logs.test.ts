// `tandem peer start --log-format json` on real peers with a real Docker mission and a power cut: every line either
// peer (and the killed peer's watchdog) prints is one JSON object with time, level, msg and the peer; mission lines
// carry the mission and their epoch. The default format stays as the demo, bench and chaos runner read it.
import t from 'tap'
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Docker from 'dockerode'
import { spawnPeer, stopAllPeers, waitFor, type PeerHandle } from '../harness/spawn-peer.ts'
import { LABEL_MISSION } from '../checkpoint/runtime.ts'
import type { MissionStatus } from '../peer/missions/index.ts'
import { dockerMissing, gateOn } from './helpers/requirements.ts'
import { levelOf } from '../peer/logger.ts'

interface JsonLine { time: string, level: string, msg: string, peer?: string, mission?: string, epoch?: number, component?: string, [field: string]: unknown }

t.test('levels of lines whose callers give none come from their wording', async t => {
  t.equal(levelOf('missions: fetch of checkpoint #3 failed: timeout'), 'warn')
  t.equal(levelOf('membership: 12D3 alive -> suspect (no beat for 600 ms)'), 'info')
})

t.test('the default format is unchanged: ready {json} on stdout, ISO-stamped lines on stderr', async t => {
  const lines: Array<{ line: string, stream: string }> = []
  const peer = await spawnPeer({ onLine: (line, stream) => { lines.push({ line, stream }) } })
  t.teardown(async () => { await peer.stop() })
  const ready = lines.find(l => l.stream === 'stdout' && l.line.startsWith('ready '))
  t.ok(ready != null, 'a ready line')
  t.same(Object.keys(JSON.parse(ready!.line.slice(6)) as object), ['peerId', 'addrs', 'api', 'pid'], 'with its JSON as before')
  t.match(lines.find(l => l.stream === 'stdout')?.line ?? '', /^tandem peer 12D3\S+ \(board /, 'the banner first')
  await peer.stop()
  t.ok(lines.filter(l => l.stream === 'stderr').every(l => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /.test(l.line)), 'every stderr line starts with its ISO time')
  t.ok(lines.some(l => l.stream === 'stdout' && l.line === 'stopped'), 'and "stopped" at the end')
})

const MISSION = 'logged'

if (gateOn(t, await dockerMissing())) {
  t.test('json: every line of two peers, a mission, a power cut and the watchdog parses', async t => {
    const dir = await mkdtemp(join(tmpdir(), 'tandem-ops-logs-'))
    const lines = new Map<string, string[]>()
    const onLine = (owner: string[]) => (line: string): void => { owner.push(line) }
    const first: string[] = []
    const a = await spawnPeer({ logFormat: 'json', onLine: onLine(first) })
    const second: string[] = []
    const b = await spawnPeer({ logFormat: 'json', bootstrap: a.addrs, onLine: onLine(second) })
    lines.set(a.peerId, first)
    lines.set(b.peerId, second)
    t.teardown(async () => {
      await stopAllPeers()
      const docker = new Docker()
      for (const c of await docker.listContainers({ all: true, filters: { label: [`${LABEL_MISSION}=${MISSION}`] } })) {
        await docker.getContainer(c.Id).remove({ force: true }).catch(() => {})
      }
      await rm(dir, { recursive: true, force: true })
    })
    await waitFor('both peers alive to each other', async () => (await a.status()).peers.some(p => p.peerId === b.peerId && p.state === 'alive'))
    const manifest = join(dir, `${MISSION}.yaml`)
    await writeFile(manifest, `name: ${MISSION}\nimage: tandem/busybox\ncommand: [sh, -c, "while true; do echo tick; sleep 0.1; done"]\nenv: {}\ncheckpointIntervalMs: 1000\n`)
    await a.client.request('POST', '/v1/missions', { manifest: await readFile(manifest, 'utf8'), filename: manifest })
    const show = async (peer: PeerHandle): Promise<MissionStatus> => await peer.client.request<MissionStatus>('GET', `/v1/missions/${MISSION}`)
    await waitFor('a protected mission', async () => {
      const m = await show(a)
      return m.state === 'running' && m.protected && (m.replicatedSeq ?? 0) >= 1
    }, 90_000)
    const before = await show(a)
    const primary = before.primary === a.peerId ? a : b
    const survivor = primary === a ? b : a
    primary.kill('SIGKILL')
    await waitFor('the survivor to take over', async () => {
      const m = await show(survivor)
      return m.primary === survivor.peerId && m.state === 'running' && m.epoch > before.epoch
    }, 60_000)
    const killedLines = lines.get(primary.peerId) as string[]
    await waitFor('the killed peer\'s watchdog to report', () => killedLines.some(line => line.includes('tandem watchdog')), 15_000)
    await survivor.stop()

    const parsed: JsonLine[] = []
    let bad: string | undefined
    for (const [peerId, output] of lines) {
      for (const line of output) {
        try {
          const value = JSON.parse(line) as JsonLine
          if (typeof value !== 'object' || value == null) throw new Error('not an object')
          if (Number.isNaN(Date.parse(value.time)) || !/Z$/.test(value.time)) throw new Error('no ISO time')
          if (!['info', 'warn', 'error'].includes(value.level)) throw new Error('no level')
          if (typeof value.msg !== 'string' || value.msg === '') throw new Error('no msg')
          if (value.peer !== peerId) throw new Error(`peer is ${String(value.peer)}, not ${peerId}`)
          parsed.push(value)
        } catch (err) {
          bad ??= `${(err as Error).message}: ${line}`
        }
      }
    }
    t.equal(bad, undefined, `every line is a JSON object with time, level, msg and the peer (${parsed.length} lines)`)
    const ready = parsed.filter(l => l.msg === 'ready')
    t.equal(ready.length, 2, 'each peer has its ready line')
    t.ok(ready.every(l => typeof l.peerId === 'string' && Array.isArray(l.addrs) && typeof l.api === 'string'), 'with peerId, addrs and api as fields')
    const missionLines = parsed.filter(l => l.mission === MISSION)
    t.ok(missionLines.length > 3, `mission lines carry the mission (${missionLines.length})`)
    t.ok(missionLines.some(l => l.peer === survivor.peerId && typeof l.epoch === 'number' && l.epoch > before.epoch && /primary/.test(l.msg)),
      'the takeover line carries its new epoch')
    t.ok(parsed.some(l => l.component === 'membership' && l.peer === survivor.peerId && /-> dead/.test(l.msg)), 'the survivor logged the primary dead, component membership')
    t.ok(parsed.some(l => l.component === 'watchdog' && l.peer === primary.peerId), 'the killed peer\'s watchdog logs in JSON too')
    t.ok(parsed.some(l => l.msg === 'stopped' && l.peer === survivor.peerId), 'the survivor\'s stop')
  })
}
