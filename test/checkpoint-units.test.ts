// Small pure pieces of the checkpoint layer: CRIU stats decoding, names, log framing, path safety.
import t from 'tap'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { run } from '../checkpoint/criu-dump.ts'
import { parseStatsDump, normalizeArch, demuxLogs, isSafeRelativePath, chunkSizeFor, PAGE_CHUNK_SIZE, FILE_CHUNK_SIZE } from '../checkpoint/index.ts'

// A stats-dump written by CRIU 4.1.1 for a Node.js counter container (captured on this project's host).
const STATS_DUMP = Buffer.from('4059105506330957270000000a2508a40310d6d30c18cba30220b2ff0128d416300038fe154000480050085808600068007000', 'hex')

t.test('CRIU stats-dump is decoded by hand', async t => {
  t.same(parseStatsDump(STATS_DUMP), {
    freezingTimeUs: 420,
    frozenTimeUs: 207318,
    memdumpTimeUs: 37323,
    memwriteTimeUs: 32690,
    pagesScanned: 2900,
    pagesSkippedParent: 0,
    pagesWritten: 2814
  })
  t.equal(parseStatsDump(STATS_DUMP.subarray(0, 20)), null, 'truncated file')
  t.equal(parseStatsDump(Buffer.alloc(4)), null, 'too short')
  const garbage = Buffer.from(STATS_DUMP)
  garbage[14] = 0xff
  garbage[15] = 0xff
  t.doesNotThrow(() => parseStatsDump(garbage), 'garbage never throws')
})

t.test('architectures are named like GOARCH', async t => {
  t.equal(normalizeArch('x86_64'), 'amd64')
  t.equal(normalizeArch('aarch64'), 'arm64')
  t.equal(normalizeArch('armv7l'), 'arm')
  t.equal(normalizeArch('riscv64'), 'riscv64')
})

t.test('docker log frames are demultiplexed', async t => {
  const frame = (stream: number, text: string): Buffer => {
    const body = Buffer.from(text)
    const head = Buffer.alloc(8)
    head[0] = stream
    head.writeUInt32BE(body.length, 4)
    return Buffer.concat([head, body])
  }
  t.equal(demuxLogs(Buffer.concat([frame(1, 'counter 1\n'), frame(2, 'warn\n'), frame(1, 'counter 2\n')])), 'counter 1\nwarn\ncounter 2\n')
})

t.test('bundle paths never climb out of their tree; page images get page-sized chunks', async t => {
  for (const bad of ['', '/etc/passwd', '../x', 'a/../../b', 'a//b', './a', 'a/.']) t.notOk(isSafeRelativePath(bad), bad)
  for (const good of ['a', 'var/log/x.log', '.hidden', 'a..b']) t.ok(isSafeRelativePath(good), good)
  t.equal(chunkSizeFor('pages-1.img'), PAGE_CHUNK_SIZE)
  t.equal(chunkSizeFor('pages-12.img'), PAGE_CHUNK_SIZE)
  t.equal(chunkSizeFor('pagemap-1.img'), FILE_CHUNK_SIZE)
  t.equal(chunkSizeFor('var/lib/pages-1.img.bak'), FILE_CHUNK_SIZE)
})

t.test('an aborted dump command dies with its whole process group (runc and the CRIU it started)', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-run-abort-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const pidFile = join(dir, 'child.pid')
  const abort = new AbortController()
  // A parent that starts a child and waits for it, as runc waits for `criu swrk`.
  const running = run('sh', ['-c', `sleep 60 & echo $! > ${pidFile}; wait`], abort.signal)
  let child = 0
  for (let i = 0; i < 100 && child === 0; i++) {
    await new Promise(resolve => setTimeout(resolve, 20))
    child = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim()) || 0
  }
  t.ok(child > 0, 'the child started')
  abort.abort(new Error('deadline'))
  await t.rejects(running, /aborted \(deadline\): its process group was killed/)
  // Gone, or a zombie waiting for its new parent to reap it (the state after `) ` in /proc/PID/stat).
  const alive = async (): Promise<boolean> => !/^\S+ \(.*\) Z/.test(await readFile(`/proc/${child}/stat`, 'utf8').catch(() => `${child} (x) Z`))
  for (let i = 0; i < 50 && await alive(); i++) await new Promise(resolve => setTimeout(resolve, 20))
  t.notOk(await alive(), 'the child is gone too')
})
