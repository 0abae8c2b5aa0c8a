// Bundle format, chunk reuse, transfer between two swarm nodes, retention and faults, without Docker:
// directories shaped like a CRIU dump stand in for a container (the Docker/CRIU path is in checkpoint-restore).
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile, readdir, lstat, symlink, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { execFileSync } from 'node:child_process'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { BundleStore, HeliaBundleBackend, storeBundle, openSwarmBundleStore, BlockCorruptError, BlockUnavailableError, BundleFormatError, CheckpointError, PAGE_CHUNK_SIZE } from '../checkpoint/index.ts'
import type { BundleBackend, BundleInput, ContainerSpecRecord } from '../checkpoint/index.ts'
import { connectedPair, swarmNode, tempDir } from './checkpoint-helpers.ts'

const spec: ContainerSpecRecord = {
  imageId: 'sha256:0000', imageTags: ['tandem/test:1'], imageCid: null, cmd: ['node', 'app.js'], entrypoint: null,
  env: ['A=1'], workingDir: '/app', user: '', dataPath: '/data'
}
const stats = { freezingTimeUs: 1, frozenTimeUs: 2, memdumpTimeUs: 3, memwriteTimeUs: 4, pagesScanned: 5, pagesWritten: 6, dumpWallMs: 7 }

const isRoot = process.getuid?.() === 0

/** A directory set shaped like one checkpoint: CRIU images (with a page image), rootfs changes, data. */
async function makeDump (dir: string, pages: Buffer): Promise<BundleInput['dirs']> {
  const dirs = { criu: join(dir, 'criu'), rootfs: join(dir, 'rootfs'), data: join(dir, 'data') }
  for (const d of Object.values(dirs)) await mkdir(d, { recursive: true })
  await writeFile(join(dirs.criu, 'pages-1.img'), pages)
  await writeFile(join(dirs.criu, 'core-1.img'), randomBytes(700))
  await writeFile(join(dirs.criu, 'mm-1.img'), randomBytes(5000))
  await mkdir(join(dirs.rootfs, 'var/log'), { recursive: true })
  await writeFile(join(dirs.rootfs, 'var/log/mission.log'), 'line 1\nline 2\n')
  await symlink('mission.log', join(dirs.rootfs, 'var/log/current'))
  if (isRoot) execFileSync('mknod', [join(dirs.rootfs, 'deleted-file'), 'c', '0', '0'])
  await writeFile(join(dirs.data, 'state.json'), JSON.stringify({ counter: 42 }))
  return dirs
}

function input (dirs: BundleInput['dirs'], seq: number, parent: CID | null): BundleInput {
  return { mission: 'counter', epoch: 1, seq, parent, arch: 'amd64', criuVersion: '4.1', spec, stats, dirs, startedAt: performance.now() }
}

async function listTree (dir: string, rel = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const name of (await readdir(join(dir, rel))).sort()) {
    const r = rel === '' ? name : `${rel}/${name}`
    const st = await lstat(join(dir, r))
    if (st.isDirectory()) Object.assign(out, { [r]: 'dir' }, await listTree(dir, r))
    else if (st.isFile()) out[r] = (await readFile(join(dir, r))).toString('base64')
    else if (st.isCharacterDevice()) out[r] = `chardev ${st.rdev}`
    else out[r] = 'symlink'
  }
  return out
}

function mutatePages (pages: Buffer, fraction: number): Buffer {
  const copy = Buffer.from(pages)
  const count = pages.length / PAGE_CHUNK_SIZE
  for (let i = 0; i < count * fraction; i++) {
    const page = Math.floor(Math.random() * count)
    randomBytes(16).copy(copy, page * PAGE_CHUNK_SIZE + 100)
  }
  return copy
}

