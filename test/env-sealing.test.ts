// The env values' commitments and seals (manifest/env-commitment.ts, checkpoint/env-seal.ts, the keeper in
// peer/missions/env-keeper.ts) and how the grant and the machine treat them. Pure: no Docker, no network.
import t from 'tap'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { SealIdentity, NotARecipientError, SealError } from '../checkpoint/sealing.ts'
import { openEnv, sealEnv, sealedFor } from '../checkpoint/env-seal.ts'
import { checkOpenings, clearEnv, commitEnv, envDigest, EnvCommitmentError, isCommitted, newSalts, ENV_DIGEST_PREFIX } from '../manifest/env-commitment.ts'
import { createOperatorKeyPair, OperatorKeys, OperatorSigner, specDigest, checkMessageAuthority } from '../consensus/authority.ts'
import { validateRecord } from '../consensus/messages.ts'
import { EnvKeeper } from '../peer/missions/env-keeper.ts'
import { failureCause } from '../peer/missions/runner.ts'
import type { MissionSpec } from '../manifest/manifest.ts'
import type { EnvSeal, LocalEvent, MissionSnapshot } from '../consensus/types.ts'

const SPEC: MissionSpec = { name: 'm', image: 'busybox:latest', command: ['sh', '-c', 'env'], env: { TOKEN: 'hunter2-secret', MODE: 'prod' }, checkpointIntervalMs: 1000 }

async function identity (): Promise<SealIdentity> {
  const key = await generateKeyPair('Ed25519')
  return SealIdentity.fromPrivateKey(peerIdFromPrivateKey(key).toString(), key)
}

const problem = (fn: () => unknown): string | undefined => {
  try { fn(); return undefined } catch (err) { return err instanceof EnvCommitmentError ? err.problem : `other: ${(err as Error).message}` }
}

t.test('commitments: digests replace values, salts make them unguessable, openings verify', async t => {
  const { spec, openings } = commitEnv(SPEC)
  t.ok(isCommitted(spec))
  t.notOk(isCommitted(SPEC))
  t.same(Object.keys(spec.env), ['TOKEN', 'MODE'])
  t.ok(Object.values(spec.env).every(v => v.startsWith(ENV_DIGEST_PREFIX)))
  t.notOk(JSON.stringify(spec).includes('hunter2'), 'the committed spec holds no value')
  t.same(clearEnv(spec, openings), SPEC.env)
  t.not(commitEnv(SPEC).spec.env.TOKEN, spec.env.TOKEN, 'fresh salts give other digests for the same value')
  const salts = newSalts(SPEC.env)
  t.same(commitEnv(SPEC, salts).spec, commitEnv(SPEC, salts).spec, 'the same salts (the CLI\'s) give the same digests on the board')
  t.equal(envDigest('TOKEN', { salt: salts.TOKEN as string, value: 'x' }) === envDigest('MODE', { salt: salts.TOKEN as string, value: 'x' }), false, 'the name is committed too')

  t.equal(problem(() => { checkOpenings(spec, { ...openings, TOKEN: { ...openings.TOKEN!, value: 'hunter3' } }) }), 'value-mismatch', 'a tampered value')
  t.equal(problem(() => { checkOpenings({ ...spec, env: { ...spec.env, TOKEN: spec.env.MODE as string } }, openings) }), 'value-mismatch', 'a tampered digest')
  t.equal(problem(() => { checkOpenings(spec, { ...openings, TOKEN: { ...openings.TOKEN!, salt: salts.TOKEN as string } }) }), 'value-mismatch', 'another salt')
  const { TOKEN: _dropped, ...withoutToken } = openings
  t.equal(problem(() => { checkOpenings(spec, withoutToken) }), 'missing-value')
  t.equal(problem(() => { checkOpenings(spec, { ...openings, EXTRA: openings.MODE! }) }), 'extra-value')
  t.equal(problem(() => { checkOpenings(spec, { ...openings, MODE: { salt: 'zz', value: 'prod' } }) }), 'malformed')
  t.equal(problem(() => commitEnv(SPEC, { TOKEN: 'ab' })), 'malformed', 'a short or missing salt is refused')

  const empty: MissionSpec = { ...SPEC, env: {} }
  t.same(commitEnv(empty).spec, empty, 'a spec without env is unchanged')
  t.equal(specDigest(commitEnv(empty).spec), specDigest(empty), 'and signs to the same digest as before')
})

