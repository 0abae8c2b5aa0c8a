// Authority, not just authenticity, with real peers on this host's Docker and a real attacker: a raw libp2p node that
// holds the swarm key, with a fresh identity and no role, speaking the missions topic. Only the operator's key
// creates, removes or moves missions; only a mission's members speak for it; the operator revokes a board.
import t from 'tap'
import { execFile } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import Docker from 'dockerode'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { createSwarmNode, type SwarmNode } from '../peer/node.ts'
import { CLI_PATH, spawnPeer, stopAllPeers, waitFor, type PeerHandle } from '../harness/spawn-peer.ts'
import { HEARTBEAT_TOPIC } from '../peer/heartbeat.ts'
import { MISSIONS_TOPIC, type MissionStatus } from '../peer/missions/index.ts'
import { LABEL_MISSION } from '../checkpoint/runtime.ts'
import { createOperatorKeyFiles } from '../peer/commands/operator-key.ts'
import { createOperatorKeyPair, OperatorSigner, specDigest } from '../consensus/authority.ts'
import { validateMissionSpec } from '../manifest/manifest.ts'
import type { AuthorityRefusal, ConsensusMessage, MissionRecord } from '../consensus/types.ts'
import { voteStatement, type QuorumProof } from '../consensus/quorum-proof.ts'
import { PeerVoteKeys } from '../peer/vote-keys.ts'
import { swarmKeyFor, tempDirFor } from './helpers/peers.ts'
import { dockerMissing, gateOn } from './helpers/requirements.ts'

