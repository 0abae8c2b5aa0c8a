// Quorum certificates (consensus/quorum-proof.ts): a table of proofs checked against what a board knows, the real
// Ed25519 vote keys, and a member of the view (not an outsider) that claims an epoch alone and fences the primary
// inside the deterministic simulator: refused as no-quorum-proof, the mission never stops.
import t from 'tap'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { proves, voteStatement, type ProofAnchor, type ProofClaim, type QuorumProof } from '../consensus/quorum-proof.ts'
import { validateMessage } from '../consensus/messages.ts'
import { Simulation, SIM_MISSION, simVoteKeys } from '../harness/consensus-simulator.ts'
import { PeerVoteKeys } from '../peer/vote-keys.ts'
import type { MissionRecord } from '../consensus/types.ts'

const keys = simVoteKeys('verifier')
const sig = (voter: string, claim: ProofClaim, basis: number): string => simVoteKeys(voter).sign(voteStatement(claim.mission, claim.deployId, claim.epoch, claim.candidate, basis))
const facts = { keys, revoked: new Set<string>(), placementOk: () => true }
const VIEW = ['a', 'b', 'c', 'd', 'e']
const claim: ProofClaim = { mission: 'm', deployId: 'd1', epoch: 8, candidate: 'b', view: VIEW }
const anchor: ProofAnchor = { epoch: 7, view: VIEW, primary: 'a' }
const proofBy = (voters: string[], over: Partial<QuorumProof> = {}, signed: ProofClaim = claim): QuorumProof =>
  ({ basis: 7, view: VIEW, primary: 'a', votes: voters.map(v => [v, sig(v, signed, over.basis ?? 7)]), ...over })

