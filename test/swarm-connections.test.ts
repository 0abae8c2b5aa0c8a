// The connection keeper (peer/daemon/connections.ts) on real libp2p nodes over loopback: a connection whose stream
// multiplexer closed while its socket stayed open is dropped, so the next dial makes a working one.
import t from 'tap'
import type { Membership } from '../peer/membership.ts'
import { ConnectionKeeper, muxerClosed } from '../peer/daemon/connections.ts'
import { connectedPair, tempDir } from './checkpoint-helpers.ts'
import { until } from '../harness/observe.ts'

t.test('muxerClosed: only an open connection whose multiplexer is not open', async t => {
  t.ok(muxerClosed({ status: 'open', muxer: { status: 'closed' } } as never))
  t.ok(muxerClosed({ status: 'open', muxer: { status: 'closing' } } as never))
  t.notOk(muxerClosed({ status: 'open', muxer: { status: 'open' } } as never))
  t.notOk(muxerClosed({ status: 'closed', muxer: { status: 'closed' } } as never), 'a closed connection is libp2p\'s to remove')
  t.notOk(muxerClosed({ status: 'open' } as never), 'no multiplexer known')
})

t.test('a connection with a closed multiplexer is dropped, and a new dial carries streams again', async t => {
  const [a, b] = await connectedPair(t, await tempDir(t, 'connections'))
  const lines: string[] = []
  const keeper = new ConnectionKeeper({ libp2p: b.libp2p, membership: { list: () => [] } as unknown as Membership, bootstrap: [], log: line => { lines.push(line) }, stopping: () => false })
  const [connection] = b.libp2p.getConnections(a.libp2p.peerId)
  if (connection === undefined) { t.fail('no connection'); return }
  // What a multiplexer error leaves behind: the multiplexer closed, the socket open.
  ;(connection as unknown as { muxer: { abort: (err: Error) => void } }).muxer.abort(new Error('test: multiplexer failed'))
  t.equal(connection.status, 'open', 'the connection still counts as open')
  await t.rejects(b.libp2p.dialProtocol(a.libp2p.peerId, '/ipfs/ping/1.0.0'), /muxer is "closed"/, 'and every stream asked of it fails')
  keeper.dropClosedMuxers()
  t.match(lines.join('\n'), /has a closed stream multiplexer; dropping it/, 'the keeper says so')
  await until('the connection to close', async () => connection.status !== 'open' && b.libp2p.getConnections(a.libp2p.peerId).every(c => c !== connection), 5000)
  await b.libp2p.dial(a.libp2p.getMultiaddrs()[0]!)
  const rtt = await b.libp2p.services.ping.ping(a.libp2p.peerId)
  t.ok(rtt >= 0, 'a new connection carries streams again')
})
