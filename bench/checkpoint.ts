// Checkpoint benchmark: successive CRIU checkpoints of two missions on board A (its own dockerd), stored
// as chunked bundles and fetched by board B over libp2p; against a full compressed export per checkpoint
// (what Podman's export ships: tar + zstd of CRIU images, rootfs changes and data).
//   node bench/checkpoint.ts [--quick] [--count N] [--interval-ms MS] [--seal] [--ab]
// --seal: checkpoints sealed for the view {A, B} (checkpoint/sealing.ts), as the peer does; without it, clear.
// --ab alternates the two ways of holding the mission still (freezeMode 'pause', the old docker pause around runc,
// and 'criu-hook') checkpoint by checkpoint on the same containers, and reports each's medians and their ratio.
// The pause the mission feels is read from its own output: the counter ticks at 50 Hz (TICK_MS=20), and the largest
// gap between two of its lines (Docker's log timestamps) during a checkpoint, minus one tick, is that pause.
import { mkdtemp, rm } from 'node:fs/promises'
import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { createZstdCompress } from 'node:zlib'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { CID } from 'multiformats/cid'
import { createSwarmNode, type SwarmNode } from '../peer/node.ts'
import { startBoardDocker, loadBaseImages, type BoardDocker } from '../harness/simulated-docker.ts'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { ContainerRuntime, Checkpointer, SealIdentity, openSwarmBundleStore, type BundleStore, type CheckpointManifest, type TakeStats } from '../checkpoint/index.ts'
import type { FreezeMode } from '../checkpoint/checkpointer.ts'
import type { CriuPhases } from '../checkpoint/criu-hook.ts'
import { demuxLogs } from '../checkpoint/runtime.ts'
import { buildCounterImage } from '../examples/counter/image.ts'
import { percentile, writeResults } from './report.ts'

interface Row {
  mission: string
  seq: number
  criuFrozenMs: number
  pausedMs: number
  checkpointWallMs: number
  /** Docker's checkpoint call (CRIU + Docker copying the images), and chunking + storing the bundle. */
  dumpWallMs: number
  storeMs: number
  /** Where the checkpoint's wall time went (Checkpointer.take's phases), ms. */
  phases: TakeStats['phases']
  bundleBytes: number
  newBytes: number
  fetchMs: number
  fetchedBytes: number
  exportZstdBytes: number
  freezeMode: FreezeMode
  criuPhases: CriuPhases | null
  copyMs: number
  /** Largest gap between two output lines of the mission during the checkpoint, minus one tick, ms. */
  outputGapMs: number | null
  /** Wall clock (ms since epoch) of the take's start and end, to find its output gap. */
  window: [number, number]
}

/** The counter's tick (50 Hz, like the vehicle mission); the ballast mission ticks every 100 ms. */
const TICK_MS = 20

/** Lines' timestamps (ms since epoch, from Docker's --timestamps) of a container's output so far. */
async function outputTimes (runtime: ContainerRuntime, id: string): Promise<number[]> {
  const buf = await runtime.docker.getContainer(id).logs({ stdout: true, stderr: true, follow: false, timestamps: true }) as unknown as Buffer
  return demuxLogs(buf).split('\n').map(l => /^(\S+)Z /.exec(l)).filter(m => m != null).map(m => {
    const [whole, frac] = (m[1] as string).split('.')
    return Date.parse(`${whole}Z`) + Number(`0.${frac ?? '0'}`) * 1000
  })
}

function largestGap (times: number[], [from, to]: [number, number], tickMs: number): number | null {
  let gap: number | null = null
  for (let i = 1; i < times.length; i++) {
    const a = times[i - 1] as number
    const b = times[i] as number
    if (b < from || a > to + 500) continue
    gap = Math.max(gap ?? 0, b - a)
  }
  return gap == null ? null : Math.max(0, gap - tickMs)
}

