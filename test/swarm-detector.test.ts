// Unit tests of the failure detector (peer/membership.ts) with an injected clock and scripted probes.
import t from 'tap'
import { Membership, ringSuccessors, type MembershipChange, type ProbeOutcome, type Prober, type Verdict } from '../peer/membership.ts'
import { DEFAULT_FAILURE_DETECTOR, type FailureDetectorConfig } from '../peer/config.ts'
import { HeartbeatExtras, HeartbeatSource } from '../peer/heartbeat.ts'
import { BOARD_PROFILES, UNKNOWN_CAPABILITIES } from '../boards/detect.ts'

type Script = (peerId: string) => { outcome: ProbeOutcome, afterMs: number }

class FakeWorld implements Prober {
  now = 0
  direct: (peerId: string, timeoutMs: number) => Promise<ProbeOutcome>
  indirect: (via: string, target: string, timeoutMs: number) => Promise<ProbeOutcome>
  readonly #pending: Array<{ at: number, resolve: () => void }> = []
  directCalls: string[] = []
  indirectCalls: Array<[string, string]> = []

  constructor (directScript: Script, indirectScript: (via: string, target: string) => { outcome: ProbeOutcome, afterMs: number } = () => ({ outcome: 'timeout', afterMs: 400 })) {
    this.direct = async (peerId) => {
      this.directCalls.push(peerId)
      const { outcome, afterMs } = directScript(peerId)
      await this.#after(afterMs)
      return outcome
    }
    this.indirect = async (via, target) => {
      this.indirectCalls.push([via, target])
      const { outcome, afterMs } = indirectScript(via, target)
      await this.#after(afterMs)
      return outcome
    }
  }

