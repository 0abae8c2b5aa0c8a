// A private swarm keeps out peers without its key, and a peer drops forged, malformed, oversized and
// replayed gossip (counted in its status) without crashing.
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { createSwarmNode, type SwarmNode } from '../peer/node.ts'
import { HEARTBEAT_TOPIC, VERDICT_TOPIC, type Heartbeat, type VerdictMessage } from '../peer/heartbeat.ts'
import { waitFor } from '../harness/spawn-peer.ts'
import { peerFor, swarmFor, swarmKeyFor, tempDirFor, type Teardown } from './helpers/peers.ts'

async function rawNodeFor (t: Teardown, swarmKeyFile?: string): Promise<SwarmNode> {
  const node = await createSwarmNode({
    privateKey: await generateKeyPair('Ed25519'),
    dataDir: await tempDirFor(t, 'tandem-raw-'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: [],
    swarmKey: swarmKeyFile != null ? new Uint8Array(await readFile(swarmKeyFile)) : undefined,
    mdns: false
  })
  t.teardown(async () => { await node.stop() })
  return node
}

function heartbeatOf (peerId: string, incarnation: number, seq: number): Heartbeat {
  return {
    v: 1,
    peerId,
    incarnation,
    seq,
    sentAt: Date.now(),
    addrs: [],
    board: { name: 'raspberry-pi-b', arch: 'arm', cores: 1, memoryMb: 512 },
    capabilities: { criu: { version: null, checkOk: null }, docker: { available: null, version: null } },
    load: { loadPerCore: 0, lagMs: 0, rssMb: 10, healthScore: 0 },
    extras: {}
  }
}

const encode = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value))

t.test('peers with a wrong key or no key cannot join a private swarm', async t => {
  const key = await swarmKeyFor(t)
  const otherKey = await swarmKeyFor(t)
  const member = await peerFor(t, { swarmKey: key })
  const wrongKey = await peerFor(t, { swarmKey: otherKey, bootstrap: member.addrs })
  const noKey = await peerFor(t, { bootstrap: member.addrs })
  const legit = await peerFor(t, { swarmKey: key, bootstrap: member.addrs })
  await waitFor('the legitimate peer to join', async () => (await member.status()).peers.some(p => p.peerId === legit.peerId && p.state === 'alive'), 30_000)
  // The intruders have been dialling the member since they started; give them a few more heartbeats.
  await new Promise(resolve => setTimeout(resolve, 3000))
  const seen = (await member.status()).peers.map(p => p.peerId)
  t.same(seen, [legit.peerId], 'the member sees only the peer holding the key')
  t.same((await wrongKey.status()).peers, [], 'the peer with the wrong key sees nobody')
  t.same((await noKey.status()).peers, [], 'the peer without a key sees nobody')

  const raw = await rawNodeFor(t)
  await t.rejects(raw.libp2p.dial(multiaddr(member.addrs[0]!), { signal: AbortSignal.timeout(5000) }), 'a raw libp2p node without the key cannot connect')
})

/** A two-peer private swarm and a raw libp2p node with its key, subscribed to `topics` and connected to the target. */
async function intruderIn (t: Teardown, topics: string[]) {
  const key = await swarmKeyFor(t)
  const [target, honest] = await swarmFor(t, 2, { swarmKey: key })
  if (target == null || honest == null) throw new Error('swarm did not start')
  await waitFor('the two peers to see each other', async () => (await target.status()).peers.some(p => p.state === 'alive'), 30_000)
  const raw = await rawNodeFor(t, key)
  const pubsub = raw.libp2p.services.pubsub
  for (const topic of topics) pubsub.subscribe(topic)
  await raw.libp2p.dial(multiaddr(target.addrs[0]!), { signal: AbortSignal.timeout(5000) })
  const last = topics.at(-1) as string
  await waitFor('the target to subscribe us', () => pubsub.getSubscribers(last).some(id => id.toString() === target.peerId), 20_000)
  return { target, honest, raw, pubsub, rawId: raw.libp2p.peerId.toString() }
}

