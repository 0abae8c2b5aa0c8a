// GET /metrics of real peers with a real Docker mission: the Prometheus text parses strictly, needs the token, and
// shows the membership, gossip, the mission's epoch, role and protection, checkpoint histograms, and a move counted
// as a handoff on the board that took the mission.
import t from 'tap'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Docker from 'dockerode'
import { spawnSwarm, stopAllPeers, waitFor, type PeerHandle } from '../harness/spawn-peer.ts'
import { LABEL_MISSION } from '../checkpoint/runtime.ts'
import type { MissionStatus } from '../peer/missions/index.ts'
import { dockerMissing, gateOn } from './helpers/requirements.ts'

interface Sample { name: string, labels: Record<string, string>, value: number }
interface Family { type: string, help: string, samples: Sample[] }

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/

/** A strict parse of the Prometheus text exposition format 0.0.4: throws on any line it does not understand. */
function parseExposition (text: string): Map<string, Family> {
  const families = new Map<string, Family>()
  const familyOf = (sample: string): Family | undefined => families.get(sample) ??
    families.get(sample.replace(/_(bucket|sum|count)$/, '')) ?? undefined
  if (!text.endsWith('\n')) throw new Error('the exposition does not end with a newline')
  for (const [index, line] of text.slice(0, -1).split('\n').entries()) {
    const where = `line ${index + 1} '${line}'`
    if (line === '') continue
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line)
    if (meta != null) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string]
      if (!NAME.test(name)) throw new Error(`${where}: bad metric name`)
      const family = families.get(name) ?? { type: '', help: '', samples: [] }
      families.set(name, family)
      if (kind === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`${where}: bad type`)
        family.type = rest
      } else {
        family.help = rest
      }
      continue
    }
    if (line.startsWith('#')) throw new Error(`${where}: unknown comment`)
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/.exec(line)
    if (sample == null) throw new Error(`${where}: not a sample`)
    const [, name, , labelText, valueText] = sample as unknown as [string, string, string | undefined, string | undefined, string]
    const labels: Record<string, string> = {}
    let rest = labelText ?? ''
    while (rest !== '') {
      const pair = /^([^=]+)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/.exec(rest)
      if (pair == null || !LABEL_NAME.test(pair[1] as string)) throw new Error(`${where}: bad labels at '${rest}'`)
      labels[pair[1] as string] = (pair[2] as string).replace(/\\(.)/g, (_, c: string) => c === 'n' ? '\n' : c)
      rest = rest.slice(pair[0].length)
    }
    // As Prometheus reads values (Go's ParseFloat): NaN and Inf in any case; prom-client writes `Nan` for an empty mean.
    const special = valueText.toLowerCase()
    const value = ['+inf', 'inf'].includes(special) ? Infinity : special === '-inf' ? -Infinity : special === 'nan' ? NaN : Number(valueText)
    if (Number.isNaN(value) && special !== 'nan') throw new Error(`${where}: bad value`)
    const family = familyOf(name)
    if (family == null || family.type === '') throw new Error(`${where}: sample before its # TYPE`)
    family.samples.push({ name, labels, value })
  }
  return families
}

function value (families: Map<string, Family>, name: string, labels: Record<string, string>): number | undefined {
  const family = families.get(name.replace(/_(bucket|sum|count)$/, '')) ?? families.get(name)
  return family?.samples.find(s => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value
}

async function scrape (peer: PeerHandle, token = peer.token): Promise<{ status: number, type: string | null, text: string }> {
  const response = await fetch(`http://${peer.apiAddress}/metrics`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) })
  return { status: response.status, type: response.headers.get('content-type'), text: await response.text() }
}

