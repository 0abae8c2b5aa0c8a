// Checkpoints sealed for the mission's view (checkpoint/sealing.ts): key wrapping, and real Helia stores over
// libp2p where a board outside the view fetches every block and finds nothing of the content. No Docker here (the
// Docker/CRIU path is test/security-confidentiality.test.ts).
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { CID } from 'multiformats/cid'
import {
  BundleStore, ContentKey, MissionKeys, NotARecipientError, SealError, SealIdentity, SEAL_OVERHEAD, isSealed, openSwarmBundleStore,
  storeBundle, wrapFor, type BundleInput, type ContainerSpecRecord
} from '../checkpoint/index.ts'
import { swarmNode, tempDir } from './checkpoint-helpers.ts'

async function identity (): Promise<{ key: PrivateKey, peerId: string, seal: SealIdentity }> {
  const key = await generateKeyPair('Ed25519')
  const peerId = peerIdFromPrivateKey(key).toString()
  return { key, peerId, seal: SealIdentity.fromPrivateKey(peerId, key) }
}

t.test('key wrapping: each recipient opens the key, nobody else does, tampering is detected', async t => {
  const [a, b, c] = await Promise.all([identity(), identity(), identity()])
  const key = ContentKey.generate()
  const envelope = wrapFor(key, 'rover', [a.peerId, b.peerId, a.peerId])
  t.equal(envelope.to.length, 2, 'one wrapped copy per distinct member')
  t.same(a.seal.open(envelope).raw, key.raw, 'member a opens it')
  t.same(b.seal.open(envelope).raw, key.raw, 'member b opens it')
  t.throws(() => c.seal.open(envelope), NotARecipientError, 'a non-member has no copy')
  // c copies a's wrapped key under its own name: the KEK is derived from c's own X25519 key, so it does not open.
  const stolen = { ...envelope, to: [...envelope.to, { ...envelope.to[0] as (typeof envelope.to)[0], peer: c.peerId }] }
  t.throws(() => c.seal.open(stolen), SealError, "another member's copy does not open for c")
  const flipped = structuredClone(envelope)
  const mine = flipped.to.find(w => w.peer === a.peerId) as (typeof envelope.to)[0]
  mine.wrapped[3] = (mine.wrapped[3] as number) ^ 1
  t.throws(() => a.seal.open(flipped), SealError, 'a flipped bit in the wrapped key is refused')
  t.throws(() => a.seal.open({ ...envelope, mission: 'other' }), SealError, 'the envelope is bound to its mission')
  t.throws(() => SealIdentity.fromPrivateKey(b.peerId, a.key), SealError, "a key that is not the peer id's is refused")
})

t.test('sealing is deterministic per key, authenticated, and hides the plaintext', async t => {
  const key = ContentKey.generate()
  const page = Buffer.alloc(4096, 0)
  Buffer.from('PIN=1234').copy(page, 100)
  const s1 = key.seal(page)
  t.same(key.seal(page), s1, 'same page, same key: same bytes (so the same CID: dedup holds)')
  t.equal(s1.byteLength, 4096 + SEAL_OVERHEAD)
  t.ok(isSealed(s1))
  t.notOk(Buffer.from(s1).includes('PIN=1234'), 'plaintext not visible')
  t.notSame(ContentKey.generate().seal(page), s1, 'another key seals it differently')
  t.same(Buffer.from(key.open(s1)), page)
  const bad = Uint8Array.from(s1)
  bad[500] = (bad[500] as number) ^ 0x80
  t.throws(() => key.open(bad), SealError, 'a changed byte does not authenticate')
  t.throws(() => ContentKey.generate().open(s1), SealError, 'another key does not open it')
})

t.test('mission keys rotate when the view changes, and only then', async t => {
  const [a, b, c] = await Promise.all([identity(), identity(), identity()])
  const keys = new MissionKeys()
  const k1 = keys.keyFor('rover', [a.peerId, b.peerId, c.peerId])
  t.equal(keys.keyFor('rover', [c.peerId, a.peerId, b.peerId]).key, k1.key, 'same members in another order: same key')
  const k2 = keys.keyFor('rover', [a.peerId, c.peerId])
  t.ok(k2.rotated, 'b left: a new key')
  t.not(k2.key.idHex, k1.key.idHex)
  t.throws(() => b.seal.open(k2.envelope), NotARecipientError, 'b cannot open the new key')
  t.same(c.seal.open(k2.envelope).raw, k2.key.raw)
  t.not(keys.keyFor('rover', [a.peerId, b.peerId, c.peerId]).key.idHex, k1.key.idHex, 'b back: yet another key, not the old one')
  t.throws(() => keys.keyFor('rover', []), SealError)
})

