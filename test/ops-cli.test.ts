// The CLI as a person meets it, on one real peer (no Docker needed): --version, --help everywhere, TANDEM_API and
// TANDEM_DATA_DIR, a token that survives restarts and rotates on request, -o json|yaml|wide, peer ids by prefix or
// suffix, `mission validate` listing every problem, and no control character from input reaching the terminal.
import t from 'tap'
import { execFile } from 'node:child_process'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parse } from 'yaml'
import { CLI_PATH } from '../harness/spawn-peer.ts'
import { peerFor, respawnFor, tempDirFor } from './helpers/peers.ts'
import { resolvePeerId } from '../peer/commands/peer-ids.ts'
import { printable } from '../peer/commands/terminal.ts'
import type { PeerStatus } from '../peer/daemon.ts'
import { peerConfigFromArgs, processFlagsFromArgs } from '../peer/commands/peer.ts'

interface Run { code: number, stdout: string, stderr: string }

function cli (args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise(resolve => {
    const clean = { ...process.env }
    delete clean.TANDEM_API
    delete clean.TANDEM_DATA_DIR
    delete clean.TANDEM_API_TOKEN
    execFile(process.execPath, [CLI_PATH, ...args], { env: { ...clean, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err == null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f]/

t.test('--version and --help for every command and subcommand', async t => {
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
  const version = await cli(['--version'])
  t.equal(version.code, 0)
  t.match(version.stdout, new RegExp(`^tandem ${pkg.version.replaceAll('.', '\\.')} \\(node v\\d+`), 'the version of package.json')
  const helps = [['--help'], ['peer', '--help'], ['peer', 'start', '--help'], ['peer', 'rotate-token', '--help'], ['status', '--help'],
    ['swarm-key', '--help'], ['swarm-key', 'generate', '--help'], ['mission', '--help'], ['mission', 'validate', '--help'],
    ['mission', 'deploy', '--help'], ['mission', 'move', '--help'], ['doctor', '--help'], ['events', '--help'], ['events', '-h']]
  for (const args of helps) {
    const run = await cli(args)
    t.equal(run.code, 0, `tandem ${args.join(' ')} exits 0`)
    t.match(run.stdout, /^usage: tandem/, `tandem ${args.join(' ')} prints the usage`)
  }
  const unknown = await cli(['mission', 'frobnicate'])
  t.equal(unknown.code, 2, 'an unknown subcommand is a usage error')
})

t.test('input is never echoed raw', async t => {
  const hostile = 'x\u001b]0;owned\u0007\u001b[2J'
  for (const args of [[hostile], ['mission', hostile], ['status', hostile], ['events', '--mission', 'm', hostile], ['status', '-o', hostile]]) {
    const run = await cli(args)
    t.not(run.code, 0, `tandem ${printable(args.join(' '))} fails`)
    t.notMatch(run.stdout + run.stderr, CONTROL, 'without a control character in its output')
    t.match(run.stderr, /\\x1b/, 'the input shown escaped')
  }
})

t.test('mission validate lists every problem, offline', async t => {
  const dir = await tempDirFor(t)
  const bad = join(dir, 'bad.yaml')
  await writeFile(bad, 'name: Bad_Name\nimage: "UPPER/x"\nreplicas: 3\nenv:\n  "1BAD": x\n  GOOD: y\n  ALSO-BAD: z\ncommand: [sh, 3]\ncheckpointIntervalMs: fast\nplacement:\n  architectures: [sparc]\n  cpu: 2\n')
  const run = await cli(['mission', 'validate', bad, '--api', '127.0.0.1:1'])
  t.equal(run.code, 1, 'exit 1 for an invalid manifest, with no peer to ask')
  for (const field of ['name', 'image', 'replicas', 'env.1BAD', 'env.ALSO-BAD', 'command[1]', 'checkpointIntervalMs', 'placement.architectures[0]', 'placement.cpu']) {
    t.match(run.stdout, new RegExp(`^  ${field.replace(/[.[\]]/g, c => `\\${c}`)}: `, 'm'), `names ${field}`)
  }
  t.match(run.stdout, /9 problems/)
  const json = JSON.parse((await cli(['mission', 'validate', bad, '-o', 'json'])).stdout) as { valid: boolean, problems: unknown[] }
  t.equal(json.valid, false)
  t.equal(json.problems.length, 9, 'the same nine as JSON')
  const good = join(dir, 'good.yaml')
  await writeFile(good, 'name: ok\nimage: tandem/busybox\nplacement:\n  architectures: [x64]\n')
  t.equal((await cli(['mission', 'validate', good])).code, 0, 'a valid manifest: exit 0')
  const cross = join(dir, 'cross.yaml')
  await writeFile(cross, 'name: ok\nimage:\n  arm64: a/b\nplacement:\n  architectures: [x64]\n')
  t.match((await cli(['mission', 'validate', cross])).stdout, /placement\.architectures: lists x64/, 'the whole spec\'s own checks once every field passes')
  const escape = join(dir, 'escape.yaml')
  await writeFile(escape, 'name: "a\\e[31mb"\nimage: x\n')
  const escaped = await cli(['mission', 'validate', escape])
  t.notMatch(escaped.stdout, CONTROL, 'a manifest\'s control characters are not printed raw')
})

t.test('peer ids by unique prefix, suffix or the short form', async t => {
  const ids = ['12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaaaaa', '12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBbbbbbb']
  t.equal(resolvePeerId('12D3KooWA', ids), ids[0], 'a unique prefix')
  t.equal(resolvePeerId('bbbbbb', ids), ids[1], 'a unique suffix')
  t.equal(resolvePeerId('12D3KooW…bbbbbb', ids), ids[1], 'the short form a table prints')
  t.equal(resolvePeerId('12D3KooW...aaaaaa', ids), ids[0], 'typed with three dots')
  t.throws(() => resolvePeerId('12D3KooW', ids), /matches 2 peers/, 'an ambiguous prefix is refused, listing the matches')
  t.equal(resolvePeerId('nobody', ids), 'nobody', 'no match: passed on for the peer to refuse')
})

t.test('a real peer: env defaults, -o, a token that stays and rotates on request', async t => {
  const peer = await peerFor(t, { removeDataDir: false, dataDir: await tempDirFor(t, 'tandem-ops-cli-') })
  const env = { TANDEM_API: peer.apiAddress, TANDEM_DATA_DIR: peer.dataDir }
  const viaEnv = await cli(['status', '--json'], env)
  t.equal(viaEnv.code, 0, `status with TANDEM_API and TANDEM_DATA_DIR only (${viaEnv.stderr})`)
  const status = JSON.parse(viaEnv.stdout) as PeerStatus
  t.equal(status.self.peerId, peer.peerId)
  const yaml = await cli(['status', '-o', 'yaml'], env)
  t.equal((parse(yaml.stdout) as PeerStatus).self.peerId, peer.peerId, '-o yaml parses as YAML')
  const wide = await cli(['status', '-o', 'wide'], env)
  t.match(wide.stdout, new RegExp(`^peer\\s+${peer.peerId}`, 'm'), '-o wide prints the table')
  t.equal((await cli(['status', '-o', 'xml'], env)).code, 2, '-o with an unknown format is a usage error')
  t.equal((await cli(['status', '--json', '-o', 'yaml'], env)).code, 2, '--json and -o yaml contradict')
  const events = await cli(['events', '--json'], env)
  t.equal(events.code, 0, 'events answers on a peer alone')

  const tokenFile = join(peer.dataDir, 'api-token')
  t.equal((await stat(tokenFile)).mode & 0o777, 0o600, 'the token file is 0600')
  const first = peer.token
  await peer.stop()
  const again = await respawnFor(t, peer, { removeDataDir: false })
  t.equal(again.token, first, 'a restarted peer keeps its token')
  t.equal((await cli(['status', '--json'], { ...env, TANDEM_API: again.apiAddress })).code, 0, 'and the CLI keeps working with it')

  const rotated = await cli(['peer', 'rotate-token'], { ...env, TANDEM_API: again.apiAddress })
  t.equal(rotated.code, 0, `rotate-token on a running peer (${rotated.stderr})`)
  const second = (await readFile(tokenFile, 'utf8')).trim()
  t.not(second, first, 'writes a new token')
  const old = await fetch(`http://${again.apiAddress}/v1/status`, { headers: { authorization: `Bearer ${first}` } })
  t.equal(old.status, 401, 'the old token no longer works')
  const fresh = await fetch(`http://${again.apiAddress}/v1/status`, { headers: { authorization: `Bearer ${second}` } })
  t.equal(fresh.status, 200, 'the new one does')
  t.equal((await stat(tokenFile)).mode & 0o777, 0o600, 'still 0600')
  await again.stop()

  const offline = await cli(['peer', 'rotate-token', '--data-dir', peer.dataDir])
  t.equal(offline.code, 0, `rotate-token with no peer running (${offline.stderr})`)
  const third = (await readFile(tokenFile, 'utf8')).trim()
  t.not(third, second, 'writes a new token for the next start')
  const next = await respawnFor(t, peer, { removeDataDir: false })
  t.equal(next.token, third, 'which the next start uses')
  await next.stop()
})

t.test('peer start takes --rotate-token and --log-format out of the peer\'s flags', async t => {
  t.same(processFlagsFromArgs(['--data-dir', 'd', '--rotate-token', '--log-format', 'json'], {}), { format: 'json', rotateToken: true, rest: ['--data-dir', 'd'] })
  t.same(processFlagsFromArgs(['--log-format=text'], { TANDEM_LOG_FORMAT: 'json' }), { format: 'text', rotateToken: false, rest: [] })
  t.same(processFlagsFromArgs([], { TANDEM_LOG_FORMAT: 'json' }).format, 'json', 'TANDEM_LOG_FORMAT is the default')
  t.throws(() => processFlagsFromArgs(['--log-format', 'xml'], {}), /not one of text, json/)
  t.equal(peerConfigFromArgs(['--insecure-open-missions'], { TANDEM_DATA_DIR: '/tmp/somewhere', TANDEM_API: '127.0.0.1:7999' }).dataDir, '/tmp/somewhere', 'TANDEM_DATA_DIR is --data-dir\'s default')
  t.equal(peerConfigFromArgs(['--insecure-open-missions'], { TANDEM_DATA_DIR: '/tmp/somewhere', TANDEM_API: '127.0.0.1:7999' }).api.port, 7999, 'TANDEM_API is --api\'s default')
})