t.test('forged, malformed, oversized and replayed heartbeats are dropped and counted', async t => {
  const { target, honest, pubsub, rawId } = await intruderIn(t, [HEARTBEAT_TOPIC])

  // Claims to be the honest peer, signed by the raw node: forged.
  await pubsub.publish(HEARTBEAT_TOPIC, encode(heartbeatOf(honest.peerId, Date.now() * 2, 1)))
  // Not JSON, wrong shape, wrong version: malformed.
  await pubsub.publish(HEARTBEAT_TOPIC, new TextEncoder().encode('{not json'))
  await pubsub.publish(HEARTBEAT_TOPIC, encode({ ...heartbeatOf(rawId, 1, 1), board: 'x' }))
  await pubsub.publish(HEARTBEAT_TOPIC, encode({ ...heartbeatOf(rawId, 1, 1), v: 99 }))
  await pubsub.publish(HEARTBEAT_TOPIC, new Uint8Array([0xff, 0xfe, 0x00]))
  // 20 KiB of extras: oversized.
  await pubsub.publish(HEARTBEAT_TOPIC, encode({ ...heartbeatOf(rawId, 1, 2), extras: { junk: 'x'.repeat(20 * 1024) } }))
  // A valid heartbeat of the raw node, then the same (incarnation, seq) again: the second is a replay.
  await pubsub.publish(HEARTBEAT_TOPIC, encode(heartbeatOf(rawId, 5, 7)))
  await new Promise(resolve => setTimeout(resolve, 100))
  await pubsub.publish(HEARTBEAT_TOPIC, encode(heartbeatOf(rawId, 5, 7)))
  await pubsub.publish(HEARTBEAT_TOPIC, encode(heartbeatOf(rawId, 4, 100)))

  const counters = async () => (await target.status()).counters.gossip[HEARTBEAT_TOPIC]?.dropped
  await waitFor('all drops to be counted', async () => {
    const dropped = await counters()
    return dropped != null && dropped.forged >= 1 && dropped.malformed >= 4 && dropped.oversized >= 1 && dropped.replayed >= 2
  }, 20_000)
  const dropped = await counters()
  t.match(dropped, { forged: 1, malformed: 4, oversized: 1, replayed: 2 }, 'each kind of bad message is counted')

  const status = await target.status()
  const honestEntry = status.peers.find(p => p.peerId === honest.peerId)
  t.equal(honestEntry?.state, 'alive', 'the honest peer is still alive')
  t.not(honestEntry?.info?.board.name, 'raspberry-pi-b', 'the forged heartbeat did not overwrite the honest peer\'s profile')
  t.ok(honestEntry != null && honestEntry.incarnation < Date.now() * 2, 'nor its incarnation')
  const rawEntry = status.peers.find(p => p.peerId === rawId)
  t.equal(rawEntry?.incarnation, 5, 'the valid heartbeat of the raw node was accepted')
  t.equal(target.output.some(line => /Error|uncaught/i.test(line) && !/dropped|dial/.test(line)), false, 'no errors in the target\'s log')
  t.equal(await Promise.race([target.exited, new Promise(resolve => setTimeout(() => resolve('running'), 100))]), 'running', 'the target is still running')
})

t.test('forged, replayed and strangers\' dead verdicts are dropped and counted; a valid one is applied and refuted', async t => {
  const { target, honest, pubsub, rawId } = await intruderIn(t, [HEARTBEAT_TOPIC, VERDICT_TOPIC])
  const honestBefore = (await target.status()).peers.find(p => p.peerId === honest.peerId)!
  const verdict = (fields: Partial<VerdictMessage>): VerdictMessage => ({
    v: 1, from: rawId, target: honest.peerId, incarnation: honestBefore.incarnation, seq: 1, reason: 'no answer for 1100 ms', ...fields
  })
  const counters = async () => (await target.status()).counters.gossip[VERDICT_TOPIC]?.dropped

  // Before the raw node has sent a heartbeat it is nobody: its verdicts do not count.
  await pubsub.publish(VERDICT_TOPIC, encode(verdict({})))
  await waitFor('the stranger\'s verdict to be dropped', async () => (await counters())?.stranger === 1, 20_000)
  // Now a member; claims the verdict comes from the honest peer: forged.
  await pubsub.publish(HEARTBEAT_TOPIC, encode(heartbeatOf(rawId, 1, 1)))
  await waitFor('the raw node to be a member', async () => (await target.status()).peers.some(p => p.peerId === rawId), 20_000)
  await pubsub.publish(VERDICT_TOPIC, encode(verdict({ from: honest.peerId, target: rawId })))
  // An old verdict replayed: an incarnation of the honest peer older than the one the target heard.
  await pubsub.publish(VERDICT_TOPIC, encode(verdict({ incarnation: honestBefore.incarnation - 1 })))
  // Same incarnation but the target has heard newer heartbeats than the verdict's evidence: replayed.
  await pubsub.publish(VERDICT_TOPIC, encode(verdict({ seq: 0 })))
  await pubsub.publish(VERDICT_TOPIC, encode({ ...verdict({}), incarnation: 'soon' }))
  await waitFor('the drops to be counted', async () => {
    const dropped = await counters()
    return dropped != null && dropped.forged >= 1 && dropped.replayed >= 2 && dropped.malformed >= 1
  }, 20_000)
  t.match(await counters(), { stranger: 1, forged: 1, replayed: 2, malformed: 1 }, 'each bad verdict is counted')
  t.equal((await target.status()).peers.find(p => p.peerId === honest.peerId)?.state, 'alive', 'none of them touched the honest peer')

  // A current verdict (a member may be wrong): applied at once, then refuted by the accused with a new incarnation.
  const current = (await target.status()).peers.find(p => p.peerId === honest.peerId)!
  await pubsub.publish(VERDICT_TOPIC, encode(verdict({ incarnation: current.incarnation, seq: Number.MAX_SAFE_INTEGER })))
  await waitFor('the honest peer to refute and be alive with a new incarnation', async () => {
    const entry = (await target.status()).peers.find(p => p.peerId === honest.peerId)
    return entry?.state === 'alive' && entry.incarnation > current.incarnation
  }, 20_000)
  const events = await target.client.membershipEvents()
  t.ok(events.some(e => e.peerId === honest.peerId && e.state === 'dead' && /^verdict of/.test(e.reason)), 'the verdict was applied')
  t.ok(honest.output.some(line => /refuting with a new incarnation/.test(line)), 'the accused refuted it')
})