t.test('a proof table: what makes an epoch proven', async t => {
  type Row = [string, QuorumProof | undefined, boolean] | [string, QuorumProof | undefined, boolean, Partial<Parameters<typeof proves>[0]>] |
    [string, QuorumProof | undefined, boolean, Partial<Parameters<typeof proves>[0]>, ProofAnchor | null]
  const rows: Row[] = [
    ['3 of 5 signed votes on the known basis', proofBy(['b', 'c', 'd']), true],
    ['missing', undefined, false],
    ['2 of 5: too few', proofBy(['b', 'c']), false],
    ['one vote repeated three times', { ...proofBy(['b']), votes: [...proofBy(['b']).votes, ...proofBy(['b']).votes, ...proofBy(['b']).votes] }, false],
    ['a forged signature among 3', { ...proofBy(['b', 'c']), votes: [...proofBy(['b', 'c']).votes, ['d', 'sim:0']] }, false],
    ['a vote signed by another voter than it names', { ...proofBy(['b', 'c']), votes: [...proofBy(['b', 'c']).votes, ['d', sig('e', claim, 7)]] }, false],
    ['a voter outside the view', proofBy(['b', 'c', 'x']), false],
    ['votes of another epoch replayed', proofBy(['b', 'c', 'd'], {}, { ...claim, epoch: 6 }), false],
    ['votes for another candidate replayed', proofBy(['b', 'c', 'd'], {}, { ...claim, candidate: 'c' }), false],
    ['votes of another mission replayed', proofBy(['b', 'c', 'd'], {}, { ...claim, mission: 'other' }), false],
    ['votes of another deployment replayed', proofBy(['b', 'c', 'd'], {}, { ...claim, deployId: 'd0' }), false],
    ['votes on another basis than the proof names', { ...proofBy(['b', 'c', 'd'], { basis: 6 }), basis: 7 }, false],
    ['a basis view other than the known one', proofBy(['b', 'c', 'd'], { view: ['b', 'c', 'd'] }), false],
    ['a basis at or above the epoch itself', proofBy(['b', 'c', 'd'], { basis: 8 }), false],
    ['a revoked voter is not counted', proofBy(['b', 'c', 'e']), false, { revoked: new Set(['e']) }],
    ['a revoked voter out of the count, the rest still a majority of 4', proofBy(['b', 'c', 'd']), true, { revoked: new Set(['e']) }],
    ['no anchor (a board new to the mission): the proof holds on its own', proofBy(['b', 'c', 'd']), true, {}, null],
    // A member alone invents the basis of an epoch nobody saw: a view of itself, where it is its own quorum.
    ['an invented basis view {b} above the known epoch', { basis: 7, view: ['b'], primary: null, votes: [['b', sig('b', claim, 7)]] }, false],
    ['a gap: basis 7 seen nowhere here, anchored by 3 of the known 5', proofBy(['b', 'c', 'd']), true, {}, { epoch: 5, view: VIEW, primary: 'a' }],
    ['a gap with an invented view of one', { basis: 7, view: ['b'], primary: null, votes: [['b', sig('b', claim, 7)]] }, false, {}, { epoch: 5, view: VIEW, primary: 'a' }],
    ['a gap whose signers are a majority of the basis but not of the known view', proofBy(['b', 'f', 'g'], { view: ['b', 'c', 'f', 'g', 'h'] }), false, {}, { epoch: 5, view: VIEW, primary: 'a' }],
    ['... with this board\'s own grant making the known view\'s majority', proofBy(['b', 'c', 'f'], { view: ['b', 'c', 'f', 'g', 'h'] }), true, {}, { epoch: 5, view: VIEW, primary: 'a', vouched: new Set(['d']) }],
    ['... or members of the known view that announced it', proofBy(['b', 'f', 'g'], { view: ['b', 'c', 'f', 'g', 'h'] }), true, {}, { epoch: 5, view: VIEW, primary: 'a', vouched: new Set(['c', 'e']) }],
    ['... but not with vouchers outside the known view', proofBy(['b', 'f', 'g'], { view: ['b', 'c', 'f', 'g', 'h'] }), false, {}, { epoch: 5, view: VIEW, primary: 'a', vouched: new Set(['x', 'y']) }],
    ['vouchers never replace the proof\'s own quorum', proofBy(['b'], { view: ['b', 'c', 'f', 'g', 'h'] }), false, {}, { epoch: 5, view: VIEW, primary: 'a', vouched: new Set(['a', 'c', 'e']) }],
    // Two elections raced from basis 6 (view a, b, c): the known epoch 7 won with a view grown to 5, epoch 8 won by b
    // and c. The known epoch's own proof tells basis 6's view and primary.
    ['raced from the known epoch\'s own basis: 2 of its 3', proofBy(['b', 'c'], { basis: 6, view: ['a', 'b', 'c'] }), true, {}, { ...anchor, proof: proofBy(['a', 'c'], { basis: 6, view: ['a', 'b', 'c'] }) }],
    ['... unknown without the known epoch\'s proof (2 of the known 5)', proofBy(['b', 'c'], { basis: 6, view: ['a', 'b', 'c'] }), false],
    ['... but not with another view for that basis', proofBy(['b', 'c'], { basis: 6, view: ['b', 'c', 'x'] }), false, {}, { ...anchor, proof: proofBy(['a', 'c'], { basis: 6, view: ['a', 'b', 'c'] }) }],
    ['... nor another primary for it', proofBy(['b', 'c'], { basis: 6, view: ['a', 'b', 'c'], primary: 'b' }), false, {}, { ...anchor, proof: proofBy(['a', 'c'], { basis: 6, view: ['a', 'b', 'c'] }) }]
  ]
  for (const [name, proof, expected, over, a] of rows as Array<[string, QuorumProof | undefined, boolean, Partial<Parameters<typeof proves>[0]>?, (ProofAnchor | null)?]>) {
    t.equal(proves({ ...facts, ...over }, claim, proof, a === undefined ? anchor : a), expected, name)
  }
})

