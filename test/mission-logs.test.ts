// `tandem mission logs`: unit checks of the store (order, each line once, bounds, the data dir), Docker's log frames,
// --since and the epoch marks; then three simulated boards (own peer and Docker daemon each, real CRIU) run the
// vehicle mission, the primary's board loses power, the backup restores it, and `mission logs` on the third board
// prints the lines of both containers in time order with the takeover marked, while `mission logs -f` started
// before the cut keeps printing the new container's lines.
import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startMissionSwarm, MISSION, type MissionSwarm } from '../harness/mission-swarm.ts'
import { gateDockerCriu } from './checkpoint-helpers.ts'
import { CLI_PATH } from '../harness/spawn-peer.ts'
import { DockerLogParser, MAX_FILE_BYTES, MAX_LINES_PER_MISSION, MissionLogStore, type MissionLogEntry, type StoredLogEntry } from '../peer/mission-logs.ts'
import { LogFormatter, parseSince } from '../peer/commands/mission-logs.ts'
import type { SimulatedBoard } from '../harness/simulated-board.ts'

function entry (container: string, n: number, at: number, text = `line ${n}`): MissionLogEntry {
  return { at, board: '12D3KooWBoard', container, epoch: 1, n, stream: 'stdout', text }
}

function frame (stream: 1 | 2, payload: string): Buffer {
  const body = Buffer.from(payload)
  const header = Buffer.alloc(8)
  header[0] = stream
  header.writeUInt32BE(body.length, 4)
  return Buffer.concat([header, body])
}

t.test('the store keeps each line once, in time order, bounded, across a restart', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-mlogs-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const store = new MissionLogStore(dir)
  await store.load()
  store.add('m', [entry('aaa', 0, 100), entry('aaa', 1, 300)])
  store.add('m', [entry('bbb', 0, 200), entry('aaa', 1, 300)])
  t.same(store.page('m').lines.map(l => `${l.container}:${l.n}`), ['aaa:0', 'bbb:0', 'aaa:1'], 'merged by time, the repeat dropped')
  const first = store.page('m')
  store.add('m', [entry('bbb', 1, 50)])
  t.same(store.page('m', { after: first.next }).lines.map(l => `${l.container}:${l.n}`), ['bbb:1'], 'after= returns what arrived since, however old')
  t.same(store.page('m', { since: 250 }).lines.map(l => l.n), [1], 'since= by time')
  t.same(store.page('m', { tail: 2 }).lines.map(l => l.at), [200, 300], 'tail=')
  await store.flushed()
  const again = new MissionLogStore(dir)
  await again.load()
  t.same(again.page('m').lines.map(l => `${l.container}:${l.n}`), ['bbb:1', 'aaa:0', 'bbb:0', 'aaa:1'], 'a restarted peer has them from its data dir')

  const big = new MissionLogStore(dir)
  await big.load()
  const text = 'x'.repeat(500)
  for (let i = 0; i < MAX_LINES_PER_MISSION + 1000; i += 100) {
    big.add('big', Array.from({ length: 100 }, (_, k) => entry('ccc', i + k, 1000 + i + k, text)))
  }
  await big.flushed()
  t.equal(big.page('big').lines.length, MAX_LINES_PER_MISSION, `at most ${MAX_LINES_PER_MISSION} lines in memory`)
  t.equal(big.page('big').lines[0]?.n, 1000, 'the oldest dropped first')
  const files = (await readdir(dir)).filter(f => f.startsWith('big'))
  let bytes = 0
  for (const f of files) bytes += (await stat(join(dir, f))).size
  t.ok(files.length === 2 && bytes <= 2 * MAX_FILE_BYTES, `on disk: ${files.join(', ')}, ${bytes} bytes <= 2 x ${MAX_FILE_BYTES}`)
})

