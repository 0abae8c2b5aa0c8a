// The decoders at tandem's edges, each fed as the product feeds it, with what consumes its output behind it: bytes
// from gossip, a stream or the disk go through the same decode and validation as in the daemon, and what is accepted
// goes on into the consensus machine, the member table, the tree checks or the env opening. A target's feed returns
// whether the input was accepted; a refusal is a return, never an exception. Anything it throws is a bug: a crash of
// the peer, or of the request, that a hostile input could cause (harness/fuzz/run.ts counts it).
import fc from 'fast-check'
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { mutatedBytes, mutatedJsonText, mutatedValue } from './mutate.ts'
import { Simulation, SIM_MISSION } from '../consensus-simulator.ts'
import { validateMessage, validateRecord } from '../../consensus/messages.ts'
import { ClusterMachine } from '../../consensus/machine.ts'
import { GrantError, OperatorKeys, OperatorSigner, checkMessageAuthority, createOperatorKeyPair, newDeployId, specDigest, validateGrant } from '../../consensus/authority.ts'
import type { ConsensusMessage } from '../../consensus/types.ts'
import { GossipDrop } from '../../peer/gossip.ts'
import { validateHeartbeat, validateVerdict, type Heartbeat } from '../../peer/heartbeat.ts'
import { Membership } from '../../peer/membership.ts'
import { peerInfoOf } from '../../peer/missions/peer-info.ts'
import { DEFAULT_FAILURE_DETECTOR } from '../../peer/config.ts'
import { MissionLogStore, validateLogBatch } from '../../peer/mission-logs.ts'
import { missionEvent, validateEvent } from '../../peer/mission-events.ts'
import { EVENT_SAMPLES } from '../event-samples.ts'
import { parseManifest, ManifestError, type MissionSpec } from '../../manifest/manifest.ts'
import { clearEnv, commitEnv, EnvCommitmentError } from '../../manifest/env-commitment.ts'
import { parseStatsDump } from '../../checkpoint/criu-stats.ts'
import { decodeBlockReply, decodeBlockRequest } from '../../checkpoint/block-exchange.ts'
import { asChunkList, asImageManifest, asLayerFile, asManifest, asTreeNode, asTreePart, type TreeEntry } from '../../checkpoint/format.ts'
import { checkTreeEntries } from '../../checkpoint/tree-safety.ts'
import { BundleFormatError } from '../../checkpoint/errors.ts'
import { ContentKey, SealError, SealIdentity } from '../../checkpoint/sealing.ts'
import { openEnv, sealEnv } from '../../checkpoint/env-seal.ts'
import { BundleStore } from '../../checkpoint/bundle-store.ts'
import { storeBundle } from '../../checkpoint/bundle.ts'
import type { BundleBackend } from '../../checkpoint/backend.ts'

