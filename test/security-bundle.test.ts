// Attacks on bundle materialization: forged checkpoint trees (from a board that holds the swarm key) fetched over
// real libp2p into a real Helia store and written to disk, and a real mission container (Docker + CRIU) that plants
// hostile symlinks in its own rootfs and data dir, checkpointed on board A and staged and restored on board B.
// Every case asserts that nothing outside the bundle's directory changed.
import t from 'tap'
import { createHash } from 'node:crypto'
import { lstat, mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { CID } from 'multiformats/cid'
import {
  BundleStore, CHECKPOINT_FORMAT, UnsafeTreeError, openSwarmBundleStore,
  type CheckpointManifest, type FileEntry, type TreeEntry, type UnsafeTreeReason
} from '../checkpoint/index.ts'
import { connectedPair, tempDir } from './checkpoint-helpers.ts'

type Trees = Partial<Record<'criu' | 'rootfs' | 'data', TreeEntry[]>>

function file (path: string, content: string, mode = 0o644): FileEntry {
  const inline = new TextEncoder().encode(content)
  return { kind: 'file', path, mode, uid: 0, gid: 0, size: inline.byteLength, inline, chunkSize: 65536, lists: [] }
}
const dir = (path: string, mode = 0o755): TreeEntry => ({ kind: 'dir', path, mode, uid: 0, gid: 0 })
const link = (path: string, target: string): TreeEntry => ({ kind: 'symlink', path, target, uid: 0, gid: 0 })

/** What an attacker's board stores: any entries at all, in well-formed nodes, under a valid manifest. */
async function forge (store: BundleStore, trees: Trees, seq: number): Promise<{ cid: CID, manifest: CheckpointManifest }> {
  return await store.write(async (w) => {
    const putTree = async (entries: TreeEntry[]): Promise<CID> => {
      const part = await w.putNode({ entries })
      const files = entries.filter(e => e.kind === 'file') as FileEntry[]
      return await w.putNode({ parts: [part], files: files.length, bytes: files.reduce((n, f) => n + f.size, 0) })
    }
    const manifest: CheckpointManifest = {
      format: CHECKPOINT_FORMAT,
      mission: 'victim',
      epoch: 1,
      seq,
      parent: null,
      createdAt: Date.now(),
      arch: 'amd64',
      criuVersion: '4.1',
      spec: { imageId: 'sha256:00', imageTags: [], imageCid: null, cmd: null, entrypoint: null, env: [], workingDir: '/', user: '', dataPath: '/data' },
      stats: { freezingTimeUs: 0, frozenTimeUs: 0, memdumpTimeUs: 0, memwriteTimeUs: 0, pagesScanned: 0, pagesWritten: 0, dumpWallMs: 0, totalWallMs: 0 },
      sizes: { criuBytes: 0, rootfsBytes: 0, dataBytes: 0, totalBytes: 0, blocks: 0, newBlocks: 0, newBytes: 0 },
      trees: { criu: await putTree(trees.criu ?? []), rootfs: await putTree(trees.rootfs ?? []), data: await putTree(trees.data ?? []) }
    }
    const cid = await w.putNode(manifest)
    await w.flush()
    return { cid, manifest }
  })
}

/** Every path under `root` with its type, mode, owner and content hash: a change anywhere shows. */
async function snapshot (root: string, rel = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const name of (await readdir(join(root, rel))).sort()) {
    const r = rel === '' ? name : `${rel}/${name}`
    const st = await lstat(join(root, r))
    const what = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? `-> ${await readlink(join(root, r))}` : st.isFile()
      ? createHash('sha256').update(await readFile(join(root, r))).digest('hex') : `special ${st.rdev}`
    out[r] = `${what} ${st.mode.toString(8)} ${st.uid}:${st.gid}`
    if (st.isDirectory()) Object.assign(out, await snapshot(root, r))
  }
  return out
}

