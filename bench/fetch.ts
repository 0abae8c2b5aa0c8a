// What a backup's fetch of a checkpoint costs when it already holds most of its blocks (the common case: a 1 s
// interval rewrites a few hundred KB of pages): every held block the checkpoint lists is read and hashed again
// before the ack, so corrupt ones are fetched again. Two real level stores, the primary's blocks served in process;
// the same store is checked with one native getMany per batch and, as the baseline, with a `get` per block,
// alternating, in the same run.
//   node bench/fetch.ts [--mb N] [--runs N]
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { LevelBlockstore } from 'blockstore-level'
import { LevelDatastore } from 'datastore-level'
import { HeliaBundleBackend, type BundleBackend } from '../checkpoint/backend.ts'
import { BundleStore, storeBundle } from '../checkpoint/index.ts'
import { distribution, table, writeResults } from './report.ts'

const { values } = parseArgs({ options: { mb: { type: 'string', default: '12' }, runs: { type: 'string', default: '9' } } })
const pageMb = Number(values.mb)
const runs = Number(values.runs)
if (!(pageMb > 0) || !Number.isInteger(runs) || runs < 1) throw new Error('usage: node bench/fetch.ts [--mb N] [--runs N]')

const spec = { imageId: 'sha256:0000', imageTags: [], imageCid: null, cmd: null, entrypoint: null, env: [], workingDir: '/', user: '', dataPath: null }
const stats = { freezingTimeUs: 0, frozenTimeUs: 0, memdumpTimeUs: 0, memwriteTimeUs: 0, pagesScanned: 0, pagesWritten: 0, dumpWallMs: 0 }

async function levelStore (dir: string): Promise<{ backend: HeliaBundleBackend, close: () => Promise<void> }> {
  const blockstore = new LevelBlockstore(join(dir, 'blocks'))
  const datastore = new LevelDatastore(join(dir, 'datastore'))
  await blockstore.open()
  await datastore.open()
  return { backend: new HeliaBundleBackend({ helia: { blockstore, datastore } as never }), close: async () => { await blockstore.close(); await datastore.close() } }
}

/** The same backend without its batched read: the fetch falls back to one `get` per held block. */
function perBlock (backend: BundleBackend): BundleBackend {
  return {
    has: async (...a) => await backend.has(...a),
    get: async (...a) => await backend.get(...a),
    putMany: async (...a) => { await backend.putMany(...a) },
    deleteMany: async (...a) => { await backend.deleteMany(...a) },
    readRecord: async (...a) => await backend.readRecord(...a),
    writeRecord: async (...a) => { await backend.writeRecord(...a) },
    deleteRecord: async (...a) => { await backend.deleteRecord(...a) },
    listRecords: (...a) => backend.listRecords(...a)
  }
}

async function main (): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'tandem-bench-fetch-'))
  const closers: Array<() => Promise<void>> = []
  try {
    const dirs = { criu: join(root, 'cp', 'criu'), rootfs: join(root, 'cp', 'rootfs'), data: join(root, 'cp', 'data') }
    for (const d of Object.values(dirs)) await mkdir(d, { recursive: true })
    await writeFile(join(dirs.criu, 'pages-1.img'), randomBytes(pageMb * 1024 * 1024))
    await writeFile(join(dirs.criu, 'core-1.img'), randomBytes(900))
    const primaryStore = await levelStore(join(root, 'primary'))
    closers.push(primaryStore.close)
    const primary = new BundleStore({ backend: primaryStore.backend })
    const { cid } = await storeBundle(primary, { mission: 'm', epoch: 1, seq: 1, parent: null, arch: 'amd64', criuVersion: 'bench', spec, stats, dirs, startedAt: performance.now() })
    const exchange = {
      fetchBlocks: async (cids: Parameters<typeof primary.backend.get>[0][]) => {
        const out = new Map<string, Uint8Array>()
        for (const c of cids) out.set(c.toString(), await primary.backend.get(c, { offline: true }))
        return out
      }
    }
    const backupStore = await levelStore(join(root, 'backup'))
    closers.push(backupStore.close)
    const batched = new BundleStore({ backend: backupStore.backend, exchange })
    const baseline = new BundleStore({ backend: perBlock(backupStore.backend), exchange })
    let started = performance.now()
    const first = await batched.fetch(cid)
    const firstMs = performance.now() - started
    const times: Record<'batched' | 'perBlock', number[]> = { batched: [], perBlock: [] }
    for (let i = 0; i < runs; i++) {
      for (const [name, store] of [['batched', batched], ['perBlock', baseline]] as const) {
        started = performance.now()
        const result = await store.fetch(cid)
        if (result.fetchedBlocks !== 0) throw new Error(`${name}: fetched ${result.fetchedBlocks} blocks it held`)
        times[name].push(performance.now() - started)
      }
    }
    const b = distribution(times.batched)
    const p = distribution(times.perBlock)
    const ratio = b.p50 != null && p.p50 != null ? p.p50 / b.p50 : null
    console.log(`a ${pageMb} MiB page image (${first.blocks} blocks); first fetch ${Math.round(firstMs)} ms; then ${runs} fetches of what the backup holds, each way:`)
    console.log(table([
      ['held blocks checked', 'p50 ms', 'max ms'],
      ['one getMany per batch', Math.round(b.p50 ?? 0), Math.round(b.max ?? 0)],
      ['one get per block (baseline)', Math.round(p.p50 ?? 0), Math.round(p.max ?? 0)],
      ['ratio (baseline / batched)', ratio == null ? null : Number(ratio.toFixed(2)), null]
    ]))
    const file = await writeResults('fetch', { bench: 'fetch', pageMb, runs, blocks: first.blocks, firstMs, batched: b, perBlock: p, ratio, at: new Date().toISOString() })
    console.log(`\nwrote ${file}`)
  } finally {
    for (const c of closers) await c().catch(() => {})
    await rm(root, { recursive: true, force: true })
  }
}

await main()