t.test('Docker log frames, --since and the epoch marks', async t => {
  const parser = new DockerLogParser()
  const both = Buffer.concat([frame(1, '2026-12-02T12:00:00.123456789Z hello\n'), frame(2, '2026-12-02T12:00:01.5Z oops\n'), frame(1, '2026-12-02T12:00:02Z long')])
  t.same(parser.push(both.subarray(0, 20)), [], 'a frame cut in two waits for its rest')
  t.same(parser.push(both.subarray(20)), [
    { at: Date.parse('2026-12-02T12:00:00.123Z'), stream: 'stdout', text: 'hello' },
    { at: Date.parse('2026-12-02T12:00:01.5Z'), stream: 'stderr', text: 'oops' }
  ])
  t.same(parser.push(frame(1, '2026-12-02T12:00:02Z  line\n')).map(l => l.text), ['long line'], 'a long line Docker split is joined')
  t.equal(parseSince('90s', 100_000), 10_000)
  t.equal(parseSince('1h30m', 6_000_000), 600_000)
  t.equal(parseSince('2026-12-02T12:00:00Z'), Date.parse('2026-12-02T12:00:00Z'))
  t.throws(() => parseSince('yesterday'))
  const formatter = new LogFormatter()
  const lines: StoredLogEntry[] = [
    { ...entry('aaa', 0, 1000), seq: 1 },
    { ...entry('aaa', 1, 2000, 'bad\u001b[2J'), seq: 2 },
    { ...entry('bbb', 0, 3000), epoch: 2, board: '12D3KooWOtherBoardXYZ', seq: 3 }
  ]
  const out = formatter.format(lines)
  t.match(out[0], /^--- epoch 1: primary 12D3KooWBoard /)
  t.notMatch(out.join('\n'), /\u001b/, 'no escape sequence reaches the terminal')
  t.match(out[3], /^--- epoch 2: primary 12D3KooW…ardXYZ /, 'the takeover is marked')
  t.equal(out.length, 5)
})

