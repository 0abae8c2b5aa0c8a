// A peer that sees no other peer says once why it may be: the report's causes from the facts (unit), and real peers
// (loopback, mDNS off): one with a different swarm key than its bootstrap peer, one with nothing to find peers with,
// and two that find each other and say nothing. TANDEM_LONELY_AFTER_MS shortens the 30 s wait.
import t from 'tap'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawnPeer, stopAllPeers, type PeerHandle } from '../harness/spawn-peer.ts'
import { generateSwarmKey } from '../peer/commands/swarm-key.ts'
import { lonelyReport, type LonelyFacts } from '../peer/lonely.ts'

const base: LonelyFacts = { swarmKeyFile: null, bootstrap: [], bootstrapErrors: {}, mdns: false, listen: ['/ip4/127.0.0.1/tcp/4001'], connectionsOpened: 0, aloneForMs: 30_000 }

t.test('the causes the facts point to', async t => {
  t.match(lonelyReport(base), /no bootstrap and mDNS off: nothing to find peers with/)
  t.match(lonelyReport(base), /no swarm key: boards started with --swarm-key cannot connect/)
  t.match(lonelyReport({ ...base, mdns: true }), /only mDNS, which finds peers on the same LAN segment/)
  const addr = '/ip4/127.0.0.1/tcp/9/p2p/12D3KooWExample'
  t.match(lonelyReport({ ...base, bootstrap: [addr], bootstrapErrors: { [addr]: 'connect ECONNREFUSED 127.0.0.1:9' } }), /nothing listens at \/ip4\/127\.0\.0\.1\/tcp\/9/)
  t.match(lonelyReport({ ...base, swarmKeyFile: '/k', bootstrap: [addr], bootstrapErrors: { [addr]: 'stream reset' } }), /most likely a different swarm key there/)
  t.match(lonelyReport({ ...base, bootstrap: [addr], bootstrapErrors: { [addr]: 'The operation was aborted due to timeout' } }), /does not answer/)
  t.match(lonelyReport({ ...base, swarmKeyFile: '/k', bootstrap: [addr], bootstrapErrors: { [addr]: 'The operation was aborted due to timeout' }, tcpReachable: { [addr]: true } }),
    /the TCP port answers; the handshake never completed\): most likely a different swarm key there/, 'a timeout on a port that answers is a hung handshake')
  t.match(lonelyReport(base), /^swarm: no other peer seen for 30 s\. Facts: swarm key none \(an open swarm\); bootstrap none; mDNS off; listening on \/ip4\/127\.0\.0\.1\/tcp\/4001; 0 connections opened since start\./)
})

t.test('real peers: a wrong swarm key and no way to find peers are reported once; a joined peer says nothing', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-lonely-'))
  t.teardown(async () => { await stopAllPeers(); await rm(dir, { recursive: true, force: true }) })
  const keyA = join(dir, 'a.key')
  const keyB = join(dir, 'b.key')
  await writeFile(keyA, generateSwarmKey())
  await writeFile(keyB, generateSwarmKey())
  const env = { TANDEM_LONELY_AFTER_MS: '4000' }
  const lonely = (peer: PeerHandle): string[] => peer.output.filter(line => line.includes('no other peer seen'))
  // The pair has longer to meet (starting a peer takes seconds on a loaded host); the checks wait past it.
  const pairEnv = { TANDEM_LONELY_AFTER_MS: '15000' }
  const pairStarted = Date.now()
  const a = await spawnPeer({ swarmKey: keyA, env: pairEnv, openMissions: true })
  const friend = await spawnPeer({ swarmKey: keyA, env: pairEnv, openMissions: true, bootstrap: [a.addrs[0] as string] })
  // Long enough for its bootstrap dials to fail (a handshake under another key hangs until the 5 s dial timeout).
  const stranger = await spawnPeer({ swarmKey: keyB, env: { TANDEM_LONELY_AFTER_MS: '12000' }, openMissions: true, bootstrap: [a.addrs[0] as string] })
  const alone = await spawnPeer({ env, openMissions: true })
  const deadline = Date.now() + 40_000
  while ((lonely(stranger).length === 0 || lonely(alone).length === 0) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 200))
  // Some seconds more: the report comes once, not again.
  await new Promise(resolve => setTimeout(resolve, Math.max(5000, pairStarted + 20_000 - Date.now())))
  t.comment(lonely(stranger)[0] ?? '')
  t.comment(lonely(alone)[0] ?? '')
  t.equal(lonely(stranger).length, 1, 'the peer with another swarm key reports once')
  t.match(lonely(stranger)[0], /dial failed: .*failed in the handshake( \(the TCP port answers; the handshake never completed\))?: most likely a different swarm key there/, lonely(stranger)[0] ?? '')
  t.match(lonely(stranger)[0], new RegExp(`swarm key ${keyB.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`), 'naming its key file')
  t.equal(lonely(alone).length, 1, 'the peer with no bootstrap and mDNS off reports once')
  t.match(lonely(alone)[0], /no bootstrap and mDNS off/, lonely(alone)[0] ?? '')
  t.same(lonely(a), [], 'the bootstrap peer, joined by its friend, says nothing')
  t.same(lonely(friend), [], 'nor its friend')
})
