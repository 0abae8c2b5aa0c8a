// Confidentiality of checkpoints, with a real Docker + CRIU mission holding a secret in memory: boards A (primary)
// and B (backup) form the mission's view, C holds the swarm key and is connected to both but is outside the view.
// C fetches every block A holds and finds the secret in none; B restores the checkpoint and the process goes on
// with the secret in its memory; after a view change (B leaves, C joins) B cannot open the next checkpoint.
import t from 'tap'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { CID } from 'multiformats/cid'
import {
  ContainerRuntime, Checkpointer, openSwarmBundleStore, NotARecipientError, SealIdentity, type BundleStore
} from '../checkpoint/index.ts'
import { startBoardDocker, loadBaseImages, type BoardDocker } from '../harness/simulated-docker.ts'
import { createSwarmNode, type SwarmNode } from '../peer/node.ts'
import { gateDockerCriu, tempDir, waitFor } from './checkpoint-helpers.ts'

// Only in the process's memory: the command builds it from parts (the command line and env hold neither it nor
// its hex), the shell keeps it in a variable and prints it with each tick.
const PART_A = 'tandem'
const PART_B = 'memsecret'
const SECRET = `${PART_A}-${PART_B}-0c7e19`
const SCRIPT = `A=${PART_A}; B=${PART_B}; S="$A-$B-0c7e$((3*6+1))"; i=0; while true; do i=$((i+1)); echo "tick $i $S"; usleep 100000; done`

