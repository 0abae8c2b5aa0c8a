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
  BundleStore, CHECKPOINT_FORMAT, Checkpointer, ContainerRuntime, IO_URING_SYSCALLS, UnsafeTreeError, demuxLogs, openSwarmBundleStore,
  type CheckpointManifest, type FileEntry, type TreeEntry, type UnsafeTreeReason
} from '../checkpoint/index.ts'
import { buildImage, loadBaseImages, startBoardDocker, type BoardDocker } from '../harness/simulated-docker.ts'
import { connectedPair, gateDockerCriu, tempDir, waitFor } from './checkpoint-helpers.ts'

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

if (gateDockerCriu(t)) {
  // One parent test: the boards start after the light tests above may have ended, and live until both subtests end.
  t.test('on two Docker + CRIU boards', async t => {
    const root = await tempDir(t, 'sechostile')
    const boards: BoardDocker[] = []
    t.teardown(async () => { for (const b of boards) await b.stop().catch(() => {}) })
    const boardA = await startBoardDocker({ dir: root, name: 'secA' })
    boards.push(boardA)
    const boardB = await startBoardDocker({ dir: root, name: 'secB' })
    boards.push(boardB)
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
    const ckA = new Checkpointer({ runtime: runtimeA, store: swarmA.store })
    const ckB = new Checkpointer({ runtime: runtimeB, store: swarmB.store })
    await ckA.start()
    await ckB.start()

    await t.test('a real mission that plants hostile symlinks (and set-id files) in its rootfs and data dir: checkpointed on A, staged and restored on B; the host is untouched', async t => {
      // The image ships a setuid program (as images may): the mission's copy-up of it is legitimate.
      const context = join(root, 'image')
      await mkdir(context)
      await writeFile(join(context, 'Dockerfile'), 'FROM tandem/busybox:latest\nRUN cp /bin/busybox /bin/suidtool && chmod 4755 /bin/suidtool\n')
      const image = await buildImage(runtimeA.docker, context, ['Dockerfile'], 'tandem/hostile:test')

      // What the mission aims at on the host: a dir of its own (known absolute path) and the host's /etc.
      const victim = join(root, 'victim')
      await mkdir(victim)
      await writeFile(join(victim, 'x'), 'precious\n')
      const victimBefore = await snapshot(victim)
      const etcFiles = ['passwd', 'shadow', 'group', 'hostname']
      const etcHash = async (): Promise<string[]> => await Promise.all(etcFiles.map(async f => await readFile(join('/etc', f)).then(b => createHash('sha256').update(b).digest('hex'), () => 'absent')))
      const etcBefore = await etcHash()
      const etcNames = (await readdir('/etc')).sort()
      const rootNames = (await readdir('/')).sort()

      const script = [
        'mkdir -p /var/a && echo mine > /var/a/x',
        'ln -s /etc /data/evil && ln -s / /tmp/root && ln -s "$VICTIM" /data/victim && ln -s "$VICTIM/x" /var/x-link && ln -s /etc/shadow /data/shadow',
        'touch /bin/suidtool',
        'i=0; while true; do i=$((i+1)); echo $i > /data/n; echo "tick $i"; usleep 100000; done'
      ].join('\n')
      const spec = { mission: 'hostile', image: 'tandem/hostile:test', cmd: ['sh', '-c', script], env: [`VICTIM=${victim}`] }
      const id = await runtimeA.startFresh(spec, { mission: 'hostile', peerId: 'A', epoch: 1 })
      t.teardown(async () => { await runtimeA.stop(id).catch(() => {}) })
      const ticks = async (runtime: ContainerRuntime, cid: string): Promise<number[]> =>
        (await runtime.logs(cid)).split('\n').map(l => /^tick (\d+)$/.exec(l)?.[1]).filter((n): n is string => n != null).map(Number)
      await waitFor('the mission to tick', async () => ((await ticks(runtimeA, id)).at(-1) ?? 0) >= 5)
      await ckA.shareImage(image)
      const first = await ckA.take(id, { mission: 'hostile', epoch: 1, seq: 1 })
      t.not(first.manifest.spec.imageCid, null, 'the checkpoint carries the image')
      // The backup holds the image before it fetches checkpoints (set-id entries are compared with it).
      await ckB.ensureImage(first.manifest.spec.imageCid as CID, { imageId: first.manifest.spec.imageId })
      const b1 = await ckB.fetch(first.cid)
      await ckB.stage(b1)
      const standby = join(runtimeB.info.rootDir, 'tandem-standby', 'hostile')
      t.equal((await lstat(join(standby, 'rootfs/bin/suidtool'))).mode & 0o7777, 0o4755, 'the copy-up of the image\'s setuid program is staged as it was')
      t.equal((await lstat(standby)).mode & 0o777, 0o700, 'the staging dir is root\'s only')

      // The mission turns a directory of its rootfs into a symlink to the host's victim dir: staging the next
      // checkpoint over the first removes /var/a/x, which the old code did through the new symlink.
      await exec(runtimeA, id, ['sh', '-c', 'rm -rf /var/a && ln -s "$VICTIM" /var/a'])
      const second = await ckA.take(id, { mission: 'hostile', epoch: 1, seq: 2, parent: first.cid })
      const b2 = await ckB.fetch(second.cid)
      await ckB.stage(b2)
      t.equal(await readlink(join(standby, 'rootfs/var/a')), victim, 'the symlink is staged as a symlink')
      t.same(await snapshot(victim), victimBefore, 'staging did not follow it: the host\'s victim/x is still there')
      const atCheckpoint = (await ticks(runtimeA, id)).at(-1) ?? 0
      await runtimeA.stop(id)

      const restored = await ckB.restore(b2, { peerId: 'B', epoch: 2 })
      t.teardown(async () => { await runtimeB.stop(restored.containerId).catch(() => {}) })
      t.equal(restored.staged, true, 'the staged files were moved into place')
      const resumed = await waitFor('the restored mission to tick', async () => (await ticks(runtimeB, restored.containerId)).at(0))
      t.ok(resumed > 5 && resumed <= atCheckpoint + 1, `the restored process continues (tick ${resumed}, A stopped at ${atCheckpoint})`)
      for (const [path, target] of [['/var/a', victim], ['/data/evil', '/etc'], ['/tmp/root', '/'], ['/data/victim', victim], ['/var/x-link', `${victim}/x`], ['/data/shadow', '/etc/shadow']]) {
        t.equal((await exec(runtimeB, restored.containerId, ['readlink', path as string])).trim(), target, `inside the restored mission ${path} -> ${target as string}`)
      }
      const dataB = runtimeB.dataDirFor((await runtimeB.inspect(restored.containerId)).Name.slice(1))
      t.ok((await lstat(join(dataB, 'evil'))).isSymbolicLink(), 'on B\'s disk the data dir holds the symlink itself')
      await waitFor('a few more ticks on B', async () => ((await ticks(runtimeB, restored.containerId)).at(-1) ?? 0) >= resumed + 3)

      // Set-id bits the image does not have: the mission made them; the backup refuses the checkpoint.
      const id2 = await runtimeA.startFresh(spec, { mission: 'hostile', peerId: 'A', epoch: 3 })
      t.teardown(async () => { await runtimeA.stop(id2).catch(() => {}) })
      await waitFor('the second mission to tick', async () => ((await ticks(runtimeA, id2)).at(-1) ?? 0) >= 3)
      for (const [where, cmd] of [['data', 'cp /bin/busybox /data/own-suid && chmod 4755 /data/own-suid'], ['rootfs', 'rm -f /data/own-suid && cp /bin/busybox /usr/own-suid && chmod 4755 /usr/own-suid']] as const) {
        await exec(runtimeA, id2, ['sh', '-c', cmd])
        const taken = await ckA.take(id2, { mission: 'hostile', epoch: 3, seq: where === 'data' ? 1 : 2 })
        const refusal = await ckB.fetch(taken.cid).then(() => null, (err: unknown) => err)
        t.ok(refusal instanceof UnsafeTreeError && refusal.reason === 'set-id bit', `a setuid program the mission made in its ${where} is refused (${(refusal as Error)?.message})`)
        t.notOk((await ckB.store.checkpoints('hostile')).some(c => c.cid.equals(taken.cid)), 'and not recorded (not acknowledged)')
      }

      t.same(await snapshot(victim), victimBefore, 'the host\'s victim dir is unchanged')
      t.same(await etcHash(), etcBefore, 'the host\'s /etc/passwd, shadow, group, hostname are unchanged')
      t.same((await readdir('/etc')).sort(), etcNames, 'no file appeared in the host\'s /etc')
      t.same((await readdir('/')).sort(), rootNames, 'nor in the host\'s /')
    })

    await t.test('a mission runs under Docker\'s default seccomp profile minus io_uring: no user or network namespace, no mount, io_uring_setup is ENOSYS; CRIU still works', async t => {
      const context = join(root, 'probe-image')
      await mkdir(context)
      await writeFile(join(context, 'io-uring-probe'), ioUringProbe(), { mode: 0o755 })
      await writeFile(join(context, 'Dockerfile'), 'FROM tandem/busybox:latest\nCOPY io-uring-probe /bin/io-uring-probe\n')
      await buildImage(runtimeA.docker, context, ['Dockerfile', 'io-uring-probe'], 'tandem/probe:test')
      const attempts: Record<string, string[]> = {
        'unshare -U (user namespace)': ['unshare', '-U', '-r', 'true'],
        'unshare -n (network namespace)': ['unshare', '-n', 'true'],
        'unshare -U -n (network namespace in a user namespace)': ['unshare', '-U', '-r', '-n', 'true'],
        'mount in a user and mount namespace': ['unshare', '-U', '-r', '-m', 'mount', '-t', 'tmpfs', 'none', '/tmp'],
        mount: ['mount', '-t', 'tmpfs', 'none', '/tmp']
      }
      const exitOf = async (runtime: ContainerRuntime, id: string, cmd: string[]): Promise<number> => {
        const e = await runtime.docker.getContainer(id).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true })
        const stream = await e.start({})
        const chunks: Buffer[] = []
        for await (const c of stream) chunks.push(c as Buffer)
        const code = (await e.inspect()).ExitCode ?? -1
        if (code !== 0) t.comment(`${cmd.join(' ')}: exit ${code}: ${demuxLogs(Buffer.concat(chunks)).trim()}`)
        return code
      }
      // Before: the profile missions had (everything allowed but io_uring), on the same image and daemon.
      const before = await runtimeA.docker.createContainer({
        Image: 'tandem/probe:test', Cmd: ['sleep', '600'], NetworkDisabled: true,
        HostConfig: { NetworkMode: 'none', SecurityOpt: [`seccomp=${JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: IO_URING_SYSCALLS, action: 'SCMP_ACT_ERRNO', errnoRet: 38 }] })}`] }
      } as object)
      t.teardown(async () => { await before.remove({ force: true }).catch(() => {}) })
      await before.start()
      const id = await runtimeA.startFresh({ mission: 'probe', image: 'tandem/probe:test', cmd: ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo "tick $i"; usleep 100000; done'] }, { mission: 'probe', peerId: 'A', epoch: 1 })
      t.teardown(async () => { await runtimeA.stop(id).catch(() => {}) })
      for (const [what, cmd] of Object.entries(attempts)) {
        const was = await exitOf(runtimeA, before.id, cmd)
        const now = await exitOf(runtimeA, id, cmd)
        t.not(now, 0, `${what}: fails in a mission now (exit ${now}; under the old profile exit ${was})`)
        // Without CAP_SYS_ADMIN a plain unshare -n or mount failed before too; inside a user namespace they did not.
        if (what.includes('user')) t.equal(was, 0, `${what}: worked under the old profile (what the tester found)`)
      }
      if (process.arch === 'x64') {
        t.equal(await exitOf(runtimeA, id, ['/bin/io-uring-probe']), 38, 'io_uring_setup returns ENOSYS (38) in a mission, so libuv falls back to epoll')
      } else {
        t.comment('io_uring probe is an x86-64 binary: not run on this architecture')
      }
      // CRIU dumps and restores a mission under this profile (seccomp filters are part of what it restores).
      await ckA.shareImage('tandem/probe:test')
      const taken = await ckA.take(id, { mission: 'probe', epoch: 1, seq: 1 })
      await runtimeA.stop(id)
      const restored = await ckB.restore(taken.cid, { peerId: 'B', epoch: 2 })
      t.teardown(async () => { await runtimeB.stop(restored.containerId).catch(() => {}) })
      const resumed = await waitFor('the restored probe mission to tick', async () => /tick (\d+)/.exec(await runtimeB.logs(restored.containerId))?.[1])
      t.ok(Number(resumed) > 1, `restored under the profile, it continues (tick ${resumed})`)
      t.not(await exitOf(runtimeB, restored.containerId, attempts['unshare -U (user namespace)'] as string[]), 0, 'and the restored mission is still filtered')
      if (process.arch === 'x64') t.equal(await exitOf(runtimeB, restored.containerId, ['/bin/io-uring-probe']), 38, 'io_uring_setup is still ENOSYS after the restore')
    })
  })
}

