// The incremental copy of rootfs changes and data dirs (checkpoint/mirror.ts) and the dump.log phase reader.
import t from 'tap'
import { chmod, chown, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rename, rm, symlink, writeFile, appendFile } from 'node:fs/promises'
import { execFileSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { TreeMirror } from '../checkpoint/mirror.ts'
import { criuPhasesFromLog } from '../checkpoint/criu-hook.ts'

/** What a bundle records of a tree: kind, mode, owner, content or target, whiteouts. */
async function describe (dir: string, rel = ''): Promise<string[]> {
  const out: string[] = []
  const st = await lstat(join(dir, rel))
  const owner = `${st.uid}:${st.gid}`
  if (st.isDirectory()) {
    out.push(`d ${rel} ${(st.mode & 0o7777).toString(8)} ${owner}`)
    for (const name of (await readdir(join(dir, rel))).sort()) out.push(...await describe(dir, rel === '' ? name : `${rel}/${name}`))
  } else if (st.isSymbolicLink()) out.push(`l ${rel} -> ${await readlink(join(dir, rel))} ${owner}`)
  else if (st.isCharacterDevice() && st.rdev === 0) out.push(`w ${rel}`)
  else if (st.isFile()) out.push(`f ${rel} ${(st.mode & 0o7777).toString(8)} ${owner} ${(await readFile(join(dir, rel))).toString('base64')}`)
  return out
}

t.test('a mirror equals its source after each sync and writes only what changed', async t => {
  const root = await mkdtemp(join(tmpdir(), 'tandem-mirror-'))
  t.teardown(async () => { await rm(root, { recursive: true, force: true }) })
  const src = join(root, 'src')
  const mirror = new TreeMirror(join(root, 'mirror'))
  await mkdir(join(src, 'etc/deep'), { recursive: true })
  await writeFile(join(src, 'etc/a.conf'), 'one')
  await writeFile(join(src, 'etc/deep/b'), 'two')
  await writeFile(join(src, 'log'), 'x')
  await symlink('etc/a.conf', join(src, 'link'))
  await writeFile(join(src, 'suid'), 'bin')
  await chmod(join(src, 'suid'), 0o4755)
  const root0 = process.getuid?.() === 0
  if (root0) execFileSync('mknod', [join(src, 'gone'), 'c', '0', '0'])

  const first = await mirror.sync(src)
  t.ok(first.full, 'the first sync copies everything')
  t.same(await describe(mirror.dir), await describe(src), 'first sync: mirror equals source')

  const idle = await mirror.sync(src)
  t.equal(idle.changed, 0, 'nothing changed: nothing written')
  t.equal(idle.removed, 0)
  t.notOk(idle.full)

  // In-place write of the same size (only ctime/mtime tell), an append, an atomic rename, a removal, a dir
  // replaced by a file, a chmod, a new symlink target, a new dir with content.
  await new Promise(resolve => setTimeout(resolve, 20))
  await writeFile(join(src, 'etc/a.conf'), 'ONE')
  await appendFile(join(src, 'log'), 'y')
  await writeFile(join(src, 'state.tmp'), '{"n":2}')
  await rename(join(src, 'state.tmp'), join(src, 'etc/deep/b'))
  await rm(join(src, 'suid'))
  await rm(join(src, 'etc/deep'), { recursive: true })
  await writeFile(join(src, 'etc/deep'), 'now a file')
  await chmod(join(src, 'log'), 0o600)
  await rm(join(src, 'link'))
  await symlink('/elsewhere', join(src, 'link'))
  await mkdir(join(src, 'new/sub'), { recursive: true })
  await writeFile(join(src, 'new/sub/c'), 'three')
  if (root0) {
    await chown(join(src, 'new/sub/c'), 1234, 5678)
    await rm(join(src, 'gone'))
    execFileSync('mknod', [join(src, 'etc/whiteout'), 'c', '0', '0'])
  }
  const second = await mirror.sync(src)
  t.same(await describe(mirror.dir), await describe(src), 'after changes: mirror equals source')
  t.ok(second.changed > 0 && second.changed < second.entries + 5, `changed ${second.changed} of ${second.entries}`)
  t.ok(second.removed >= 1, `removed ${second.removed}`)

  const third = await mirror.sync(src)
  t.equal(third.changed, 0, 'unchanged again')

  // After a failure the mirror is dropped and the next sync is full.
  await mirror.drop()
  const again = await mirror.sync(src)
  t.ok(again.full)
  t.same(await describe(mirror.dir), await describe(src), 'rebuilt mirror equals source')
})

t.test('CRIU phases are read from dump.log timestamps', async t => {
  const log = [
    '(00.010000) freezing cgroup /sys/fs/cgroup/freezer/x: 100 x 100ms attempts, timeout: 10s',
    '(00.060000) mnt: Dumping mountpoints',
    '(00.100000) Dumping pstree (pid: 1)',
    '(00.120000) Namespaces dump complete',
    '(00.121000) Running post-dump scripts',
    '(00.131000) net: Unlock network',
    '(00.131500) Unfreezing tasks into 1',
    '(00.131600) \tUnseizing 1 into 1',
    ''
  ].join('\n')
  t.same(criuPhasesFromLog(log), { tasksMs: 50, mountsMs: 40, namespacesMs: 20, imagesMs: 1, postDumpMs: 10, unlockMs: 0.6, frozenMs: 121.6 })
  t.equal(criuPhasesFromLog('(00.1) nothing'), null)
})