if (gateDockerCriu(t)) {
  t.test('a peer outside the view learns nothing of a real checkpoint; the backup restores; a member that left reads no later checkpoint', async t => {
    const root = await tempDir(t, 'confid')
    const boards: BoardDocker[] = []
    t.teardown(async () => { for (const b of boards) await b.stop().catch(() => {}) })
    const boardA = await startBoardDocker({ dir: root, name: 'cfA' })
    boards.push(boardA)
    const boardB = await startBoardDocker({ dir: root, name: 'cfB' })
    boards.push(boardB)
    await loadBaseImages(boardA)
    await loadBaseImages(boardB)

    // Three swarm nodes sharing one swarm key (a private network), on loopback.
    const swarmKey = new TextEncoder().encode(`/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}`)
    const node = async (name: string): Promise<{ node: SwarmNode, peerId: string, seal: SealIdentity }> => {
      const privateKey = await generateKeyPair('Ed25519')
      const n = await createSwarmNode({ privateKey, dataDir: join(root, name), listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false, swarmKey })
      t.teardown(async () => { await n.stop() })
      const peerId = peerIdFromPrivateKey(privateKey).toString()
      return { node: n, peerId, seal: SealIdentity.fromPrivateKey(peerId, privateKey) }
    }
    const [a, b, c] = [await node('node-a'), await node('node-b'), await node('node-c')]
    const addrA = a.node.libp2p.getMultiaddrs()[0]
    if (addrA == null) throw new Error('no address')
    await b.node.libp2p.dial(addrA)
    await c.node.libp2p.dial(addrA)
    await c.node.libp2p.dial(b.node.libp2p.getMultiaddrs()[0] ?? addrA)
    const store = async (n: typeof a): Promise<BundleStore> => {
      const s = await openSwarmBundleStore(n.node, { blockTimeoutMs: 5000, identity: n.seal })
      t.teardown(s.stop)
      return s.store
    }
    const [storeA, storeB, storeC] = [await store(a), await store(b), await store(c)]
    const runtimeA = new ContainerRuntime({ dockerHost: boardA.dockerHost, execRoot: boardA.execRoot, stateDir: join(root, 'stateA') })
    const runtimeB = new ContainerRuntime({ dockerHost: boardB.dockerHost, execRoot: boardB.execRoot, stateDir: join(root, 'stateB') })
    await runtimeA.start()
    await runtimeB.start()
    const ckA = new Checkpointer({ runtime: runtimeA, store: storeA })
    const ckB = new Checkpointer({ runtime: runtimeB, store: storeB })
    await ckA.start()
    await ckB.start()

    const spec = { mission: 'secretive', image: 'tandem/busybox:latest', cmd: ['sh', '-c', SCRIPT], env: [`API_TOKEN=${SECRET}-env`] }
    const id = await runtimeA.startFresh(spec, { mission: 'secretive', peerId: a.peerId, epoch: 1 })
    t.teardown(async () => { await runtimeA.stop(id).catch(() => {}) })
    const ticks = async (runtime: ContainerRuntime, cid: string): Promise<Array<{ n: number, s: string }>> =>
      (await runtime.logs(cid)).split('\n').flatMap(l => { const m = /^tick (\d+) (\S+)$/.exec(l); return m != null ? [{ n: Number(m[1]), s: m[2] as string }] : [] })
    await waitFor('the mission to tick', async () => ((await ticks(runtimeA, id)).at(-1)?.n ?? 0) >= 5)
    t.equal((await ticks(runtimeA, id)).at(-1)?.s, SECRET, 'the mission holds the secret')

    // Sealed for the view {A, B}.
    const first = await ckA.take(id, { mission: 'secretive', epoch: 1, seq: 1, sealFor: [a.peerId, b.peerId] })
    const heldByA = await blocksOf(a.node)
    const hits = await secretBlocks(storeC, heldByA, a.peerId)
    t.same(hits, [], `C fetched all ${heldByA.length} blocks A holds: none holds the secret (or the env value)`)
    await t.rejects(storeC.getManifest(first.cid), NotARecipientError, 'C cannot open the checkpoint')

    // B, the backup, fetches and restores: the process continues with the secret in its memory.
    const fetched = await ckB.fetch(first.cid, { providers: [a.peerId] })
    t.ok(fetched.manifest.spec.env.includes(`API_TOKEN=${SECRET}-env`), 'B reads the spec and its env')
    const atCheckpoint = (await ticks(runtimeA, id)).at(-1)?.n ?? 0
    const restored = await ckB.restore(fetched, { peerId: b.peerId, epoch: 2 })
    t.teardown(async () => { await runtimeB.stop(restored.containerId).catch(() => {}) })
    const resumed = await waitFor('the restored mission to tick', async () => (await ticks(runtimeB, restored.containerId)).at(0))
    t.ok(resumed.n > 5 && resumed.n <= atCheckpoint + 1, `restored on B, the process continues (tick ${resumed.n}; A was at ${atCheckpoint})`)
    t.equal(resumed.s, SECRET, 'with the secret from its restored memory')
    await runtimeB.stop(restored.containerId)

    // The view changes: B leaves, C joins. The next checkpoint is under a new key, wrapped for A and C only.
    const second = await ckA.take(id, { mission: 'secretive', epoch: 2, seq: 2, parent: first.cid, sealFor: [a.peerId, c.peerId] })
    const env1 = await storeA.envelopeOf(first.cid)
    const env2 = await storeA.envelopeOf(second.cid)
    t.not(Buffer.from(env2?.key ?? []).toString('hex'), Buffer.from(env1?.key ?? []).toString('hex'), 'a new content key after the view change')
    t.same(env2?.to.map(w => w.peer).sort(), [a.peerId, c.peerId].sort(), 'wrapped for the new view only')
    await t.rejects(ckB.fetch(second.cid, { providers: [a.peerId] }), NotARecipientError, 'B, removed, cannot open the next checkpoint')
    const newBlocks = (await blocksOf(a.node)).filter(x => !new Set(heldByA.map(h => h.toString())).has(x.toString()))
    t.same(await secretBlocks(storeB, newBlocks, a.peerId), [], `B fetched the ${newBlocks.length} new blocks: none holds the secret, and B's old key opens none`)
    const byC = await storeC.fetch(second.cid, { providers: [a.peerId] })
    t.equal(byC.manifest.seq, 2, 'C, now a member, reads it')

    // Control, showing the test can see a leak: the same mission checkpointed in the clear (as before sealing) has
    // the secret in its blocks, and C reads its env.
    const before = new Set((await blocksOf(a.node)).map(x => x.toString()))
    const clear = await ckA.take(id, { mission: 'secretive', epoch: 2, seq: 3, parent: second.cid })
    const clearBlocks = (await blocksOf(a.node)).filter(x => !before.has(x.toString()))
    const clearHits = await secretBlocks(storeC, clearBlocks, a.peerId)
    t.ok(clearHits.length > 0, `control: ${clearHits.length} of the ${clearBlocks.length} blocks of a clear checkpoint hold the secret (fetched by C)`)
    t.ok((await storeC.getManifest(clear.cid)).spec.env.includes(`API_TOKEN=${SECRET}-env`), 'control: C reads the env of a clear checkpoint')
  })
}

async function blocksOf (node: SwarmNode): Promise<CID[]> {
  const out: CID[] = []
  for await (const pair of node.blockstore.getAll()) out.push(pair.cid)
  return out
}

/** Fetches each block through `store` (over the network when it lacks it) and returns those holding the secret. */
async function secretBlocks (store: BundleStore, cids: CID[], provider: string): Promise<string[]> {
  const hits: string[] = []
  for (const cid of cids) {
    const block = Buffer.from(await store.getBlock(cid, { providers: [provider] }))
    if (block.includes(SECRET) || block.includes(Buffer.from(SECRET).toString('hex'))) hits.push(cid.toString())
  }
  return hits
}
