// The partition harness (harness/netns.ts) with plain peer processes (no Docker): each peer in its own network
// namespace on a private bridge; the peer is the process that `pid` names; a partition drops packets (a connect
// times out, it is not refused) and the failure detector sees it; heal restores it; everything is removed at the end,
// by the exit hooks on a signal, and by the next run after a SIGKILL of the owner.
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readlinkSync, statSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SwarmNetwork, reapOrphanNetworks, type NetnsHost } from '../harness/netns.ts'
import { spawnPeer, stateSeenBy, waitFor, type PeerHandle } from '../harness/spawn-peer.ts'
import { gateOn } from './helpers/requirements.ts'
import { swarmKeyFor } from './helpers/peers.ts'

function netnsMissing (): string | null {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)'
  for (const tool of ['ip', 'iptables-restore', 'nsenter', 'bash', 'timeout']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `no ${tool} on PATH`
  }
  return null
}

/** 'open' | 'refused' | 'timeout': a TCP connect from inside `from`'s namespace. */
function connectFrom (from: NetnsHost, address: string, port: number): string {
  const r = spawnSync('nsenter', [`--net=${from.nsPath}`, 'timeout', '2', 'bash', '-c', `exec 3<>/dev/tcp/${address}/${port}`], { encoding: 'utf8' })
  if (r.status === 0) return 'open'
  if (r.status === 124) return 'timeout'
  return /refused/i.test(r.stderr) ? 'refused' : `failed (${r.status}: ${r.stderr.trim()})`
}

function gone (network: { bridge: string, hosts: NetnsHost[] }): string[] {
  const left: string[] = []
  for (const host of network.hosts) {
    if (existsSync(host.nsPath)) left.push(host.ns)
    if (spawnSync('ip', ['link', 'show', 'dev', host.hostVeth]).status === 0) left.push(host.hostVeth)
  }
  if (spawnSync('ip', ['link', 'show', 'dev', network.bridge]).status === 0) left.push(network.bridge)
  return left
}