t.test('two-board mode and a partner replacement', async t => {
  const two: ProofClaim = { mission: 'm', deployId: 'd1', epoch: 4, candidate: 'q', view: ['p', 'q'] }
  const anchor2: ProofAnchor = { epoch: 3, view: ['p', 'q'], primary: 'p' }
  const lone = (voters: string[], c = two): QuorumProof => ({ basis: 3, view: ['p', 'q'], primary: 'p', votes: voters.map(v => [v, sig(v, c, 3)]) })
  t.ok(proves(facts, two, lone(['q']), anchor2), 'the lone claimant (the member that is not the primary) alone')
  t.notOk(proves(facts, { ...two, candidate: 'p' }, lone(['p'], { ...two, candidate: 'p' }), anchor2), 'the primary alone re-elects only with its partner')
  t.ok(proves(facts, { ...two, candidate: 'p' }, lone(['p', 'q'], { ...two, candidate: 'p' }), anchor2), '... which it has here')
  // p replaces its exited partner q by r: the votes of p and r on the basis {p, q}.
  const rep: ProofClaim = { mission: 'm', deployId: 'd1', epoch: 4, candidate: 'p', view: ['p', 'r'] }
  const replaced = (voters: string[], over: Partial<QuorumProof> = {}): QuorumProof => ({ basis: 3, view: ['p', 'q'], primary: 'p', votes: voters.map(v => [v, sig(v, rep, 3)]), replaces: 'q', ...over })
  t.ok(proves(facts, rep, replaced(['p', 'r']), anchor2), 'a replacement with the joiner\'s vote')
  t.notOk(proves(facts, rep, replaced(['p']), anchor2), 'a replacement without a joiner')
  t.notOk(proves(facts, { ...rep, view: ['p', 's'] }, replaced(['p', 'r']), anchor2), 'a new view that is not {primary, joiner}')
  t.notOk(proves(facts, { ...rep, candidate: 'r', view: ['p', 'r'] }, replaced(['p', 'r']), anchor2), 'by another than the basis primary')
})

t.test('the boards\' Ed25519 vote keys: the peer id verifies, anything else does not', async t => {
  const mine = await generateKeyPair('Ed25519')
  const other = await generateKeyPair('Ed25519')
  const signer = new PeerVoteKeys(mine)
  const verifier = new PeerVoteKeys(other)
  const me = peerIdFromPrivateKey(mine).toString()
  const them = peerIdFromPrivateKey(other).toString()
  const statement = voteStatement('m', 'd1', 8, them, 7)
  const s = signer.sign(statement)
  t.ok(verifier.verify(me, statement, s), 'verified by another board from the voter\'s peer id')
  t.ok(verifier.verify(me, statement, s), 'again (remembered)')
  t.notOk(verifier.verify(them, statement, s), 'not as another voter\'s')
  t.notOk(verifier.verify(me, voteStatement('m', 'd1', 9, them, 7), s), 'not for another statement')
  t.notOk(verifier.verify(me, statement, 'AAAA'), 'not a garbled signature')
  t.notOk(verifier.verify('not-a-peer-id', statement, s), 'not from a voter that is no peer id')
  // A 5-board view's certificate of 3 signatures, as gossip carries it.
  const ids = await Promise.all([0, 1, 2, 3, 4].map(async () => generateKeyPair('Ed25519')))
  const view = ids.map(k => peerIdFromPrivateKey(k).toString()).sort()
  const proof: QuorumProof = { basis: 7, view, primary: view[0]!, votes: ids.slice(0, 3).map(k => [peerIdFromPrivateKey(k).toString(), new PeerVoteKeys(k).sign(statement)]) }
  const bytes = JSON.stringify(proof).length
  t.ok(bytes < 1024, `a 5-board certificate of 3 signatures is ${bytes} bytes (its view included)`)
  const fence = validateMessage({ type: 'fence', mission: 'm', epoch: 8, target: view[0], proof })
  t.same(fence, { type: 'fence', mission: 'm', epoch: 8, target: view[0], proof }, 'a fence carries it through validation')
  t.equal(validateMessage({ type: 'fence', mission: 'm', epoch: 8, target: view[0], proof: { ...proof, votes: [['x']] } }), undefined, 'a malformed proof is refused')
  const vote = validateMessage({ type: 'vote', mission: 'm', epoch: 8, candidate: them, granted: true, knownEpoch: 7, sig: s })
  t.match(vote, { sig: s }, 'a vote carries its signature')
})

function settled (ids: string[], seed: number): { sim: Simulation, primary: string } {
  const sim = new Simulation({ seed, peers: ids.map(id => ({ id })) })
  sim.runFor(1000)
  sim.deploy(ids[0]!, SIM_MISSION)
  if (!sim.runUntil(() => sim.settled(SIM_MISSION.name, true), 10_000)) throw new Error('did not settle')
  return { sim, primary: sim.runningOn(SIM_MISSION.name)[0]! }
}