for (const transfer of ['batched block exchange', 'bitswap only'] as const) {
  t.test(`a bundle stored on board A is fetched by board B (${transfer}), unchanged pages do not travel twice`, async t => {
    const root = await tempDir(t, 'bundle')
    const [a, b] = await connectedPair(t, root)
    const open = async (node: typeof a): Promise<BundleStore> => {
      if (transfer === 'bitswap only') return new BundleStore({ backend: new HeliaBundleBackend({ helia: node }), blockTimeoutMs: 10_000 })
      const s = await openSwarmBundleStore(node, { blockTimeoutMs: 10_000 })
      t.teardown(s.stop)
      return s.store
    }
    const storeA = await open(a)
    const storeB = await open(b)

    const pages1 = randomBytes(4 * 1024 * 1024)
    const dirs1 = await makeDump(join(root, 'dump1'), pages1)
    const first = await storeBundle(storeA, input(dirs1, 1, null))
    await storeA.retain(first.cid, first.manifest)
    t.equal(first.manifest.sizes.criuBytes, pages1.length + 700 + 5000)
    t.ok(first.manifest.sizes.newBytes >= pages1.length, 'the first checkpoint is all new')

    const progress: number[] = []
    const fetched1 = await storeB.fetch(first.cid, { onProgress: p => progress.push(p.blocksDone) })
    t.ok(fetched1.fetchedBytes >= pages1.length, 'board B fetched the whole first bundle')
    t.ok(progress.length > 0 && progress.every((v, i) => i === 0 || v >= (progress[i - 1] ?? 0)), 'progress reports are monotonic')

    const out1 = join(root, 'out1')
    for (const tree of ['criu', 'rootfs', 'data'] as const) await storeB.materializeTree(first.manifest.trees[tree], join(out1, tree))
    for (const tree of ['criu', 'rootfs', 'data'] as const) {
      t.same(await listTree(join(out1, tree)), await listTree(dirs1[tree]), `${tree} tree restored byte for byte`)
    }

    const pages2 = mutatePages(pages1, 0.05)
    const dirs2 = await makeDump(join(root, 'dump2'), pages2)
    const second = await storeBundle(storeA, input(dirs2, 2, first.cid))
    t.ok(second.manifest.sizes.newBytes < pages1.length * 0.2, `second checkpoint stores only changed chunks (${second.manifest.sizes.newBytes} new bytes)`)
    const fetched2 = await storeB.fetch(second.cid)
    t.ok(fetched2.fetchedBytes < pages1.length * 0.2, `only new blocks crossed the network (${fetched2.fetchedBytes} of ${second.manifest.sizes.totalBytes} bytes)`)
    t.ok(fetched2.fetchedBytes <= second.manifest.sizes.newBytes + 64 * 1024, 'fetched bytes match the new bytes of the checkpoint')
    t.same(second.manifest.parent?.toString(), first.cid.toString(), 'the parent link names the previous checkpoint')
    const out2 = join(root, 'out2')
    await storeB.materializeTree(second.manifest.trees.criu, out2)
    t.ok((await readFile(join(out2, 'pages-1.img'))).equals(pages2), 'page image of checkpoint 2 restored exactly')
  })
}

t.test('a peer that serves a corrupt block: the fetch fails naming the block', async t => {
  const root = await tempDir(t, 'peer-corrupt')
  const [a, b] = await connectedPair(t, root)
  const sa = await openSwarmBundleStore(a)
  const sb = await openSwarmBundleStore(b, { blockTimeoutMs: 2000 })
  t.teardown(sa.stop)
  t.teardown(sb.stop)
  const pages = randomBytes(64 * 1024)
  const first = await storeBundle(sa.store, input(await makeDump(join(root, 'd1'), pages), 1, null))
  const victim = CID.createV1(raw.code, await (await import('multiformats/hashes/sha2')).sha256.digest(pages.subarray(0, PAGE_CHUNK_SIZE)))
  await ((a.blockstore as any).unwrap().unwrap() as { put: (c: CID, b: Uint8Array) => Promise<unknown> }).put(victim, randomBytes(PAGE_CHUNK_SIZE))
  const err = await sb.store.fetch(first.cid).catch(e => e)
  t.type(err, BlockCorruptError)
  t.match(err.message, victim.toString())
  t.equal(await b.blockstore.has(victim), false, 'the bad bytes were not stored')
})

t.test('a corrupt block is refused naming its CID, and the previous checkpoint stays usable', async t => {
  const root = await tempDir(t, 'corrupt')
  const node = await swarmNode(t, join(root, 'node'))
  const store = new BundleStore({ backend: new HeliaBundleBackend({ helia: node }) })
  const pages1 = randomBytes(256 * 1024)
  const first = await storeBundle(store, input(await makeDump(join(root, 'd1'), pages1), 1, null))
  const pages2 = Buffer.from(pages1)
  randomBytes(PAGE_CHUNK_SIZE).copy(pages2, 10 * PAGE_CHUNK_SIZE)
  const second = await storeBundle(store, input(await makeDump(join(root, 'd2'), pages2), 2, first.cid))
  const changed = CID.createV1(raw.code, await (await import('multiformats/hashes/sha2')).sha256.digest(pages2.subarray(10 * PAGE_CHUNK_SIZE, 11 * PAGE_CHUNK_SIZE)))
  // Overwrite the block in the raw blockstore under the Helia layer, as a failing disk would.
  const rawStore = (node.blockstore as any).unwrap().unwrap() as { put: (c: CID, b: Uint8Array) => Promise<unknown> }
  await rawStore.put(changed, randomBytes(PAGE_CHUNK_SIZE))
  const err = await store.materializeTree(second.manifest.trees.criu, join(root, 'out2')).catch(e => e)
  t.type(err, BlockCorruptError)
  t.match(err.message, changed.toString(), 'the error names the corrupt block')
  await store.materializeTree(first.manifest.trees.criu, join(root, 'out1'))
  t.ok((await readFile(join(root, 'out1', 'pages-1.img'))).equals(pages1), 'checkpoint 1 still restores')
})

