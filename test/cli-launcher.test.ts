// bin/tandem, the command on the PATH: reached through a symlink (what `npm link` makes), with another Node first
// on the PATH, it runs the CLI on the project's own Node 24.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'

const run = promisify(execFile)
const launcher = fileURLToPath(new URL('../bin/tandem', import.meta.url))

t.test('a symlinked tandem runs on the project\'s Node whatever node the PATH has', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-launcher-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  await symlink(launcher, join(dir, 'tandem'))
  // The system's directories after the link: a `node` there (Debian's 20) must not be the one that runs.
  const env = { ...process.env, PATH: `${dir}:/usr/local/bin:/usr/bin:/bin` }
  const version = await run('tandem', ['--version'], { env })
  t.match(version.stdout, /^tandem \S+ \(node v24\./, `tandem --version: ${version.stdout.trim()}`)
  const help = await run('tandem', ['status', '--help'], { env })
  t.match(help.stdout, /usage: tandem status/, 'a subcommand\'s help')
})