t.test('every elected record carries a proof that holds on every board', async t => {
  const ids = ['a', 'b', 'c', 'd', 'e']
  const { sim, primary } = settled(ids, 3)
  sim.kill(primary)
  t.ok(sim.runUntil(() => sim.runningOn(SIM_MISSION.name).length === 1 && sim.runningOn(SIM_MISSION.name)[0] !== primary && sim.settled(SIM_MISSION.name, true), 10_000), 'failed over')
  const now = sim.runningOn(SIM_MISSION.name)[0]!
  const record = (sim.machine(now)!.persistedState().missions[SIM_MISSION.name] as { record: MissionRecord }).record
  t.ok(record.proof !== undefined && record.proof.votes.length >= 3, `the record carries ${record.proof?.votes.length} signed votes`)
  for (const id of ids.filter(i => i !== primary)) {
    t.equal(sim.machine(id)!.refusals()['no-quorum-proof'], 0, `${id} refused no honest epoch`)
    t.equal(sim.snapshot(id, SIM_MISSION.name)!.epoch, record.epoch, `${id} adopted epoch ${record.epoch}`)
  }
  t.same(sim.violations, [])
})

t.test('a member of the view claims an epoch alone and fences the primary: refused everywhere, the mission runs on', async t => {
  const ids = ['a', 'b', 'c', 'd', 'e']
  const { sim, primary } = settled(ids, 9)
  const mission = SIM_MISSION.name
  const record = (sim.machine(primary)!.persistedState().missions[mission] as { record: MissionRecord }).record
  const mallory = ids.find(id => id !== primary && id !== record.backup)!
  t.ok(record.view.includes(mallory), `${mallory} is a member of the view`)
  const honest = ids.filter(id => id !== mallory)
  const before = sim.snapshot(primary, mission)!
  const forgedBy = (voters: string[], epoch: number, over: Partial<QuorumProof> = {}): QuorumProof => {
    const c = { mission, deployId: record.deployId, epoch, candidate: mallory }
    return { basis: record.epoch, view: record.view, primary: record.primary, votes: voters.map(v => [v, sig(v, c, over.basis ?? record.epoch)]), ...over }
  }
  const claim = { votedEpoch: 0, open: false }
  const refusedBefore = honest.map(id => sim.machine(id)!.refusals()['no-quorum-proof'])
  for (let i = 0; i < 5; i++) {
    const epoch = before.epoch + 1 + i
    const proofs: Array<QuorumProof | undefined> = [
      undefined,
      forgedBy([mallory], epoch),
      { ...forgedBy([mallory], epoch), votes: [...forgedBy([mallory], epoch).votes, ...honest.slice(0, 2).map((h): [string, string] => [h, 'sim:0'])] },
      // An invented basis no board saw, whose view is Mallory alone.
      forgedBy([mallory], epoch, { basis: epoch - 1 > record.epoch ? epoch - 1 : record.epoch, view: [mallory], primary: null })
    ]
    for (const proof of proofs) {
      const forged: MissionRecord = { ...record, epoch, primary: mallory, backup: primary, started: true, ...(proof === undefined ? {} : { proof }) }
      if (proof === undefined) delete forged.proof
      for (const to of honest) sim.inject(to, mallory, { type: 'announce', record: forged, claim })
      sim.inject(primary, mallory, { type: 'fence', mission, epoch, target: primary, ...(proof === undefined ? {} : { proof }) })
    }
    sim.runFor(1000)
  }
  t.same(sim.runningOn(mission), [primary], 'the mission still runs on its primary only')
  t.equal(sim.containerEpoch(primary, mission), before.epoch, 'its container was never stopped or restarted')
  for (const [i, id] of honest.entries()) {
    t.equal(sim.snapshot(id, mission)!.primary, primary, `${id} kept the primary`)
    const refused = sim.machine(id)!.refusals()['no-quorum-proof'] - refusedBefore[i]!
    t.ok(refused >= 5 * 4, `${id} refused ${refused} unproven epochs and fences`)
  }
  t.same(sim.violations, [])
})