t.test('forged trees are refused by the fetching board before it records (acknowledges) them; nothing outside is written', async t => {
  const root = await tempDir(t, 'secbundle')
  const [attacker, backup] = await connectedPair(t, join(root, 'nodes'))
  const evil = await openSwarmBundleStore(attacker, { blockTimeoutMs: 5000 })
  const board = await openSwarmBundleStore(backup, { blockTimeoutMs: 5000 })
  t.teardown(evil.stop)
  t.teardown(board.stop)
  // The host files an attacker goes for: a "system" dir with a file to overwrite and room for a set-id program.
  const victim = join(root, 'victim')
  await mkdir(victim)
  await writeFile(join(victim, 'passwd'), 'root:x:0:0::/root:/bin/sh\n')
  const before = await snapshot(victim)

  const attacks: Array<{ name: string, trees: Trees, reason: UnsafeTreeReason }> = [
    { name: 'symlink to a host dir, then a setuid file under it (staging: rootfs)', trees: { rootfs: [link('evil', victim), file('evil/passwd', 'pwned\n', 0o4755), file('evil/sh', '#!/bin/sh\n', 0o4755)] }, reason: 'below a non-directory' },
    { name: 'symlink then file under it (criu images)', trees: { criu: [link('img', victim), file('img/passwd', 'pwned\n')] }, reason: 'below a non-directory' },
    { name: 'the same path twice: a directory, then a symlink, then a file under it', trees: { data: [dir('d'), link('d', victim), file('d/passwd', 'pwned\n')] }, reason: 'duplicate path' },
    { name: '../ path', trees: { criu: [file('../../victim/passwd', 'pwned\n')] }, reason: 'path escapes' },
    { name: 'a/../.. path', trees: { data: [dir('a'), file('a/../../victim/passwd', 'pwned\n')] }, reason: 'path escapes' },
    { name: 'absolute path', trees: { data: [file(join(victim, 'passwd'), 'pwned\n')] }, reason: 'path escapes' },
    { name: 'device node (a 0/0 char device) in the data dir', trees: { data: [{ kind: 'whiteout', path: 'null' }] }, reason: 'device node' },
    { name: 'device node in the CRIU images', trees: { criu: [{ kind: 'whiteout', path: 'pages-1.img' }] }, reason: 'device node' },
    { name: 'setuid root file in the data dir', trees: { data: [file('sh', '#!/bin/sh\n', 0o4755)] }, reason: 'set-id bit' },
    { name: 'setgid directory in the CRIU images', trees: { criu: [dir('d', 0o2755)] }, reason: 'set-id bit' },
    { name: 'setuid root file in the rootfs that no image vouches for', trees: { rootfs: [dir('bin'), file('bin/su', '#!/bin/sh\n', 0o4755)] }, reason: 'set-id bit' }
  ]
  let seq = 0
  for (const attack of attacks) {
    const forged = await forge(evil.store, attack.trees, ++seq)
    const refusal = await board.store.fetch(forged.cid, { providers: [attacker.libp2p.peerId.toString()] }).then(() => null, (err: unknown) => err)
    t.ok(refusal instanceof UnsafeTreeError, `${attack.name}: refused by the fetch (${(refusal as Error)?.message})`)
    t.equal((refusal as UnsafeTreeError).reason, attack.reason, `${attack.name}: reason ${attack.reason}`)
    t.same(await board.store.checkpoints('victim'), [], `${attack.name}: not recorded, so never acknowledged`)
    // Past the fetch (as if it had been let through): the write refuses it as well.
    const out = join(root, 'out', String(seq))
    for (const role of ['criu', 'rootfs', 'data'] as const) {
      if (attack.trees[role] == null) continue
      const written = await evil.store.materializeTree(forged.manifest.trees[role], out, { role }).then(() => null, (err: unknown) => err)
      t.ok(written instanceof UnsafeTreeError, `${attack.name}: refused by the write too (${(written as Error)?.message})`)
    }
    t.same(await snapshot(victim), before, `${attack.name}: nothing outside the bundle dir changed`)
  }
  const counted = Object.fromEntries(board.store.unsafeTreesRefused)
  t.same(counted, { 'below a non-directory': 2, 'duplicate path': 1, 'path escapes': 3, 'device node': 2, 'set-id bit': 3 }, 'each refusal is counted by reason')
})

t.test('the disk cannot redirect a write: symlinks found on disk are replaced or refused, never followed', async t => {
  const root = await tempDir(t, 'secdisk')
  const [node] = await connectedPair(t, join(root, 'nodes'))
  const { store, stop } = await openSwarmBundleStore(node)
  t.teardown(stop)
  const victim = join(root, 'victim')
  await mkdir(victim)
  await writeFile(join(victim, 'x'), 'precious\n')
  await writeFile(join(victim, 'passwd'), 'root:x:0:0::/root:/bin/sh\n')
  const before = await snapshot(victim)

  // A tree that had a directory `a` with `a/x`, then one where `a` is a symlink to a host dir and `a/x` is gone:
  // writing the second over the first removes `a/x`, which must not mean the host's victim/x.
  const first = await forge(store, { rootfs: [dir('a'), file('a/x', 'mine\n')] }, 1)
  const second = await forge(store, { rootfs: [link('a', victim)] }, 2)
  const staged = join(root, 'staged')
  await store.materializeTree(first.manifest.trees.rootfs, staged, { role: 'rootfs' })
  await store.materializeTree(second.manifest.trees.rootfs, staged, { role: 'rootfs', previous: first.manifest.trees.rootfs })
  t.equal(await readlink(join(staged, 'a')), victim, 'the new tree\'s symlink is in place')
  t.same(await snapshot(victim), before, 'removing a/x of the previous tree did not follow the new symlink a')

  // Symlinks already in the target dir where the tree has a directory or a file: replaced.
  const target = join(root, 'target')
  await mkdir(target)
  await symlink(victim, join(target, 'd'))
  await symlink(join(victim, 'passwd'), join(target, 'passwd'))
  const replaced = await forge(store, { data: [dir('d'), file('d/x', 'mine\n'), file('passwd', 'mine\n')] }, 3)
  await store.materializeTree(replaced.manifest.trees.data, target, { role: 'data' })
  t.ok((await lstat(join(target, 'd'))).isDirectory(), 'a symlink where the tree has a directory is replaced by a directory')
  t.equal(await readFile(join(target, 'd/x'), 'utf8'), 'mine\n')
  t.ok((await lstat(join(target, 'passwd'))).isFile(), 'a symlink where the tree has a file is replaced by the file')
  t.same(await snapshot(victim), before, 'neither symlink was followed')

  // A symlink on the way to an entry whose directory the tree does not list: refused.
  const other = join(root, 'other')
  await mkdir(other)
  await symlink(victim, join(other, 'd'))
  const below = await forge(store, { data: [file('d/x', 'pwned\n', 0o644)] }, 4)
  await t.rejects(store.materializeTree(below.manifest.trees.data, other, { role: 'data' }), { name: 'UnsafeTreeError', reason: 'symlink on disk' })
  t.same(await snapshot(victim), before, 'nothing written through it')
})