const SECRET = 'tandem-secret-7f3a9c21d4e8'
const spec: ContainerSpecRecord = {
  imageId: 'sha256:0000', imageTags: ['tandem/test:1'], imageCid: null, cmd: ['node', 'app.js'], entrypoint: null,
  env: [`API_TOKEN=${SECRET}`], workingDir: '/app', user: '', dataPath: '/data'
}
const stats = { freezingTimeUs: 1, frozenTimeUs: 2, memdumpTimeUs: 3, memwriteTimeUs: 4, pagesScanned: 5, pagesWritten: 6, dumpWallMs: 7 }

/** CRIU-like dirs with the secret in a page image, a small CRIU image (inlined), a rootfs file and the data dir. */
async function makeDump (dir: string, pages: Buffer): Promise<BundleInput['dirs']> {
  const dirs = { criu: join(dir, 'criu'), rootfs: join(dir, 'rootfs'), data: join(dir, 'data') }
  for (const d of Object.values(dirs)) await mkdir(d, { recursive: true })
  await writeFile(join(dirs.criu, 'pages-1.img'), pages)
  await writeFile(join(dirs.criu, 'core-1.img'), `core ${SECRET}`)
  await mkdir(join(dirs.rootfs, 'tmp'))
  await writeFile(join(dirs.rootfs, 'tmp/notes'), Buffer.concat([randomBytes(70_000), Buffer.from(SECRET)]))
  await writeFile(join(dirs.data, 'state.json'), JSON.stringify({ token: SECRET }))
  return dirs
}

function pagesWithSecret (): Buffer {
  const pages = randomBytes(2 * 1024 * 1024)
  for (let at = 5000; at < pages.length; at += 300_000) Buffer.from(SECRET).copy(pages, at)
  return pages
}