t.test('a block no peer has fails the fetch with a clear error; a refused manifest stops the fetch', async t => {
  const root = await tempDir(t, 'missing')
  const [a, b] = await connectedPair(t, root)
  const storeA = new BundleStore({ backend: new HeliaBundleBackend({ helia: a }) })
  const storeB = new BundleStore({ backend: new HeliaBundleBackend({ helia: b }), blockTimeoutMs: 1500 })
  const first = await storeBundle(storeA, input(await makeDump(join(root, 'd1'), randomBytes(64 * 1024)), 1, null))

  const refused = await storeB.fetch(first.cid, { accept: () => { throw new CheckpointError('wrong architecture') } }).catch(e => e)
  t.match(refused.message, 'wrong architecture')
  t.equal(await storeB.backend.has(first.manifest.trees.criu), false, 'nothing beyond the manifest was fetched')

  const ghost = CID.createV1(raw.code, await (await import('multiformats/hashes/sha2')).sha256.digest(randomBytes(32)))
  const err = await storeB.getBlock(ghost).catch(e => e)
  t.type(err, BlockUnavailableError)
  t.match(err.message, ghost.toString())

  const aborted = new AbortController()
  aborted.abort(new Error('caller gave up'))
  const abortErr = await storeB.fetch(first.cid, { signal: aborted.signal }).catch(e => e)
  t.match(abortErr.message, 'caller gave up', 'the caller\'s abort reason surfaces')
})

t.test('only the last K checkpoints are kept; blocks only they used are deleted', async t => {
  const root = await tempDir(t, 'retain')
  const node = await swarmNode(t, join(root, 'node'))
  const store = new BundleStore({ backend: new HeliaBundleBackend({ helia: node }), keep: 2 })
  const cids: CID[] = []
  const uniqueChunks: CID[] = []
  let parent: CID | null = null
  const firstPages = randomBytes(64 * 1024)
  for (let seq = 1; seq <= 3; seq++) {
    const pages = seq === 1 ? firstPages : randomBytes(64 * 1024)
    uniqueChunks.push(CID.createV1(raw.code, await (await import('multiformats/hashes/sha2')).sha256.digest(pages.subarray(0, PAGE_CHUNK_SIZE))))
    const { cid, manifest } = await storeBundle(store, input(await makeDump(join(root, `d${seq}`), pages), seq, parent))
    await store.retain(cid, manifest)
    cids.push(cid)
    parent = cid
  }
  const kept = await store.checkpoints('counter')
  t.same(kept.map(k => k.seq), [2, 3])
  t.equal(await node.blockstore.has(cids[0] as CID), false, 'the oldest manifest is gone')
  t.equal(await node.blockstore.has(uniqueChunks[0] as CID), false, 'its unique chunks are gone')
  t.equal(await node.blockstore.has(uniqueChunks[1] as CID), true, 'chunks of retained checkpoints stay')
  const latest = await store.latest('counter')
  t.equal(latest?.cid.toString(), cids[2]?.toString())
  // A later checkpoint holding a page that was collected must store it again.
  const again = await storeBundle(store, input(await makeDump(join(root, 'again'), firstPages), 4, cids[2] ?? null))
  t.equal(await node.blockstore.has(uniqueChunks[0] as CID), true, 'a collected chunk is written again when it reappears')
  await store.materializeTree(again.manifest.trees.criu, join(root, 'again-out'))
  t.ok((await readFile(join(root, 'again-out', 'pages-1.img'))).equals(firstPages))
  const m = await store.getManifest(cids[1] as CID, { offline: true })
  await store.materializeTree(m.trees.data, join(root, 'out'))
  t.same(JSON.parse(await readFile(join(root, 'out', 'state.json'), 'utf8')), { counter: 42 })
  // The next prune reuses what it learnt of the retained DAGs: still exact.
  await store.retain(again.cid, again.manifest)
  t.same((await store.checkpoints('counter')).map(k => k.seq), [3, 4])
  t.equal(await node.blockstore.has(uniqueChunks[1] as CID), false, 'the second checkpoint\'s unique chunks are gone')
  t.equal(await node.blockstore.has(uniqueChunks[2] as CID), true, 'the third one\'s stay')
  t.equal(await node.blockstore.has(uniqueChunks[0] as CID), true, 'the page that came back stays')
  await store.materializeTree(again.manifest.trees.criu, join(root, 'again-out-2'))
  t.ok((await readFile(join(root, 'again-out-2', 'pages-1.img'))).equals(firstPages))
})

