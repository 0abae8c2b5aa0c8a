// The host side of a board: the peer's data dir is private, and the missions' seccomp profile is Docker's default
// with io_uring removed and nothing else changed (the container-side attacks are in security-bundle.test.ts).
import t from 'tap'
import { chmod, mkdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { readFileSync } from 'node:fs'
import { DataDirLock, ensureDataDir, loadOrCreateIdentity } from '../peer/identity.ts'
import { IO_URING_SYSCALLS, missionSeccompProfile, type SeccompProfile } from '../checkpoint/index.ts'
import { tempDir } from './checkpoint-helpers.ts'

const mode = async (path: string): Promise<number> => (await stat(path)).mode & 0o7777

t.test('a new data dir and what the peer writes in it are private', async t => {
  const root = await tempDir(t, 'datadir')
  const dataDir = join(root, 'a', 'peer')
  t.equal(await ensureDataDir(dataDir), null, 'nothing to fix in a new dir')
  t.equal(await mode(dataDir), 0o700, 'created 0700')
  t.equal(await mode(join(root, 'a')), 0o700, 'and so are the parents it had to create')
  await loadOrCreateIdentity(dataDir)
  t.equal(await mode(join(dataDir, 'identity.key')), 0o600, 'identity key 0600')
  const lock = new DataDirLock(dataDir)
  await lock.acquire()
  t.teardown(async () => { await lock.release() })
  t.equal(await mode(lock.path), 0o600, 'lock file 0600')
})

t.test('an existing data dir with a wider mode is narrowed to its owner, with a message to log', async t => {
  const root = await tempDir(t, 'datadir-wide')
  const dataDir = join(root, 'peer')
  await mkdir(dataDir)
  await chmod(dataDir, 0o755)
  await writeFile(join(dataDir, 'blocks.ldb'), 'x', { mode: 0o644 })
  const message = await ensureDataDir(dataDir)
  t.match(message, /had mode 0755: narrowed to 0700/, `the peer says so: ${String(message)}`)
  t.equal(await mode(dataDir), 0o700, 'now 0700: its files are out of other users\' reach')
  t.equal(await ensureDataDir(dataDir), null, 'a second start has nothing to fix')
  await chmod(dataDir, 0o2770)
  t.match(await ensureDataDir(dataDir), /had mode 2770: narrowed to 0700/, 'group bits and setgid go too')
  t.equal(await mode(dataDir), 0o700)
})

t.test('a data dir path that is a file is refused', async t => {
  const root = await tempDir(t, 'datadir-file')
  await writeFile(join(root, 'peer'), '')
  await t.rejects(ensureDataDir(join(root, 'peer')))
})

t.test('the mission seccomp profile is Docker\'s default minus io_uring (ENOSYS), nothing else widened', async t => {
  const base = JSON.parse(readFileSync(new URL('../checkpoint/seccomp-docker-20.10.24.json', import.meta.url), 'utf8')) as SeccompProfile
  const mission = missionSeccompProfile()
  t.equal(mission.defaultAction, base.defaultAction, `default action unchanged (${base.defaultAction}: what no rule allows is refused)`)
  t.same(mission.archMap, base.archMap, 'architectures unchanged')
  const allowed = (p: SeccompProfile): Set<string> => new Set(p.syscalls.filter(r => r.action === 'SCMP_ACT_ALLOW').flatMap(r => r.names))
  const baseAllowed = allowed(base)
  const missionAllowed = allowed(mission)
  t.same([...missionAllowed].filter(n => !baseAllowed.has(n)), [], 'no syscall allowed that Docker\'s default does not allow')
  t.same([...baseAllowed].filter(n => !missionAllowed.has(n)).sort(), [...IO_URING_SYSCALLS].sort(), 'only the io_uring calls are taken away')
  t.ok(IO_URING_SYSCALLS.every(n => baseAllowed.has(n)), 'Docker 20.10.24\'s default does allow io_uring (why tandem needs its own profile)')
  // Every rule of the default is there, with its conditions (args, capabilities, architectures), io_uring aside.
  const strip = (p: SeccompProfile): string[] => p.syscalls.map(r => JSON.stringify({ ...r, names: r.names.filter(n => !IO_URING_SYSCALLS.includes(n)) }))
  t.same(strip(mission).slice(0, -1), strip(base), 'the default\'s rules, in order and unchanged')
  t.same(mission.syscalls.at(-1), { names: IO_URING_SYSCALLS, action: 'SCMP_ACT_ERRNO', errnoRet: 38, args: [], comment: mission.syscalls.at(-1)?.comment, includes: {}, excludes: {} }, 'then io_uring refused with ENOSYS')
  t.ok(['unshare', 'mount', 'setns', 'clone3', 'bpf'].every(n => !base.syscalls.some(r => r.action === 'SCMP_ACT_ALLOW' && r.names.includes(n) && Object.keys(r.excludes ?? {}).length === 0 && Object.keys(r.includes ?? {}).length === 0)), 'unshare, mount, setns, clone3, bpf: allowed only with CAP_SYS_ADMIN (which missions lack), as in Docker')
})

t.test('the vehicle example\'s profile (for `docker run` by hand, and vehicle-docker.test.ts) is the mission profile', async t => {
  const example = JSON.parse(readFileSync(new URL('../examples/vehicle/seccomp-no-io-uring.json', import.meta.url), 'utf8')) as unknown
  t.same(example, missionSeccompProfile(), 'regenerate with: node -e "import(\'./checkpoint/runtime.ts\').then(m => console.log(JSON.stringify(m.missionSeccompProfile(), null, 2)))"')
})
