// What sealing checkpoints for the view costs (checkpoint/sealing.ts), without Docker: CRIU-shaped dumps (a page
// image of random memory, 1% of its pages rewritten between checkpoints, small CRIU images, a data dir) stored on
// board A and fetched by board B over libp2p on loopback, clear and sealed, alternating, same data.
//   node bench/seal.ts [--mb N] [--count N]
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { CID } from 'multiformats/cid'
import { createSwarmNode, type SwarmNode } from '../peer/node.ts'
import { SealIdentity, openSwarmBundleStore, storeBundle, type BundleInput } from '../checkpoint/index.ts'
import { percentile, writeResults } from './report.ts'

const args = process.argv.slice(2)
const flag = (name: string, fallback: number): number => {
  const i = args.indexOf(name)
  return i < 0 ? fallback : Number(args[i + 1])
}
const pageMb = flag('--mb', 50)
const count = flag('--count', 8)
const median = (xs: number[]): number => percentile([...xs].sort((a, b) => a - b), 50) ?? 0

const spec = { imageId: 'sha256:0000', imageTags: [], imageCid: null, cmd: null, entrypoint: null, env: ['TOKEN=x'], workingDir: '/', user: '', dataPath: '/data' }
const stats = { freezingTimeUs: 0, frozenTimeUs: 0, memdumpTimeUs: 0, memwriteTimeUs: 0, pagesScanned: 0, pagesWritten: 0, dumpWallMs: 0 }

async function dump (dir: string, pages: Buffer): Promise<BundleInput['dirs']> {
  const dirs = { criu: join(dir, 'criu'), rootfs: join(dir, 'rootfs'), data: join(dir, 'data') }
  for (const d of Object.values(dirs)) await mkdir(d, { recursive: true })
  await writeFile(join(dirs.criu, 'pages-1.img'), pages)
  for (const name of ['core-1.img', 'mm-1.img', 'pagemap-1.img', 'files.img']) await writeFile(join(dirs.criu, name), randomBytes(900))
  await writeFile(join(dirs.data, 'state.json'), JSON.stringify({ n: Math.random() }))
  return dirs
}

async function main (): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'tandem-bench-seal-'))
  const nodes: SwarmNode[] = []
  const stops: Array<() => Promise<void>> = []
  try {
    const ids: SealIdentity[] = []
    for (const n of ['a', 'b']) {
      const privateKey = await generateKeyPair('Ed25519')
      ids.push(SealIdentity.fromPrivateKey(peerIdFromPrivateKey(privateKey).toString(), privateKey))
      nodes.push(await createSwarmNode({ privateKey, dataDir: join(root, `node-${n}`), listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false }))
    }
    const [a, b] = nodes as [SwarmNode, SwarmNode]
    await b.libp2p.dial(a.libp2p.getMultiaddrs()[0] as NonNullable<ReturnType<typeof a.libp2p.getMultiaddrs>[0]>)
    const sa = await openSwarmBundleStore(a, { keep: 3, identity: ids[0] })
    const sb = await openSwarmBundleStore(b, { keep: 3, identity: ids[1] })
    stops.push(sa.stop, sb.stop)
    const providers = [a.libp2p.peerId.toString()]
    const view = ids.map(i => i.peerId)

    const rows: Array<{ mode: string, seq: number, storeMs: number, fetchMs: number, materializeMs: number, newBytes: number, fetchedBytes: number, totalBytes: number }> = []
    let pages = randomBytes(pageMb * 1024 * 1024)
    const parents: Record<string, CID | null> = { clear: null, sealed: null }
    for (let seq = 1; seq <= count; seq++) {
      const copy = Buffer.from(pages)
      for (let p = 0; p < copy.length / 4096; p += 100) randomBytes(64).copy(copy, p * 4096 + 128)
      pages = copy
      const dirs = await dump(join(root, `dump-${seq}`), pages)
      for (const mode of seq % 2 === 0 ? ['clear', 'sealed'] : ['sealed', 'clear']) {
        const mission = `bench-${mode}`
        const t0 = performance.now()
        const stored = await storeBundle(sa.store, {
          mission, epoch: 1, seq, parent: parents[mode] ?? null, arch: 'x64', criuVersion: '4.1', spec, stats, dirs, startedAt: t0,
          seal: mode === 'sealed' ? sa.store.missionKeys.keyFor(mission, view) : undefined
        })
        const storeMs = performance.now() - t0
        parents[mode] = stored.cid
        const fetched = await sb.store.fetch(stored.cid, { providers })
        const t1 = performance.now()
        await sb.store.materializeTree(fetched.manifest.trees.criu, join(root, `out-${mode}-${seq}`), { role: 'criu' })
        const materializeMs = performance.now() - t1
        await rm(join(root, `out-${mode}-${seq}`), { recursive: true, force: true })
        rows.push({ mode, seq, storeMs, fetchMs: fetched.ms, materializeMs, newBytes: stored.manifest.sizes.newBytes, fetchedBytes: fetched.fetchedBytes, totalBytes: stored.manifest.sizes.totalBytes })
        process.stderr.write(`${mode} #${seq}: store ${storeMs.toFixed(0)} ms (${(stored.manifest.sizes.newBytes / 1e6).toFixed(2)} MB new), fetch ${fetched.ms.toFixed(0)} ms (${(fetched.fetchedBytes / 1e6).toFixed(2)} MB), write files ${materializeMs.toFixed(0)} ms\n`)
      }
      await rm(join(root, `dump-${seq}`), { recursive: true, force: true })
    }
    await sa.store.idle()
    await sb.store.idle()
    const summary = ['clear', 'sealed'].map(mode => {
      const later = rows.filter(r => r.mode === mode && r.seq > 1)
      const first = rows.find(r => r.mode === mode && r.seq === 1)
      return {
        mode,
        firstStoreMs: first?.storeMs ?? null,
        firstFetchMs: first?.fetchMs ?? null,
        storeMsMedian: median(later.map(r => r.storeMs)),
        fetchMsMedian: median(later.map(r => r.fetchMs)),
        materializeMsMedian: median(later.map(r => r.materializeMs)),
        newMBMedian: median(later.map(r => r.newBytes)) / 1e6,
        fetchedMBMedian: median(later.map(r => r.fetchedBytes)) / 1e6,
        totalMB: (first?.totalBytes ?? 0) / 1e6
      }
    })
    console.log(`\nseal bench: ${pageMb} MB page image, 1% of pages rewritten per checkpoint, ${count} checkpoints each, A -> B over libp2p (loopback)`)
    console.log('mode   | 1st store ms | 1st fetch ms | store ms (med) | fetch ms (med) | write files ms (med) | new MB/ckpt | fetched MB/ckpt')
    for (const s of summary) {
      console.log(`${s.mode.padEnd(6)} | ${(s.firstStoreMs ?? 0).toFixed(0).padStart(12)} | ${(s.firstFetchMs ?? 0).toFixed(0).padStart(12)} | ${s.storeMsMedian.toFixed(0).padStart(14)} | ${s.fetchMsMedian.toFixed(0).padStart(14)} | ${s.materializeMsMedian.toFixed(0).padStart(20)} | ${s.newMBMedian.toFixed(2).padStart(11)} | ${s.fetchedMBMedian.toFixed(2).padStart(15)}`)
    }
    const file = await writeResults('seal', { bench: 'seal', pageMb, count, at: new Date().toISOString(), summary, rows })
    console.log(`\nwrote ${file}`)
  } finally {
    for (const s of stops) await s().catch(() => {})
    for (const n of nodes) await n.stop().catch(() => {})
    await rm(root, { recursive: true, force: true })
  }
}

await main()