function cli (board: SimulatedBoard, ...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise(resolve => {
    execFile(process.execPath, [CLI_PATH, ...args, '--api', board.peer!.apiAddress, '--data-dir', board.peerDataDir], { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err == null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

interface Printed { mark?: { epoch: number, board: string, container: string }, at?: number, text?: string }

function parsePrinted (text: string): Printed[] {
  return text.split('\n').filter(Boolean).map(line => {
    const mark = /^--- epoch (\d+): primary (\S+) \(container ([0-9a-f]+)\) ---$/.exec(line)
    if (mark != null) return { mark: { epoch: Number(mark[1]), board: mark[2] as string, container: mark[3] as string } }
    const [time, ...rest] = line.split(' ')
    return { at: Date.parse(time as string), text: rest.join(' ').slice(2) }
  })
}

if (gateDockerCriu(t)) {
  let ms: MissionSwarm | undefined
  t.teardown(async () => { await ms?.stop() })

  t.test('one stream across a power-cut takeover, from a board that took no part; -f follows through it', async t => {
    ms = await startMissionSwarm(3)
    const swarm = ms
    const before = await swarm.waitFor('a synced backup', async () => {
      const s = await swarm.anyStatus()
      return s?.state === 'running' && s.backup != null && s.replicatedSeq != null && s.replicatedSeq >= 1 ? s : undefined
    })
    const primary = swarm.boardOf(before.primary)!
    const backup = swarm.boardOf(before.backup)!
    const bystander = swarm.boards.find(b => b !== primary && b !== backup)!
    const oldContainer = before.container?.id ?? (await swarm.running())[0]?.id
    t.ok(oldContainer, 'the primary runs a container')

    await swarm.waitFor('the bystander to hold the primary\'s lines', async () => {
      const r = await cli(bystander, 'mission', 'logs', MISSION, '--json')
      return r.code === 0 && r.stdout.split('\n').filter(Boolean).length >= 5 ? true : undefined
    }, 30_000)

    const follow = spawn(process.execPath, [CLI_PATH, 'mission', 'logs', MISSION, '-f', '--tail', '3', '--api', bystander.peer!.apiAddress, '--data-dir', bystander.peerDataDir], { stdio: ['ignore', 'pipe', 'pipe'] })
    let followed = ''
    follow.stdout.on('data', (chunk: Buffer) => { followed += chunk.toString() })
    t.teardown(() => { if (follow.exitCode == null) follow.kill('SIGKILL') })
    await swarm.waitFor('the follower to print', async () => parsePrinted(followed).some(p => p.text != null) || undefined, 10_000)

    const cutAt = Date.now()
    await primary.powerCut()
    const after = await swarm.waitFor(`${backup.name} takes over`, async () => {
      const s = await swarm.status(backup)
      return s?.primary === backup.peerId && s.state === 'running' && s.epoch > before.epoch && s.container != null ? s : undefined
    }, 60_000)
    const newContainer = (after.container as { id: string }).id.slice(0, 12)

    const followedMark = await swarm.waitFor('-f to print the takeover and the new container\'s lines', async () => {
      const printed = parsePrinted(followed)
      const markAt = printed.findIndex(p => p.mark?.container === newContainer)
      return markAt >= 0 && printed.slice(markAt + 1).filter(p => p.text != null).length >= 3 ? printed[markAt] : undefined
    }, 30_000)
    // The restored container carries the epoch of the takeover; a later reconfiguration (a new backup) may have raised it since.
    const takeoverEpoch = followedMark?.mark?.epoch ?? -1
    t.ok(takeoverEpoch > before.epoch && takeoverEpoch <= after.epoch, `-f marked '--- epoch ${takeoverEpoch}: primary ${followedMark?.mark?.board} ---' (cut at epoch ${before.epoch}) and kept printing, no reconnect`)
    t.equal(follow.exitCode, null, 'the follower still runs')
    follow.kill('SIGINT')

    const r = await cli(bystander, 'mission', 'logs', MISSION)
    t.equal(r.code, 0, r.stderr)
    const printed = parsePrinted(r.stdout)
    const marks = printed.filter(p => p.mark != null).map(p => p.mark!)
    const oldMark = marks.find(m => m.container === oldContainer!.slice(0, 12))
    t.ok(oldMark != null && oldMark.epoch <= before.epoch, `the old container is marked (started under epoch ${oldMark?.epoch}, primary at epoch ${before.epoch} when cut)`)
    const newMark = printed.findIndex(p => p.mark?.container === newContainer)
    t.ok(newMark > 0, 'the takeover is marked')
    t.equal(printed[newMark]?.mark?.epoch, takeoverEpoch, 'the same epoch as -f printed')
    t.comment(printed.slice(Math.max(0, newMark - 2), newMark + 3).map(p => p.mark != null ? `--- epoch ${p.mark.epoch}: primary ${p.mark.board} (container ${p.mark.container}) ---` : `${new Date(p.at as number).toISOString()} ${p.text as string}`).join('\n'))
    const oldLines = printed.slice(0, newMark).filter(p => p.text != null)
    const newLines = printed.slice(newMark + 1).filter(p => p.text != null)
    t.ok(oldLines.length >= 5 && newLines.length >= 3, `${oldLines.length} lines of the old container, then ${newLines.length} of the new one`)
    t.ok(oldLines.every(p => (p.at as number) <= cutAt + 1000), 'the old container\'s lines are from before the cut')
    const times = printed.filter(p => p.at != null).map(p => p.at as number)
    t.same(times, [...times].sort((a, b) => a - b), 'in time order')
    const ticks = (lines: Printed[]): number[] => lines.map(p => { try { return (JSON.parse(p.text as string) as { tick?: number }).tick ?? -1 } catch { return -1 } }).filter(n => n >= 0)
    const lastOld = ticks(oldLines).at(-1) ?? -1
    const firstNew = ticks(newLines)[0] ?? -1
    t.ok(firstNew > 0 && lastOld > 0, `the vehicle's ticks: old container's last ${lastOld}, new container's first ${firstNew} (restored from a checkpoint, not from 0)`)

    const json = await cli(backup, 'mission', 'logs', MISSION, '--json', '--tail', '2')
    const tail = json.stdout.split('\n').filter(Boolean).map(line => JSON.parse(line) as StoredLogEntry)
    t.equal(tail.length, 2, '--tail 2 on the new primary')
    t.ok(tail.every(l => l.container === newContainer && l.epoch === takeoverEpoch), 'its last lines are the new container\'s')
  })
}