  #after (ms: number): Promise<void> {
    return new Promise(resolve => { this.#pending.push({ at: this.now + ms, resolve }) })
  }

  /** Advances the clock in tick-sized steps, settling due probes and ticking the detector. */
  async advance (membership: Membership, ms: number, step = DEFAULT_FAILURE_DETECTOR.tickIntervalMs): Promise<void> {
    const end = this.now + ms
    while (this.now < end) {
      this.now = Math.min(end, this.now + step)
      for (const item of this.#pending.filter(p => p.at <= this.now)) {
        this.#pending.splice(this.#pending.indexOf(item), 1)
        item.resolve()
      }
      await new Promise(resolve => setImmediate(resolve))
      membership.tick()
      await new Promise(resolve => setImmediate(resolve))
    }
  }
}

/**
 * The tests of the silence logic use one bound for everyone (as if every peer were watched, heartbeats every
 * 200 ms); the watcher tests below use the defaults.
 */
const UNIFORM: Partial<FailureDetectorConfig> = { heartbeatIntervalMs: 200, gossipSuspectAfterMs: DEFAULT_FAILURE_DETECTOR.suspectAfterMs }

function setup (world: FakeWorld, overrides: Partial<FailureDetectorConfig> = UNIFORM) {
  const membership = new Membership({
    selfId: 'self',
    config: { ...DEFAULT_FAILURE_DETECTOR, ...overrides },
    prober: world,
    now: () => world.now,
    wallNow: () => 1_700_000_000_000 + world.now,
    random: () => 0.5
  })
  const changes: MembershipChange[] = []
  membership.on(change => changes.push(change))
  membership.tick()
  return { membership, changes }
}

/** Heartbeats from `peers` every 200 ms for `ms`. */
async function heartbeats (world: FakeWorld, membership: Membership, peers: string[], ms: number, seqs: Map<string, number>, incarnation = 1): Promise<void> {
  for (let elapsed = 0; elapsed < ms; elapsed += 200) {
    for (const peer of peers) {
      const seq = (seqs.get(peer) ?? 0) + 1
      seqs.set(peer, seq)
      membership.heard(peer, incarnation, seq)
    }
    await world.advance(membership, 200)
  }
}

t.test('a silent peer goes alive -> suspect -> dead within the configured bounds', async t => {
  const world = new FakeWorld(() => ({ outcome: 'timeout', afterMs: 250 }))
  const { membership, changes } = setup(world)
  const seqs = new Map<string, number>()
  await heartbeats(world, membership, ['a', 'b', 'c'], 1000, seqs)
  t.same(membership.list().map(m => m.state), ['alive', 'alive', 'alive'])
  const silentSince = world.now - 200
  // 'a' falls silent; the others keep talking.
  for (let i = 0; i < 10; i++) await heartbeats(world, membership, ['b', 'c'], 200, seqs)
  const a = changes.filter(c => c.peerId === 'a').map(c => c.state)
  t.same(a, ['alive', 'suspect', 'dead'])
  t.equal(membership.get('a')?.state, 'dead')
  t.equal(membership.get('b')?.state, 'alive')
  t.ok(world.directCalls.includes('a'), 'the suspect was pinged directly')
  t.same(world.indirectCalls.filter(([, target]) => target === 'a').length, 2, 'and through two other peers')
  const deadAt = membership.get('a')!.stateSince
  const bound = DEFAULT_FAILURE_DETECTOR.suspectAfterMs + DEFAULT_FAILURE_DETECTOR.suspicionTimeoutMs + 2 * DEFAULT_FAILURE_DETECTOR.tickIntervalMs
  t.ok(deadAt - silentSince <= bound, `dead ${deadAt - silentSince} ms after the last heartbeat (bound ${bound})`)
  t.ok(deadAt - silentSince >= DEFAULT_FAILURE_DETECTOR.suspectAfterMs + DEFAULT_FAILURE_DETECTOR.suspicionTimeoutMs, 'not before the suspicion timeout')
})

t.test('a suspect that answers a probe (direct or indirect) is alive again, not dead', async t => {
  const world = new FakeWorld(() => ({ outcome: 'timeout', afterMs: 250 }), () => ({ outcome: 'ack', afterMs: 20 }))
  const { membership, changes } = setup(world)
  const seqs = new Map<string, number>()
  await heartbeats(world, membership, ['a', 'b', 'c'], 600, seqs)
  for (let i = 0; i < 5; i++) await heartbeats(world, membership, ['b', 'c'], 200, seqs)
  const a = changes.filter(c => c.peerId === 'a').map(c => c.state)
  t.ok(a.includes('suspect'), 'was suspected')
  t.notOk(a.includes('dead'), 'never declared dead while others could reach it')
  t.equal(membership.get('a')?.state, 'alive')
  t.ok(membership.healthScore > 0, 'our failed direct probe raised the local health score')
})

t.test('a closed connection with a refused redial is dead at once', async t => {
  const world = new FakeWorld(() => ({ outcome: 'refused', afterMs: 1 }))
  const { membership, changes } = setup(world)
  const seqs = new Map<string, number>()
  await heartbeats(world, membership, ['a', 'b'], 400, seqs)
  const before = world.now
  membership.disconnected('a')
  await world.advance(membership, 50)
  t.equal(membership.get('a')?.state, 'dead')
  t.equal(membership.get('a')?.reason, 'connection refused')
  t.equal(membership.get('a')?.exitProven, true, 'proof its process exited')
  t.ok(membership.get('a')!.stateSince - before <= 50)
  t.same(changes.filter(c => c.peerId === 'a').map(c => c.state), ['alive', 'dead'])
})

t.test('a closed connection to a live peer (probe answered) changes nothing', async t => {
  const world = new FakeWorld(() => ({ outcome: 'ack', afterMs: 2 }))
  const { membership, changes } = setup(world)
  const seqs = new Map<string, number>()
  await heartbeats(world, membership, ['a'], 400, seqs)
  membership.disconnected('a')
  await heartbeats(world, membership, ['a'], 400, seqs)
  t.same(changes.map(c => c.state), ['alive'])
})

t.test('a dead peer is alive again on a fresh heartbeat or a new incarnation; replays are refused', async t => {
  const world = new FakeWorld(() => ({ outcome: 'timeout', afterMs: 250 }))
  const { membership, changes } = setup(world)
  const seqs = new Map<string, number>()
  await heartbeats(world, membership, ['a'], 400, seqs)
  await world.advance(membership, 2000)
  t.equal(membership.get('a')?.state, 'dead')
  const seq = seqs.get('a')!
  t.ok(membership.isReplay('a', 1, seq), 'same (incarnation, seq) is a replay')
  t.same(membership.heard('a', 1, seq), { accepted: false, reason: 'replayed' })
  t.equal(membership.get('a')?.state, 'dead', 'a replayed heartbeat does not resurrect')
  t.ok(membership.isReplay('a', 0, seq + 10), 'an older incarnation is a replay')
  membership.heard('a', 2, 1)
  t.equal(membership.get('a')?.state, 'alive')
  t.equal(membership.get('a')?.reason, 'new incarnation')
  t.same(changes.at(-1), { peerId: 'a', state: 'alive', previous: 'dead', reason: 'new incarnation' })
})

t.test('our own pause is not counted as the others\' silence, and is reported for refutation', async t => {
  const world = new FakeWorld(() => ({ outcome: 'timeout', afterMs: 250 }))
  const { membership, changes } = setup(world)
  const pauses: number[] = []
  membership.onPause(({ pausedMs }) => pauses.push(pausedMs))
  const seqs = new Map<string, number>()
  await heartbeats(world, membership, ['a', 'b'], 600, seqs)
  // SIGSTOP of this process for 3 s: the clock jumps with no tick in between.
  await world.advance(membership, 3000, 3000)
  t.equal(pauses.length, 1)
  t.ok((pauses[0] ?? 0) >= 2900)
  t.same(membership.list().map(m => m.state), ['alive', 'alive'], 'nobody suspected right after our pause')
  t.ok(membership.list().every(m => world.now - m.lastReceivedAt >= 3000),
    'but the last heartbeat that arrived stays where it was: the fencing lease counts from it')
  await heartbeats(world, membership, ['a', 'b'], 400, seqs)
  t.ok(membership.list().every(m => world.now - m.lastReceivedAt <= 200), 'and moves on with the next ones')
  t.same(changes.map(c => c.state), ['alive', 'alive'])
})

t.test('an event loop running late stretches the timeouts (Lifeguard local health)', async t => {
  const world = new FakeWorld(() => ({ outcome: 'timeout', afterMs: 250 }))
  const { membership } = setup(world)
  const seqs = new Map<string, number>()
  await heartbeats(world, membership, ['a'], 400, seqs)
  // Ticks arrive 200 ms late (starved CPU); 'a' is silent.
  await world.advance(membership, 1000, 250)
  t.ok(membership.healthScore >= 3, `health score ${membership.healthScore}`)
  t.equal(membership.get('a')?.state, 'alive', 'a silence that would mark it suspect on a healthy peer does not')
  const score = membership.healthScore
  await heartbeats(world, membership, ['a'], 3000, seqs)
  t.ok(membership.healthScore < score, 'the score decays once ticks are on time')
})

t.test('many simultaneous suspicions raise the local health score', async t => {
  const world = new FakeWorld(() => ({ outcome: 'timeout', afterMs: 250 }))
  const { membership } = setup(world)
  const seqs = new Map<string, number>()
  await heartbeats(world, membership, ['a', 'b', 'c', 'd'], 400, seqs)
  await world.advance(membership, 700)
  t.ok(membership.healthScore >= 1)
})

t.test('dead members are kept for the retention time, then forgotten', async t => {
  const world = new FakeWorld(() => ({ outcome: 'timeout', afterMs: 100 }))
  const { membership } = setup(world, { ...UNIFORM, deadRetentionMs: 5000 })
  membership.heard('a', 1, 1)
  await world.advance(membership, 3000)
  t.equal(membership.get('a')?.state, 'dead')
  await world.advance(membership, 6000)
  t.equal(membership.get('a'), undefined)
})

t.test('a peer that reports it is running late gets more time (its own health score in its heartbeat)', async t => {
  const world = new FakeWorld(() => ({ outcome: 'timeout', afterMs: 250 }))
  const { membership } = setup(world)
  const info = (healthScore: number) => ({
    addrs: [],
    board: { name: 'raspberry-pi-b', arch: 'arm', cores: 1, memoryMb: 512 },
    capabilities: { criu: { version: null, checkOk: null }, docker: { available: null, version: null } },
    load: { loadPerCore: 3, lagMs: 300, rssMb: 50, healthScore },
    extras: {}
  })
  membership.heard('struggling', 1, 1, info(2))
  membership.heard('fine', 1, 1, info(0))
  await world.advance(membership, 1300)
  t.equal(membership.get('fine')?.state, 'dead')
  t.equal(membership.get('struggling')?.state, 'alive', 'suspicion waits 3x longer for a peer with score 2')
  await world.advance(membership, 3000)
  t.equal(membership.get('struggling')?.state, 'dead', 'but it is still declared dead')
})

t.test('watchers are the ring successors in peer-id order, the same on every peer', async t => {
  t.same(ringSuccessors(['d', 'b', 'e', 'a'], 'c', 3), ['d', 'e', 'a'])
  t.same(ringSuccessors(['a', 'b', 'c', 'd', 'e'], 'e', 3), ['a', 'b', 'c'], 'wraps around')
  t.same(ringSuccessors(['a'], 'b', 3), ['a'], 'fewer members than watchers: all of them')
  t.same(ringSuccessors([], 'a', 3), [])
  // Every peer is watched by exactly k others when all agree on the members.
  const ids = Array.from({ length: 20 }, (_, i) => `peer-${String(i).padStart(2, '0')}`)
  const watchedBy = new Map<string, number>()
  for (const id of ids) for (const w of ringSuccessors(ids, id, 3)) watchedBy.set(w, (watchedBy.get(w) ?? 0) + 1)
  t.same([...new Set(watchedBy.values())], [3], 'each peer watches 3 and is watched by 3')

  const world = new FakeWorld(() => ({ outcome: 'timeout', afterMs: 250 }))
  const { membership } = setup(world, { watchers: 2 })
  for (const id of ['a', 'b', 'd', 'e']) membership.heard(id, 1, 1)
  t.same(membership.watchers(), ['a', 'b'], 'self sorts after the others here: wraps to the start')
  t.equal(membership.verdict({ target: 'a', incarnation: 1, seq: 1, reason: 'x' }, 'b'), 'applied', 'b watches a')
  t.same(membership.watchers(), ['b', 'd'], 'dead members leave the ring')
})

t.test('a verdict from a peer that does not watch the target is only a hint: we probe the target ourselves', async t => {
  const world = new FakeWorld(peer => peer === 'c' ? { outcome: 'refused', afterMs: 1 } : { outcome: 'ack', afterMs: 2 })
  const { membership, changes } = setup(world, { watchers: 2 })
  for (const id of ['a', 'b', 'c', 'd', 'e']) membership.heard(id, 1, 1)
  // Ring a b c d e self: a is watched by b and c; c by d and e.
  t.equal(membership.verdict({ target: 'a', incarnation: 1, seq: 1, reason: 'no answer for 1100 ms' }, 'e'), 'hint')
  await world.advance(membership, 100)
  t.ok(world.directCalls.includes('a'), 'the target was pinged')
  t.equal(membership.get('a')?.state, 'alive', 'and it answered: the verdict changed nothing')
  t.equal(membership.verdict({ target: 'c', incarnation: 1, seq: 1, reason: 'connection refused' }, 'a'), 'hint')
  await world.advance(membership, 100)
  t.match(membership.get('c'), { state: 'dead', reason: 'connection refused' }, 'our own ping was refused: dead')
  t.same(changes.filter(c => c.state !== 'alive').map(c => c.peerId), ['c'])
})

t.test('a watched peer is held to its beats, an unwatched one to the slower gossiped heartbeat', async t => {
  const world = new FakeWorld(() => ({ outcome: 'timeout', afterMs: 250 }))
  const { membership, changes } = setup(world, {})
  const { suspectAfterMs, gossipSuspectAfterMs, suspicionTimeoutMs } = DEFAULT_FAILURE_DETECTOR
  membership.heard('watched', 1, 1)
  membership.heard('other', 1, 1)
  // 'watched' beats us every 200 ms; 'other' only heartbeats every 1000 ms.
  for (let i = 0; i < 10; i++) {
    membership.beat('watched', 1)
    if (i % 5 === 0) membership.heard('other', 1, 2 + i)
    await world.advance(membership, 200)
  }
  t.ok(membership.watches('watched'))
  t.notOk(membership.watches('other'))
  t.same(changes.map(c => c.state), ['alive', 'alive'], '1 s between heartbeats is no suspicion for an unwatched peer')
  const silentSince = world.now - 200
  await world.advance(membership, suspectAfterMs + suspicionTimeoutMs + 200)
  t.equal(membership.get('watched')?.state, 'dead', 'silent watched peer: dead after the short bound')
  t.ok(membership.get('watched')!.stateSince - silentSince <= suspectAfterMs + suspicionTimeoutMs + 100)
  t.equal(membership.get('other')?.state, 'alive', 'the unwatched one is not suspected yet')
  await world.advance(membership, gossipSuspectAfterMs)
  t.equal(membership.get('other')?.state, 'dead', 'but it is after the long bound (the fallback)')
})

t.test('beats that end (the peer picked other watchers) no longer hold it to the short bound', async t => {
  const world = new FakeWorld(() => ({ outcome: 'timeout', afterMs: 250 }))
  const { membership } = setup(world, {})
  membership.heard('a', 1, 1)
  membership.beat('a', 1)
  membership.beatsEnded('a')
  t.notOk(membership.watches('a'))
  await world.advance(membership, 1500)
  t.equal(membership.get('a')?.state, 'alive')
})

t.test('a beat with a new incarnation revives a dead peer and resets its heartbeat sequence', async t => {
  const world = new FakeWorld(() => ({ outcome: 'timeout', afterMs: 250 }))
  const { membership } = setup(world, {})
  membership.heard('a', 1, 50)
  membership.beat('a', 1)
  await world.advance(membership, 2000)
  t.equal(membership.get('a')?.state, 'dead')
  membership.beat('a', 0)
  t.equal(membership.get('a')?.state, 'dead', 'a beat of an older incarnation is ignored')
  membership.beat('a', 2)
  t.match(membership.get('a'), { state: 'alive', reason: 'new incarnation', incarnation: 2, seq: 0 })
  t.same(membership.heard('a', 2, 1), { accepted: true, reason: 'fresh' }, 'the new life\'s first heartbeat is not a replay')
})

t.test('a dead verdict reached locally is emitted once, with the target\'s incarnation and sequence', async t => {
  const world = new FakeWorld(peer => peer === 'b' ? { outcome: 'refused', afterMs: 1 } : { outcome: 'timeout', afterMs: 250 })
  const { membership } = setup(world, {})
  const verdicts: Verdict[] = []
  membership.onVerdict(v => verdicts.push(v))
  membership.heard('a', 7, 3)
  membership.heard('b', 9, 4)
  membership.beat('a', 7)
  membership.disconnected('b')
  await world.advance(membership, 1500)
  t.same(verdicts.map(v => [v.target, v.incarnation, v.seq]).sort(), [['a', 7, 3], ['b', 9, 4]])
  t.equal(verdicts.find(v => v.target === 'b')?.reason, 'connection refused')
  t.equal(verdicts.find(v => v.target === 'b')?.exitProven, true, 'the verdict carries the proof')
  // A verdict received for a member already dead here is not re-emitted.
  t.equal(membership.verdict({ target: 'a', incarnation: 7, seq: 3, reason: 'x' }, 'b'), 'stranger', 'b is dead: its verdicts do not count')
  t.equal(verdicts.length, 2)
})

t.test('received verdicts: applied at once, stale or replayed ones and strangers\' ones ignored', async t => {
  const world = new FakeWorld(() => ({ outcome: 'ack', afterMs: 2 }))
  const { membership, changes } = setup(world, {})
  const emitted: Verdict[] = []
  membership.onVerdict(v => emitted.push(v))
  membership.heard('target', 5, 10)
  membership.heard('watcher', 1, 1)
  t.equal(membership.verdict({ target: 'target', incarnation: 5, seq: 10, reason: 'no answer for 1100 ms' }, 'nobody'), 'stranger')
  t.equal(membership.verdict({ target: 'target', incarnation: 4, seq: 99, reason: 'x' }, 'watcher'), 'stale', 'older incarnation')
  t.equal(membership.verdict({ target: 'target', incarnation: 5, seq: 9, reason: 'x' }, 'watcher'), 'stale', 'we heard the target after the verdict\'s evidence')
  t.equal(membership.verdict({ target: 'ghost', incarnation: 1, seq: 1, reason: 'x' }, 'watcher'), 'unknown')
  t.equal(membership.get('target')?.state, 'alive')
  t.equal(membership.verdict({ target: 'target', incarnation: 5, seq: 10, reason: 'no answer for 1100 ms' }, 'watcher'), 'applied')
  t.match(membership.get('target'), { state: 'dead', reason: /^verdict of watcher: no answer/ })
  t.equal(membership.verdict({ target: 'target', incarnation: 5, seq: 10, reason: 'x' }, 'watcher'), 'known', 'a second copy changes nothing')
  t.same(emitted, [], 'a verdict learnt from others is not re-emitted')
  // The target refutes with a new incarnation: alive again, and the old verdict replayed is stale.
  membership.heard('target', 6, 1)
  t.equal(membership.get('target')?.state, 'alive')
  t.equal(membership.verdict({ target: 'target', incarnation: 5, seq: 10, reason: 'x' }, 'watcher'), 'stale', 'replayed after the refutation')
  t.equal(membership.get('target')?.state, 'alive')
  // A refused redial is proof the process is gone, whoever saw it; a verdict that only says so in words is not.
  membership.verdict({ target: 'target', incarnation: 6, seq: 1, reason: 'connection refused', exitProven: true }, 'watcher')
  t.match(membership.get('target'), { state: 'dead', reason: 'connection refused', exitProven: true })
  t.same(changes.filter(c => c.peerId === 'target').map(c => c.state), ['alive', 'dead', 'alive', 'dead'])
})

t.test('a verdict that accuses this peer is passed on for refutation', async t => {
  const world = new FakeWorld(() => ({ outcome: 'ack', afterMs: 2 }))
  const { membership } = setup(world, {})
  const accusations: Array<{ from: string, incarnation: number }> = []
  membership.onAccused(v => accusations.push({ from: v.from, incarnation: v.incarnation }))
  t.equal(membership.verdict({ target: 'self', incarnation: 3, seq: 1, reason: 'x' }, 'w'), 'self')
  t.same(accusations, [{ from: 'w', incarnation: 3 }])
})

t.test('a new incarnation keeps the heartbeat sequence counting (only a new process starts at 1 and is relayed)', async t => {
  const source = new HeartbeatSource({
    peerId: 'p',
    board: BOARD_PROFILES[0]!,
    capabilities: () => UNKNOWN_CAPABILITIES,
    load: () => ({ loadPerCore: 0, lagMs: 0, rssMb: 1, healthScore: 0 }),
    addrs: () => [],
    extras: new HeartbeatExtras()
  })
  const first = source.next()
  t.equal(first.seq, 1)
  source.next()
  source.bumpIncarnation()
  const after = source.next()
  t.ok(after.incarnation > first.incarnation)
  t.equal(after.seq, 3)
  const { heartbeatRelayFirst } = DEFAULT_FAILURE_DETECTOR
  t.ok(heartbeatRelayFirst >= 1, 'a new process\'s first heartbeats are relayed')
})

t.test('a watched peer whose beats say it is running late gets more time at once', async t => {
  const world = new FakeWorld(() => ({ outcome: 'timeout', afterMs: 250 }))
  const { membership } = setup(world, {})
  membership.heard('late', 1, 1)
  membership.heard('fine', 1, 1)
  membership.beat('late', 1, 2)
  membership.beat('fine', 1, 0)
  t.equal(membership.get('late')?.healthScore, 2)
  await world.advance(membership, 1300)
  t.equal(membership.get('fine')?.state, 'dead')
  t.equal(membership.get('late')?.state, 'alive', 'x3 time for a peer whose beat carried health score 2')
})
