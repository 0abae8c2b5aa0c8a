// Storage faults of a board's checkpoint store, on real level stores: a full disk (a real tmpfs filled until ENOSPC)
// is survived without a restart, corrupt blocks are found and fetched again, corrupt staged files are found.
import t from 'tap'
import { mkdir, open, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { LevelBlockstore } from 'blockstore-level'
import { LevelDatastore } from 'datastore-level'
import type { CID } from 'multiformats/cid'
import { HeliaBundleBackend } from '../checkpoint/backend.ts'
import { BundleStore, encodeNode } from '../checkpoint/bundle-store.ts'
import { storeBundle } from '../checkpoint/bundle.ts'
import { StorageError, storageProblemOf } from '../checkpoint/storage-health.ts'
import type { BlockSource } from '../checkpoint/block-exchange.ts'
import { BoardDisk, flipTableValues, reapOrphanDisks, tableValues } from '../harness/board-disk.ts'
import { spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { tempDir } from './checkpoint-helpers.ts'

async function levelBackend (t: { teardown: (fn: () => unknown) => void }, dir: string): Promise<{ backend: HeliaBundleBackend, blockstore: LevelBlockstore }> {
  const blockstore = new LevelBlockstore(join(dir, 'blocks'))
  const datastore = new LevelDatastore(join(dir, 'datastore'))
  await blockstore.open()
  await datastore.open()
  t.teardown(async () => { await blockstore.close().catch(() => {}); await datastore.close().catch(() => {}) })
  return { backend: new HeliaBundleBackend({ helia: { blockstore, datastore } as never }), blockstore }
}

async function checkpointDirs (root: string): Promise<{ criu: string, rootfs: string, data: string }> {
  const dirs = { criu: join(root, 'criu'), rootfs: join(root, 'rootfs'), data: join(root, 'data') }
  for (const d of Object.values(dirs)) await mkdir(d, { recursive: true })
  await writeFile(join(dirs.criu, 'pages-1.img'), randomBytes(256 * 1024))
  await writeFile(join(dirs.criu, 'core-1.img'), randomBytes(3000))
  await writeFile(join(dirs.rootfs, 'state.json'), JSON.stringify({ n: 42 }))
  await writeFile(join(dirs.data, 'log'), randomBytes(100 * 1024))
  return dirs
}

async function store (bundles: BundleStore, dirs: { criu: string, rootfs: string, data: string }): Promise<CID> {
  const { cid } = await storeBundle(bundles, {
    mission: 'm', epoch: 1, seq: 1, parent: null, arch: 'amd64', criuVersion: 'test',
    spec: { imageId: 'sha256:x', imageTags: [], imageCid: null, cmd: null, entrypoint: null, env: [], workingDir: '', user: '', dataPath: '/data' },
    stats: { freezingTimeUs: 0, frozenTimeUs: 0, memdumpTimeUs: 0, memwriteTimeUs: 0, pagesScanned: 0, pagesWritten: 0, dumpWallMs: 0 },
    dirs, startedAt: performance.now()
  })
  return cid
}

/** Serves blocks from another store, as a peer's block exchange does. */
function servedBy (source: BundleStore): BlockSource {
  return {
    fetchBlocks: async (cids) => {
      const out = new Map<string, Uint8Array>()
      for (const cid of cids) { try { out.set(cid.toString(), await source.backend.get(cid, { offline: true })) } catch {} }
      return out
    }
  }
}

t.test('storage problems are told apart from other errors', async t => {
  t.equal(storageProblemOf(Object.assign(new Error('write failed'), { code: 'ENOSPC' })), 'disk full')
  t.equal(storageProblemOf(new Error('PutFailedError: IO error: /x/000005.log: No space left on device')), 'disk full')
  t.equal(storageProblemOf(new Error('outer', { cause: new Error('IO error: EIO') })), 'I/O error')
  t.equal(storageProblemOf(new Error('Corruption: block checksum mismatch')), 'store corrupt')
  t.equal(storageProblemOf(new Error('connection reset')), null)
})

t.test('a full disk (a real tmpfs, filled until ENOSPC) fails writes with "disk full"; once freed the store works again without a restart', async t => {
  if (process.getuid?.() !== 0) { t.pass('skipped: needs root (mounts a tmpfs)'); return }
  const root = await tempDir(t, 'storage-full')
  const disk = await BoardDisk.mount(join(root, 'disk'), 32 * 1024 * 1024)
  t.teardown(() => { disk.unmountSync() })
  const { backend } = await levelBackend(t, disk.path)
  const bundles = new BundleStore({ backend })
  const dirs = await checkpointDirs(join(root, 'cp'))
  const first = await store(bundles, dirs)
  t.ok(await bundles.holdsIntact(first), 'a checkpoint stored before the fault')

  const filler = await disk.fill()
  t.ok(filler > 0 && await disk.freeBytes() === 0, `disk full (${filler} bytes of filler)`)
  const blocks = await Promise.all(Array.from({ length: 64 }, async () => await encodeNode({ junk: randomBytes(64 * 1024) })))
  let failure: unknown
  for (let i = 0; i < 3 && failure == null; i++) {
    try { await backend.putMany(blocks) } catch (err) { failure = err }
  }
  t.ok(failure instanceof StorageError, `a write fails with a StorageError: ${(failure as Error)?.message}`)
  t.equal((failure as StorageError).problem, 'disk full')
  await t.rejects(backend.putMany(blocks), { problem: 'disk full' } as never, 'and again while the disk stays full')

  await disk.free()
  await backend.putMany(blocks)
  for (const b of blocks) t.ok(await backend.has(b.cid), 'written once the disk is freed')
  const second = await store(bundles, await checkpointDirs(join(root, 'cp2')))
  t.ok(await bundles.holdsIntact(second), 'a new checkpoint is stored in the same store, never reopened by the caller')
  t.ok(await bundles.holdsIntact(first), 'the checkpoint from before the fault is intact')
})

t.test('a fetch reads and hashes what the store already holds: corrupt blocks are deleted and fetched again, before the ack', async t => {
  const root = await tempDir(t, 'storage-corrupt')
  const primary = new BundleStore({ backend: (await levelBackend(t, join(root, 'primary'))).backend })
  const cid = await store(primary, await checkpointDirs(join(root, 'cp')))
  const { backend, blockstore } = await levelBackend(t, join(root, 'backup'))
  // Every held block hashed again on every fetch (the default; a window is tested below).
  const backup = new BundleStore({ backend, exchange: servedBy(primary), heldRecheckMs: 0 })
  const fetched = await backup.fetch(cid)
  t.equal(fetched.repairedBlocks, 0, 'first fetch: nothing held, nothing repaired')

  // Bytes flipped in blocks of the backup's store (a page chunk and a tree node).
  const manifest = await backup.getManifest(cid, { offline: true })
  const tree = await backup.getNode(manifest.trees.criu, { offline: true }) as { parts: CID[] }
  const part = await backup.getNode(tree.parts[0]!, { offline: true }) as { entries: Array<{ path: string, lists: CID[] }> }
  const pages = part.entries.find(e => e.path === 'pages-1.img')!
  const list = await backup.getNode(pages.lists[0]!, { offline: true }) as { chunks: CID[] }
  for (const victim of [list.chunks[3]!, tree.parts[0]!]) {
    const bytes = Uint8Array.from(await backend.get(victim, { offline: true }))
    bytes[7] = (bytes[7] as number) ^ 0xff
    await blockstore.put(victim, bytes)
  }
  await t.rejects(backup.getBlock(list.chunks[3]!, { offline: true }), { name: 'BlockCorruptError' }, 'a read of a corrupt block fails')

  const again = await backup.fetch(cid)
  t.equal(again.repairedBlocks, 2, 'the next fetch finds both corrupt blocks and fetches them again')
  t.ok(await backup.holdsIntact(list.chunks[3]!), 'the page chunk is intact again')
  t.equal((await backup.fetch(cid)).repairedBlocks, 0, 'and the store holds the whole checkpoint intact')

  const orphan = new BundleStore({ backend, exchange: { fetchBlocks: async () => new Map() } })
  const bytes = Uint8Array.from(await backend.get(list.chunks[5]!, { offline: true }))
  bytes[0] = (bytes[0] as number) ^ 0xff
  await blockstore.put(list.chunks[5]!, bytes)
  await t.rejects(orphan.fetch(cid), { name: 'BlockUnavailableError' }, 'with no peer to fetch it from, the fetch fails (no ack)')
})

t.test('within the re-check window a fetch does not read held blocks again; a failed read or an older hash does', async t => {
  const root = await tempDir(t, 'storage-recheck')
  const primary = new BundleStore({ backend: (await levelBackend(t, join(root, 'primary'))).backend })
  const cid = await store(primary, await checkpointDirs(join(root, 'cp')))
  const { backend, blockstore } = await levelBackend(t, join(root, 'backup'))
  let reads = 0
  const counting = new Proxy(backend, {
    get: (target, key) => key === 'get'
      ? async (...args: Parameters<typeof backend.get>) => { reads++; return await target.get(...args) }
      : key === 'getManyLocal'
        ? async (cids: CID[]) => { reads += cids.length; return await target.getManyLocal(cids) }
        : (typeof target[key as keyof typeof target] === 'function' ? (target[key as keyof typeof target] as Function).bind(target) : target[key as keyof typeof target])
  })
  const backup = new BundleStore({ backend: counting, exchange: servedBy(primary), heldRecheckMs: 300 })
  await backup.fetch(cid)
  reads = 0
  t.equal((await backup.fetch(cid)).repairedBlocks, 0, 'a second fetch at once')
  const quick = reads
  const manifest = await backup.getManifest(cid, { offline: true })
  const tree = await backup.getNode(manifest.trees.criu, { offline: true }) as { parts: CID[] }
  const part = await backup.getNode(tree.parts[0]!, { offline: true }) as { entries: Array<{ path: string, lists: CID[] }> }
  const list = await backup.getNode(part.entries.find(e => e.path === 'pages-1.img')!.lists[0]!, { offline: true }) as { chunks: CID[] }
  const victim = list.chunks[2]!
  const bytes = Uint8Array.from(await backend.get(victim, { offline: true }))
  bytes[3] = (bytes[3] as number) ^ 0xff
  await blockstore.put(victim, bytes)
  await t.rejects(backup.getBlock(victim, { offline: true }), { name: 'BlockCorruptError' }, 'a read finds the flipped chunk')
  reads = 0
  t.equal((await backup.fetch(cid)).repairedBlocks, 1, 'the next fetch, still within the window, hashes the chunk whose read failed and repairs it')
  const afterCorrupt = reads
  reads = 0
  await backup.fetch(cid)
  const withinAgain = reads
  await new Promise(resolve => setTimeout(resolve, 400))
  reads = 0
  await backup.fetch(cid)
  t.ok(quick < reads / 4, `within the window the fetch read ${quick} blocks; after it, ${reads} (every held one)`)
  t.ok(afterCorrupt >= reads, `one corrupt block found makes the next fetch hash every held block (${afterCorrupt} read, ${reads} held): the disk may have flipped others`)
  t.ok(withinAgain < reads / 2, `and the fetch after that trusts the window again (${withinAgain} read)`)
})

t.test('staged files are checked against the checkpoint\'s digests', async t => {
  const root = await tempDir(t, 'storage-staged')
  const bundles = new BundleStore({ backend: (await levelBackend(t, join(root, 'store'))).backend })
  const cid = await store(bundles, await checkpointDirs(join(root, 'cp')))
  const manifest = await bundles.getManifest(cid, { offline: true })
  const staged = join(root, 'staged')
  await bundles.materializeTree(manifest.trees.criu, staged)
  t.equal(await bundles.verifyTreeOnDisk(manifest.trees.criu, staged), null, 'intact files verify')
  const fh = await open(join(staged, 'pages-1.img'), 'r+')
  // Flipped, not overwritten: a random page may already hold any given byte there.
  const byte = Buffer.alloc(1)
  await fh.read(byte, 0, 1, 5 * 4096 + 17)
  await fh.write(Buffer.from([(byte[0] as number) ^ 0xff]), 0, 1, 5 * 4096 + 17)
  await fh.close()
  t.match(await bundles.verifyTreeOnDisk(manifest.trees.criu, staged), /^pages-1\.img: chunk 5 \(at byte 20480\) does not match its digest/, 'a flipped byte is found, with its file and chunk')
  await writeFile(join(staged, 'core-1.img'), 'short')
  await bundles.materializeTree(manifest.trees.criu, staged)
  t.equal(await bundles.verifyTreeOnDisk(manifest.trees.criu, staged), null, 'written again from the store, they verify')
})

t.test('the nemesis flips bytes of stored blocks in LevelDB tables, never keys: the store reads on, the blocks fail their hash', async t => {
  const root = await tempDir(t, 'storage-tables')
  const { backend } = await levelBackend(t, join(root, 'store'))
  const blocks = await Promise.all(Array.from({ length: 2000 }, async () => await encodeNode({ page: randomBytes(4096) })))
  for (let i = 0; i < blocks.length; i += 100) await backend.putMany(blocks.slice(i, i + 100))
  const tables = (await readdir(join(root, 'store', 'blocks'))).filter(n => n.endsWith('.ldb')).map(n => join(root, 'store', 'blocks', n))
  t.ok(tables.length > 0, `${tables.length} table files written`)
  const values = tableValues(await readFile(tables[0]!))
  t.ok(values.length > 100 && values.every(v => v.length > 4096), `${values.length} values found in the first table, each a whole block`)
  const flipped = await flipTableValues(tables, 10)
  t.equal(flipped, 10, 'ten bytes flipped')
  const bundles = new BundleStore({ backend })
  let corrupt = 0
  for (const b of blocks) if (!(await bundles.holdsIntact(b.cid))) corrupt++
  t.equal(corrupt, 10, 'exactly the ten blocks hit fail their hash (and are deleted to be fetched again); every other one reads')
})

t.test('a board disk left mounted by a run that was killed is unmounted by the next one', async t => {
  if (process.getuid?.() !== 0) { t.pass('skipped: needs root (mounts a tmpfs)'); return }
  const root = await tempDir(t, 'storage-reap')
  const path = join(root, 'disk')
  const moduleUrl = new URL('../harness/board-disk.ts', import.meta.url).href
  const child = spawn(process.execPath, ['--input-type=module', '-e',
    `const { BoardDisk } = await import(${JSON.stringify(moduleUrl)}); await BoardDisk.mount(${JSON.stringify(path)}, 4 * 1024 * 1024); console.log('mounted'); setInterval(() => {}, 1000)`],
  { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL'); spawnSync('umount', ['-l', path]) })
  await new Promise<void>((resolve, reject) => { child.stdout.on('data', () => { resolve() }); child.once('exit', code => { reject(new Error(`child exited ${code}`)) }) })
  const mounted = (): boolean => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some(l => l.split(' ')[4] === path)
  t.ok(mounted(), 'the child mounted its disk')
  child.kill('SIGKILL')
  await new Promise(resolve => child.once('exit', resolve))
  t.ok(mounted(), 'killed by SIGKILL, it left the mount behind')
  t.ok(reapOrphanDisks() >= 1, 'the next run reaps it')
  t.notOk(mounted(), 'unmounted')
})