if (gateOn(t, netnsMissing())) {
  t.test('three peers in namespaces: real pids, partition, bridge cut, heal, cleanup', async t => {
    const network = await SwarmNetwork.create({ count: 3 })
    const peers: PeerHandle[] = []
    t.teardown(async () => {
      await Promise.allSettled(peers.map(async p => { await p.stop() }))
      network.destroySync()
    })
    t.match(network.bridgeAddress, /^10\.213\.\d+\.1$/, `bridge ${network.bridge} at ${network.bridgeAddress}`)
    const swarmKey = await swarmKeyFor(t)
    for (const host of network.hosts) {
      const bootstrap = peers.map(p => p.addrs[0]!).filter(a => a != null)
      peers.push(await spawnPeer({
        netns: host.nsPath,
        listen: [`/ip4/${host.address}/tcp/4001`],
        api: `${host.address}:0`,
        swarmKey,
        bootstrap
      }))
    }
    for (const [i, peer] of peers.entries()) {
      const host = network.host(i)
      t.ok(peer.addrs.every(a => a.includes(`/ip4/${host.address}/`)), `peer ${i + 1} listens on ${host.address} only (${peer.addrs.join(' ')})`)
      t.equal(peer.apiAddress.split(':')[0], host.address, 'its control API is on its namespace address')
      t.equal(readlinkSync(`/proc/${peer.pid}/exe`), readlinkSync(`/proc/${process.pid}/exe`), 'pid is the node process itself, not a wrapper')
      t.equal(readlinkSync(`/proc/${peer.pid}/ns/net`), `net:[${statSync(host.nsPath).ino}]`, 'the peer runs in its namespace')
      t.equal(readlinkSync(`/proc/${peer.pid}/ns/mnt`), readlinkSync(`/proc/${process.pid}/ns/mnt`), 'and shares the mount namespace (unix sockets, data dirs)')
    }
    await waitFor('every peer to see every other alive', async () => {
      for (const [i, peer] of peers.entries()) {
        for (const [j, other] of peers.entries()) if (i !== j && await stateSeenBy(peer, other.peerId) !== 'alive') return false
      }
      return true
    }, 30_000)
    t.pass('converged over the bridge')

    const [a, b, c] = network.hosts as [NetnsHost, NetnsHost, NetnsHost]
    t.equal(connectFrom(a, b.address, 4001), 'open', 'a reaches b before the cut')
    await network.partition([[a], [b, c]])
    t.same(network.cutLinks().sort(), [[a.address, b.address].sort().join('-'), [a.address, c.address].sort().join('-')].sort(), 'two links cut')
    t.equal(connectFrom(a, b.address, 4001), 'timeout', 'a -> b: packets dropped (a connect times out, nothing refuses)')
    t.equal(connectFrom(c, a.address, 4001), 'timeout', 'c -> a dropped')
    t.equal(connectFrom(b, c.address, 4001), 'open', 'b -> c still open')
    await waitFor('b and c to stop seeing a alive, and a to stop seeing them', async () =>
      await stateSeenBy(peers[1]!, peers[0]!.peerId) !== 'alive' && await stateSeenBy(peers[2]!, peers[0]!.peerId) !== 'alive' &&
      await stateSeenBy(peers[0]!, peers[1]!.peerId) !== 'alive', 20_000)
    t.pass(`partitioned: b sees a ${await stateSeenBy(peers[1]!, peers[0]!.peerId)}, a sees b ${await stateSeenBy(peers[0]!, peers[1]!.peerId)}; the control API still answers from the root namespace`)

    await network.heal()
    t.same(network.cutLinks(), [], 'no link cut after heal')
    t.equal(connectFrom(a, b.address, 4001), 'open', 'a reaches b again')
    await waitFor('everyone alive again after the heal', async () =>
      await stateSeenBy(peers[1]!, peers[0]!.peerId) === 'alive' && await stateSeenBy(peers[0]!, peers[2]!.peerId) === 'alive', 30_000)
    t.pass('healed')

    await network.cut(a, c)
    t.equal(connectFrom(a, c.address, 4001), 'timeout', 'bridge partition: a -/-> c')
    t.equal(connectFrom(a, b.address, 4001), 'open', 'a -> b')
    t.equal(connectFrom(b, c.address, 4001), 'open', 'b -> c')
    await network.join(a, c)
    t.equal(connectFrom(a, c.address, 4001), 'open', 'joined again')

    const killed = peers[2]!
    killed.kill('SIGKILL')
    t.equal(await killed.exited, 'SIGKILL', 'SIGKILL reaches the peer itself')

    await Promise.all(peers.map(async p => { await p.stop() }))
    network.destroySync()
    t.same(gone(network), [], 'namespaces, veths and bridge removed')
    t.notOk(existsSync(`/run/tandem-netns/${network.subnet}`), 'state dir removed')
  })

  t.test('a network outlives no owner: exit hooks on SIGTERM, the next run reaps after SIGKILL', async t => {
    const dir = await mkdtemp(join(tmpdir(), 'tandem-netns-'))
    t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
    const script = join(dir, 'owner.ts')
    const { writeFile } = await import('node:fs/promises')
    await writeFile(script, `import { SwarmNetwork } from ${JSON.stringify(new URL('../harness/netns.ts', import.meta.url).pathname)}\n` +
      'const n = await SwarmNetwork.create({ count: 2 })\n' +
      'console.log(JSON.stringify({ bridge: n.bridge, subnet: n.subnet, hosts: n.hosts }))\n' +
      'setInterval(() => {}, 1000)\n')
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      // A plain owner process: tap's process-info hooks put its loader into every spawned node's NODE_OPTIONS, and its
      // signal-exit handler and onOwnerExit then each leave re-raising SIGTERM to the other, so the child never exits.
      const started = Date.now()
      const child = spawn('sh', ['-c', 'exec env -u NODE_OPTIONS "$0" "$1"', process.execPath, script], { stdio: ['ignore', 'pipe', 'inherit'] })
      t.teardown(() => { try { child.kill('SIGKILL') } catch {} })
      const line = await new Promise<string>((resolve, reject) => {
        let out = ''
        child.stdout.setEncoding('utf8')
        child.stdout.on('data', (chunk: string) => { out += chunk; if (out.includes('\n')) resolve(out.split('\n')[0]!) })
        child.once('exit', code => reject(new Error(`owner exited (${code}) before its network was up`)))
      })
      const made = JSON.parse(line) as { bridge: string, subnet: number, hosts: NetnsHost[] }
      t.same(gone(made).length, 5, `${signal}: the owner made 2 namespaces, 2 veths and a bridge`)
      const exited = new Promise(resolve => child.once('exit', resolve))
      child.kill(signal)
      await exited
      t.comment(`${signal}: owner up and gone in ${Date.now() - started} ms`)
      if (signal === 'SIGKILL') {
        t.ok(gone(made).length > 0, 'SIGKILL: nothing could clean up yet')
        t.ok(reapOrphanNetworks() >= 1, 'the next run reaps the orphan network')
      }
      t.same(gone(made), [], `${signal}: namespaces, veths and bridge removed`)
      t.notOk(existsSync(`/run/tandem-netns/${made.subnet}`), `${signal}: state dir removed`)
    }
  })
}