t.test('a board outside the view fetches every block of a sealed checkpoint and learns nothing; the view restores it; after a view change the removed member reads nothing new', async t => {
  const root = await tempDir(t, 'sealing')
  const ids = await Promise.all([identity(), identity(), identity()])
  const [ia, ib, ic] = ids as [typeof ids[0], typeof ids[0], typeof ids[0]]
  const nodes = await Promise.all(ids.map(async (id, i) => await swarmNode(t, join(root, `node-${i}`), id.key)))
  const [a, b, c] = nodes as [typeof nodes[0], typeof nodes[0], typeof nodes[0]]
  const addr = a.libp2p.getMultiaddrs()[0] as NonNullable<ReturnType<typeof a.libp2p.getMultiaddrs>[0]>
  await b.libp2p.dial(addr)
  await c.libp2p.dial(addr)
  await c.libp2p.dial(b.libp2p.getMultiaddrs()[0] as typeof addr)
  const open = async (node: typeof a, id: typeof ia): Promise<BundleStore> => {
    const s = await openSwarmBundleStore(node, { blockTimeoutMs: 10_000, identity: id.seal })
    t.teardown(s.stop)
    return s.store
  }
  const [storeA, storeB, storeC] = [await open(a, ia), await open(b, ib), await open(c, ic)]

  const pages1 = pagesWithSecret()
  const dirs1 = await makeDump(join(root, 'dump1'), pages1)
  const input = (dirs: BundleInput['dirs'], seq: number, members: string[]): BundleInput => ({
    mission: 'rover', epoch: 1, seq, parent: null, arch: 'amd64', criuVersion: '4.1', spec, stats, dirs, startedAt: performance.now(),
    seal: storeA.missionKeys.keyFor('rover', members)
  })
  // View: a (primary) and b (backup). c holds the swarm key, is connected, and is no member.
  const first = await storeBundle(storeA, input(dirs1, 1, [ia.peerId, ib.peerId]))
  t.same((await storeA.envelopeOf(first.cid))?.to.map(w => w.peer).sort(), [ia.peerId, ib.peerId].sort(), "the root names the view's members")

  // c fetches every block board a holds (not only those it can find by walking: all of them), over the network.
  const allCids: CID[] = []
  for await (const pair of a.blockstore.getAll()) allCids.push(pair.cid)
  let seen = 0
  let bytes = 0
  for (const cid of allCids) {
    const block = await storeC.getBlock(cid, { providers: [a.libp2p.peerId.toString()] })
    seen++
    bytes += block.byteLength
    if (Buffer.from(block).includes(SECRET)) t.fail(`block ${cid.toString()} holds the secret in clear`)
  }
  t.ok(seen > 500, `c fetched all ${seen} blocks (${bytes} bytes) of a's store`)
  t.pass('no block holds the secret string')
  await t.rejects(storeC.getManifest(first.cid), NotARecipientError, "c cannot open the checkpoint's key")
  await t.rejects(storeC.fetch(first.cid), NotARecipientError, 'nor fetch it as a checkpoint')

  // b, in the view, fetches it and gets every byte back.
  const fetched = await storeB.fetch(first.cid, { providers: [a.libp2p.peerId.toString()] })
  t.same(fetched.manifest.spec.env, [`API_TOKEN=${SECRET}`], 'b reads the spec')
  const out = join(root, 'restored')
  await storeB.materializeTree(fetched.manifest.trees.criu, join(out, 'criu'), { role: 'criu' })
  await storeB.materializeTree(fetched.manifest.trees.data, join(out, 'data'), { role: 'data' })
  await storeB.materializeTree(fetched.manifest.trees.rootfs, join(out, 'rootfs'), { role: 'rootfs' })
  t.ok((await readFile(join(out, 'criu/pages-1.img'))).equals(pages1), 'page image restored byte for byte')
  t.equal(await readFile(join(out, 'criu/core-1.img'), 'utf8'), `core ${SECRET}`, 'inlined file restored')
  t.ok((await readFile(join(out, 'rootfs/tmp/notes'))).includes(SECRET), 'rootfs file restored')
  t.equal(await storeB.verifyTreeOnDisk(fetched.manifest.trees.criu, join(out, 'criu')), null, 'staged files verify against the sealed chunks')

  // Next checkpoint, same view: 1% of the pages changed, the rest keeps its (sealed) CIDs.
  const pages2 = Buffer.from(pages1)
  for (let p = 0; p < pages2.length / 4096; p += 100) randomBytes(8).copy(pages2, p * 4096 + 10)
  const second = await storeBundle(storeA, input(await makeDumpAgain(join(root, 'dump2'), dirs1, pages2), 2, [ib.peerId, ia.peerId]))
  const fetched2 = await storeB.fetch(second.cid, { providers: [a.libp2p.peerId.toString()] })
  t.ok(fetched2.fetchedBytes < 200_000, `same view: only changed chunks travel (${fetched2.fetchedBytes} bytes of ${second.manifest.sizes.totalBytes})`)

  // View change: b leaves, c joins. The next checkpoint is under a new key that b cannot open.
  const third = await storeBundle(storeA, input(await makeDumpAgain(join(root, 'dump3'), dirs1, pages2), 3, [ia.peerId, ic.peerId]))
  const envelope = await storeA.envelopeOf(third.cid)
  t.not(envelope?.key.toString(), (await storeA.envelopeOf(second.cid))?.key.toString(), 'a new key after the view change')
  await t.rejects(storeB.fetch(third.cid, { providers: [a.libp2p.peerId.toString()] }), NotARecipientError, 'b, removed, cannot open the next checkpoint')
  for (const cid of allCidsOf(await collect(a), allCids)) {
    const block = await storeB.getBlock(cid, { providers: [a.libp2p.peerId.toString()] })
    if (Buffer.from(block).includes(SECRET)) t.fail(`block ${cid.toString()} holds the secret`)
  }
  const byC = await storeC.fetch(third.cid, { providers: [a.libp2p.peerId.toString()] })
  t.equal(byC.manifest.seq, 3, 'c, the new member, reads it')
  t.ok(byC.fetchedBytes > 2_000_000, `the first checkpoint under a new key travels whole (${byC.fetchedBytes} bytes): nothing to dedup against`)
})

