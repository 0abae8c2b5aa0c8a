// The sealed env values in the pure machine: a record carries its seal opaquely through every epoch; only the view's
// members relay a newer one within an epoch (an outsider's is refused); a tombstone drops it.
import t from 'tap'
import { Simulation, SIM_MISSION } from '../harness/consensus-simulator.ts'
import type { EnvSeal, MissionRecord } from '../consensus/types.ts'

const mission = SIM_MISSION.name
const seal = (gen: number, peers: string[]): EnvSeal => ({
  v: 1, gen, key: 'A'.repeat(11), eph: 'B'.repeat(43), to: peers.map(peer => ({ peer, nonce: 'C'.repeat(16), wrapped: 'D'.repeat(64) })), box: `E${gen}`
})
const sealOn = (sim: Simulation, id: string): EnvSeal | undefined => sim.snapshot(id, mission)?.envSeal

t.test('the seal travels with the record, is replaced by a newer one from a member, never from an outsider', async t => {
  const ids = ['a', 'b', 'c']
  const sim = new Simulation({ seed: 5, peers: ids.map(id => ({ id })) })
  sim.runFor(1000)
  sim.local('a', { type: 'deploy', spec: SIM_MISSION, envSeal: seal(0, ids) })
  t.ok(sim.runUntil(() => sim.settled(mission, true), 10_000), 'settled')
  for (const id of ids) t.same(sealOn(sim, id), seal(0, ids), `${id} holds the deploy's seal`)
  const primary = sim.runningOn(mission)[0]!
  const epoch = sim.snapshot(primary, mission)!.epoch
  const deployId = sim.snapshot(primary, mission)!.deployId

  sim.local(primary, { type: 'envSeal', mission, deployId, seal: seal(1, ids) })
  sim.local(primary, { type: 'envSeal', mission, deployId, seal: seal(0, ['a']) })
  sim.local(primary, { type: 'envSeal', mission, deployId: 'other', seal: seal(7, ['a']) })
  sim.runFor(1500)
  for (const id of ids) t.same(sealOn(sim, id)?.gen, 1, `${id} took the primary's re-seal (an older one and another deployment's were ignored)`)
  t.equal(sim.snapshot(primary, mission)!.epoch, epoch, 'without an election')

  const record = (sim.machine(primary)!.persistedState().missions[mission] as { record: MissionRecord }).record
  const refusedBefore = ids.reduce((n, id) => n + (sim.machine(id)!.refusals()['not-a-member'] ?? 0), 0)
  for (const id of ids) sim.inject(id, 'mallory', { type: 'announce', record: { ...record, envSeal: seal(9, ['mallory']) }, claim: { votedEpoch: 0, open: false } })
  sim.runFor(1500)
  for (const id of ids) t.same(sealOn(sim, id)?.gen, 1, `${id} kept the members' seal`)
  const refusedAfter = ids.reduce((n, id) => n + (sim.machine(id)!.refusals()['not-a-member'] ?? 0), 0)
  t.equal(refusedAfter - refusedBefore, 3, 'the outsider\'s seal refused (not-a-member) on every board')

  sim.kill(primary)
  const survivors = ids.filter(id => id !== primary)
  t.ok(sim.runUntil(() => sim.runningOn(mission).some(id => survivors.includes(id)), 15_000), 'failed over')
  const next = sim.runningOn(mission)[0]!
  t.ok(sim.snapshot(next, mission)!.epoch > epoch, 'a new epoch')
  t.same(sealOn(sim, next)?.gen, 1, 'the new epoch\'s record carries the seal')

  sim.remove(next, mission)
  sim.runFor(2000)
  const tomb = (sim.machine(next)!.persistedState().missions[mission] as { record: MissionRecord } | undefined)?.record
  t.equal(tomb?.removed, true)
  t.equal(tomb?.envSeal, undefined, 'a tombstone carries no seal')
  t.same(sim.violations, [])
})