t.test('a pinned checkpoint (the one the board holds or restores) is kept however many newer ones arrive', async t => {
  const root = await tempDir(t, 'pinned')
  const node = await swarmNode(t, join(root, 'node'))
  const pinned = new Set<string>()
  const store = new BundleStore({ backend: new HeliaBundleBackend({ helia: node }), keep: 1, pinned: () => pinned })
  const first = await storeBundle(store, input(await makeDump(join(root, 'd1'), randomBytes(64 * 1024)), 1, null))
  await store.retain(first.cid, first.manifest)
  pinned.add(first.cid.toString())
  let parent = first.cid
  for (let seq = 2; seq <= 3; seq++) {
    const next = await storeBundle(store, input(await makeDump(join(root, `d${seq}`), randomBytes(64 * 1024)), seq, parent))
    await store.retain(next.cid, next.manifest)
    parent = next.cid
  }
  t.same((await store.checkpoints('counter')).map(k => k.seq), [1, 3], 'the pinned one stays, the unpinned older one goes')
  await store.materializeTree(first.manifest.trees.criu, join(root, 'out'))
  pinned.clear()
  const last = await storeBundle(store, input(await makeDump(join(root, 'd4'), randomBytes(64 * 1024)), 4, parent))
  await store.retain(last.cid, last.manifest)
  t.same((await store.checkpoints('counter')).map(k => k.seq), [4], 'unpinned, it is collected like the others')
})

t.test('a full disk during a checkpoint leaves the last good checkpoint intact', async t => {
  const root = await tempDir(t, 'enospc')
  const node = await swarmNode(t, join(root, 'node'))
  const real = new HeliaBundleBackend({ helia: node })
  let diskFull = false
  const flaky: BundleBackend = Object.assign(Object.create(real) as BundleBackend, {
    putMany: async (blocks: Parameters<BundleBackend['putMany']>[0]) => {
      if (diskFull) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })
      await real.putMany(blocks)
    }
  })
  const store = new BundleStore({ backend: flaky, keep: 1 })
  const pages = randomBytes(128 * 1024)
  const good = await storeBundle(store, input(await makeDump(join(root, 'd1'), pages), 1, null))
  await store.retain(good.cid, good.manifest)
  diskFull = true
  const err = await storeBundle(store, input(await makeDump(join(root, 'd2'), randomBytes(128 * 1024)), 2, good.cid)).catch(e => e)
  t.match(err.message, 'ENOSPC')
  t.same((await store.checkpoints('counter')).map(c => c.seq), [1], 'the index still names the good checkpoint')
  await store.materializeTree(good.manifest.trees.criu, join(root, 'out'))
  t.ok((await readFile(join(root, 'out', 'pages-1.img'))).equals(pages), 'and it restores')
})

t.test('bad input is refused with clear errors', async t => {
  const root = await tempDir(t, 'badinput')
  const node = await swarmNode(t, join(root, 'node'))
  const store = new BundleStore({ backend: new HeliaBundleBackend({ helia: node }) })
  t.throws(() => new BundleStore({ backend: store.backend, keep: 0 }), /keep must be/)
  const dirs = await makeDump(join(root, 'd'), randomBytes(8192))
  await t.rejects(storeBundle(store, { ...input(dirs, 1, null), mission: '../etc' }), /invalid mission name/)
  await t.rejects(storeBundle(store, { ...input(dirs, 1, null), seq: -1 }), /seq must be/)
  const notManifest = await storeBundle(store, input(dirs, 1, null))
  await t.rejects(store.getManifest(notManifest.manifest.trees.criu, { offline: true }), BundleFormatError)
})