const args = process.argv.slice(2)
const quick = args.includes('--quick')
const seal = args.includes('--seal')
const flag = (name: string, fallback: number): number => {
  const i = args.indexOf(name)
  if (i < 0) return fallback
  const v = Number(args[i + 1])
  if (!Number.isFinite(v) || v <= 0) { console.error(`${name} needs a positive number`); process.exit(2) }
  return v
}
const count = flag('--count', quick ? 5 : 20)
const intervalMs = flag('--interval-ms', 1000)
const ab = args.includes('--ab')
const modes: FreezeMode[] = ab ? ['pause', 'criu-hook'] : ['criu-hook']
const missions = [
  { mission: 'counter', tickMs: TICK_MS, env: [`TICK_MS=${TICK_MS}`], note: 'reference JS counter at 50 Hz' },
  { mission: 'ballast', tickMs: 100, env: ['TICK_MS=100', `BALLAST_MB=${quick ? 50 : 200}`], note: `${quick ? 50 : 200} MB random live memory, 0.1% of pages rewritten per 100 ms tick` }
]

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const median = (xs: number[]): number => percentile([...xs].sort((a, b) => a - b), 50) ?? 0
const p95 = (xs: number[]): number => percentile([...xs].sort((a, b) => a - b), 95) ?? 0
const mb = (b: number): string => (b / 1e6).toFixed(2)

/** Bytes of `tar | zstd` over the directories (the baseline: a full export every time). */
async function exportZstdBytes (dirs: string[]): Promise<number> {
  const tar = spawn('tar', ['-cf', '-', ...dirs.flatMap(d => ['-C', d, '.'])], { stdio: ['ignore', 'pipe', 'ignore'] })
  const zstd = createZstdCompress()
  let bytes = 0
  zstd.on('data', (c: Buffer) => { bytes += c.length })
  const done = new Promise<void>((resolve, reject) => { zstd.on('end', resolve); zstd.on('error', reject) })
  tar.stdout.pipe(zstd)
  await done
  return bytes
}

async function materialize (store: BundleStore, manifest: CheckpointManifest, dir: string): Promise<string[]> {
  const out = ['criu', 'rootfs', 'data'].map(t => join(dir, t))
  await rm(dir, { recursive: true, force: true })
  await store.materializeTree(manifest.trees.criu, out[0] as string)
  await store.materializeTree(manifest.trees.rootfs, out[1] as string)
  await store.materializeTree(manifest.trees.data, out[2] as string)
  return out
}