t.test('the grant signs the digests: it verifies without the values and fails on another value', async t => {
  const pair = createOperatorKeyPair()
  const signer = new OperatorSigner(pair.privatePem)
  const keys = new OperatorKeys([pair.publicKey])
  const salts = newSalts(SPEC.env)
  const committed = commitEnv(SPEC, salts).spec
  const grant = signer.sign({ op: 'deploy', subject: 'm', deployId: 'd1', spec: specDigest(committed), to: null, at: 1 })
  t.ok(keys.allows(grant, { op: 'deploy', subject: 'm', deployId: 'd1', spec: committed }))
  const other = commitEnv({ ...SPEC, env: { ...SPEC.env, TOKEN: 'attacker' } }, salts).spec
  t.notOk(keys.allows(grant, { op: 'deploy', subject: 'm', deployId: 'd1', spec: other }), 'another value under the same salt')
  t.notOk(keys.allows(grant, { op: 'deploy', subject: 'm', deployId: 'd1', spec: SPEC }), 'the clear spec is not what was signed')
})

t.test('seals: each recipient opens, an outsider cannot, tampering is refused', async t => {
  const [a, b, c] = await Promise.all([identity(), identity(), identity()])
  const { spec, openings } = commitEnv(SPEC)
  const seal = sealEnv('m', openings, [b.peerId, a.peerId, a.peerId], 0)
  t.same(sealedFor(seal), [a.peerId, b.peerId].sort())
  t.notOk(JSON.stringify(seal).includes('hunter2'), 'the seal holds no clear value')
  t.notOk(JSON.stringify(seal).includes(openings.TOKEN!.salt), 'nor a salt')
  t.same(clearEnv(spec, openEnv('m', seal, a)), SPEC.env)
  t.same(clearEnv(spec, openEnv('m', seal, b)), SPEC.env)
  t.throws(() => openEnv('m', seal, c), NotARecipientError, 'a board it is not wrapped for')
  const renamed: EnvSeal = { ...seal, to: [...seal.to, { ...seal.to[0]!, peer: c.peerId }] }
  t.throws(() => openEnv('m', renamed, c), SealError, "another member's copy renamed for an outsider does not open")
  t.throws(() => openEnv('other', seal, a), SealError, 'the envelope is bound to its mission')
  const box = Buffer.from(seal.box, 'base64url')
  box[box.length - 20] = (box[box.length - 20] as number) ^ 1
  t.throws(() => openEnv('m', { ...seal, box: box.toString('base64url') }, a), SealError, 'a flipped bit in the sealed values')
  // Found by the decoder fuzz (bench/fuzz.ts): a short ephemeral key threw the curve's RangeError, not a SealError.
  const short = Buffer.from(seal.eph, 'base64url').subarray(0, 24).toString('base64url')
  t.throws(() => openEnv('m', { ...seal, eph: short }, a), SealError, 'an ephemeral key of 24 bytes')
  t.throws(() => openEnv('m', { ...seal, to: seal.to.map(w => ({ ...w, nonce: '' })) }, a), SealError, 'an empty nonce')
  t.throws(() => openEnv('m', { ...seal, key: 'AAAA' }, a), SealError, 'a key id of 3 bytes')
  // A member that seals other values for the view: they open, but the digests the operator signed refuse them.
  const forged = sealEnv('m', { ...openings, TOKEN: { ...openings.TOKEN!, value: 'evil' } }, [a.peerId, b.peerId], 1)
  t.equal(problem(() => clearEnv(spec, openEnv('m', forged, b))), 'value-mismatch')
})

t.test('a record carries the seal through validation; a tombstone drops it', async t => {
  const a = await identity()
  const { spec, openings } = commitEnv(SPEC)
  const envSeal = sealEnv('m', openings, [a.peerId], 3)
  const record = {
    mission: 'm', deployId: 'd1', spec, epoch: 1, primary: a.peerId, backup: null, view: [a.peerId], released: false, handoffTo: null,
    checkpoint: null, replicatedSeq: null, removed: false, started: false, imageCid: null, imageArch: null, restarts: 0, lastFailure: null, envSeal
  }
  t.same(validateRecord(JSON.parse(JSON.stringify(record)))?.envSeal, envSeal)
  t.equal(validateRecord({ ...record, removed: true })?.envSeal, undefined)
  t.equal(validateRecord({ ...record, envSeal: { ...envSeal, box: 'not base64!' } }), undefined, 'a malformed seal makes the record malformed')
  const pair = createOperatorKeyPair()
  const keys = new OperatorKeys([pair.publicKey])
  const grant = new OperatorSigner(pair.privatePem).sign({ op: 'deploy', subject: 'm', deployId: 'd1', spec: specDigest(spec), to: null, at: 1 })
  t.doesNotThrow(() => { checkMessageAuthority(keys, { type: 'announce', record: { ...validateRecord(record)!, grant }, claim: { votedEpoch: 1, open: false } }, 1) },
    'the gossip validator checks the grant on the digests alone')
})

