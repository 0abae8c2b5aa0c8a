// Who may speak for a mission, inside the deterministic simulator: an outsider's fences, epochs, releases and claims
// change nothing (and are counted); a revoked member no longer counts in the quorum. Operator grants: unit checks.
import t from 'tap'
import { Simulation, SIM_MISSION } from '../harness/consensus-simulator.ts'
import { MAX_CLAIM_STEP, MAX_EPOCH } from '../consensus/machine.ts'
import { validateMissionSpec } from '../manifest/manifest.ts'
import { checkMessageAuthority, createOperatorKeyPair, GrantError, MOVE_GRANT_TTL_MS, OperatorKeys, OperatorSigner, parsePublicKeys, formatPublicKey, specDigest } from '../consensus/authority.ts'
import type { AuthorityRefusal, MissionRecord } from '../consensus/types.ts'

const mission = SIM_MISSION.name
const MALLORY = 'mallory'

function settledSwarm (ids: string[], seed: number): { sim: Simulation, primary: string } {
  const sim = new Simulation({ seed, peers: ids.map(id => ({ id })) })
  sim.runFor(1000)
  sim.deploy(ids[0]!, SIM_MISSION)
  if (!sim.runUntil(() => sim.settled(mission, true), 10_000)) throw new Error('did not settle')
  return { sim, primary: sim.runningOn(mission)[0]! }
}

function refusals (sim: Simulation, ids: string[]): Record<AuthorityRefusal, number> {
  const total: Record<string, number> = {}
  for (const id of ids) for (const [k, v] of Object.entries(sim.machine(id)!.refusals())) total[k] = (total[k] ?? 0) + v
  return total as Record<AuthorityRefusal, number>
}

t.test('an outsider holding the swarm key cannot fence, bump, release, claim or take over a mission', async t => {
  const ids = ['a', 'b', 'c']
  const { sim, primary } = settledSwarm(ids, 7)
  const before = sim.snapshot(primary, mission)!
  const record = (sim.machine(primary)!.persistedState().missions[mission] as { record: MissionRecord }).record
  const everyone = (fn: (to: string) => void): void => { for (const id of ids) fn(id) }
  for (let i = 0; i < 10; i++) {
    everyone(to => { sim.inject(to, MALLORY, { type: 'fence', mission, epoch: before.epoch + 1, target: primary }) })
    everyone(to => { sim.inject(to, MALLORY, { type: 'announce', record: { ...record, epoch: Number.MAX_SAFE_INTEGER }, claim: { votedEpoch: 0, open: false } }) })
    everyone(to => { sim.inject(to, MALLORY, { type: 'announce', record: { ...record, epoch: before.epoch + 1 + i, primary: MALLORY, view: [...record.view, MALLORY].sort(), started: true }, claim: { votedEpoch: 0, open: false } }) })
    everyone(to => { sim.inject(to, MALLORY, { type: 'announce', record: { ...record, epoch: before.epoch + 1 + i, primary: MALLORY }, claim: { votedEpoch: 0, open: false } }) })
    everyone(to => { sim.inject(to, MALLORY, { type: 'announce', record: { ...record, released: true }, claim: { votedEpoch: 0, open: false } }) })
    everyone(to => { sim.inject(to, MALLORY, { type: 'claim', mission, deployId: record.deployId, epoch: before.epoch + MAX_CLAIM_STEP + 10, basis: before.epoch }) })
    sim.runFor(1000)
  }
  const after = sim.snapshot(primary, mission)!
  t.same(sim.runningOn(mission), [primary], 'the mission still runs on its primary only')
  t.equal(after.epoch, before.epoch, 'under the same epoch: no fence, no forged epoch took')
  t.equal(sim.containerEpoch(primary, mission), before.epoch, 'the container was never restarted')
  for (const id of ids) t.ok(sim.machine(id)!.knownEpoch(mission) < MAX_EPOCH, `${id} persisted no forged epoch`)
  const refused = refusals(sim, ids)
  t.equal(refused['fence-not-authorized'], 10, 'the 10 fences refused by the primary')
  t.equal(refused['epoch-out-of-range'], 10 * 3 * 2, 'the 2^53-1 announces and the far claims refused everywhere')
  t.equal(refused['not-a-member'], 10 * 3 * 2, 'the outsider\'s new epochs and its release refused everywhere')
  t.equal(refused['outside-view'], 10 * 3, 'an epoch naming a primary outside its view refused everywhere')
  t.same(sim.violations, [])
})

