// Five real peer processes on loopback: convergence, SIGKILL/restart and SIGSTOP/SIGCONT detection.
import t from 'tap'
import { allSee, stateSeenBy, waitFor, type PeerHandle } from '../harness/spawn-peer.ts'
import { respawnFor, swarmFor, swarmKeyFor } from './helpers/peers.ts'

async function allObserve (observers: PeerHandle[], target: string, state: string): Promise<boolean> {
  const states = await Promise.all(observers.map(async observer => await stateSeenBy(observer, target)))
  return states.every(seen => seen === state)
}

t.test('five peers converge, detect SIGKILL and SIGSTOP, and welcome the peer back', async t => {
  const swarmKey = await swarmKeyFor(t)
  const peers = await swarmFor(t, 5, { swarmKey })
  await waitFor('every peer to see every other alive', async () => await allSee(peers, 'alive'), 60_000)
  t.pass('converged: everyone sees everyone alive')

  const status = await peers[0]!.status()
  t.equal(status.peers.length, 4)
  for (const entry of status.peers) {
    t.equal(entry.board, 'generic-amd64', 'heartbeat carries the board profile')
    t.type(entry.lastSeenMs, 'number')
    t.ok(['x64', 'arm64'].includes(entry.arch ?? ''))
  }
  t.match(status.self, { peerId: peers[0]!.peerId, board: String, arch: String, addrs: Array })

  // SIGKILL: the connection closes, the redial is refused.
  const victim = peers[4]!
  const observers = peers.slice(0, 4)
  victim.kill('SIGKILL')
  await victim.exited
  await waitFor('all others to mark the killed peer dead', async () => await allObserve(observers, victim.peerId, 'dead'), 30_000)
  t.pass('SIGKILLed peer is dead for every other peer')
  const afterKill = await observers[0]!.status()
  t.ok(afterKill.peers.some(entry => entry.peerId === victim.peerId && entry.state === 'dead'), 'the dead peer stays listed')

  // Restart on the same data dir: same identity, alive again (new incarnation).
  const restarted = await respawnFor(t, victim, { swarmKey, bootstrap: peers[0]!.addrs })
  t.equal(restarted.peerId, victim.peerId, 'same peer id after restart')
  await waitFor('all others to see the restarted peer alive', async () => await allObserve(observers, victim.peerId, 'alive'), 30_000)
  t.pass('restarted peer is alive again')

  // SIGSTOP: silence only, no connection reset.
  const frozen = peers[3]!
  const watchers = [peers[0]!, peers[1]!, peers[2]!, restarted]
  await waitFor('the restarted peer to see everyone alive', async () => await allSee([frozen, ...watchers], 'alive'), 30_000)
  frozen.kill('SIGSTOP')
  try {
    await waitFor('all others to mark the stopped peer dead', async () => await allObserve(watchers, frozen.peerId, 'dead'), 30_000)
    t.pass('SIGSTOPped peer is dead for every other peer')
  } finally {
    frozen.kill('SIGCONT')
  }
  await waitFor('all others to see the resumed peer alive', async () => await allObserve(watchers, frozen.peerId, 'alive'), 30_000)
  t.pass('SIGCONTed peer is alive again')
  await waitFor('the resumed peer to see everyone alive', async () => await allSee([frozen, ...watchers], 'alive'), 30_000)
  t.pass('the resumed peer did not declare the others dead for its own pause')
})