function cli (peer: PeerHandle, ...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise(resolve => {
    execFile(process.execPath, [CLI_PATH, ...args, '--api', peer.apiAddress, '--data-dir', peer.dataDir], (err, stdout, stderr) => {
      resolve({ code: err == null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

const encode = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value))
const MISSION = 'sleeper'
const EVIL = 'evil'

interface AuthorityStatus { open: boolean, operatorKeys: string[], holdsOperatorKey: boolean, revoked: string[], refused: Record<AuthorityRefusal, number> }
async function authorityOf (peer: PeerHandle): Promise<AuthorityStatus> { return (await peer.status() as unknown as { authority: AuthorityStatus }).authority }
async function unauthorizedDrops (peer: PeerHandle): Promise<number> { return (await peer.status()).counters.gossip[MISSIONS_TOPIC]?.dropped.unauthorized ?? 0 }
async function missionOn (peer: PeerHandle, name = MISSION): Promise<MissionStatus | undefined> {
  return (await peer.client.request<MissionStatus[]>('GET', '/v1/missions')).find(m => m.name === name)
}

if (gateOn(t, await dockerMissing())) {
  const docker = new Docker()
  const cleanContainers = async (): Promise<void> => {
    for (const name of [MISSION, EVIL]) {
      for (const c of await docker.listContainers({ all: true, filters: { label: [`${LABEL_MISSION}=${name}`] } })) {
        await docker.getContainer(c.Id).remove({ force: true }).catch(() => {})
      }
    }
  }
  t.teardown(async () => { await stopAllPeers(); await cleanContainers() })
  await cleanContainers()

  const dir = await tempDirFor(t, 'tandem-authority-')
  const swarmKey = await swarmKeyFor(t)
  const operatorKey = join(dir, 'operator.key')
  await createOperatorKeyFiles(operatorKey, 'test operator')
  const operatorPub = `${operatorKey}.pub`
  // The boards' trusted keys file (rewritten by the rotation).
  const trustedPub = join(dir, 'trusted.pub')
  await writeFile(trustedPub, await readFile(operatorPub, 'utf8'))
  // The operator's board holds the key; the two others only trust its public part.
  const a = await spawnPeer({ swarmKey, operatorKey, operatorPub: [trustedPub] })
  const b = await spawnPeer({ swarmKey, operatorKey: null, operatorPub: [trustedPub], bootstrap: a.addrs })
  const c = await spawnPeer({ swarmKey, operatorKey: null, operatorPub: [trustedPub], bootstrap: a.addrs })
  const peers = [a, b, c]
  await waitFor('the three peers to see each other', async () => {
    for (const p of peers) if ((await p.status()).peers.filter(x => x.state === 'alive').length < 2) return false
    return true
  }, 60_000)

  // The attacker: the swarm key, a fresh identity, no heartbeat (no role in any view), connected to every board.
  const attackerKey = await generateKeyPair('Ed25519')
  const attacker: SwarmNode = await createSwarmNode({
    privateKey: attackerKey, dataDir: join(dir, 'attacker'), listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: [], swarmKey: new Uint8Array(await readFile(swarmKey)), mdns: false
  })
  t.teardown(async () => { await attacker.stop() })
  const pubsub = attacker.libp2p.services.pubsub
  pubsub.subscribe(MISSIONS_TOPIC)
  // Listening to heartbeats as any board does: a board hangs up a connection that carries no heartbeat subscription
  // (a gossip stream that never came up), which on a slow host cut the attacker off in the middle of its attack.
  pubsub.subscribe(HEARTBEAT_TOPIC)
  const overheard: ConsensusMessage[] = []
  pubsub.addEventListener('message', event => {
    if (event.detail.topic !== MISSIONS_TOPIC) return
    try { overheard.push(JSON.parse(new TextDecoder().decode(event.detail.data)) as ConsensusMessage) } catch {}
  })
  for (const p of peers) await attacker.libp2p.dial(multiaddr(p.addrs[0]!), { signal: AbortSignal.timeout(5000) })
  await waitFor('every board to take the attacker\'s subscription', () => peers.every(p => pubsub.getSubscribers(MISSIONS_TOPIC).some(id => id.toString() === p.peerId)), 20_000)
  const attackerId = attacker.libp2p.peerId.toString()
  const forge = async (message: ConsensusMessage | Record<string, unknown>): Promise<void> => { await pubsub.publish(MISSIONS_TOPIC, encode(message)) }

  const manifest = join(dir, 'sleeper.yaml')
  await writeFile(manifest, `name: ${MISSION}\nimage: tandem/busybox\ncommand: [sh, -c, "while true; do sleep 0.2; done"]\nenv: {}\ncheckpointIntervalMs: 2000\n`)

  t.test('a board without the operator key runs missions but cannot create them; the CLI with the key can', async t => {
    t.match(await authorityOf(a), { open: false, holdsOperatorKey: true, revoked: [] }, 'the operator\'s board holds the key')
    t.match(await authorityOf(b), { open: false, holdsOperatorKey: false }, 'the others only trust it')
    const refused = await cli(b, 'mission', 'deploy', manifest)
    t.equal(refused.code, 1, 'deploy through a board without the key fails')
    t.match(refused.stderr, /403 .*holds no operator key/, 'with the reason')
    const signed = await cli(b, 'mission', 'deploy', manifest, '--operator-key', operatorKey)
    t.equal(signed.code, 0, `the same deploy signed by the CLI succeeds (${signed.stderr})`)
    const wrongKey = join(dir, 'wrong.key')
    await createOperatorKeyFiles(wrongKey)
    const other = join(dir, 'other.yaml')
    await writeFile(other, 'name: other\nimage: tandem/busybox\ncommand: [sleep, "1000"]\nenv: {}\n')
    const untrusted = await cli(b, 'mission', 'deploy', other, '--operator-key', wrongKey)
    t.match(untrusted.stderr, /403 .*untrusted key/, 'a key the boards do not trust is refused')
    await waitFor('the mission to run, seen by every board', async () => {
      for (const p of peers) if ((await missionOn(p))?.state !== 'running') return false
      return true
    }, 90_000)
  })

  t.test('forged deploys, removes, fences, epochs, releases and claims from the attacker change nothing', async t => {
    await waitFor('an announce of the mission overheard', () => overheard.some(m => m.type === 'announce' && m.record.mission === MISSION && m.record.primary != null), 20_000)
    const copied = overheard.filter((m): m is Extract<ConsensusMessage, { type: 'announce' }> => m.type === 'announce' && m.record.mission === MISSION).at(-1)!.record
    const before = (await missionOn(a))!
    const primary = peers.find(p => p.peerId === before.primary)!
    const containerBefore = (await missionOn(primary))!.container
    t.ok(containerBefore != null, 'the primary runs a container')
    const dropsBefore = await Promise.all(peers.map(unauthorizedDrops))
    const refusedBefore = await Promise.all(peers.map(authorityOf))

    // A new mission running the attacker's command as root: unsigned, signed by its own key, and the mission's own
    // (public) grant replayed with another spec.
    const evilSpec = validateMissionSpec({ name: EVIL, image: 'tandem/busybox', command: ['sh', '-c', 'echo pwned; sleep 1000'], env: {} })
    const evilRecord: MissionRecord = {
      ...copied, mission: EVIL, deployId: `${attackerId}@1`, spec: evilSpec, epoch: 0, primary: null, backup: null,
      view: [...copied.view], released: false, handoffTo: null, checkpoint: null, replicatedSeq: null, started: false, imageCid: null, imageArch: null, restarts: 0, lastFailure: null
    }
    delete evilRecord.grant
    const intruder = new OperatorSigner(createOperatorKeyPair().privatePem)
    const claim = { votedEpoch: 0, open: false }
    await forge({ type: 'announce', record: evilRecord, claim })
    await forge({ type: 'announce', record: { ...evilRecord, grant: intruder.sign({ op: 'deploy', subject: EVIL, deployId: evilRecord.deployId, spec: specDigest(evilSpec), to: null, at: Date.now() }) }, claim })
    await forge({ type: 'announce', record: { ...copied, spec: { ...copied.spec, command: ['sh', '-c', 'echo pwned; sleep 1000'] }, epoch: copied.epoch + 1 }, claim })
    // A remove with the deployId copied from the public announce.
    await forge({ type: 'remove', mission: MISSION, deployId: copied.deployId })
    await forge({ type: 'move', mission: MISSION, deployId: copied.deployId, to: attackerId })
    // Then each second for 5 s: a fence of the next epoch, an epoch of 2^53-1 and one naming the attacker primary (with
    // the valid grant copied), a release, and a claim far ahead.
    const samples: string[] = []
    const sampler = setInterval(() => { void missionOn(b).then(m => { samples.push(m?.state ?? 'gone') }, () => {}) }, 200)
    for (let i = 0; i < 5; i++) {
      await forge({ type: 'fence', mission: MISSION, epoch: copied.epoch + 1 + i, target: primary.peerId })
      await forge({ type: 'announce', record: { ...copied, epoch: Number.MAX_SAFE_INTEGER }, claim })
      await forge({ type: 'announce', record: { ...copied, epoch: copied.epoch + 1 + i, primary: attackerId, backup: copied.primary, view: [...copied.view, attackerId].sort(), started: true }, claim })
      await forge({ type: 'announce', record: { ...copied, released: true }, claim })
      await forge({ type: 'claim', mission: MISSION, deployId: copied.deployId, epoch: copied.epoch + 1_000_000, basis: copied.epoch })
      await new Promise(resolve => setTimeout(resolve, 1000))
    }
    clearInterval(sampler)
    t.ok(peers.every(p => attacker.libp2p.getConnections(peerIdFromString(p.peerId)).length > 0), 'the attacker stayed connected to every board through its attack')
    // Gossip and each board's input queue deliver the last forgeries late on a loaded host: wait until every board
    // counted what it was sent (or 15 s), then judge.
    const counted = async (): Promise<boolean> => {
      for (const [i, p] of peers.entries()) {
        const refused = (await authorityOf(p)).refused
        const was = (refusedBefore[i] as AuthorityStatus).refused
        if ((await unauthorizedDrops(p)) - (dropsBefore[i] as number) < 5) return false
        if (refused['epoch-out-of-range'] - was['epoch-out-of-range'] < 5 || refused['not-a-member'] - was['not-a-member'] < 5) return false
      }
      return true
    }
    for (const deadline = Date.now() + 15_000; Date.now() < deadline && !(await counted());) await new Promise(resolve => setTimeout(resolve, 250))

    for (const [i, p] of peers.entries()) {
      const drops = (await unauthorizedDrops(p)) - (dropsBefore[i] as number)
      t.ok(drops >= 5, `board ${i} dropped the ${drops} unsigned or wrongly signed deploys, removes and moves as unauthorized`)
      const refused = (await authorityOf(p)).refused
      const was = (refusedBefore[i] as AuthorityStatus).refused
      t.ok(refused['epoch-out-of-range'] - was['epoch-out-of-range'] >= 5, `board ${i} refused the 2^53-1 epochs and far claims (${refused['epoch-out-of-range'] - was['epoch-out-of-range']})`)
      t.ok(refused['not-a-member'] - was['not-a-member'] >= 5, `board ${i} refused the outsider's epochs and releases (${refused['not-a-member'] - was['not-a-member']})`)
      const m = await missionOn(p)
      t.equal(m?.epoch, before.epoch, `board ${i}: the mission is still at epoch ${before.epoch}`)
      t.equal(m?.primary, before.primary, `board ${i}: same primary`)
      t.equal(await missionOn(p, EVIL), undefined, `board ${i} never adopted the forged mission`)
    }
    t.ok((await authorityOf(primary)).refused['fence-not-authorized'] - (refusedBefore[peers.indexOf(primary)] as AuthorityStatus).refused['fence-not-authorized'] >= 5, 'the primary refused the 5 fences')
    t.same((await missionOn(primary))!.container, containerBefore, 'the primary\'s container was never stopped or replaced')
    t.ok(samples.length >= 20 && samples.every(s => s === 'running'), `running in all ${samples.length} samples taken during the attack`)
    t.equal((await docker.listContainers({ all: true, filters: { label: [`${LABEL_MISSION}=${EVIL}`] } })).length, 0, 'no container of the forged mission was ever created')
    const running = await docker.listContainers({ filters: { label: [`${LABEL_MISSION}=${MISSION}`] } })
    t.equal(running.length, 1, 'one container of the mission runs')
  })

  t.test('a member of the view (the attacker heartbeats like a board) claims an epoch alone and fences the primary: no-quorum-proof everywhere', async t => {
    // Heartbeats as a board sends them: every board counts the attacker alive. It also re-announces the record it
    // overheard each second, as every board does: the views take in only boards that speak in consensus
    // (memberSilenceMs), and the primary takes it into the view.
    const latest = (): MissionRecord | undefined => overheard.filter((m): m is Extract<ConsensusMessage, { type: 'announce' }> => m.type === 'announce' && m.record.mission === MISSION).at(-1)?.record
    let seq = 0
    const incarnation = Date.now()
    const beat = (): void => {
      void pubsub.publish(HEARTBEAT_TOPIC, encode({
        v: 1, peerId: attackerId, incarnation, seq: ++seq, sentAt: Date.now(), addrs: attacker.libp2p.getMultiaddrs().map(String),
        board: { name: 'generic', arch: process.arch, cores: 1, memoryMb: 512 },
        capabilities: { criu: { version: null, checkOk: false }, docker: { available: false, version: null } },
        load: { loadPerCore: 0, lagMs: 0, rssMb: 50, healthScore: 0 }, extras: {}
      })).catch(() => {})
      const record = latest()
      if (seq % 3 === 0 && record !== undefined) void forge({ type: 'announce', record, claim: { votedEpoch: 0, open: false } }).catch(() => {})
    }
    beat()
    const beating = setInterval(beat, 300)
    t.teardown(() => { clearInterval(beating) })
    await waitFor('the attacker to join the mission\'s view on every board', async () => {
      const r = latest()
      if (r?.view.includes(attackerId) !== true || r.proof === undefined) return false
      for (const p of peers) if ((await missionOn(p))?.epoch !== r.epoch) return false
      // The primary's container takes the new epoch a moment after the record (CI: read at epoch 1, then 2).
      const holder = peers.find(p => p.peerId === r.primary)
      return holder !== undefined && (await missionOn(holder))?.container?.epoch === r.epoch
    }, 60_000)
    const record = latest()!
    t.ok(record.view.includes(attackerId), `the attacker is a member of the view of epoch ${record.epoch} (${record.view.length} members)`)
    t.ok(record.proof !== undefined && record.proof.votes.length >= 2, `that epoch's record carries its proof (${record.proof?.votes.length} signed votes, ${JSON.stringify(record.proof).length} bytes)`)
    const before = (await missionOn(a))!
    const primary = peers.find(p => p.peerId === before.primary)!
    const containerBefore = (await missionOn(primary))!.container
    const refusedBefore = await Promise.all(peers.map(async p => (await authorityOf(p)).refused['no-quorum-proof']))
    const own = new PeerVoteKeys(attackerKey)
    const selfSigned = (epoch: number, over: Partial<QuorumProof> = {}): QuorumProof => ({
      basis: record.epoch, view: record.view, primary: record.primary,
      votes: [[attackerId, own.sign(voteStatement(MISSION, record.deployId, epoch, attackerId, over.basis ?? record.epoch))]], ...over
    })
    const claim = { votedEpoch: 0, open: false }
    const samples: string[] = []
    const sampler = setInterval(() => { void missionOn(b).then(m => { samples.push(m?.state ?? 'gone') }, () => {}) }, 200)
    for (let i = 0; i < 5; i++) {
      const epoch = record.epoch + 1 + i
      const honest = peers.map(p => p.peerId)
      const proofs: Array<QuorumProof | undefined> = [
        undefined,
        selfSigned(epoch),
        // Its own vote and two made-up ones of honest members; the real proof of the current epoch replayed; a basis
        // view of the attacker alone (where it would be its own quorum).
        { ...selfSigned(epoch), votes: [...selfSigned(epoch).votes, ...honest.slice(0, 2).map((h): [string, string] => [h, selfSigned(epoch).votes[0]![1]])] },
        record.proof,
        selfSigned(epoch, { view: [attackerId], primary: null })
      ]
      for (const proof of proofs) {
        const forged: MissionRecord = { ...record, epoch, primary: attackerId, backup: record.primary, started: true, ...(proof === undefined ? {} : { proof }) }
        if (proof === undefined) delete forged.proof
        await forge({ type: 'announce', record: forged, claim })
      }
      await forge({ type: 'fence', mission: MISSION, epoch, target: primary.peerId, proof: selfSigned(epoch) })
      await new Promise(resolve => setTimeout(resolve, 1000))
    }
    clearInterval(sampler)
    const counted = async (): Promise<boolean> => {
      for (const [i, p] of peers.entries()) if ((await authorityOf(p)).refused['no-quorum-proof'] - (refusedBefore[i] as number) < 25) return false
      return true
    }
    for (const deadline = Date.now() + 15_000; Date.now() < deadline && !(await counted());) await new Promise(resolve => setTimeout(resolve, 250))
    for (const [i, p] of peers.entries()) {
      const refused = (await authorityOf(p)).refused['no-quorum-proof'] - (refusedBefore[i] as number)
      t.ok(refused >= 25, `board ${i} refused the member's ${refused} unproven epochs${p === primary ? ' and fences' : ''} (no-quorum-proof)`)
      const m = await missionOn(p)
      t.equal(m?.epoch, before.epoch, `board ${i}: the mission is still at epoch ${before.epoch}`)
      t.equal(m?.primary, before.primary, `board ${i}: same primary`)
    }
    t.ok((await authorityOf(primary)).refused['no-quorum-proof'] - (refusedBefore[peers.indexOf(primary)] as number) >= 30, 'the primary refused the 5 fences too')
    t.same((await missionOn(primary))!.container, containerBefore, 'the primary\'s container was never stopped or replaced')
    t.ok(samples.length >= 20 && samples.every(s => s === 'running'), `running in all ${samples.length} samples taken during the attack`)
    // The attacker stops beating: it is dead to every board and leaves the view (the next tests run without it).
    clearInterval(beating)
    // Judged by the boards' own events: dead to them, the attacker is hung up on and may overhear no more announces.
    await waitFor('the attacker to leave the view', async () => {
      const seen = await Promise.all(peers.map(async p => await missionOn(p)))
      const epoch = seen[0]?.epoch
      for (const m of seen) {
        if (m === undefined || m.epoch !== epoch || m.state !== 'running') return false
        const last = m.events.map(e => e.event).filter(e => e.kind === 'reconfigured').at(-1)
        if (last === undefined || last.kind !== 'reconfigured' || last.epoch <= before.epoch || last.view.includes(attackerId)) return false
      }
      return true
    }, 60_000)
  })

  t.test('key rotation without a restart: both keys trusted (SIGHUP), the mission re-signed with the new one, the old one dropped', async t => {
    const newKey = join(dir, 'operator-2.key')
    await createOperatorKeyFiles(newKey, 'rotated')
    const oldLine = await readFile(operatorPub, 'utf8')
    const newLine = await readFile(`${newKey}.pub`, 'utf8')
    const keyOf = (line: string): string => line.split(' ')[1] as string
    /** Every board re-reads its key files (SIGHUP) and then trusts exactly `keys`. */
    const reload = async (keys: string[]): Promise<void> => {
      for (const p of peers) p.kill('SIGHUP')
      await waitFor(`every board to trust ${keys.length} key(s)`, async () => {
        for (const p of peers) if ((await authorityOf(p)).operatorKeys.sort().join() !== [...keys].sort().join()) return false
        return true
      }, 10_000)
    }
    await writeFile(trustedPub, oldLine + newLine)
    await reload([keyOf(oldLine), keyOf(newLine)])
    const resigned = await cli(c, 'mission', 'resign', MISSION, '--operator-key', newKey)
    t.equal(resigned.code, 0, `mission resign exits 0 (${resigned.stderr})`)
    await waitFor('every board to carry the new signature', async () => {
      for (const p of peers) if ((await missionOn(p))?.signedBy !== keyOf(newLine)) return false
      return true
    }, 20_000)
    // The old key dropped everywhere; the operator's board now holds the new one.
    const oldKey = join(dir, 'operator-old.key')
    await writeFile(oldKey, await readFile(operatorKey, 'utf8'), { mode: 0o600 })
    await writeFile(operatorKey, await readFile(newKey, 'utf8'))
    await writeFile(trustedPub, newLine)
    await reload([keyOf(newLine)])
    for (const p of peers) {
      const m = await missionOn(p)
      t.equal(m?.signedBy, keyOf(newLine), 'the record carries the new key\'s grant')
      t.equal(m?.state, 'running', 'and runs, seen by a board that trusts only the new key')
    }
    const before = (await missionOn(a))!
    const target = peers.find(p => p.peerId !== before.primary)!
    const moved = await cli(c, 'mission', 'move', MISSION, '--to', target.peerId, '--operator-key', newKey, '--json')
    t.equal(moved.code, 0, `a move signed by the new key runs (${moved.stderr})`)
    const after = (await missionOn(b))!
    t.ok(after.epoch > before.epoch && after.primary === target.peerId, `a new epoch (${after.epoch}) under the new key, on the target`)
    const oldSigned = await cli(b, 'mission', 'rm', MISSION, '--operator-key', oldKey)
    t.match(oldSigned.stderr, /403 .*untrusted key/, 'the old key can no longer remove it')
    t.equal((await missionOn(a))?.state, 'running', 'still running')
  })

  t.test('the operator revokes the primary\'s board: it is refused everywhere and the mission fails over', async t => {
    const before = (await missionOn(a))!
    const victim = peers.find(p => p.peerId === before.primary)!
    const others = peers.filter(p => p !== victim)
    // Through a board without the key: it refuses an unsigned revocation; the CLI signs.
    const via = others.find(p => p !== a)!
    const unsigned = await cli(via, 'peer', 'revoke', victim.peerId)
    t.equal(unsigned.code, 1, 'unsigned, a board without the key refuses to revoke')
    t.match(unsigned.stderr, /403/)
    const revoked = await cli(via, 'peer', 'revoke', victim.peerId, '--operator-key', operatorKey)
    t.equal(revoked.code, 0, `revoke exits 0 (${revoked.stderr})`)
    const started = Date.now()
    await waitFor('every other board to refuse the revoked one', async () => {
      for (const p of others) {
        if (!(await authorityOf(p)).revoked.includes(victim.peerId)) return false
        if ((await p.status()).peers.find(x => x.peerId === victim.peerId)?.state !== 'dead') return false
      }
      return true
    }, 20_000)
    const after = await waitFor('the mission to run on another board', async () => {
      const m = await missionOn(via)
      return m?.state === 'running' && m.primary !== victim.peerId && m.epoch > before.epoch
    }, 60_000)
    const m = (await missionOn(via))!
    t.ok(others.some(p => p.peerId === m.primary), `it runs on ${m.primary ?? '?'} at epoch ${m.epoch}, ${Date.now() - started} ms after the revoke command returned (${Math.round(after)} ms after every board refused the revoked one)`)
    t.not(m.backup, victim.peerId, 'the revoked board is not its backup')
    for (const p of others) {
      const connected = (await p.status()).peers.find(x => x.peerId === victim.peerId)?.connected
      t.notOk(connected, `${p === a ? 'a' : 'the other board'} holds no connection to the revoked board`)
    }
    const persisted = JSON.parse(await readFile(join(via.dataDir, 'revocations.json'), 'utf8')) as Array<{ subject: string }>
    t.ok(persisted.some(g => g.subject === victim.peerId), 'the revocation is persisted in the data dir')
    await waitFor('one container of the mission', async () => (await docker.listContainers({ filters: { label: [`${LABEL_MISSION}=${MISSION}`] } })).length === 1, 20_000)
    const running = await docker.listContainers({ filters: { label: [`${LABEL_MISSION}=${MISSION}`] } })
    t.equal(running[0]?.Labels['tandem.peer'], m.primary, 'the one container runs for the new primary')
  })
}
