// Real Docker + CRIU: a mission checkpointed on board A is restored on board B. Each board has its own
// dockerd (own data root, images, containers) and its own swarm node; every byte between them crosses libp2p.
import t from 'tap'
import { join } from 'node:path'
import { open, readdir, readFile, stat } from 'node:fs/promises'
import * as dagCbor from '@ipld/dag-cbor'
import { sha256 } from 'multiformats/hashes/sha2'
import { CID } from 'multiformats/cid'
import {
  ContainerRuntime, Checkpointer, openSwarmBundleStore, encodeNode,
  ArchitectureMismatchError, BlockCorruptError, CriuError, ImageMissingError,
  type CheckpointManifest, type TakeResult
} from '../checkpoint/index.ts'
import { startBoardDocker, loadBaseImages, type BoardDocker } from '../harness/simulated-docker.ts'
import { buildCounterImage } from '../examples/counter/image.ts'
import { connectedPair, gateDockerCriu, tempDir, waitFor } from './checkpoint-helpers.ts'

if (gateDockerCriu(t)) {
  const root = await tempDir(t, 'ckrestore')
  const boards: BoardDocker[] = []
  t.teardown(async () => { for (const b of boards) await b.stop().catch(() => {}) })
  const boardA = await startBoardDocker({ dir: root, name: 'ckA' })
  boards.push(boardA)
  const boardB = await startBoardDocker({ dir: root, name: 'ckB' })
  boards.push(boardB)
  // Board A has the base images and builds the mission image; board B starts with no image at all.
  await loadBaseImages(boardA)

  const [nodeA, nodeB] = await connectedPair(t, root)
  const swarmA = await openSwarmBundleStore(nodeA, { blockTimeoutMs: 5000 })
  const swarmB = await openSwarmBundleStore(nodeB, { blockTimeoutMs: 5000 })
  t.teardown(swarmA.stop)
  t.teardown(swarmB.stop)
  const runtimeA = new ContainerRuntime({ dockerHost: boardA.dockerHost, execRoot: boardA.execRoot, stateDir: join(root, 'stateA') })
  const runtimeB = new ContainerRuntime({ dockerHost: boardB.dockerHost, execRoot: boardB.execRoot, stateDir: join(root, 'stateB') })
  await runtimeA.start()
  await runtimeB.start()
  const image = await buildCounterImage(runtimeA.docker, 'tandem/counter:test')
  const ckA = new Checkpointer({ runtime: runtimeA, store: swarmA.store })
  const ckB = new Checkpointer({ runtime: runtimeB, store: swarmB.store })
  await ckA.start()
  await ckB.start()
  const peerA = nodeA.libp2p.peerId.toString()
  const peerB = nodeB.libp2p.peerId.toString()

  const lastCounter = async (runtime: ContainerRuntime, id: string): Promise<{ counter: number, boot: string } | null> => {
    const lines = (await runtime.logs(id)).trim().split('\n').filter(l => l.startsWith('counter '))
    const m = /^counter (\d+) boot (\w+)$/.exec(lines.at(-1) ?? '')
    return m?.[1] != null && m[2] != null ? { counter: Number(m[1]), boot: m[2] } : null
  }
  const firstCounter = async (runtime: ContainerRuntime, id: string): Promise<{ counter: number, boot: string } | null> => {
    const line = (await runtime.logs(id)).split('\n').find(l => l.startsWith('counter '))
    const m = /^counter (\d+) boot (\w+)$/.exec(line ?? '')
    return m?.[1] != null && m[2] != null ? { counter: Number(m[1]), boot: m[2] } : null
  }
  const exec = async (runtime: ContainerRuntime, id: string, cmd: string[]): Promise<string> => {
    const e = await runtime.docker.getContainer(id).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true })
    const stream = await e.start({})
    const chunks: Buffer[] = []
    for await (const c of stream) chunks.push(c as Buffer)
    const { demuxLogs } = await import('../checkpoint/index.ts')
    return demuxLogs(Buffer.concat(chunks))
  }
  const counterSpec = { mission: 'counter', image: 'tandem/counter:test', env: ['TICK_MS=50'] }
  let counterFirst: TakeResult | null = null

  t.test('counter mission: checkpointed on A, restored on B, continues from the checkpointed value', async t => {
    t.equal(await runtimeB.imageInfo(image), null, 'board B does not have the mission image')
    const id = await runtimeA.startFresh(counterSpec, { mission: 'counter', peerId: peerA, epoch: 1 })
    await waitFor('counter to reach 20', async () => ((await lastCounter(runtimeA, id))?.counter ?? 0) >= 20)
    // The image is stored in the background on a mission's first checkpoint; wait for it so this one carries it.
    await ckA.shareImage(image)
    const first = await ckA.take(id, { mission: 'counter', epoch: 1, seq: 1 })
    counterFirst = first
    t.equal(first.stats.dumpPath, 'runc', 'CRIU ran through the board\'s runc, not Docker\'s checkpoint API')
    t.equal(first.stats.criuStatsSource, 'stats-dump', 'CRIU\'s stats-dump was read')
    t.ok(first.stats.frozenTimeUs > 0 && first.stats.pagesWritten > 0, `CRIU froze the task ${first.stats.frozenTimeUs} us, wrote ${first.stats.pagesWritten} pages`)
    t.equal(first.manifest.arch, runtimeA.info.arch)
    t.equal(first.manifest.criuVersion.split('.')[0], '4')
    t.same(first.manifest.spec.env.includes('TICK_MS=50'), true, 'the container spec travels')
    t.ok((await runtimeA.inspect(id)).State.Running, 'the container kept running after the checkpoint')

    await new Promise(resolve => setTimeout(resolve, 500))
    const second = await ckA.take(id, { mission: 'counter', epoch: 1, seq: 2, parent: first.cid })
    t.ok(second.manifest.sizes.newBytes < second.manifest.sizes.totalBytes / 2,
      `checkpoint 2 reuses most blocks (${second.manifest.sizes.newBytes} new of ${second.manifest.sizes.totalBytes} bytes)`)

    const f1 = await ckB.fetch(first.cid)
    t.ok(f1.fetch.fetchedBytes < first.manifest.sizes.totalBytes + 1024 * 1024, 'the first fetch brings the bundle, not the image (ensureImage does)')
    const progress: number[] = []
    const f2 = await ckB.fetch(second.cid, { onProgress: p => progress.push(p.fetchedBytes) })
    t.ok(f2.fetch.fetchedBytes <= second.manifest.sizes.newBytes + 256 * 1024,
      `the second fetch moves only new blocks (${f2.fetch.fetchedBytes} bytes; checkpoint had ${second.manifest.sizes.newBytes} new)`)
    t.ok(progress.length > 0, 'fetch progress was reported')

    const data = JSON.parse(await readFile(join(runtimeA.dataDirFor((await runtimeA.inspect(id)).Name.slice(1)), 'counter.json'), 'utf8')) as { counter: number, bootId: string }
    await runtimeA.stop(id)
    const restored = await ckB.restore(f2, { peerId: peerB, epoch: 2 })
    t.ok(restored.imageLoaded, 'the image travelled through the swarm and was loaded on B')
    t.not(await runtimeB.imageInfo(image), null, 'board B now has the mission image')
    const resumed = await waitFor('the restored counter to print', async () => await firstCounter(runtimeB, restored.containerId))
    const beforeStop = data.counter
    t.ok(resumed.counter > 20, `the restored counter continues (${resumed.counter}), not from zero`)
    t.ok(resumed.counter <= beforeStop, `it resumes from the checkpoint (${resumed.counter}), not from A's last value (${beforeStop})`)
    t.equal(resumed.boot, data.bootId, 'same process memory: the boot id drawn at start survived')
    const restoredData = await readFile(join(runtimeB.dataDirFor((await runtimeB.inspect(restored.containerId)).Name.slice(1)), 'counter.json'), 'utf8')
    t.match(JSON.parse(restoredData), { bootId: data.bootId }, 'the data dir came along')
    const listed = await runtimeB.listMission('counter')
    t.match(listed[0], { id: restored.containerId, running: true, labels: { mission: 'counter', peerId: peerB, epoch: 2 } })
    const inspect = await runtimeB.inspect(restored.containerId)
    t.equal(inspect.HostConfig.NetworkMode, 'none', 'no network')
    await runtimeB.stop(restored.containerId)
  })

  t.test('a mission that writes into its rootfs (an open, growing file) continues on B with its file', async t => {
    const spec = { mission: 'logger', image: 'tandem/counter:test', env: ['TICK_MS=50', 'ROOTFS_LOG=/var/log/mission/counter.log'], dataPath: null }
    const id = await runtimeA.startFresh(spec, { mission: 'logger', peerId: peerA, epoch: 1 })
    await waitFor('logger to reach 10', async () => ((await lastCounter(runtimeA, id))?.counter ?? 0) >= 10)
    const taken = await ckA.take(id, { mission: 'logger', epoch: 1, seq: 1 })
    t.ok(taken.manifest.sizes.rootfsBytes > 0, `rootfs changes are in the bundle (${taken.manifest.sizes.rootfsBytes} bytes)`)
    await runtimeA.stop(id)
    const restored = await ckB.restore(taken.cid, { peerId: peerB, epoch: 2 })
    const resumed = await waitFor('restored logger output', async () => await firstCounter(runtimeB, restored.containerId))
    await waitFor('a few more ticks', async () => ((await lastCounter(runtimeB, restored.containerId))?.counter ?? 0) >= resumed.counter + 3)
    const log = (await exec(runtimeB, restored.containerId, ['cat', '/var/log/mission/counter.log'])).trim().split('\n')
    t.equal(log[0], `counter 1 boot ${resumed.boot}`, 'the file written on A is there from its first line')
    const counters = log.map(l => Number(/^counter (\d+)/.exec(l)?.[1]))
    t.ok(counters.every((c, i) => c === i + 1), `lines written on A then on B form one sequence (1..${counters.length})`)
    t.ok(counters.length >= resumed.counter + 2, 'and the restored process keeps appending to the same open file')
    await runtimeB.stop(restored.containerId)
  })

  t.test('a corrupted block that no board holds intact is refused naming its CID; the previous checkpoint still restores', async t => {
    const id = await runtimeA.startFresh(counterSpec, { mission: 'counter', peerId: peerA, epoch: 3 })
    await waitFor('counter', async () => ((await lastCounter(runtimeA, id))?.counter ?? 0) >= 5)
    const previous = counterFirst
    if (previous == null) throw new Error('needs the first subtest')
    const latest = await ckA.take(id, { mission: 'counter', epoch: 3, seq: 1, parent: previous.cid })
    await runtimeA.stop(id)
    const local = await ckB.fetch(latest.cid)
    // Flip the bytes of a block only the latest checkpoint has, in B's raw blockstore (a failing disk).
    const manifestNode = dagCbor.decode(await swarmB.store.getBlock(latest.cid, { offline: true })) as CheckpointManifest
    const tree = dagCbor.decode(await swarmB.store.getBlock(manifestNode.trees.data, { offline: true })) as { parts: CID[] }
    const part = dagCbor.decode(await swarmB.store.getBlock(tree.parts[0] as CID, { offline: true })) as { entries: unknown }
    const rawB = (nodeB.blockstore as any).unwrap().unwrap() as { put: (c: CID, b: Uint8Array) => Promise<unknown> }
    const victim = tree.parts[0] as CID
    await rawB.put(victim, dagCbor.encode({ ...part, entries: [] }))
    // A's copy too: a restore fetches a corrupt block again from whoever holds it intact (see the staged test below).
    const rawA = (nodeA.blockstore as any).unwrap().unwrap() as { put: (c: CID, b: Uint8Array) => Promise<unknown> }
    await rawA.put(victim, dagCbor.encode({ ...part, entries: [] }))
    const before = (await runtimeB.listMission('counter')).length
    const err = await ckB.restore(local, { peerId: peerB, epoch: 4 }).catch(e => e)
    t.type(err, BlockCorruptError)
    t.match(err.message, victim.toString(), 'the error names the corrupt block')
    t.equal((await runtimeB.listMission('counter')).length, before, 'the failed restore left no container behind')
    const fallback = await ckB.restore(previous.cid, { peerId: peerB, epoch: 4 })
    const resumed = await waitFor('restored counter', async () => await firstCounter(runtimeB, fallback.containerId))
    t.ok(resumed.counter > 20, `the previous checkpoint restored (counter ${resumed.counter})`)
    await runtimeB.stop(fallback.containerId)
  })

  t.test('a checkpoint from another CPU architecture is refused before any work', async t => {
    const previous = counterFirst
    if (previous == null) throw new Error('needs the first subtest')
    const foreignArch = runtimeA.info.arch === 'arm64' ? 'amd64' : 'arm64'
    const foreign = await encodeNode({ ...previous.manifest, arch: foreignArch, parent: null })
    await swarmA.store.backend.putMany([foreign])
    const before = (await runtimeB.listMission('counter')).length
    const err = await ckB.restore(foreign.cid, { peerId: peerB, epoch: 9 }).catch(e => e)
    t.type(err, ArchitectureMismatchError)
    t.match(err.message, foreignArch)
    t.equal((await runtimeB.listMission('counter')).length, before, 'no container was created')
    t.same((await swarmB.store.checkpoints('counter')).map(c => c.cid.toString()).includes(foreign.cid.toString()), false, 'and it was not retained')
    t.ok(await sha256.digest(foreign.bytes), 'the foreign manifest is a genuine block')
  })

  t.test('a CRIU failure surfaces CRIU\'s own log lines; the container keeps running', async t => {
    // Without tandem's seccomp profile Node opens io_uring, which CRIU cannot dump.
    const c = await runtimeA.docker.createContainer({
      Image: image, Env: ['TICK_MS=50'], Labels: { 'tandem.mission': 'uring' }, HostConfig: { NetworkMode: 'none' }
    })
    t.teardown(async () => { await c.remove({ force: true }).catch(() => {}) })
    await c.start()
    await waitFor('uring container output', async () => await lastCounter(runtimeA, c.id))
    const err = await ckA.take(c.id, { mission: 'uring', epoch: 1, seq: 1 }).catch(e => e)
    t.type(err, CriuError)
    t.ok(err.criuLog.length > 0, 'CRIU log lines are attached')
    t.match(err.criuLog.join('\n'), /io_uring|Error/, 'they are CRIU\'s own words')
    const inspect = await c.inspect()
    t.ok(inspect.State.Running && !inspect.State.Paused, 'the container was unpaused and still runs')
    t.same(await swarmA.store.checkpoints('uring'), [], 'nothing was retained')
  })

  t.test('without runc\'s state dir the checkpoint goes through Docker\'s API, and restores the same', async t => {
    const runtime = new ContainerRuntime({ dockerHost: boardA.dockerHost, execRoot: join(root, 'no-exec-root'), stateDir: join(root, 'stateA2') })
    await runtime.start()
    const ck = new Checkpointer({ runtime, store: swarmA.store })
    await ck.start()
    const id = await runtimeA.startFresh({ ...counterSpec, mission: 'viadocker' }, { mission: 'viadocker', peerId: peerA, epoch: 1 })
    t.teardown(async () => { await runtimeA.stop(id) })
    await waitFor('counter to reach 10', async () => ((await lastCounter(runtimeA, id))?.counter ?? 0) >= 10)
    const taken = await ck.take(id, { mission: 'viadocker', epoch: 1, seq: 1 })
    t.equal(taken.stats.dumpPath, 'docker')
    t.ok(taken.stats.frozenTimeUs > 0, `CRIU figures were captured (from ${taken.stats.criuStatsSource})`)
    const restored = await ckB.restore(taken.cid, { peerId: peerB, epoch: 2 })
    t.teardown(async () => { await runtimeB.stop(restored.containerId) })
    const original = await firstCounter(runtimeA, id)
    await waitFor('restored counter output', async () => await firstCounter(runtimeB, restored.containerId))
    const resumed = await firstCounter(runtimeB, restored.containerId)
    t.equal(resumed?.boot, original?.boot, 'the same process continues (not a cold start)')
    t.ok((resumed?.counter ?? 0) > 10, `it continues from the checkpointed count (${resumed?.counter ?? 'none'})`)
  })

  t.test('staged ahead: the backup writes each fetched checkpoint (only what changed), a restore moves it into place', async t => {
    const id = await runtimeA.startFresh({ ...counterSpec, mission: 'staged' }, { mission: 'staged', peerId: peerA, epoch: 1 })
    t.teardown(async () => { await runtimeA.stop(id) })
    await waitFor('counter to reach 10', async () => ((await lastCounter(runtimeA, id))?.counter ?? 0) >= 10)
    const first = await ckA.take(id, { mission: 'staged', epoch: 1, seq: 1 })
    await ckB.stage(await ckB.fetch(first.cid))
    await new Promise(resolve => setTimeout(resolve, 300))
    const second = await ckA.take(id, { mission: 'staged', epoch: 1, seq: 2, parent: first.cid })
    const bundle = await ckB.fetch(second.cid)
    await ckB.stage(bundle)
    const restored = await ckB.restore(bundle, { peerId: peerB, epoch: 2 })
    t.teardown(async () => { await runtimeB.stop(restored.containerId) })
    t.equal(restored.staged, true, `the staged files were moved into place (files phase ${restored.phases.filesMs} ms)`)
    const original = await firstCounter(runtimeA, id)
    await waitFor('restored counter output', async () => await firstCounter(runtimeB, restored.containerId))
    const resumed = await firstCounter(runtimeB, restored.containerId)
    t.equal(resumed?.boot, original?.boot, 'the same process continues')
    t.ok((resumed?.counter ?? 0) >= 10, `from the second checkpoint's count (${resumed?.counter ?? 'none'})`)
    // A restore of a checkpoint other than the staged one writes its files in full.
    const third = await ckA.take(id, { mission: 'staged', epoch: 1, seq: 3, parent: second.cid })
    const other = await ckB.restore(await ckB.fetch(third.cid), { peerId: peerB, epoch: 3 })
    t.teardown(async () => { await runtimeB.stop(other.containerId) })
    t.equal(other.staged, false, 'nothing staged for it: written in full')
  })

  t.test('corrupt staged files are not restored, and a corrupt block is fetched again before the restore', async t => {
    const id = await runtimeA.startFresh({ ...counterSpec, mission: 'rotten' }, { mission: 'rotten', peerId: peerA, epoch: 1 })
    t.teardown(async () => { await runtimeA.stop(id) })
    await waitFor('counter to reach 10', async () => ((await lastCounter(runtimeA, id))?.counter ?? 0) >= 10)
    const taken = await ckA.take(id, { mission: 'rotten', epoch: 1, seq: 1 })
    const bundle = await ckB.fetch(taken.cid)
    await ckB.stage(bundle)
    const stagedCriu = join(runtimeB.info.rootDir, 'tandem-standby', 'rotten', 'criu')
    const pageFiles = (await readdir(stagedCriu)).filter(n => /^pages-\d+\.img$/.test(n))
    const sizes = await Promise.all(pageFiles.map(async n => (await stat(join(stagedCriu, n))).size))
    const pages = pageFiles.map((n, i) => ({ n, size: sizes[i]! })).sort((a, b) => b.size - a.size).map(p => p.n)
    const fh = await open(join(stagedCriu, pages[0]!), 'r+')
    await fh.write(Buffer.from([0x5a, 0xa5]), 0, 2, 4096 + 100)
    await fh.close()
    // And one page chunk in B's store rewritten with other bytes (the store's own copy gone bad after the ack).
    const tree = await ckB.store.getNode(bundle.manifest.trees.criu, { offline: true }) as { parts: CID[] }
    const part = await ckB.store.getNode(tree.parts[0]!, { offline: true }) as { entries: Array<{ path: string, lists?: CID[] }> }
    const entry = part.entries.find(e => e.path === pages[0])!
    const list = await ckB.store.getNode(entry.lists![0]!, { offline: true }) as { chunks: CID[] }
    const victim = list.chunks[0]!
    const bad = Uint8Array.from(await ckB.store.getBlock(victim, { offline: true }))
    bad[9] = (bad[9] as number) ^ 0xff
    await ckB.store.backend.putMany([{ cid: victim, bytes: bad }])
    const restored = await ckB.restore(bundle, { peerId: peerB, epoch: 2, providers: [peerA] })
    t.teardown(async () => { await runtimeB.stop(restored.containerId) })
    t.equal(restored.staged, false, 'the staged files were not used')
    t.match(restored.stagedRejected, new RegExp(`^${pages[0]!.replace('.', '\\.')}: chunk 1 \\(at byte 4096\\) does not match its digest`), `why: ${restored.stagedRejected ?? ''}`)
    t.equal(restored.repairedBlocks, 1, 'the corrupt block was fetched again from the board that took the checkpoint')
    const original = await firstCounter(runtimeA, id)
    await waitFor('restored counter output', async () => await firstCounter(runtimeB, restored.containerId))
    const resumed = await firstCounter(runtimeB, restored.containerId)
    t.equal(resumed?.boot, original?.boot, 'the same process continues from verified files')
  })

  t.test('bad input: missing image, stopped container, bad names', async t => {
    await t.rejects(runtimeB.startFresh({ mission: 'x', image: 'tandem/absent:1' }, { mission: 'x', peerId: peerB, epoch: 1 }), ImageMissingError)
    await t.rejects(runtimeB.startFresh({ mission: '../x', image }, { mission: '../x', peerId: peerB, epoch: 1 }), /invalid mission name/)
    const id = await runtimeB.create({ mission: 'idle', image }, { mission: 'idle', peerId: peerB, epoch: 1 })
    await t.rejects(ckB.take(id, { mission: 'idle', epoch: 1, seq: 1 }), /not running/)
    await runtimeB.stop(id)
    t.same(await runtimeB.listMission('idle'), [], 'stop removes the container')
  })
}
