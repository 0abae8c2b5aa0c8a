// Control API (token, malformed input), CLI flags (exit 2), data dir lock and identity, and the
// extension points other parts use (routes, status sections, heartbeat extras).
import t from 'tap'
import { spawn } from 'node:child_process'
import { connect } from 'node:net'
import { readFile, writeFile, mkdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { ApiClient } from '../peer/api-client.ts'
import { CLI_PATH, waitFor } from '../harness/spawn-peer.ts'
import { Peer } from '../peer/daemon.ts'
import { consensusConfigFor, DEFAULT_FAILURE_DETECTOR, defaultDockerHost, type PeerConfig } from '../peer/config.ts'
import { peerFor, swarmKeyFor, tempDirFor, type Teardown } from './helpers/peers.ts'

interface CliResult { code: number | null, stdout: string, stderr: string }

function cli (args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', chunk => { stdout += String(chunk) })
    child.stderr.on('data', chunk => { stderr += String(chunk) })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`tandem ${args.join(' ')} did not exit:\n${stdout}\n${stderr}`)) }, timeoutMs)
    child.on('exit', code => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}

async function rawRequest (address: string, text: string): Promise<string> {
  const [host, port] = address.split(':')
  return await new Promise(resolve => {
    const socket = connect(Number(port), host as string)
    let reply = ''
    socket.on('data', chunk => { reply += String(chunk) })
    socket.on('error', () => resolve(reply))
    socket.on('close', () => resolve(reply))
    socket.end(text)
    setTimeout(() => socket.destroy(), 3000)
  })
}

t.test('the control API refuses requests without the right token and survives malformed input', async t => {
  const peer = await peerFor(t)
  const url = `http://${peer.apiAddress}/v1/status`
  t.equal((await fetch(url)).status, 401, 'no token: 401')
  t.equal((await fetch(url, { headers: { authorization: 'Bearer wrong' } })).status, 401, 'wrong token: 401')
  t.equal((await fetch(url, { headers: { authorization: `Bearer ${peer.token}x` } })).status, 401, 'token with a suffix: 401')
  t.equal((await fetch(url, { headers: { authorization: `Bearer ${peer.token}` } })).status, 200, 'right token: 200')
  t.equal((await fetch(`http://${peer.apiAddress}/v1/nothing`, { headers: { authorization: `Bearer ${peer.token}` } })).status, 404)
  t.equal((await fetch(url, { method: 'POST', body: '{}', headers: { authorization: `Bearer ${peer.token}` } })).status, 405, 'wrong method: 405')
  await rawRequest(peer.apiAddress, 'GARBAGE \x00\x01\x02 not http at all\r\n\r\n')
  await rawRequest(peer.apiAddress, `GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${peer.token}\r\nContent-Length: 99999999\r\n\r\nabc`)
  // Junk on the libp2p port too.
  const libp2pPort = /\/tcp\/(\d+)/.exec(peer.addrs[0]!)?.[1]
  await rawRequest(`127.0.0.1:${libp2pPort}`, 'GET / HTTP/1.1\r\n\r\n' + 'z'.repeat(100_000))
  const status = await peer.status()
  t.equal(status.self.peerId, peer.peerId, 'the peer still answers after junk on both ports')

  const viaEnv = await cli(['status', '--api', peer.apiAddress, '--json'], { TANDEM_API_TOKEN: peer.token })
  t.equal(viaEnv.code, 0, 'status --json with TANDEM_API_TOKEN')
  const parsed = JSON.parse(viaEnv.stdout)
  t.match(parsed, { self: { peerId: peer.peerId, board: String, arch: String, addrs: Array }, peers: Array })
  const table = await cli(['status', '--api', peer.apiAddress, '--data-dir', peer.dataDir])
  t.equal(table.code, 0)
  t.match(table.stdout, /PEER\s+STATE\s+LAST SEEN/)
  const badToken = await cli(['status', '--api', peer.apiAddress, '--json'], { TANDEM_API_TOKEN: 'nope' })
  t.equal(badToken.code, 1, 'a wrong token is an error')
  t.match(badToken.stderr, /401/)
})

