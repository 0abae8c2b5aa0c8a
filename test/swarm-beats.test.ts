// Direct beats (peer/beats.ts) between two libp2p nodes: beats reach the watcher with the sender's incarnation,
// stop (and say so) when the watcher is no longer wanted, and a malformed frame closes the stream.
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
  const sender = new BeatLink({ libp2p: a.libp2p, intervalMs: 50, incarnation: () => incarnation, healthScore: () => healthScore, watchers: () => watchers, onBeat: () => {}, onEnd: () => {} })
  const watcher = new BeatLink({
    libp2p: b.libp2p,
    intervalMs: 50,
    incarnation: () => 1,
    watchers: () => [],
    onBeat: (peerId, inc, score) => received.push([peerId, inc, score]),
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