export interface FuzzTarget {
  name: string
  /** The decoder and what consumes its output. */
  what: string
  input: fc.Arbitrary<unknown>
  /** Feeds one input: true if accepted, false if refused. Throws only on a bug. */
  feed: (input: unknown) => boolean
  /** Invariants of the consumer broken so far (stateful targets). */
  violations?: () => string[]
  /** What the run did that the counts do not say (stateful targets). */
  note?: () => string
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** What the gossip layer does with a message's bytes (peer/gossip.ts): strict UTF-8, then JSON. */
function gossipJson (bytes: Uint8Array): { ok: true, value: unknown } | { ok: false } {
  try { return { ok: true, value: JSON.parse(utf8.decode(bytes)) } } catch (err) {
    if (err instanceof SyntaxError || err instanceof TypeError) return { ok: false }
    throw err
  }
}

/** A gossip validator's verdict: its GossipDrop is a refusal (the gossip layer also drops anything else it throws, but as a bug). */
function refusedBy<T> (validate: () => T): T | undefined {
  try { return validate() } catch (err) {
    if (err instanceof GossipDrop) return undefined
    throw err
  }
}

/**
 * Mission gossip: a consensus message's bytes -> JSON -> validateMessage -> the operator's grant checked ->
 * delivered to a live simulated swarm of four boards (its machines are the product's), which runs on between inputs.
 * Seeds: every message the swarm itself published while it deployed a signed mission, failed over, moved it and
 * had a board revived. A replayed remove (it carries a valid grant) ends the mission: the swarm is then built again
 * the same way, so the inputs after it meet a live mission too.
 */
function missionGossip (seed: number): FuzzTarget {
  const ids = ['board-a', 'board-b', 'board-c', 'board-d']
  const operator = new OperatorSigner(createOperatorKeyPair().privatePem)
  const keys = new OperatorKeys([operator.publicKey])
  // One time for every grant of the run: each rebuilt swarm makes the same deployment (and moves stay in their TTL).
  const at = Date.now()
  const spec: MissionSpec = { ...SIM_MISSION }
  const deployId = newDeployId(operator.publicKey, at, 'fuzz')
  const build = (): { sim: Simulation, seeds: ConsensusMessage[] } => {
    const sim = new Simulation({ seed, peers: ids.map(id => ({ id })) })
    const seeds: ConsensusMessage[] = []
    sim.onPublish = (_from, message) => { if (seeds.length < 3000) seeds.push(JSON.parse(JSON.stringify(message)) as ConsensusMessage) }
    sim.local('board-a', { type: 'deploy', spec, deployId, grant: operator.sign({ op: 'deploy', subject: spec.name, deployId, spec: specDigest(spec), to: null, at }) })
    sim.runFor(4000)
    const primary = sim.runningOn(spec.name)[0] ?? 'board-a'
    sim.kill(primary)
    sim.runFor(4000)
    sim.restart(primary)
    sim.runFor(4000)
    const target = ids.find(id => !sim.runningOn(spec.name).includes(id)) ?? 'board-b'
    sim.local('board-a', { type: 'move', mission: spec.name, to: target, grant: operator.sign({ op: 'move', subject: spec.name, deployId, spec: null, to: target, at }) })
    sim.runFor(4000)
    seeds.push({ type: 'remove', mission: spec.name, deployId, grant: operator.sign({ op: 'remove', subject: spec.name, deployId, spec: null, to: null, at }) } as ConsensusMessage)
    sim.onPublish = null
    return { sim, seeds }
  }
  const first = build()
  const seeds = first.seeds
  let sim = first.sim
  const violations: string[] = []
  let swarms = 1
  let fed = 0
  const senders = [...ids, 'attacker']
  return {
    name: 'mission gossip',
    what: 'JSON -> validateMessage -> operator grant -> 4 consensus machines (simulated swarm, invariants checked)',
    input: fc.record({ bytes: mutatedJsonText(seeds), from: fc.constantFrom(...senders), to: fc.constantFrom(...ids) }),
    feed: input => {
      const { bytes, from, to } = input as { bytes: Uint8Array, from: string, to: string }
      let accepted = false
      const json = gossipJson(bytes)
      if (json.ok) {
        const message = validateMessage(json.value)
        if (message !== undefined) {
          try {
            checkMessageAuthority(keys, message, Date.now())
            accepted = true
          } catch (err) {
            if (!(err instanceof GrantError)) throw err
          }
          // As the gossip validator does: what fails the operator's grant never reaches the machine. (An open swarm,
          // --insecure-open-missions, delivers it too; there anyone may deploy and remove, and a replayed deployment
          // with a forged later grant time restarts that deployment's epochs: found here, documented in the README.)
          if (accepted) sim.inject(to, from, message)
        }
      }
      if (++fed % 20 === 0) {
        sim.runFor(50)
        if (ids.every(id => sim.snapshot(id, spec.name)?.state === 'removed')) {
          violations.push(...sim.violations)
          sim = build().sim
          swarms++
        }
      }
      return accepted
    },
    violations: () => [...violations, ...sim.violations],
    note: () => `${swarms} swarms (a replayed remove ends one)`
  }
}

/** Inputs of several kinds, each drawn from its own arbitrary: `{ kind, bytes }`. */
function byKind (kinds: Record<string, fc.Arbitrary<Uint8Array>>): fc.Arbitrary<{ kind: string, bytes: Uint8Array }> {
  return fc.oneof(...Object.entries(kinds).map(([kind, bytes]) => fc.record({ kind: fc.constant(kind), bytes })))
}

/** The gossip signer of a message: mostly who it claims to be (null), sometimes another board (a forgery). */
function signer (ids: string[]): fc.Arbitrary<string | null> {
  return fc.oneof({ weight: 4, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom(...ids) })
}

/** A real heartbeat's shape (as peer/heartbeat.ts publishes it), with the extras other parts add. */
function heartbeatSeed (peerId: string, seq: number): Heartbeat {
  return {
    v: 1, peerId, incarnation: 1764600000000, seq, sentAt: 1764600000000 + seq * 1000,
    addrs: ['/ip4/10.77.0.2/tcp/4011', '/ip4/127.0.0.1/tcp/4011'],
    board: { name: 'raspberry-pi-4', arch: 'arm64', cores: 4, memoryMb: 3906 },
    capabilities: { criu: { version: '4.1.1', checkOk: true }, docker: { available: true, version: '20.10.24' } },
    load: { loadPerCore: 0.12, lagMs: 3, rssMb: 96, healthScore: 0 },
    extras: {
      missions: [{ mission: 'vehicle', role: 'primary', epoch: 4 }],
      images: { docker: true, present: ['tandem/vehicle:latest', 'sha256:' + 'a'.repeat(64)], fetching: [{ image: 'tandem/other:1', fetchedBytes: 1000, totalBytes: 5000 }] },
      storage: { ok: false, problem: 'disk full', detail: 'ENOSPC', since: 1764600000000 }
    }
  }
}

/**
 * Heartbeats and verdicts: bytes -> JSON -> validateHeartbeat / validateVerdict (the signer is the claimed peer)
 * -> the member table (heard, verdict, its ticks) -> the board info the consensus machine takes -> a machine
 * holding a deployed mission.
 */
function membership (): FuzzTarget {
  const ids = ['12D3KooWAaaa', '12D3KooWBbbb', '12D3KooWCccc']
  let now = 0
  const table = new Membership({
    selfId: 'self', config: DEFAULT_FAILURE_DETECTOR, now: () => now, wallNow: () => 1764600000000 + now, random: () => 0.5,
    prober: { direct: async () => 'ack', indirect: async () => 'ack' }
  })
  const machine = new ClusterMachine({ self: { peerId: 'self', arch: 'arm64', board: 'rpi4', memoryMb: 4096, canRun: true, canCheckpoint: true, images: ['tandem/vehicle:latest'], fetchingImages: [] }, now })
  machine.local(now, { type: 'deploy', spec: { ...SIM_MISSION } })
  const heartbeats = ids.flatMap(id => [heartbeatSeed(id, 1), heartbeatSeed(id, 7), heartbeatSeed(id, 1000)])
  const verdicts = ids.map(id => ({ v: 1, from: ids[0], target: id, incarnation: 1764600000000, seq: 7, reason: 'silent 1100 ms', exitProven: true }))
  let fed = 0
  return {
    name: 'heartbeats, verdicts',
    what: 'JSON -> validateHeartbeat / validateVerdict -> member table -> board info -> consensus machine; status JSON',
    input: fc.oneof(
      fc.record({ kind: fc.constant('heartbeat'), bytes: mutatedJsonText(heartbeats), signer: signer(ids) }),
      fc.record({ kind: fc.constant('verdict'), bytes: mutatedJsonText(verdicts), signer: signer(ids) })
    ),
    feed: input => {
      const { kind, bytes, signer } = input as { kind: 'heartbeat' | 'verdict', bytes: Uint8Array, signer: string | null }
      now += 7
      if (++fed % 50 === 0) { table.tick(); machine.tick(now); machine.takeActions() }
      const json = gossipJson(bytes)
      if (!json.ok) return false
      const claimed = (json.value as { peerId?: unknown, from?: unknown } | null)?.[kind === 'heartbeat' ? 'peerId' : 'from']
      const from = signer ?? (typeof claimed === 'string' ? claimed : ids[0]!)
      if (kind === 'heartbeat') {
        const heartbeat = refusedBy(() => validateHeartbeat(json.value, from))
        if (heartbeat === undefined || table.isReplay(heartbeat.peerId, heartbeat.incarnation, heartbeat.seq)) return false
        const { v, peerId, incarnation, seq, sentAt, ...info } = heartbeat
        table.heard(peerId, incarnation, seq, info)
      } else {
        const verdict = refusedBy(() => validateVerdict(json.value, from))
        if (verdict === undefined) return false
        table.verdict(verdict, from)
      }
      const members = table.list()
      for (const member of members) {
        const info = peerInfoOf(member)
        if (info !== undefined) machine.peerChanged(now, info)
      }
      machine.takeActions()
      // The status API serializes every member's info, extras included (peer/daemon/status.ts).
      JSON.stringify(members.map(m => ({ peerId: m.peerId, state: m.state, info: m.info })))
      return true
    }
  }
}

/** Revocations (peer/revocations.ts): a grant's JSON -> validateGrant -> the operator's signature for `revoke`. */
function revocations (): FuzzTarget {
  const operator = new OperatorSigner(createOperatorKeyPair().privatePem)
  const keys = new OperatorKeys([operator.publicKey])
  const seeds = ['12D3KooWAaaa', '12D3KooWBbbb'].map(subject => operator.sign({ op: 'revoke', subject, deployId: null, spec: null, to: null, at: 1764600000000 }))
  return {
    name: 'revocations',
    what: 'JSON -> validateGrant -> operator signature (revoke)',
    input: mutatedJsonText(seeds),
    feed: input => {
      const json = gossipJson(input as Uint8Array)
      if (!json.ok) return false
      const grant = validateGrant(json.value)
      if (grant === undefined) return false
      try { keys.check(grant, { op: 'revoke', subject: grant.subject }); return true } catch (err) {
        if (err instanceof GrantError) return false
        throw err
      }
    }
  }
}

/** Manifests, as `mission deploy` and the API read them: YAML or JSON text -> parseManifest (a ManifestError is a refusal). */
function manifests (): FuzzTarget {
  const yaml = [
    'name: vehicle-controller\nimage: tandem/vehicle:latest\ncommand: [node, /app/vehicle.js]\nenv:\n  SPEED: "3"\n  MODE: plain\ndata: /data\ncheckpointIntervalMs: 1000\nplacement:\n  architectures: [arm64, x64]\n  boards: [raspberry-pi-4]\n  minMemoryMb: 256\n',
    '{"name":"counter","image":"tandem/busybox@sha256:' + 'b'.repeat(64) + '","command":["sh","-c","while true; do echo $n; done"],"checkpointIntervalMs":500}\n',
    '# comment\nname: a\nimage: registry.local:5000/team/app:1.2\nenv: {A: &x "1", B: *x}\n'
  ]
  const seeds = yaml.map(text => new TextEncoder().encode(text))
  const structured = mutatedValue(yaml.slice(0, 2).map(text => JSON.parse(JSON.stringify(parseManifest(text))) as unknown)).map(v => new TextEncoder().encode(JSON.stringify(v) ?? ''))
  return {
    name: 'manifests',
    what: 'YAML/JSON text -> parseManifest',
    input: fc.oneof(mutatedBytes(seeds), structured),
    feed: input => {
      let text: string
      try { text = utf8.decode(input as Uint8Array) } catch { return false }
      try { parseManifest(text); return true } catch (err) {
        if (err instanceof ManifestError) return false
        throw err
      }
    }
  }
}

/** CRIU's stats-dump file, read after every dump: bytes -> parseStatsDump (null is a refusal). */
function criuStats (): FuzzTarget {
  const seed = Buffer.from('4059105506330957270000000a2508a40310d6d30c18cba30220b2ff0128d416300038fe154000480050085808600068007000', 'hex')
  return {
    name: 'CRIU stats',
    what: 'stats-dump bytes -> parseStatsDump',
    input: mutatedBytes([new Uint8Array(seed)]),
    feed: input => parseStatsDump(input as Uint8Array) !== null
  }
}

/** Block exchange frames (checkpoint/block-exchange.ts): a request to serve, a reply to a fetch (a thrown Error aborts that stream only, by design). */
function blockFrames (): FuzzTarget {
  const cids = [CID.parse('bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy'), CID.parse('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku')]
  const requests = [dagCbor.encode({ cids }), dagCbor.encode({ cids: [cids[0]] })]
  const replies = [dagCbor.encode([randomBytes(64), null]), dagCbor.encode([new Uint8Array(0)])]
  return {
    name: 'block frames',
    what: 'dag-cbor -> decodeBlockRequest / decodeBlockReply',
    input: byKind({ request: mutatedBytes(requests), reply: mutatedBytes(replies) }),
    feed: input => {
      const { kind, bytes } = input as { kind: 'request' | 'reply', bytes: Uint8Array }
      try {
        if (kind === 'request') decodeBlockRequest(bytes)
        else decodeBlockReply(bytes, 2, 'fuzz')
        return true
      } catch (err) {
        // The stream's whole handling sits in a try that aborts it: any Error from decoding is a refusal there.
        if (err instanceof Error) return false
        throw err
      }
    }
  }
}

/** Blocks in memory: enough of a backend for storeBundle to write a real bundle. */
class MemoryBackend implements BundleBackend {
  readonly blocks = new Map<string, { cid: CID, bytes: Uint8Array }>()
  readonly #records = new Map<string, Uint8Array>()
  async has (cid: CID): Promise<boolean> { return this.blocks.has(cid.toString()) }
  async get (cid: CID): Promise<Uint8Array> {
    const block = this.blocks.get(cid.toString())
    if (block === undefined) throw new Error(`no block ${cid.toString()}`)
    return block.bytes
  }