t.test('bad flags and bad config exit with code 2 and a clear message', async t => {
  const dir = await tempDirFor(t)
  const badKey = join(dir, 'bad.key')
  await writeFile(badKey, 'not a key\n')
  const cases: Array<[string[], RegExp]> = [
    [['peer', 'start'], /--data-dir is required/],
    [['peer', 'start', '--data-dir', dir, '--frobnicate'], /frobnicate/],
    [['peer', 'start', '--data-dir', dir, '--api', 'nonsense'], /HOST:PORT/],
    [['peer', 'start', '--data-dir', dir, '--api', '127.0.0.1:99999'], /HOST:PORT/],
    [['peer', 'start', '--data-dir', dir, '--board', 'commodore-64'], /unknown board/],
    [['peer', 'start', '--data-dir', dir, '--listen', 'not-a-multiaddr'], /multiaddr/],
    [['peer', 'start', '--data-dir', dir, '--bootstrap', '/ip4/127.0.0.1/tcp/1'], /peer id/],
    [['peer', 'start', '--data-dir', dir, '--docker-host', 'ftp://x'], /docker-host/],
    [['peer', 'start', '--data-dir', dir, '--api', '127.0.0.1:0', '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', '--insecure-open-missions', '--swarm-key', badKey], /not a libp2p pre-shared key/],
    [['peer', 'start', '--data-dir', dir, '--api', '127.0.0.1:0'], /no operator key/],
    [['peer', 'start', '--data-dir', dir, '--operator-pub', badKey], /operator-pub: .*expected 'tandem-operator-ed25519/],
    [['peer', 'start', '--data-dir', dir, '--operator-key', badKey], /operator-key: .*not an operator private key/],
    [['peer', 'start', '--data-dir', dir, '--insecure-open-missions', '--swarm-key', join(dir, 'missing.key')], /cannot read swarm key/],
    [['peer', 'stop'], /unknown subcommand/],
    [['status', '--api', 'x'], /HOST:PORT/],
    [['status', '--api', '127.0.0.1:1'], /no API token/],
    [['swarm-key', 'make'], /unknown subcommand/],
    [['no-such-command'], /unknown command/]
  ]
  for (const [args, message] of cases) {
    const result = await cli(args, { TANDEM_API_TOKEN: '', TANDEM_FD_SUSPECT_AFTER_MS: '' })
    t.equal(result.code, 2, `tandem ${args.join(' ')} exits 2`)
    t.match(result.stderr, message, `tandem ${args.join(' ')}: ${result.stderr.trim().split('\n')[0] ?? ''}`)
  }
  const badEnv = await cli(['peer', 'start', '--data-dir', dir], { TANDEM_FD_SUSPECT_AFTER_MS: 'soon' })
  t.equal(badEnv.code, 2, 'a bad timing override exits 2')
})

t.test('swarm-key generate writes a pnet key and never overwrites one', async t => {
  const dir = await tempDirFor(t)
  const path = join(dir, 'swarm.key')
  t.equal((await cli(['swarm-key', 'generate', '--out', path])).code, 0)
  t.match(await readFile(path, 'utf8'), /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/)
  t.equal((await cli(['swarm-key', 'generate', '--out', path])).code, 2, 'refuses to overwrite')
  const printed = await cli(['swarm-key', 'generate'])
  t.match(printed.stdout, /^\/key\/swarm\/psk\/1\.0\.0\//)
})

t.test('operator-key create writes a private key (0600, never overwritten) and its public line; public prints it again', async t => {
  const dir = await tempDirFor(t)
  const path = join(dir, 'operator.key')
  const created = await cli(['operator-key', 'create', '--out', path, '--comment', 'ops'])
  t.equal(created.code, 0, created.stderr)
  t.equal((await stat(path)).mode & 0o777, 0o600, 'the private key is readable by its owner only')
  t.match(await readFile(path, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/)
  const line = await readFile(`${path}.pub`, 'utf8')
  t.match(line, /^tandem-operator-ed25519 [A-Za-z0-9_-]{43} ops\n$/)
  t.equal((await cli(['operator-key', 'create', '--out', path])).code, 2, 'refuses to overwrite')
  const printed = await cli(['operator-key', 'public', path])
  t.equal(printed.stdout, line.replace(' ops', ''), 'the same public key')
  t.match((await cli(['operator-key', 'public', `${path}.pub`])).stderr, /not an operator private key/)
})

t.test('one peer per data dir: a live lock refuses, a stale lock is taken over, the identity stays', async t => {
  const dataDir = await tempDirFor(t)
  const key = await swarmKeyFor(t)
  const first = await peerFor(t, { dataDir, swarmKey: key })
  const second = await cli(['peer', 'start', '--data-dir', dataDir, '--api', '127.0.0.1:0', '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', '--insecure-open-missions', '--swarm-key', key])
  t.not(second.code, 0, 'a second daemon on the same data dir refuses to start')
  t.match(second.stderr, new RegExp(`in use by another tandem peer \\(pid ${first.pid}`))
  await first.stop()
  t.equal(await readFile(join(dataDir, 'peer.lock'), 'utf8').catch(() => 'gone'), 'gone', 'a clean stop removes the lock')

  // A lock left by a process that no longer exists (a power cut): taken over.
  const dead = spawn(process.execPath, ['-e', ''])
  await new Promise(resolve => dead.on('exit', resolve))
  await writeFile(join(dataDir, 'peer.lock'), `${dead.pid ?? 999999}\n`)
  const third = await peerFor(t, { dataDir, swarmKey: key })
  t.equal(third.peerId, first.peerId, 'same identity after a restart')
  t.equal((await readFile(join(dataDir, 'peer.lock'), 'utf8')).trim(), String(third.pid), 'the stale lock now holds the new PID')
})

async function inProcessPeer (t: Teardown, dataDir: string, swarmKeyFile: string, bootstrap: string[] = []): Promise<Peer> {
  const config: PeerConfig = {
    dataDir,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap,
    api: { host: '127.0.0.1', port: 0 },
    swarmKeyFile,
    board: 'beaglebone-black',
    mdns: false,
    dockerHost: defaultDockerHost(),
    failureDetector: DEFAULT_FAILURE_DETECTOR,
    consensus: consensusConfigFor(DEFAULT_FAILURE_DETECTOR)
  }
  const peer = new Peer(config, { log: () => {} })
  t.teardown(async () => { await peer.stop() })
  return peer
}

t.test('extension points: API routes, status sections and heartbeat extras', async t => {
  const key = await swarmKeyFor(t)
  const root = await tempDirFor(t)
  await mkdir(join(root, 'a'))
  await mkdir(join(root, 'b'))
  const a = await inProcessPeer(t, join(root, 'a'), key)
  let holding = ['mission-1']
  a.heartbeat.extend('missions', () => holding)
  a.status.extend('missions', async () => ({ held: holding }))
  a.api.route('POST', '/v1/echo/:name', ({ params, body }) => ({ status: 201, body: { name: params.name, body } }))
  t.throws(() => { a.status.extend('peers', () => 1) }, /already taken/, 'core status fields cannot be replaced')
  t.throws(() => { a.api.route('GET', '/v1/status', () => ({})) }, /already registered/)
  await a.start()
  const b = await inProcessPeer(t, join(root, 'b'), key, a.addrs())
  await b.start()

  const changes: string[] = []
  b.membership.on(change => { changes.push(`${change.peerId}:${change.previous ?? 'new'}->${change.state}`) })
  await waitFor('b to hear a with its extras', () => {
    const member = b.membership.get(a.peerId)
    return member?.state === 'alive' && JSON.stringify(member.info?.extras.missions) === '["mission-1"]'
  }, 20_000)
  t.same(changes, [`${a.peerId}:new->alive`], 'membership emits typed change events')
  holding = ['mission-1', 'mission-2']
  await waitFor('the extras to follow the provider', () => JSON.stringify(b.membership.get(a.peerId)?.info?.extras.missions) === '["mission-1","mission-2"]', 10_000)
  t.equal(b.membership.get(a.peerId)?.info?.board.name, 'beaglebone-black')

  const client = new ApiClient(a.api.address, a.token)
  t.same(await client.request('POST', '/v1/echo/x%20y', { n: 1 }), { name: 'x y', body: { n: 1 } })
  const status = await client.status()
  t.same(status.missions, { held: ['mission-1', 'mission-2'] }, 'status sections are served')
  const statusOf = async (promise: Promise<unknown>): Promise<number | string> => await promise.then(() => 'ok', (err: { status?: number }) => err.status ?? 'no status')
  t.equal(await statusOf(client.request('GET', '/v1/echo/x')), 405, 'wrong method')
  t.equal(await statusOf(client.request('POST', '/v1/nothing')), 404, 'no such route')
  const echo = `http://${a.api.address.host}:${a.api.address.port}/v1/echo/x`
  const auth = { authorization: `Bearer ${a.token}` }
  t.equal((await fetch(echo, { method: 'POST', body: '{bad json', headers: auth })).status, 400, 'bad JSON body: 400')
  t.equal((await fetch(echo, { method: 'POST', body: 'x'.repeat(2 * 1024 * 1024), headers: auth })).status, 413, 'huge body: 413')
  t.equal((await fetch(echo, { method: 'POST', body: '{}' })).status, 401, 'extra routes are guarded by the token too')

  // A typed gossip topic of another part, with its own validator.
  const got: Array<{ n: number, from: string }> = []
  b.gossip.subscribe<{ n: number }>('tandem/test/1', payload => {
    if (typeof (payload as { n?: unknown }).n !== 'number') throw new Error('n must be a number')
    return payload as { n: number }
  }, (message, sender) => { got.push({ n: message.n, from: sender }) }, { maxBytes: 100 })
  a.gossip.subscribe('tandem/test/1', payload => payload, () => {})
  await waitFor('a to know b subscribed', () => a.node.libp2p.services.pubsub.getSubscribers('tandem/test/1').length > 0, 10_000)
  await a.gossip.publish('tandem/test/1', { n: 'x' })
  await a.gossip.publish('tandem/test/1', { n: 7, pad: 'x'.repeat(200) })
  await a.gossip.publish('tandem/test/1', { n: 42 })
  await waitFor('the valid message', () => got.length > 0, 10_000)
  t.same(got, [{ n: 42, from: a.peerId }], 'sender is the verified signer; invalid and oversized messages are dropped')
  t.match(b.gossip.counters()['tandem/test/1'], { accepted: 1, dropped: { malformed: 1, oversized: 1 } })
})