t.test('the strict parser refuses what Prometheus would refuse', async t => {
  t.throws(() => parseExposition('x 1'), /newline/)
  t.throws(() => parseExposition('x 1\n'), /before its # TYPE/)
  t.throws(() => parseExposition('# TYPE x gauge\nx{a="1} 1\n'), /bad labels/)
  t.throws(() => parseExposition('# TYPE x gauge\nx one\n'), /bad value/)
  t.ok(Number.isNaN(value(parseExposition('# TYPE x gauge\nx Nan\n'), 'x', {})), 'NaN in any case, as Prometheus reads it')
  t.equal(value(parseExposition('# TYPE x gauge\nx{a="q\\"z"} 2\n'), 'x', { a: 'q"z' }), 2)
})

const MISSION = 'metered'

if (gateOn(t, await dockerMissing())) {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-ops-metrics-'))
  const peers = await spawnSwarm(2)
  t.teardown(async () => {
    await stopAllPeers()
    const docker = new Docker()
    for (const c of await docker.listContainers({ all: true, filters: { label: [`${LABEL_MISSION}=${MISSION}`] } })) {
      await docker.getContainer(c.Id).remove({ force: true }).catch(() => {})
    }
    await rm(dir, { recursive: true, force: true })
  })
  const [a, b] = peers as [PeerHandle, PeerHandle]
  await waitFor('both peers alive to each other', async () => (await a.status()).peers.some(p => p.peerId === b.peerId && p.state === 'alive'))

  t.test('GET /metrics needs the API token', async t => {
    const refused = await scrape(a, 'not-the-token')
    t.equal(refused.status, 401, 'a wrong token is refused')
    t.notMatch(refused.text, /tandem_/, 'and gets no metrics')
  })

  t.test('a peer with a running mission: membership, gossip, mission gauges, checkpoint histograms, a move', async t => {
    const manifest = join(dir, `${MISSION}.yaml`)
    await writeFile(manifest, `name: ${MISSION}\nimage: tandem/busybox\ncommand: [sh, -c, "while true; do echo tick; sleep 0.1; done"]\nenv: {}\ncheckpointIntervalMs: 1000\n`)
    await a.client.request('POST', '/v1/missions', { manifest: await readFile(manifest, 'utf8'), filename: manifest })
    const show = async (peer: PeerHandle): Promise<MissionStatus> => await peer.client.request<MissionStatus>('GET', `/v1/missions/${MISSION}`)
    await waitFor('a replicated checkpoint', async () => {
      const m = await show(a)
      return m.state === 'running' && m.replicatedSeq != null && m.replicatedSeq >= 2 && m.protected
    }, 90_000)
    const mission = await show(a)
    const primary = mission.primary === a.peerId ? a : b
    const backup = primary === a ? b : a

    const scraped = await scrape(primary)
    t.equal(scraped.status, 200, 'the scrape answers 200')
    t.match(scraped.type ?? '', /^text\/plain; version=0\.0\.4/, 'in the Prometheus text format')
    const families = parseExposition(scraped.text)
    t.ok(families.size > 30, `every line parses strictly (${families.size} families)`)
    for (const [name, family] of families) {
      if (!name.startsWith('tandem_')) continue
      t.ok(family.help.length > 0, `${name} has a HELP text`)
      if (family.type === 'counter') t.match(name, /_total$/, `counter ${name} ends in _total`)
    }
    t.equal(value(families, 'tandem_peer_state', { peer: backup.peerId, state: 'alive' }), 1, 'the other peer is alive in the membership view')
    t.equal(value(families, 'tandem_peer_state', { peer: backup.peerId, state: 'dead' }), 0, 'and not dead')
    t.equal(value(families, 'tandem_peer_info', { peer: primary.peerId }), 1, 'the peer names itself')
    t.ok(families.get('tandem_gossip_accepted_total')?.samples.some(s => s.value > 0) === true, 'gossip messages were accepted')
    t.ok(families.get('tandem_gossip_dropped_total')?.samples.some(s => s.labels.reason === 'malformed') === true, 'dropped gossip is counted by reason')
    t.ok((value(families, 'tandem_event_loop_lag_seconds', {}) ?? -1) >= 0, 'event loop lag is there')
    t.ok((value(families, 'tandem_mission_epoch', { mission: MISSION }) ?? 0) >= mission.epoch, 'at least the epoch the API showed')
    t.equal(value(families, 'tandem_mission_role', { mission: MISSION, role: 'primary' }), 1, 'the primary says it is primary')
    t.equal(value(families, 'tandem_mission_protected', { mission: MISSION }), 1, 'the mission is protected')
    t.ok((value(families, 'tandem_mission_checkpoint_age_seconds', { mission: MISSION }) ?? -1) >= 0, 'checkpoint age in seconds')
    t.ok(value(families, 'tandem_mission_replication_lag_seconds', { mission: MISSION }) != null, 'replication lag in seconds')
    t.ok((value(families, 'tandem_checkpoint_pause_seconds_count', { mission: MISSION }) ?? 0) >= 2, 'checkpoint pauses observed')
    t.ok((value(families, 'tandem_checkpoint_duration_seconds_count', { mission: MISSION }) ?? 0) >= 2, 'checkpoint durations observed')
    t.equal(value(families, 'tandem_checkpoint_pause_seconds_bucket', { mission: MISSION, le: '+Inf' }), value(families, 'tandem_checkpoint_pause_seconds_count', { mission: MISSION }), 'the +Inf bucket holds every observation')
    t.ok((value(families, 'tandem_criu_frozen_seconds_count', { mission: MISSION }) ?? 0) >= 1, 'CRIU frozen time observed')
    t.ok((value(families, 'tandem_checkpoint_stored_bytes_total', { mission: MISSION }) ?? 0) > 0, 'bytes stored by checkpoints')

    const fromBackup = parseExposition((await scrape(backup)).text)
    t.equal(value(fromBackup, 'tandem_mission_role', { mission: MISSION, role: 'backup' }), 1, 'the backup says it is backup')
    t.ok((value(fromBackup, 'tandem_checkpoint_fetched_bytes_total', { mission: MISSION }) ?? 0) > 0, 'the backup counts the checkpoint bytes it fetched')

    await primary.client.request('POST', `/v1/missions/${MISSION}/move`, { to: backup.peerId }, { timeoutMs: 120_000 })
    await waitFor('the moved mission to run on the former backup', async () => {
      const m = await show(backup)
      return m.primary === backup.peerId && m.state === 'running'
    }, 60_000)
    const afterMove = await waitFor('the move counted as a handoff', async () => {
      const families = parseExposition((await scrape(backup)).text)
      return value(families, 'tandem_mission_failovers_total', { mission: MISSION, cause: 'handoff' }) === 1
    }, 10_000)
    t.ok(afterMove >= 0, 'the board that took the mission counts one failover, cause handoff')
    const moved = parseExposition((await scrape(backup)).text)
    t.equal(value(moved, 'tandem_restore_duration_seconds_count', { mission: MISSION }), 1, 'and one restore duration')
    t.equal(value(moved, 'tandem_mission_role', { mission: MISSION, role: 'primary' }), 1, 'it is now primary')
    await a.client.request('DELETE', `/v1/missions/${MISSION}`)
  })
}