  async putMany (blocks: Array<{ cid: CID, bytes: Uint8Array }>): Promise<void> { for (const b of blocks) this.blocks.set(b.cid.toString(), b) }
  async deleteMany (cids: CID[]): Promise<void> { for (const cid of cids) this.blocks.delete(cid.toString()) }
  async readRecord (key: string): Promise<Uint8Array | undefined> { return this.#records.get(key) }
  async writeRecord (key: string, value: Uint8Array): Promise<void> { this.#records.set(key, value) }
  async deleteRecord (key: string): Promise<void> { this.#records.delete(key) }
  async * listRecords (prefix: string): AsyncIterable<{ key: string, value: Uint8Array }> {
    for (const [key, value] of this.#records) if (key.startsWith(prefix)) yield { key, value }
  }
}

type NodeKind = 'manifest' | 'tree' | 'part' | 'chunks' | 'layer' | 'image'

/** Which reader takes a node of each kind, as the fetcher and the materializer call them. */
function readNode (kind: NodeKind, value: unknown, cid: CID): void {
  switch (kind) {
    case 'manifest': asManifest(value, cid); return
    case 'tree': asTreeNode(value, cid); return
    case 'part': {
      const part = asTreePart(value, cid)
      for (const role of ['criu', 'rootfs', 'data'] as const) {
        try { checkTreeEntries(role, part.entries as TreeEntry[], 'fuzz') } catch (err) { if (!(err instanceof BundleFormatError)) throw err }
      }
      return
    }
    case 'chunks': asChunkList(value, cid); return
    case 'layer': asLayerFile(value, cid); return
    case 'image': asImageManifest(value, cid)
  }
}

/**
 * Bundle nodes from another board: dag-cbor bytes -> decode -> the node's shape check -> for tree parts, the tree
 * checks of every role (paths, duplicates, set-id bits, devices, entries below a non-directory). Seeds: every node of
 * a real bundle storeBundle wrote from a dump-shaped directory (with a symlink, a whiteout-like entry, a set-id file).
 */
async function bundleNodes (): Promise<FuzzTarget> {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-fuzz-'))
  try {
    const dirs = { criu: join(dir, 'criu'), rootfs: join(dir, 'rootfs'), data: join(dir, 'data') }
    for (const d of Object.values(dirs)) await mkdir(d, { recursive: true })
    await writeFile(join(dirs.criu, 'pages-1.img'), randomBytes(20_000))
    await writeFile(join(dirs.criu, 'core-1.img'), randomBytes(700))
    await mkdir(join(dirs.rootfs, 'var/log'), { recursive: true })
    await writeFile(join(dirs.rootfs, 'var/log/mission.log'), 'line 1\n')
    await symlink('mission.log', join(dirs.rootfs, 'var/log/current'))
    await writeFile(join(dirs.rootfs, 'var/tool'), 'x', { mode: 0o4755 })
    await writeFile(join(dirs.data, 'state.json'), '{"counter":42}')
    const backend = new MemoryBackend()
    const store = new BundleStore({ backend })
    const spec = { imageId: 'sha256:0000', imageTags: ['tandem/test:1'], imageCid: null, cmd: ['node', 'app.js'], entrypoint: null, env: ['A=1'], workingDir: '/app', user: '', dataPath: '/data' }
    const stats = { freezingTimeUs: 1, frozenTimeUs: 2, memdumpTimeUs: 3, memwriteTimeUs: 4, pagesScanned: 5, pagesWritten: 6, dumpWallMs: 7 }
    await storeBundle(store, { mission: 'counter', epoch: 1, seq: 1, parent: null, arch: 'amd64', criuVersion: '4.1', spec, stats, dirs, startedAt: performance.now() })
    const seeds: Array<{ kind: NodeKind, bytes: Uint8Array }> = []
    for (const { cid, bytes } of backend.blocks.values()) {
      if (cid.code !== dagCbor.code) continue
      const value = dagCbor.decode(bytes) as Record<string, unknown>
      const kind: NodeKind = value.format !== undefined ? 'manifest' : value.parts !== undefined ? 'tree' : value.entries !== undefined ? 'part' : value.chunks !== undefined ? 'chunks' : 'layer'
      seeds.push({ kind, bytes })
    }
    const values = seeds.map(s => dagCbor.decode(s.bytes))
    const byKind = (kind: NodeKind): Uint8Array[] => seeds.filter(s => s.kind === kind).map(s => s.bytes)
    const kinds = [...new Set(seeds.map(s => s.kind))]
    const cid = CID.parse('bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy')
    return {
      name: 'bundle nodes',
      what: 'dag-cbor -> manifest/tree/part/chunk-list checks -> tree checks (3 roles)',
      input: fc.constantFrom(...kinds).chain(kind => fc.oneof(
        fc.record({ kind: fc.constant(kind), bytes: mutatedBytes(byKind(kind)) }),
        // Structural edits, re-encoded: a node that decodes but says what no writer wrote.
        fc.record({ kind: fc.constant(kind), bytes: mutatedValue(values.filter((_, i) => seeds[i]!.kind === kind)).map(v => { try { return dagCbor.encode(v) } catch { return new Uint8Array(0) } }) })
      )),
      feed: input => {
        const { kind, bytes } = input as { kind: NodeKind, bytes: Uint8Array }
        let value: unknown
        try { value = dagCbor.decode(bytes) } catch { return false }
        try { readNode(kind, value, cid); return true } catch (err) {
          if (err instanceof BundleFormatError) return false
          throw err
        }
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/**
 * Sealed checkpoint blocks (checkpoint/sealing.ts): a block's bytes -> open under the mission's key. Beyond not
 * crashing, a changed block must never open: an opened block equals the sealed plaintext exactly.
 */
function sealedBlocks (): FuzzTarget {
  const key = ContentKey.generate()
  const plains = [randomBytes(0), randomBytes(1), randomBytes(4096), Buffer.from('{"counter":42}')].map(b => new Uint8Array(b))
  const sealed = plains.map(p => key.seal(p))
  const plainOf = new Map(sealed.map((s, i) => [Buffer.from(s).toString('hex'), plains[i]!]))
  return {
    name: 'sealed blocks',
    what: 'bytes -> ContentKey.open (must refuse every change)',
    input: mutatedBytes(sealed),
    feed: input => {
      const bytes = input as Uint8Array
      let opened: Uint8Array
      try { opened = key.open(bytes) } catch (err) {
        if (err instanceof SealError) return false
        throw err
      }
      const expected = plainOf.get(Buffer.from(bytes).toString('hex'))
      if (expected === undefined || Buffer.compare(expected, opened) !== 0) throw new Error(`a changed sealed block opened (${bytes.byteLength} bytes)`)
      return true
    }
  }
}

/**
 * Env values sealed in a mission record (checkpoint/env-seal.ts, peer/missions/env-keeper.ts): the record's JSON ->
 * validateRecord -> open the seal as a recipient -> the values checked against the digests the operator signed.
 * Beyond not crashing, what opens and passes the check must be the values the operator deployed.
 */
async function envSeals (): Promise<FuzzTarget> {
  const key = await generateKeyPair('Ed25519')
  const me = peerIdFromPrivateKey(key).toString()
  const identity = SealIdentity.fromPrivateKey(me, key)
  const other = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
  const clear: MissionSpec = { ...SIM_MISSION, env: { API_TOKEN: 's3cret', MODE: 'plain' } }
  const { spec, openings } = commitEnv(clear)
  const seal = sealEnv(spec.name, openings, [me, other], 1)
  const record = {
    mission: spec.name, deployId: 'op-fuzz@1.a', epoch: 3, primary: me, backup: other, spec, view: [me, other], released: false, handoffTo: null,
    checkpoint: null, replicatedSeq: 0, removed: false, started: true, imageCid: null, imageArch: null, restarts: 0, lastFailure: null, envSeal: seal
  }
  if (validateRecord(JSON.parse(JSON.stringify(record))) === undefined) throw new Error('the env seed record does not validate')
  return {
    name: 'env seals',
    what: 'JSON -> validateRecord -> openEnv -> clearEnv (digests)',
    input: mutatedJsonText([record]),
    feed: input => {
      const json = gossipJson(input as Uint8Array)
      if (!json.ok) return false
      const r = validateRecord(json.value)
      if (r?.envSeal === undefined) return false
      let env: Record<string, string>
      try {
        env = clearEnv(r.spec, openEnv(r.mission, r.envSeal, identity))
      } catch (err) {
        if (err instanceof SealError || err instanceof EnvCommitmentError) return false
        throw err
      }
      // The digests are signed with the spec: a spec of other digests is refused at the grant, not here.
      if (specDigest(r.spec) === specDigest(spec) && (env.API_TOKEN !== 's3cret' || env.MODE !== 'plain' || Object.keys(env).length !== 2)) {
        throw new Error(`a tampered seal opened to other values under the signed digests: ${JSON.stringify(env)}`)
      }
      return true
    }
  }
}

/**
 * Mission logs and events (peer/mission-logs.ts, peer/mission-events.ts): a batch of container lines or an event ->
 * JSON -> its validator -> the log store (kept lines, paging) or the event's wording (describe) the CLI and the
 * dashboard show.
 */
function logsAndEvents (): FuzzTarget {
  const board = '12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo'
  const line = (n: number): unknown => ({ at: 1764600000000 + n * 20, container: '0a1b2c3d4e5f', epoch: 3, n, stream: n % 5 === 0 ? 'stderr' : 'stdout', text: JSON.stringify({ n, t: n * 20 }) })
  const batches = [{ mission: 'vehicle', lines: [line(1), line(2), line(3)] }, { mission: 'counter', lines: [line(40)] }]
  const events = EVENT_SAMPLES.map((event, i) => ({ mission: 'vehicle', seq: i, at: 1764600000000 + i, event }))
  const store = new MissionLogStore()
  return {
    name: 'logs, events',
    what: 'JSON -> validateLogBatch / validateEvent -> log store and paging / event wording',
    input: byKind({ logs: mutatedJsonText(batches), event: mutatedJsonText(events) }),
    feed: input => {
      const { kind, bytes } = input as { kind: 'logs' | 'event', bytes: Uint8Array }
      const json = gossipJson(bytes)
      if (!json.ok) return false
      if (kind === 'logs') {
        const batch = refusedBy(() => validateLogBatch(json.value, board))
        if (batch === undefined) return false
        store.add(batch.mission, batch.lines)
        store.page(batch.mission, { tail: 10 })
      } else {
        const message = refusedBy(() => validateEvent(json.value))
        if (message === undefined) return false
        missionEvent(message.at, board, message.event)
      }
      return true
    }
  }
}

/** Every target, ready to feed (the stateful ones built from `seed`). */
export async function fuzzTargets (seed: number): Promise<FuzzTarget[]> {
  return [missionGossip(seed), membership(), revocations(), logsAndEvents(), manifests(), criuStats(), blockFrames(), await bundleNodes(), sealedBlocks(), await envSeals()]
}
