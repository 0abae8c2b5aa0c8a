// Direct beats (peer/beats.ts) between two libp2p nodes: beats reach the watcher with the sender's incarnation,
// stop (and say so) when the watcher is no longer wanted, and a malformed frame closes the stream; the watcher
// acknowledges what it counted, and the sender learns the send time of the newest beat each peer heard.
import t from 'tap'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createSwarmNode, type SwarmNode } from '../peer/node.ts'
import { BEAT_PROTOCOL, BeatLink, encodeBeat } from '../peer/beats.ts'
import { waitFor } from '../harness/spawn-peer.ts'
import { tempDirFor, type Teardown } from './helpers/peers.ts'

async function nodeFor (t: Teardown): Promise<SwarmNode> {
  const node = await createSwarmNode({
    privateKey: await generateKeyPair('Ed25519'),
    dataDir: await tempDirFor(t, 'tandem-beats-'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: [],
    mdns: false
  })
  t.teardown(async () => { await node.stop() })
  return node
}

t.test('beats reach the watcher, end when it is no longer wanted, and a malformed frame closes the stream', async t => {
  const a = await nodeFor(t)
  const b = await nodeFor(t)
  const aId = a.libp2p.peerId.toString()
  const bId = b.libp2p.peerId.toString()
  let incarnation = 42
  let watchers = [bId]
  const received: Array<[string, number, number]> = []
  const ended: string[] = []
  let healthScore = 0
  const sender = new BeatLink({ libp2p: a.libp2p, intervalMs: 50, incarnation: () => incarnation, healthScore: () => healthScore, watchers: () => watchers, onBeat: () => true, onEnd: () => {} })
  const watcher = new BeatLink({
    libp2p: b.libp2p,
    intervalMs: 50,
    incarnation: () => 1,
    watchers: () => [],
    onBeat: (peerId, inc, score) => { received.push([peerId, inc, score]); return true },
    onEnd: peerId => ended.push(peerId)
  })
  await watcher.start()
  await sender.start()
  t.teardown(async () => { await sender.stop(); await watcher.stop() })

  await a.libp2p.dial(b.libp2p.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(5000) })
  await waitFor('three beats', () => received.length >= 3, 10_000)
  t.same(received[0], [aId, 42, 0], 'the beat names the sender (from the authenticated connection), its incarnation and health')
  t.same(sender.targets(), [bId])
  incarnation = 43
  healthScore = 3
  await waitFor('a beat of the new incarnation', () => received.at(-1)?.[1] === 43, 10_000)
  t.equal(received.at(-1)?.[2], 3, 'with the sender\'s health score')

  watchers = []
  await waitFor('the watcher to hear that the beats ended', () => ended.includes(aId), 10_000)
  const count = received.length
  await new Promise(resolve => setTimeout(resolve, 200))
  t.equal(received.length, count, 'no beats after the end')
  t.same(sender.targets(), [])

  // A frame that is not an incarnation: the watcher closes the stream and reports nothing for it.
  const stream = await a.libp2p.dialProtocol(b.libp2p.peerId, BEAT_PROTOCOL, { signal: AbortSignal.timeout(5000) })
  const frame = encodeBeat(Number.NaN)
  stream.send(frame)
  await waitFor('the malformed stream to be closed', () => stream.status !== 'open', 10_000)
  t.equal(received.length, count, 'the malformed beat was not reported')
})

t.test('the watcher acknowledges the beats it counted: the sender learns when it was last heard, by the send time of that beat', async t => {
  const a = await nodeFor(t)
  const b = await nodeFor(t)
  const bId = b.libp2p.peerId.toString()
  let clock = 1000
  let counts = true
  const sender = new BeatLink({ libp2p: a.libp2p, intervalMs: 50, now: () => clock, incarnation: () => 1, watchers: () => [], onBeat: () => true, onEnd: () => {} })
  const watcher = new BeatLink({ libp2p: b.libp2p, intervalMs: 50, incarnation: () => 1, watchers: () => [], onBeat: () => counts, onEnd: () => {} })
  await watcher.start()
  await sender.start()
  t.teardown(async () => { await sender.stop(); await watcher.stop() })
  await a.libp2p.dial(b.libp2p.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(5000) })
  t.equal(sender.acknowledgedAt(bId), -Infinity, 'nothing acknowledged yet')
  t.same(sender.targets(), [], 'no watcher: nobody beaten')

  // A peer named for acknowledgements (a primary's view member) is beaten although it is not a watcher.
  sender.requireAcks(() => [bId])
  await waitFor('an acknowledgement', () => sender.acknowledgedAt(bId) === 1000, 10_000)
  t.same(sender.targets(), [bId], 'the named peer is beaten')
  t.pass('acknowledged at the send time of the beat (the sender\'s clock), not at its arrival')

  // Beats the watcher does not count (an unknown sender, an old incarnation) are not acknowledged: the time stays
  // that of the last beat it counted, however many are sent and arrive since.
  counts = false
  clock = 5000
  await new Promise(resolve => setTimeout(resolve, 400))
  t.equal(sender.acknowledgedAt(bId), 1000, 'beats not counted move nothing')
  counts = true
  await waitFor('the newer beat acknowledged', () => sender.acknowledgedAt(bId) === 5000, 10_000)
  t.pass('counted again: acknowledged at the newer send time')

  sender.requireAcks(() => [])
  await waitFor('beats to the named peer to stop', () => sender.targets().length === 0, 10_000)
  t.pass('no longer named: no longer beaten')
})