t.test('materializing over the previous tree writes only what changed and ends identical to a fresh write', async t => {
  const root = await tempDir(t, 'incremental')
  const node = await swarmNode(t, join(root, 'node'))
  const store = new BundleStore({ backend: new HeliaBundleBackend({ helia: node }) })
  // Two chunk lists (4096 chunks each at most): pages change in both.
  const pages = randomBytes(PAGE_CHUNK_SIZE * 4200)
  const first = await storeBundle(store, input(await makeDump(join(root, 'd1'), pages), 1, null))
  // The next dump: a few pages rewritten, one file gone, one new, a directory gone, the log grown.
  const changedPages = Buffer.from(pages)
  for (const page of [0, 7, 1024, 4096, 4199]) randomBytes(PAGE_CHUNK_SIZE).copy(changedPages, page * PAGE_CHUNK_SIZE)
  const dirs2 = await makeDump(join(root, 'd2'), changedPages)
  await rm(join(dirs2.criu, 'mm-1.img'))
  await writeFile(join(dirs2.criu, 'fs-1.img'), randomBytes(300))
  await rm(join(dirs2.rootfs, 'var'), { recursive: true })
  await mkdir(join(dirs2.rootfs, 'tmp'))
  await writeFile(join(dirs2.rootfs, 'tmp/new.txt'), 'new')
  const second = await storeBundle(store, input(dirs2, 2, first.cid))

  for (const tree of ['criu', 'rootfs'] as const) {
    const dest = join(root, `staged-${tree}`)
    await store.materializeTree(first.manifest.trees[tree], dest)
    const pagesBefore = tree === 'criu' ? await stat(join(dest, 'pages-1.img')) : null
    await store.materializeTree(second.manifest.trees[tree], dest, { previous: first.manifest.trees[tree] })
    await store.materializeTree(second.manifest.trees[tree], join(root, `fresh-${tree}`))
    t.same(await listTree(dest), await listTree(join(root, `fresh-${tree}`)), `${tree}: same as a fresh write`)
    if (pagesBefore != null) t.equal((await stat(join(dest, 'pages-1.img'))).ino, pagesBefore.ino, 'the page image was patched in place')
  }
  t.same(await readFile(join(root, 'staged-criu', 'pages-1.img')), changedPages)
})

t.test('pipelined checkpoints with background collection: every retained checkpoint stays complete on both boards', async t => {
  const root = await tempDir(t, 'pipeline')
  const [a, b] = await connectedPair(t, root)
  const storeA = new BundleStore({ backend: new HeliaBundleBackend({ helia: a }), keep: 3, blockTimeoutMs: 5000 })
  const storeB = new BundleStore({ backend: new HeliaBundleBackend({ helia: b }), keep: 3, blockTimeoutMs: 5000 })
  // A few page and file versions that come back: blocks collected with an old checkpoint reappear in new ones.
  const pageVersions = [0, 1, 2].map(() => randomBytes(PAGE_CHUNK_SIZE))
  const smallVersions = [0, 1].map(() => randomBytes(5000))
  let seed = 1
  const pick = <T>(xs: T[]): T => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return xs[seed % xs.length] as T }
  const complete = async (store: BundleStore, label: string): Promise<void> => {
    for (const kept of await store.checkpoints('counter')) {
      const m = await store.getManifest(kept.cid, { offline: true })
      for (const tree of ['criu', 'rootfs', 'data'] as const) await store.materializeTree(m.trees[tree], join(root, 'check', label, String(kept.seq), tree))
    }
  }
  let parent: CID | null = null
  let fetching: Promise<unknown> = Promise.resolve()
  for (let seq = 1; seq <= 24; seq++) {
    const dir = join(root, `d${seq}`)
    const pages = Buffer.concat(Array.from({ length: 16 }, () => pick(pageVersions)))
    const dirs = await makeDump(dir, pages)
    await writeFile(join(dirs.criu, 'mm-1.img'), pick(smallVersions))
    await writeFile(join(dirs.data, 'state.json'), JSON.stringify({ counter: seq % 3 }))
    const { cid }: { cid: CID } = await storeBundle(storeA, input(dirs, seq, parent))
    storeA.collectInBackground('counter')
    parent = cid
    // The backup fetches while the primary already stores the next one.
    await fetching
    fetching = storeB.fetch(cid).then(() => { storeB.collectInBackground('counter') })
  }
  await fetching
  await storeA.idle()
  await storeB.idle()
  await complete(storeA, 'a')
  await complete(storeB, 'b')
  t.same((await storeA.checkpoints('counter')).map(c => c.seq), [22, 23, 24])
  t.same((await storeB.checkpoints('counter')).map(c => c.seq), [22, 23, 24])
})
