// The peer asked for a mission's output gathers it from the other boards over libp2p (/tandem/mission-logs/1.0.0):
// two real peers on loopback, no Docker; one starts with lines in its data dir (as after a restart), the other one's
// `tandem mission logs` prints them, merged with its own, in time order and marked per container.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI_PATH, spawnPeer, stopAllPeers } from '../harness/spawn-peer.ts'
import type { LogPage } from '../peer/mission-logs.ts'

const NO_DOCKER = 'unix:///nonexistent/docker.sock'

function cli (api: string, dataDir: string, ...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise(resolve => {
    execFile(process.execPath, [CLI_PATH, ...args, '--api', api, '--data-dir', dataDir], (err, stdout, stderr) => {
      resolve({ code: err == null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

t.test('lines held by another board are gathered, merged and marked', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-mlogs-gather-'))
  t.teardown(async () => { await stopAllPeers(); await rm(dir, { recursive: true, force: true }) })
  const dirA = join(dir, 'a')
  const dirB = join(dir, 'b')
  await mkdir(join(dirA, 'mission-logs'), { recursive: true, mode: 0o700 })
  await mkdir(join(dirB, 'mission-logs'), { recursive: true, mode: 0o700 })
  const boardA = '12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTcDqoLbhhE'
  const boardB = '12D3KooWQYhTNQdmr3ArTeGHRVUfFXxSyXWgFxaYVgHhdDEkkvPm'
  const line = (board: string, container: string, epoch: number, n: number, at: number): string =>
    JSON.stringify({ at, board, container, epoch, n, stream: n % 3 === 2 ? 'stderr' : 'stdout', text: `${container} line ${n}` })
  const t0 = Date.parse('2026-12-02T10:00:00Z')
  // Board A holds the first container's lines (epoch 1); board B the second's (epoch 2), which came after.
  await writeFile(join(dirA, 'mission-logs', 'm.jsonl'), Array.from({ length: 5 }, (_, n) => line(boardA, 'aaaaaaaaaaaa', 1, n, t0 + n * 100)).join('\n') + '\n')
  await writeFile(join(dirB, 'mission-logs', 'm.jsonl'), Array.from({ length: 4 }, (_, n) => line(boardB, 'bbbbbbbbbbbb', 2, n, t0 + 1000 + n * 100)).join('\n') + '\n')
  const a = await spawnPeer({ dataDir: dirA, removeDataDir: false, openMissions: true, dockerHost: NO_DOCKER })
  const b = await spawnPeer({ dataDir: dirB, removeDataDir: false, openMissions: true, dockerHost: NO_DOCKER, bootstrap: [a.addrs[0] as string] })
  const deadline = Date.now() + 30_000
  while ((await b.status()).self.connections === 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 200))

  const page = await b.client.request<LogPage>('GET', '/v1/missions/m/logs')
  t.equal(page.answered, 1, 'the other board answered')
  t.same(page.lines.map(l => `${l.container.slice(0, 1)}${l.n}`), ['a0', 'a1', 'a2', 'a3', 'a4', 'b0', 'b1', 'b2', 'b3'], 'both boards\' lines, in time order')
  t.ok(page.lines.slice(0, 5).every(l => l.board === boardA), 'each line keeps the board that printed it')

  const r = await cli(b.apiAddress, b.dataDir, 'mission', 'logs', 'm')
  t.equal(r.code, 0, r.stderr)
  const out = r.stdout.trim().split('\n')
  t.equal(out.length, 11, '9 lines and 2 marks')
  t.match(out[0], /^--- epoch 1: primary 12D3KooW…oLbhhE \(container aaaaaaaaaaaa\) ---$/)
  t.match(out[6], /^--- epoch 2: primary 12D3KooW…EkkvPm \(container bbbbbbbbbbbb\) ---$/, 'the change of container is marked')
  t.match(out[3], /^2026-12-02T10:00:00\.200Z E aaaaaaaaaaaa line 2$/, 'stderr is marked E')

  const tail = await cli(b.apiAddress, b.dataDir, 'mission', 'logs', 'm', '--tail', '2', '--json')
  t.same(tail.stdout.trim().split('\n').map(l => (JSON.parse(l) as { n: number }).n), [2, 3], '--tail 2 --json')
  const since = await cli(b.apiAddress, b.dataDir, 'mission', 'logs', 'm', '--since', '2026-12-02T10:00:01.150Z', '--json')
  t.same(since.stdout.trim().split('\n').map(l => (JSON.parse(l) as { n: number }).n), [2, 3], '--since a date')
  const none = await cli(b.apiAddress, b.dataDir, 'mission', 'logs', 'nothing')
  t.equal(none.code, 0)
  t.match(none.stderr, /no output of mission nothing/)
  const bad = await cli(b.apiAddress, b.dataDir, 'mission', 'logs', 'm', '--since', 'soon')
  t.equal(bad.code, 2, 'a bad --since is a usage error')
})
