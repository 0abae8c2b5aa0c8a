// Real Docker, real libp2p: mission images travel per layer. Board A builds images on tandem/node-base and shares
// them; board B starts with no image at all, board C has the base images in Docker (from the provisioning cache)
// but never stored them in IPFS. A layer a board's Docker already has is neither fetched nor loaded.
import t from 'tap'
import { join } from 'node:path'
import { mkdir, writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import type Docker from 'dockerode'
import { lpStream } from '@libp2p/utils'
import * as dagCbor from '@ipld/dag-cbor'
import type { CID } from 'multiformats/cid'
import {
  ContainerRuntime, Checkpointer, openSwarmBundleStore, encodeNode, asChunkList, asLayerFile,
  BLOCKS_PROTOCOL, BlockUnavailableError, CheckpointError, type ImageFetchProgress, type ImageManifest
} from '../checkpoint/index.ts'
import { buildImage, startBoardDocker, loadBaseImages, type BoardDocker } from '../harness/simulated-docker.ts'
import { gateDockerCriu, swarmNode, tempDir } from './checkpoint-helpers.ts'

const MB = 1024 * 1024

setFlagsFromString('--expose-gc')
const collectGarbage = runInNewContext('gc') as () => void

/** Builds `tag` FROM tandem/node-base with one extra file (never pulls: no registry is reachable). */
async function buildOnNodeBase (docker: Docker, dir: string, tag: string, extraBytes: number): Promise<string> {
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'Dockerfile'), 'FROM tandem/node-base:latest\nCOPY extra.bin /extra.bin\n')
  await writeFile(join(dir, 'extra.bin'), randomBytes(extraBytes))
  return await buildImage(docker, dir, ['Dockerfile', 'extra.bin'], tag)
}