async function main (): Promise<void> {
  if (process.getuid?.() !== 0) { console.error('bench:checkpoint needs root (a private dockerd per board)'); process.exit(1) }
  const root = await mkdtemp(join(tmpdir(), 'tandem-bench-ckpt-'))
  // Boards clean themselves up on a signal (harness/simulated-docker.ts); the temp dir is ours.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => { rmSync(root, { recursive: true, force: true }); process.exit(130) })
  const boards: BoardDocker[] = []
  const nodes: SwarmNode[] = []
  const stops: Array<() => Promise<void>> = []
  try {
    const boardA = await startBoardDocker({ dir: root, name: 'benchA' })
    boards.push(boardA)
    const boardB = await startBoardDocker({ dir: root, name: 'benchB' })
    boards.push(boardB)
    await loadBaseImages(boardA)
    const identities: SealIdentity[] = []
    for (const n of ['a', 'b']) {
      const privateKey = await generateKeyPair('Ed25519')
      identities.push(SealIdentity.fromPrivateKey(peerIdFromPrivateKey(privateKey).toString(), privateKey))
      nodes.push(await createSwarmNode({ privateKey, dataDir: join(root, `node-${n}`), listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false }))
    }
    const [nodeA, nodeB] = nodes as [SwarmNode, SwarmNode]
    const addr = nodeA.libp2p.getMultiaddrs()[0]
    if (addr == null) throw new Error('node A has no listen address')
    await nodeB.libp2p.dial(addr)
    const swarmA = await openSwarmBundleStore(nodeA, { keep: 3, identity: identities[0] })
    const swarmB = await openSwarmBundleStore(nodeB, { keep: 3, identity: identities[1] })
    const sealFor = seal ? identities.map(i => i.peerId) : undefined
    stops.push(swarmA.stop, swarmB.stop)
    const runtimeA = new ContainerRuntime({ dockerHost: boardA.dockerHost, execRoot: boardA.execRoot, stateDir: join(root, 'stateA') })
    const runtimeB = new ContainerRuntime({ dockerHost: boardB.dockerHost, execRoot: boardB.execRoot, stateDir: join(root, 'stateB') })
    await runtimeA.start()
    await runtimeB.start()
    const image = 'tandem/counter:bench'
    await buildCounterImage(runtimeA.docker, image)
    const takers = new Map(modes.map(mode => [mode, new Checkpointer({ runtime: runtimeA, store: swarmA.store, freezeMode: mode })]))
    const ckA = takers.get(modes[0] as FreezeMode) as Checkpointer
    const ckB = new Checkpointer({ runtime: runtimeB, store: swarmB.store })
    for (const c of takers.values()) await c.start()
    await ckB.start()
    const providers = [nodeA.libp2p.peerId.toString()]

    // The image travels once, ahead of the checkpoints (as the backup pre-fetches it after deployment).
    const imageId = (await runtimeA.imageInfo(image))?.id as string
    let t0 = performance.now()
    const { cid: imageCid } = await ckA.shareImage(imageId)
    const imageStoreMs = performance.now() - t0
    // The backup loads the image ahead of the checkpoints (only the layers its Docker lacks).
    const imageLoad = await ckB.ensureImage(imageCid, { providers })
    const rows: Row[] = []
    const restores: Array<{ mission: string, restoreMs: number, imageLoaded: boolean, resumedAt: number | null, checkpointedAt: number | null }> = []
    const imageFetch = { ms: imageLoad.ms, bytes: imageLoad.fetchedBytes }

    for (const m of missions) {
      const id = await runtimeA.startFresh({ mission: m.mission, image, env: m.env }, { mission: m.mission, peerId: 'benchA', epoch: 1 })
      for (let i = 0; i < 100 && !(await runtimeA.logs(id)).includes('counter 10 '); i++) await sleep(200)
      let parent: CID | null = null
      let last: { cid: CID, manifest: CheckpointManifest } | null = null
      for (let seq = 1; seq <= count; seq++) {
        const cycleStart = performance.now()
        const mode = modes[seq % modes.length] as FreezeMode
        t0 = performance.now()
        const wallStart = Date.now()
        const taken = await (takers.get(mode) as Checkpointer).take(id, { mission: m.mission, epoch: 1, seq, parent, sealFor })
        const checkpointWallMs = performance.now() - t0
        const window: [number, number] = [wallStart, Date.now()]
        const fetched = await ckB.fetch(taken.cid, { providers })
        const exportBytes = await exportZstdBytes(await materialize(swarmB.store, taken.manifest, join(root, 'export')))
        rows.push({
          mission: m.mission,
          seq,
          criuFrozenMs: taken.stats.frozenTimeUs / 1000,
          pausedMs: taken.stats.pausedMs,
          checkpointWallMs,
          dumpWallMs: taken.stats.dumpWallMs,
          storeMs: taken.stats.storeMs,
          phases: taken.stats.phases,
          bundleBytes: taken.manifest.sizes.totalBytes,
          newBytes: taken.manifest.sizes.newBytes,
          fetchMs: fetched.fetch.ms,
          fetchedBytes: fetched.fetch.fetchedBytes,
          exportZstdBytes: exportBytes,
          freezeMode: taken.stats.freezeMode,
          criuPhases: taken.stats.criuPhases,
          copyMs: taken.stats.copyMs,
          outputGapMs: null,
          window
        })
        process.stderr.write(`${m.mission} #${seq} [${taken.stats.freezeMode}]: paused ${taken.stats.pausedMs} ms, copy ${taken.stats.copyMs} ms, criu ${JSON.stringify(taken.stats.criuPhases)}, frozen ${taken.stats.frozenTimeUs / 1000} ms, wall ${checkpointWallMs.toFixed(0)} ms (${Object.entries(taken.stats.phases).map(([k, v]) => `${k.replace(/Ms$/, '')} ${v}`).join(', ')}), new ${mb(taken.manifest.sizes.newBytes)} MB, fetch ${fetched.fetch.ms.toFixed(0)} ms / ${mb(fetched.fetch.fetchedBytes)} MB\n`)
        parent = taken.cid
        last = taken
        const rest = intervalMs - (performance.now() - cycleStart)
        if (rest > 0) await sleep(rest)
      }
      const times = await outputTimes(runtimeA, id)
      for (const r of rows.filter(x => x.mission === m.mission)) r.outputGapMs = largestGap(times, r.window, m.tickMs)
      await runtimeA.stop(id)
      if (last != null) {
        t0 = performance.now()
        const restored = await ckB.restore(last.cid, { peerId: 'benchB', epoch: 2 })
        const restoreMs = performance.now() - t0
        let resumedAt: number | null = null
        for (let i = 0; i < 50 && resumedAt == null; i++) {
          const line = (await runtimeB.logs(restored.containerId)).split('\n').find(l => l.startsWith('counter '))
          if (line != null) resumedAt = Number(/counter (\d+)/.exec(line)?.[1])
          else await sleep(100)
        }
        restores.push({ mission: m.mission, restoreMs, imageLoaded: restored.imageLoaded, resumedAt, checkpointedAt: null })
        await runtimeB.stop(restored.containerId)
      }
    }

    const summary = missions.flatMap(m => modes.map(mode => ({ m, mode }))).map(({ m, mode }) => {
      const r = rows.filter(x => x.mission === m.mission && x.freezeMode === mode)
      const later = r.filter(x => x.seq > 1)
      const restore = restores.find(x => x.mission === m.mission)
      return {
        mission: m.mission,
        freezeMode: mode,
        note: m.note,
        checkpoints: r.length,
        outputGapMsMedian: median(r.flatMap(x => x.outputGapMs ?? [])),
        outputGapMsMax: Math.max(0, ...r.flatMap(x => x.outputGapMs ?? [])),
        copyMsMedian: median(r.map(x => x.copyMs)),
        criuPhasesMedian: Object.fromEntries((['tasksMs', 'mountsMs', 'namespacesMs', 'imagesMs', 'postDumpMs', 'unlockMs', 'frozenMs'] as const)
          .map(k => [k, median(r.flatMap(x => x.criuPhases?.[k] ?? []))])),
        criuFrozenMsMedian: median(r.map(x => x.criuFrozenMs)),
        criuFrozenMsP95: p95(r.map(x => x.criuFrozenMs)),
        pausedMsMedian: median(r.map(x => x.pausedMs)),
        checkpointWallMsMedian: median(r.map(x => x.checkpointWallMs)),
        checkpointWallMsP95: p95(r.map(x => x.checkpointWallMs)),
        dockerCheckpointMsMedian: median(r.map(x => x.dumpWallMs)),
        storeMsMedian: median(r.map(x => x.storeMs)),
        bundleMBMedian: median(r.map(x => x.bundleBytes)) / 1e6,
        firstNewMB: (r[0]?.newBytes ?? 0) / 1e6,
        newMBPerCheckpointMedian: median(later.map(x => x.newBytes)) / 1e6,
        fetchMsMedian: median(later.map(x => x.fetchMs)),
        fetchMsP95: p95(later.map(x => x.fetchMs)),
        fetchedMBPerCheckpointMedian: median(later.map(x => x.fetchedBytes)) / 1e6,
        exportZstdMBMedian: median(r.map(x => x.exportZstdBytes)) / 1e6,
        restoreMs: restore?.restoreMs ?? null,
        restoreIncludedImageLoad: restore?.imageLoaded ?? null,
        restoredCounterResumedAt: restore?.resumedAt ?? null
      }
    })

    console.log(`\ncheckpoint bench${seal ? ' (sealed for the view {A, B})' : ' (clear)'}: ${count} checkpoints per mission, ${intervalMs} ms apart; board A -> board B over libp2p (loopback)`)
    console.log(`image ${imageId.slice(7, 19)} stored in ${imageStoreMs.toFixed(0)} ms (root ${imageCid.toString().slice(0, 16)}...), loaded on the other board in ${imageFetch.ms.toFixed(0)} ms (${mb(imageFetch.bytes)} MB fetched: the layers its Docker lacked)\n`)
    const header = ['mission', 'freeze', 'output gap ms (med/max)', 'CRIU frozen ms (med/p95)', 'paused ms', 'ckpt wall ms (med/p95)', 'bundle MB', 'new MB/ckpt', 'fetch ms (med/p95)', 'fetched MB/ckpt', 'export tar+zstd MB/ckpt', 'restore ms']
    const table = summary.map(s => [
      s.mission,
      s.freezeMode,
      `${s.outputGapMsMedian.toFixed(0)}/${s.outputGapMsMax.toFixed(0)}`,
      `${s.criuFrozenMsMedian.toFixed(0)}/${s.criuFrozenMsP95.toFixed(0)}`,
      s.pausedMsMedian.toFixed(0),
      `${s.checkpointWallMsMedian.toFixed(0)}/${s.checkpointWallMsP95.toFixed(0)}`,
      s.bundleMBMedian.toFixed(2),
      `${s.newMBPerCheckpointMedian.toFixed(2)} (1st ${s.firstNewMB.toFixed(1)})`,
      `${s.fetchMsMedian.toFixed(0)}/${s.fetchMsP95.toFixed(0)}`,
      s.fetchedMBPerCheckpointMedian.toFixed(2),
      s.exportZstdMBMedian.toFixed(2),
      s.restoreMs == null ? '-' : `${s.restoreMs.toFixed(0)}${s.restoreIncludedImageLoad === true ? ' (+image load)' : ''}`
    ])
    const widths = header.map((h, i) => Math.max(h.length, ...table.map(r => (r[i] ?? '').length)))
    const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] as number)).join(' | ')
    console.log(line(header))
    console.log(widths.map(w => '-'.repeat(w)).join('-|-'))
    for (const r of table) console.log(line(r))
    console.log('\nCRIU phases while frozen (medians, ms, from dump.log) and the copy of rootfs changes + data dir:')
    for (const s of summary) console.log(`${s.mission} [${s.freezeMode}]: ${Object.entries(s.criuPhasesMedian).map(([k, v]) => `${k.replace(/Ms$/, '')} ${v.toFixed(1)}`).join(', ')}; copy ${s.copyMsMedian.toFixed(0)}`)
    if (ab) {
      for (const m of missions) {
        const [a, b] = modes.map(mode => summary.find(s => s.mission === m.mission && s.freezeMode === mode))
        if (a == null || b == null) continue
        const ratio = (x: number, y: number): string => y > 0 ? (x / y).toFixed(2) : '-'
        console.log(`${m.mission}: criu-hook / pause: output gap ${ratio(b.outputGapMsMedian, a.outputGapMsMedian)}, paused ${ratio(b.pausedMsMedian, a.pausedMsMedian)}, CRIU frozen ${ratio(b.criuFrozenMsMedian, a.criuFrozenMsMedian)}, checkpoint wall ${ratio(b.checkpointWallMsMedian, a.checkpointWallMsMedian)}`)
      }
    }

    const file = await writeResults('checkpoint', {
      bench: 'checkpoint', quick, seal, count, intervalMs, ab, modes, at: new Date().toISOString(),
      host: { arch: runtimeA.info.arch, docker: runtimeA.info.serverVersion },
      image: { imageStoreMs, firstFetch: imageFetch },
      summary, restores, rows
    })
    console.log(`\nwrote ${file}`)
  } finally {
    for (const s of stops) await s().catch(() => {})
    for (const n of nodes) await n.stop().catch(() => {})
    for (const b of boards) await b.stop().catch(() => {})
    await rm(root, { recursive: true, force: true })
  }
}

await main()