/**
 * A static x86-64 Linux program of 142 bytes: io_uring_setup(1, NULL), then exit with the negated return value.
 * Exit 38: ENOSYS (filtered by the mission profile); 14: EFAULT (the syscall ran and read the NULL params); 1: EPERM.
 */
function ioUringProbe (): Buffer {
  const code = Buffer.from([
    0xb8, 0xa9, 0x01, 0x00, 0x00, // mov eax, 425 (io_uring_setup)
    0xbf, 0x01, 0x00, 0x00, 0x00, // mov edi, 1 (entries)
    0x31, 0xf6, // xor esi, esi (params = NULL)
    0x0f, 0x05, // syscall
    0xf7, 0xd8, // neg eax
    0x89, 0xc7, // mov edi, eax
    0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60 (exit)
    0x0f, 0x05 // syscall
  ])
  const base = 0x400000n
  const headers = 64 + 56
  const elf = Buffer.alloc(headers + code.byteLength)
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]).copy(elf, 0)
  elf.writeUInt16LE(2, 16) // ET_EXEC
  elf.writeUInt16LE(0x3e, 18) // x86-64
  elf.writeUInt32LE(1, 20)
  elf.writeBigUInt64LE(base + BigInt(headers), 24) // entry
  elf.writeBigUInt64LE(64n, 32) // program headers at 64
  elf.writeUInt16LE(64, 52)
  elf.writeUInt16LE(56, 54)
  elf.writeUInt16LE(1, 56)
  elf.writeUInt32LE(1, 64) // PT_LOAD
  elf.writeUInt32LE(5, 68) // R+X
  elf.writeBigUInt64LE(base, 80)
  elf.writeBigUInt64LE(base, 88)
  elf.writeBigUInt64LE(BigInt(elf.byteLength), 96)
  elf.writeBigUInt64LE(BigInt(elf.byteLength), 104)
  elf.writeBigUInt64LE(0x1000n, 112)
  code.copy(elf, headers)
  return elf
}

async function exec (runtime: ContainerRuntime, id: string, cmd: string[]): Promise<string> {
  const e = await runtime.docker.getContainer(id).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true })
  const stream = await e.start({})
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(c as Buffer)
  return demuxLogs(Buffer.concat(chunks))
}
