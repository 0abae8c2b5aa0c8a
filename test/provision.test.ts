// scripts/provision.sh and tandem doctor on this host: --check passes once provisioned, a second run
// changes nothing, doctor reports a healthy host (exit 0) and a missing daemon with its fix (exit 1).
import t from 'tap'
import { gateOn } from './helpers/requirements.ts'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { formatDoctorReport, runDoctor, versionAtLeast, type DoctorReport } from '../boards/doctor.ts'

const ROOT = join(import.meta.dirname, '..')
const PROVISION = join(ROOT, 'scripts', 'provision.sh')
const CLI = join(ROOT, 'peer', 'cli.ts')

interface Run { code: number, stdout: string, stderr: string }

async function runCommand (command: string, args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)(command, args, { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const failure = err as { code?: number, stdout?: string, stderr?: string }
    return { code: typeof failure.code === 'number' ? failure.code : -1, stdout: failure.stdout ?? '', stderr: failure.stderr ?? '' }
  }
}

t.test('versionAtLeast compares dotted versions', async t => {
  t.ok(versionAtLeast('4.1.1', '4.1'))
  t.ok(versionAtLeast('4.1', '4.1'))
  t.ok(versionAtLeast('4.10', '4.2'))
  t.notOk(versionAtLeast('3.17.1', '4.1'))
  t.notOk(versionAtLeast('4.0.9', '4.1'))
})

t.test('formatDoctorReport prints every finding and its fix', async t => {
  const report: DoctorReport = {
    ok: false,
    dockerHost: 'unix:///x.sock',
    checks: [
      { id: 'docker', status: 'fail', detail: 'no Docker daemon answers', fix: 'start it' },
      { id: 'disk', status: 'ok', detail: '10 GiB free' }
    ]
  }
  const text = formatDoctorReport(report)
  t.match(text, /FAIL\s+docker\s+no Docker daemon answers/)
  t.match(text, /fix: start it/)
  t.match(text, /ok\s+disk/)
  t.match(text, /something is missing/)
})

t.test('provision.sh usage errors', async t => {
  const help = await runCommand('bash', [PROVISION, '--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /--check/)
  const bad = await runCommand('bash', [PROVISION, '--bogus'])
  t.equal(bad.code, 2)
})

t.test('tandem doctor against a daemon that is not there', async t => {
  const report = await runDoctor({ dockerHost: 'unix:///nonexistent/tandem-doctor.sock', timeoutMs: 5_000 })
  t.equal(report.ok, false)
  const docker = report.checks.find(check => check.id === 'docker')
  t.equal(docker?.status, 'fail')
  t.match(docker?.fix ?? '', /start that daemon/)
  const cli = await runCommand(process.execPath, [CLI, 'doctor', '--docker-host', 'unix:///nonexistent/tandem-doctor.sock', '--json'])
  t.equal(cli.code, 1, 'exit 1 when something is missing')
  t.equal((JSON.parse(cli.stdout) as DoctorReport).ok, false)
  const bad = await runCommand(process.execPath, [CLI, 'doctor', '--bogus'])
  t.equal(bad.code, 2, 'exit 2 on a bad flag')
})

function missingRequirement (): string | undefined {
  if (process.platform !== 'linux') return 'provisioning needs Linux'
  if (process.getuid?.() !== 0) return 'provisioning needs root'
  if (!existsSync('/usr/bin/apt-get')) return 'provisioning needs Debian/Ubuntu (apt-get)'
  return undefined
}

if (gateOn(t, missingRequirement())) {
  t.test('the provisioned host', async t => {
    const check = await runCommand('bash', [PROVISION, '--check'])
    if (check.code !== 0 && process.env.CI !== 'true') {
      t.comment(`skip: host not provisioned (run scripts/provision.sh):\n${check.stdout}`)
      return
    }
    t.equal(check.code, 0, `provision --check passes:\n${check.stdout}${check.stderr}`)
    t.notMatch(check.stdout, /MISSING/)

    const started = performance.now()
    const again = await runCommand('bash', [PROVISION])
    t.comment(`second provision run: ${(performance.now() - started).toFixed(0)} ms`)
    t.equal(again.code, 0, again.stderr)
    t.match(again.stdout, /host is ready/)
    t.notMatch(again.stdout, /apt-get|installed|built|wrote|started dockerd|saved/, 'a second run changes nothing')

    const report = await runDoctor()
    t.equal(report.ok, true, formatDoctorReport(report))
    t.same(report.checks.map(c => c.id), ['docker', 'experimental', 'criu-version', 'criu-check', 'base-images', 'disk'])
    const cli = await runCommand(process.execPath, [CLI, 'doctor'])
    t.equal(cli.code, 0, cli.stdout + cli.stderr)
    t.match(cli.stdout, /can run missions with checkpoints/)

    const node = await runCommand('docker', ['run', '--rm', '--pull', 'never', '--network', 'none', 'tandem/node-base:latest',
      'node', '-e', 'console.log(process.version)'])
    t.equal(node.code, 0, node.stderr)
    t.match(node.stdout, /^v24\./, 'tandem/node-base runs the project\'s Node 24')
  })
}