t.test('the keeper: opens for members, hides values from others, counts refusals, re-seals for a new view', async t => {
  const [a, b, c] = await Promise.all([identity(), identity(), identity()])
  const events: Array<{ mission: string, kind: string }> = []
  const locals: LocalEvent[] = []
  const keeper = (id: SealIdentity): EnvKeeper => new EnvKeeper({ peerId: id.peerId, identity: id, local: e => locals.push(e), record: (mission, e) => events.push({ mission, kind: e.kind }), log: () => {} })
  const ka = keeper(a)
  const kb = keeper(b)
  const kc = keeper(c)
  const { spec, envSeal } = ka.commit(SPEC, [b.peerId])
  t.ok(envSeal)
  t.same(sealedFor(envSeal!), [a.peerId, b.peerId].sort())
  const m = { name: 'm', deployId: 'd1', spec, envSeal, view: [a.peerId, b.peerId].sort(), role: 'primary' } as unknown as MissionSnapshot
  t.same(kb.require(m), SPEC.env)
  t.same(kb.shown(m), SPEC.env, 'a member sees the values')
  t.same(kc.shown(m), { TOKEN: null, MODE: null }, 'a non-member sees the names only')
  t.throws(() => kc.require(m), /env values unavailable on this board: the env values are sealed for 2 other board\(s\)/)
  try { kc.require(m) } catch (err) { t.equal(failureCause(err), 'env-missing', 'a failure the machine does not count against the mission or its checkpoint') }
  t.same(kc.refused, { 'not-a-recipient': 1 })
  kc.envOf(m)
  t.same(kc.refused, { 'not-a-recipient': 1 }, 'counted once per seal')
  const tampered = { ...m, spec: { ...spec, env: { ...spec.env, MODE: spec.env.TOKEN as string } } }
  t.match(keeper(b).envOf(tampered), { error: /does not match the digest/ })
  t.ok(events.some(e => e.kind === 'envRefused'))

  const noEnv = ka.commit({ ...SPEC, env: {} }, [b.peerId])
  t.same(noEnv, { spec: { ...SPEC, env: {} } }, 'no env: no seal, same spec')

  ka.reseal([m])
  t.equal(locals.length, 0, 'same members: nothing re-sealed')
  const grown = { ...m, view: [a.peerId, b.peerId, c.peerId].sort() } as MissionSnapshot
  ka.reseal([grown])
  ka.reseal([grown])
  t.equal(locals.length, 1, 're-sealed once for the new view')
  const ev = locals[0] as Extract<LocalEvent, { type: 'envSeal' }>
  t.equal(ev.seal.gen, 1)
  t.same(sealedFor(ev.seal), grown.view)
  t.same(kc.require({ ...grown, envSeal: ev.seal }), SPEC.env, 'the joined member opens the new seal')
  const shrunk = { ...m, envSeal: ev.seal, view: [a.peerId, c.peerId].sort() } as MissionSnapshot
  ka.reseal([shrunk])
  const next = (locals[1] as Extract<LocalEvent, { type: 'envSeal' }>).seal
  t.throws(() => openEnv('m', next, b), NotARecipientError, 'the member that left cannot open the next seal')
  kb.reseal([{ ...m, role: 'backup' } as MissionSnapshot, grown])
  t.equal(locals.length, 3, 'only where this board is primary (the second view)')
})

t.test('mission show prints the values on a member, the names only elsewhere, nothing for a mission without env', async t => {
  const { formatMission } = await import('../peer/commands/mission.ts')
  const { spec } = commitEnv(SPEC)
  const base = {
    name: 'm', state: 'running', reason: null, protected: true, protection: { reason: null }, epoch: 1, primary: 'p', backup: 'b', view: ['b', 'p'], spec,
    lastCheckpoint: null, replicatedSeq: null, replicationLagMs: null, checkpointPeriodMs: null, restarts: 0, lastFailure: null, imageFetches: [], events: []
  }
  const member = formatMission({ ...base, env: { ...SPEC.env } } as never)
  t.match(member, /^env {9}TOKEN=hunter2-secret MODE=prod$/m)
  t.match(member, /^view {8}b, p$/m, 'with the view')
  const outsider = formatMission({ ...base, env: { TOKEN: null, MODE: null } } as never)
  t.match(outsider, /^env {9}TOKEN=\(sealed for the view\) MODE=\(sealed for the view\)$/m)
  t.notOk(outsider.includes('hunter2') || outsider.includes(ENV_DIGEST_PREFIX), 'neither the value nor its digest')
  t.notOk(formatMission({ ...base, spec: { ...SPEC, env: {} }, env: {} } as never).includes('env '), 'no env line without env')
})