t.test('a member revoked by the operator no longer counts: the others fail over without its vote', async t => {
  const ids = ['a', 'b', 'c', 'd']
  const { sim, primary } = settledSwarm(ids, 11)
  const view = sim.snapshot(primary, mission)!
  t.equal(view.view.length, 4, 'all four boards are in the view')
  // The revoked board stays up (a stolen board the operator removed) but the others refuse it from now on.
  // The primary dies as the revocation goes out: the view of four still names the revoked board, whose vote the
  // two survivors would need for a majority of four; without it they are two of the three that count.
  const revoked = ids.find(id => id !== primary && id !== view.backup)!
  const honest = ids.filter(id => id !== primary && id !== revoked)
  sim.kill(primary)
  for (const id of honest) sim.revoke(id, revoked)
  const killedAt = sim.now
  t.ok(sim.runUntil(() => sim.runningOn(mission).some(id => honest.includes(id)), 10_000), 'one of the two honest survivors runs it')
  t.ok(sim.now - killedAt < 5000, `took over ${sim.now - killedAt} ms after the kill, with 2 of the 3 boards not revoked`)
  t.notOk(sim.runningOn(mission).includes(revoked), 'never on the revoked board')
  t.ok(refusals(sim, honest).revoked > 0, 'the revoked board\'s messages were refused')
  t.equal(sim.snapshot(honest[0]!, mission)!.view.includes(revoked), false, 'the new epoch\'s view leaves the revoked board out')
  t.same(sim.violations, [])
})

t.test('a member that heartbeats but never speaks in consensus is kept out of the view: the primary\'s death is survived', async t => {
  // Issue 11's attack: a node holding the swarm key heartbeats like a board (so the detector says alive) and never
  // votes. In the view it made four, where the three honest boards minus a dead primary are two of four: no
  // majority, the mission down for good (before memberSilenceMs the mission never ran again within 120 s).
  const ids = ['a', 'b', 'c']
  const sim = new Simulation({ seed: 5, peers: [...ids, MALLORY].map(id => ({ id })) })
  for (const id of ids) sim.muteConsensus(MALLORY, id)
  sim.runFor(1000)
  sim.deploy('a', SIM_MISSION)
  // Within memberSilenceMs of a board's start a peer not heard yet still counts (the swarm is just starting): the first
  // views may take the silent member in; past it the primary drops it.
  sim.runFor(15_000)
  const primary = sim.runningOn(mission)[0]!
  t.same(sim.snapshot(primary, mission)!.view, ids, 'the view holds the three boards that speak, not the silent one')
  sim.kill(primary)
  const killedAt = sim.now
  t.ok(sim.runUntil(() => sim.runningOn(mission).some(id => id !== primary), 10_000), 'the backup takes over')
  t.ok(sim.now - killedAt < 5000, `took over ${sim.now - killedAt} ms after the kill`)
  t.same(sim.violations, [])
})

t.test('a re-signed deployment (key rotation) reaches every board\'s record without an election', async t => {
  const ids = ['a', 'b', 'c']
  const signer = (pem: string) => new OperatorSigner(pem)
  const oldKey = signer(createOperatorKeyPair().privatePem)
  const newKey = signer(createOperatorKeyPair().privatePem)
  const sim = new Simulation({ seed: 5, peers: ids.map(id => ({ id })) })
  sim.runFor(1000)
  const grantOf = (s: OperatorSigner, at: number) => s.sign({ op: 'deploy', subject: mission, deployId: 'op-1', spec: specDigest(SIM_MISSION), to: null, at })
  sim.machine('a')!.local(sim.now, { type: 'deploy', spec: SIM_MISSION, deployId: 'op-1', grant: grantOf(oldKey, 1) })
  t.ok(sim.runUntil(() => sim.settled(mission, true), 10_000), 'deployed under the old key')
  const epoch = sim.snapshot('a', mission)!.epoch
  for (const id of ids) t.equal(sim.snapshot(id, mission)!.signedBy, oldKey.publicKey)
  sim.machine('b')!.local(sim.now, { type: 'regrant', mission, grant: grantOf(newKey, 2) })
  sim.runFor(2000)
  for (const id of ids) t.equal(sim.snapshot(id, mission)!.signedBy, newKey.publicKey, `${id} carries the new grant`)
  // An older grant relayed later (the old key's) does not come back.
  sim.machine('c')!.local(sim.now, { type: 'regrant', mission, grant: grantOf(oldKey, 1) })
  sim.runFor(2000)
  for (const id of ids) t.equal(sim.snapshot(id, mission)!.signedBy, newKey.publicKey, `${id} kept the newer grant`)
  t.equal(sim.snapshot('a', mission)!.epoch, epoch, 'no election for it')
  t.same(sim.violations, [])
})