t.test('clear checkpoints (no seal) still work, and a store without identity refuses sealed ones clearly', async t => {
  const root = await tempDir(t, 'sealing-clear')
  const id = await identity()
  const node = await swarmNode(t, join(root, 'n'), id.key)
  const sealedStore = (await openSwarmBundleStore(node, { identity: id.seal }))
  t.teardown(sealedStore.stop)
  const dirs = await makeDump(join(root, 'd'), pagesWithSecret())
  const base = { mission: 'rover', epoch: 1, parent: null, arch: 'amd64', criuVersion: '4.1', spec, stats, dirs, startedAt: performance.now() }
  const clear = await storeBundle(sealedStore.store, { ...base, seq: 1 })
  t.equal((await sealedStore.store.getManifest(clear.cid)).seq, 1)
  t.equal(await sealedStore.store.envelopeOf(clear.cid), null)
  const sealed = await storeBundle(sealedStore.store, { ...base, seq: 2, seal: sealedStore.store.missionKeys.keyFor('rover', [id.peerId]) })
  const noIdentity = new BundleStore({ backend: sealedStore.store.backend })
  await t.rejects(noIdentity.getManifest(sealed.cid), SealError)
})

t.test('retention collects sealed checkpoints, also in a store reopened with an empty keyring', async t => {
  const root = await tempDir(t, 'sealing-prune')
  const id = await identity()
  const node = await swarmNode(t, join(root, 'n'), id.key)
  const first = await openSwarmBundleStore(node, { identity: id.seal, keep: 1 })
  t.teardown(first.stop)
  const base = { mission: 'rover', epoch: 1, parent: null, arch: 'amd64', criuVersion: '4.1', spec, stats, startedAt: performance.now() }
  const one = await storeBundle(first.store, { ...base, seq: 1, dirs: await makeDump(join(root, 'd1'), pagesWithSecret()), seal: first.store.missionKeys.keyFor('rover', [id.peerId]) })
  const two = await storeBundle(first.store, { ...base, seq: 2, dirs: await makeDump(join(root, 'd2'), pagesWithSecret()), seal: first.store.missionKeys.keyFor('rover', [id.peerId]) })
  const pruned = await first.store.prune('rover', 1)
  t.same(pruned.pruned.map(p => p.seq), [1], 'the older checkpoint is collected')
  t.ok(pruned.deletedBlocks > 500, `its sealed blocks are deleted (${pruned.deletedBlocks})`)
  await t.rejects(first.store.backend.get(one.cid, { offline: true }), 'its root is gone')
  // A restart: same blocks, same identity, no key in memory.
  const reopened = new BundleStore({ backend: first.store.backend, identity: id.seal, keep: 1 })
  const three = await storeBundle(reopened, { ...base, seq: 3, dirs: await makeDump(join(root, 'd3'), pagesWithSecret()), seal: reopened.missionKeys.keyFor('rover', [id.peerId]) })
  const again = await reopened.prune('rover', 1)
  t.same(again.pruned.map(p => p.seq), [2], 'the reopened store walks the sealed DAG it did not write in this run')
  t.ok(again.deletedBlocks > 500, `and deletes its blocks (${again.deletedBlocks})`)
  const m = await reopened.getManifest(three.cid)
  await reopened.materializeTree(m.trees.criu, join(root, 'out'), { role: 'criu' })
  t.ok((await readFile(join(root, 'out/pages-1.img'))).includes(SECRET), 'the retained one is whole')
  t.ok(two.cid != null)
})

async function makeDumpAgain (dir: string, like: BundleInput['dirs'], pages: Buffer): Promise<BundleInput['dirs']> {
  const dirs = await makeDump(dir, pages)
  await writeFile(join(dirs.rootfs, 'tmp/notes'), await readFile(join(like.rootfs, 'tmp/notes')))
  return dirs
}

async function collect (node: { blockstore: { getAll: () => AsyncIterable<{ cid: CID }> | Iterable<{ cid: CID }> } }): Promise<CID[]> {
  const out: CID[] = []
  for await (const pair of node.blockstore.getAll()) out.push(pair.cid)
  return out
}

function allCidsOf (now: CID[], before: CID[]): CID[] {
  const old = new Set(before.map(c => c.toString()))
  return now.filter(c => !old.has(c.toString()))
}