if (gateDockerCriu(t)) {
  const root = await tempDir(t, 'ckimages')
  const boards: BoardDocker[] = []
  t.teardown(async () => { for (const b of boards) await b.stop().catch(() => {}) })
  for (const name of ['imgA', 'imgB', 'imgC']) boards.push(await startBoardDocker({ dir: root, name }))
  const [boardA, boardB, boardC] = boards as [BoardDocker, BoardDocker, BoardDocker]
  await loadBaseImages(boardA)
  await loadBaseImages(boardC)

  const nodeA = await swarmNode(t, join(root, 'node-a'))
  const nodeB = await swarmNode(t, join(root, 'node-b'))
  const nodeC = await swarmNode(t, join(root, 'node-c'))
  const addrA = nodeA.libp2p.getMultiaddrs()[0]
  if (addrA == null) throw new Error('node A has no listen address')
  await nodeB.libp2p.dial(addrA)
  await nodeC.libp2p.dial(addrA)
  const providers = [nodeA.libp2p.peerId.toString()]
  const open = async (node: typeof nodeA): Promise<Awaited<ReturnType<typeof openSwarmBundleStore>>> => {
    const swarm = await openSwarmBundleStore(node, { blockTimeoutMs: 3000 })
    t.teardown(swarm.stop)
    return swarm
  }
  const [swarmA, swarmB, swarmC] = [await open(nodeA), await open(nodeB), await open(nodeC)]
  const checkpointer = async (board: BoardDocker, swarm: typeof swarmA, name: string): Promise<Checkpointer> => {
    const runtime = new ContainerRuntime({ dockerHost: board.dockerHost, execRoot: board.execRoot, stateDir: join(root, `state-${name}`) })
    await runtime.start()
    const ck = new Checkpointer({ runtime, store: swarm.store })
    await ck.start()
    t.teardown(async () => { await ck.stop() })
    return ck
  }
  const ckA = await checkpointer(boardA, swarmA, 'A')
  const ckB = await checkpointer(boardB, swarmB, 'B')
  const ckC = await checkpointer(boardC, swarmC, 'C')
  const runtimeOf = (ck: Checkpointer): ContainerRuntime => (ck as unknown as { runtime: ContainerRuntime }).runtime
  const layersIn = async (ck: Checkpointer, image: string): Promise<string[]> => (await runtimeOf(ck).docker.getImage(image).inspect()).RootFS?.Layers ?? []

  const first = await buildOnNodeBase(runtimeOf(ckA).docker, join(root, 'ctx-one'), 'tandem/images-one:test', 300 * 1024)
  const second = await buildOnNodeBase(runtimeOf(ckA).docker, join(root, 'ctx-two'), 'tandem/images-two:test', 200 * 1024)
  const figures: Record<string, unknown> = {}

  t.test('a board without the base image fetches the whole image, layer by layer', async t => {
    t.equal(await runtimeOf(ckB).imageInfo('tandem/node-base'), null, 'board B has no base image')
    const shared = await ckA.shareImage('tandem/images-one:test')
    figures.shareFirst = shared
    t.equal(shared.imageId, first)
    t.ok(shared.totalBytes > 100 * MB, `the image is ${(shared.totalBytes / MB).toFixed(1)} MB`)
    t.ok(shared.newBytes >= shared.totalBytes, `all of it was new to A's store (${(shared.newBytes / MB).toFixed(1)} MB in ${Math.round(shared.ms)} ms)`)
    const again = await ckA.shareImage(first)
    t.ok(again.cid.equals(shared.cid), 'sharing again returns the stored image')
    const manifest = await swarmA.store.getImageManifest(shared.cid, { offline: true })
    t.equal(manifest.format, 'tandem/image/2')
    t.same(manifest.layers.map(l => l.diffId), await layersIn(ckA, first), 'the manifest lists the image\'s layers in RootFS order')

    const progress: ImageFetchProgress[] = []
    const loaded = await ckB.ensureImage(shared.cid, { providers, onProgress: p => progress.push(p) })
    figures.ensureFull = loaded
    t.equal(loaded.loaded, true)
    t.equal(loaded.imageId, first)
    t.equal(loaded.reusedLayers, 0, 'Docker on B had none of its layers')
    t.ok(loaded.fetchedBytes >= shared.totalBytes && loaded.fetchedBytes < shared.totalBytes + MB,
      `the whole image crossed the network (${(loaded.fetchedBytes / MB).toFixed(1)} MB in ${Math.round(loaded.ms)} ms)`)
    t.equal(loaded.totalBytes, shared.totalBytes, 'every layer byte had to come')
    t.same(progress.at(-1), { fetchedBytes: loaded.totalBytes, totalBytes: loaded.totalBytes }, 'progress ends at bytes of bytes')
    t.ok(progress.length > 10, `progress was reported while fetching (${progress.length} reports)`)
    t.same(await layersIn(ckB, first), manifest.layers.map(l => l.diffId), 'board B\'s Docker has the image with the same layers')

    const noop = await ckB.ensureImage(shared.cid)
    t.same({ loaded: noop.loaded, fetchedBytes: noop.fetchedBytes }, { loaded: false, fetchedBytes: 0 }, 'a second ensureImage is a no-op')
  })

  t.test('a second image on the same base: only its top layer is stored, and only it travels', async t => {
    const shared = await ckA.shareImage('tandem/images-two:test')
    figures.shareSecond = shared
    t.ok(shared.totalBytes > 100 * MB, `the image is ${(shared.totalBytes / MB).toFixed(1)} MB`)
    t.ok(shared.newBytes < MB, `but only ${shared.newBytes} bytes were new to A's store (${Math.round(shared.ms)} ms)`)
    const loaded = await ckB.ensureImage(shared.cid, { providers })
    figures.ensureTopLayer = loaded
    t.equal(loaded.loaded, true)
    t.equal(loaded.reusedLayers, 1, 'the base layer was already in B\'s Docker')
    t.ok(loaded.fetchedBytes < MB, `${loaded.fetchedBytes} bytes crossed the network (${Math.round(loaded.ms)} ms)`)
    t.equal((await runtimeOf(ckB).imageInfo('tandem/images-two:test'))?.id, second, 'and the image is there, tagged')
  })

  t.test('a board with the base in Docker but not in IPFS fetches only the top layer', async t => {
    const cid = await swarmA.store.imageCid(first)
    if (cid == null) throw new Error('needs the first subtest')
    t.equal(await swarmC.store.hasLayer((await layersIn(ckA, first))[0] as string), false, 'C never stored the base layer')
    const loaded = await ckC.ensureImage(cid, { providers })
    figures.ensureBaseInDocker = loaded
    t.equal(loaded.loaded, true)
    t.equal(loaded.reusedLayers, 1)
    t.ok(loaded.fetchedBytes < MB, `${loaded.fetchedBytes} bytes crossed the network (${Math.round(loaded.ms)} ms)`)
    t.equal((await runtimeOf(ckC).imageInfo(first))?.id, first)
  })

  t.test('faults: a missing layer block names its CID; a docker load failure is a CheckpointError', async t => {
    const third = await buildOnNodeBase(runtimeOf(ckA).docker, join(root, 'ctx-three'), 'tandem/images-three:test', 100 * 1024)
    const shared = await ckA.shareImage(third)
    const manifest = await swarmA.store.getImageManifest(shared.cid, { offline: true })
    const top = manifest.layers.at(-1)?.cid as CID
    const file = asLayerFile(await swarmA.store.getNode(top, { offline: true }), top)
    const chunk = asChunkList(await swarmA.store.getNode(file.lists[0] as CID, { offline: true }), file.lists[0] as CID).chunks[0] as CID
    const bytes = await swarmA.store.getBlock(chunk, { offline: true })
    await swarmA.store.backend.deleteMany([chunk])
    const err = await ckC.ensureImage(shared.cid, { providers }).catch(e => e)
    t.type(err, BlockUnavailableError)
    t.match(err.message, chunk.toString(), 'the error names the missing block')
    t.equal(await runtimeOf(ckC).imageInfo(third), null, 'nothing was loaded')
    await swarmA.store.backend.putMany([{ cid: chunk, bytes }])

    // The top layer swapped for the base layer's tar: Docker refuses its diffId.
    const base = manifest.layers[0] as ImageManifest['layers'][number]
    const bad = await encodeNode({ ...manifest, layers: [base, { ...base, diffId: manifest.layers[1]?.diffId }] })
    await swarmA.store.backend.putMany([bad])
    const loadErr = await ckB.ensureImage(bad.cid, { providers }).catch(e => e)
    t.type(loadErr, CheckpointError)
    t.match(loadErr.message, /docker load of image .* failed/)
    t.equal(await runtimeOf(ckB).imageInfo(third), null)
  })

  t.test('serving a large image to readers that stall stays bounded; stalled streams are aborted', async t => {
    const baseInfo = await runtimeOf(ckA).imageInfo('tandem/node-base')
    const shared = await ckA.shareImage('tandem/node-base')
    t.equal(shared.imageId, baseInfo?.id)
    const manifest = await swarmA.store.getImageManifest(shared.cid, { offline: true })
    const layer = manifest.layers[0] as ImageManifest['layers'][number]
    const file = asLayerFile(await swarmA.store.getNode(layer.cid, { offline: true }), layer.cid)
    const chunks = (await Promise.all(file.lists.map(async l => asChunkList(await swarmA.store.getNode(l, { offline: true }), l).chunks))).flat()
    // 1024 CIDs of 1 MiB chunks: a GiB asked in one request, 32 times over (the server's stream limit).
    const request = dagCbor.encode({ cids: Array.from({ length: 1024 }, (_, i) => chunks[i % chunks.length]) })
    const crashes: unknown[] = []
    const onCrash = (err: unknown): void => { crashes.push(err) }
    process.on('uncaughtException', onCrash)
    process.on('unhandledRejection', onCrash)
    t.teardown(() => { process.off('uncaughtException', onCrash); process.off('unhandledRejection', onCrash) })
    // Settle what sharing the image left behind (level compaction, garbage) before the baseline.
    await new Promise(resolve => setTimeout(resolve, 2000))
    collectGarbage()
    const before = process.memoryUsage()
    let rssPeak = before.rss
    let buffersPeak = before.arrayBuffers
    const sampler = setInterval(() => {
      const now = process.memoryUsage()
      rssPeak = Math.max(rssPeak, now.rss)
      buffersPeak = Math.max(buffersPeak, now.arrayBuffers)
    }, 20)
    t.teardown(() => { clearInterval(sampler) })
    const started = performance.now()
    const streams = await Promise.all(Array.from({ length: 32 }, async () => {
      const stream = await nodeB.libp2p.dialProtocol(nodeA.libp2p.peerId, BLOCKS_PROTOCOL)
      // Paused before reading anything: the reader's window stays at yamux's initial 256 KiB, so what grows is A's.
      stream.pause()
      await lpStream(stream).write(request)
      return stream
    }))
    const endedAt = streams.map(s => new Promise<number>(resolve => {
      if (s.status !== 'open') resolve(performance.now() - started)
      else s.addEventListener('close', () => { resolve(performance.now() - started) }, { once: true })
    }))
    // A serves 8 requests of a peer at once, the rest wait for a slot within the request time limit; it ends every
    // stalled request itself, and a paused reader may not see the reset: the ends are counted on A.
    const failedBefore = swarmA.exchange.servingFigures().failed
    const deadline = Date.now() + 45_000
    while (swarmA.exchange.servingFigures().failed - failedBefore < streams.length && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 100))
    const endedOnA = swarmA.exchange.servingFigures().failed - failedBefore
    const endedAtA = performance.now() - started
    const ended = (await Promise.all(endedAt.map(async p => await Promise.race([p, new Promise<number>(resolve => setTimeout(() => resolve(NaN), 1000))])))).filter(Number.isFinite)
    clearInterval(sampler)
    const growth = rssPeak - before.rss
    const buffersGrowth = buffersPeak - before.arrayBuffers
    figures.stalledServing = { streams: 32, requestedBytesPerStream: 1024 * MB, rssGrowthMB: +(growth / MB).toFixed(1), buffersGrowthMB: +(buffersGrowth / MB).toFixed(1), endedOnAAfterMs: Math.round(endedAtA), readerSawEndMs: ended.map(Math.round) }
    t.same(crashes, [], 'no uncaught exception, no unhandled rejection')
    t.equal(endedOnA, streams.length, `A ended all ${streams.length} stalled requests itself (the last ${Math.round(endedAtA)} ms in)`)
    // arrayBuffers includes frames already sent and not yet collected: a figure, not a bound.
    t.ok(growth < 100 * MB, `RSS grew ${(growth / MB).toFixed(1)} MB at most while 32 readers stalled on 1 GiB each (buffers peak +${(buffersGrowth / MB).toFixed(1)} MB)`)

    // A stays up and serves an honest reader afterwards.
    const got = await swarmC.exchange.fetchBlocks(chunks.slice(0, 4), { providers })
    t.equal(got.size, 4, 'A still serves blocks')
  })

  t.teardown(() => { t.comment(`figures: ${JSON.stringify(figures, (k, v) => k === 'cid' ? undefined : typeof v === 'number' ? Math.round(v) : v)}`) })
}