t.test('operator grants: signature, trusted keys and rotation, what they name, expiry of moves', async t => {
  const first = createOperatorKeyPair()
  const second = createOperatorKeyPair()
  const intruder = createOperatorKeyPair()
  const signer = new OperatorSigner(first.privatePem)
  t.equal(signer.publicKey, first.publicKey)
  t.same(parsePublicKeys(`# rotation\n${formatPublicKey(first.publicKey, 'old')}${formatPublicKey(second.publicKey)}`), [first.publicKey, second.publicKey])
  t.throws(() => parsePublicKeys('ssh-ed25519 AAAA'), /expected 'tandem-operator-ed25519/)

  const spec = validateMissionSpec({ name: 'm', image: { arm64: 'x:1', x64: 'x:1' }, env: { B: '2', A: '1' } })
  // The same spec, with its keys in another order and after a trip through JSON, hashes the same.
  const reordered = validateMissionSpec(JSON.parse(JSON.stringify({ env: { A: '1', B: '2' }, image: { x64: 'x:1', arm64: 'x:1' }, name: 'm' })))
  t.equal(specDigest(reordered), specDigest(spec))
  const deploy = signer.sign({ op: 'deploy', subject: 'm', deployId: 'd1', spec: specDigest(spec), to: null, at: 1 })
  const both = new OperatorKeys([first.publicKey, second.publicKey])
  t.doesNotThrow(() => { both.check(deploy, { op: 'deploy', subject: 'm', deployId: 'd1', spec }) })
  const problem = (keys: OperatorKeys, grant: unknown, expected: Parameters<OperatorKeys['check']>[1]): string => {
    try { keys.check(grant as never, expected); return 'accepted' } catch (err) { return (err as GrantError).problem }
  }
  t.equal(problem(new OperatorKeys([second.publicKey]), deploy, { op: 'deploy', subject: 'm', deployId: 'd1', spec }), 'untrusted-key', 'the old key dropped: refused')
  t.equal(problem(both, new OperatorSigner(intruder.privatePem).sign({ op: 'deploy', subject: 'm', deployId: 'd1', spec: specDigest(spec), to: null, at: 1 }), { op: 'deploy', subject: 'm', deployId: 'd1', spec }), 'untrusted-key')
  t.equal(problem(both, { ...deploy, deployId: 'd2' }, { op: 'deploy', subject: 'm', deployId: 'd2', spec }), 'bad-signature', 'a field changed after signing')
  t.equal(problem(both, deploy, { op: 'deploy', subject: 'm', deployId: 'd1', spec: { ...spec, command: ['sh', '-c', 'evil'] } }), 'mismatch', 'another spec')
  t.equal(problem(both, deploy, { op: 'remove', subject: 'm', deployId: 'd1' }), 'mismatch', 'a deploy grant does not remove')
  t.equal(problem(both, null, { op: 'remove', subject: 'm', deployId: 'd1' }), 'missing')
  t.equal(problem(new OperatorKeys([], { open: true }), null, { op: 'remove', subject: 'm', deployId: 'd1' }), 'accepted', 'an open swarm needs no grant')

  const move = signer.sign({ op: 'move', subject: 'm', deployId: 'd1', spec: null, to: 'p2', at: 1000 })
  t.doesNotThrow(() => { checkMessageAuthority(both, { type: 'move', mission: 'm', deployId: 'd1', to: 'p2', grant: move }, 1000 + MOVE_GRANT_TTL_MS) })
  t.throws(() => { checkMessageAuthority(both, { type: 'move', mission: 'm', deployId: 'd1', to: 'p2', grant: move }, 1001 + MOVE_GRANT_TTL_MS) }, /expired/)
  t.throws(() => { checkMessageAuthority(both, { type: 'move', mission: 'm', deployId: 'd1', to: 'p3', grant: move }, 1000) }, /moves to p2/)
  t.throws(() => { checkMessageAuthority(both, { type: 'remove', mission: 'm', deployId: 'd1' }, 1000) }, /carries no operator grant/)
})
