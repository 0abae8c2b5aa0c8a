// Resource limits at the edges of a peer, attacked for real (issue 11): connections from a node without the swarm
// key, idle control-API connections from a local user without the token, stalled block readers and forged missions
// from an insider, oversized manifests, a full disk. Each attack runs against real peer processes, and the peer must
// stay alive, keep serving the honest ones and keep its memory bounded. Heavy: run under the shared lock.
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { createSwarmNode, type SwarmNode } from '../peer/node.ts'
import { waitFor } from '../harness/spawn-peer.ts'
import type { PeerHandle } from '../harness/spawn-peer.ts'
import { peerFor, swarmKeyFor, tempDirFor, type Teardown } from './helpers/peers.ts'

const figures: Record<string, unknown> = {}
t.teardown(() => { t.comment(`figures: ${JSON.stringify(figures)}`) })

interface EdgeLimits {
  pnetCipher: { memoryBytes: number, liveCiphers: number, highestSlotEnd: number, freed: number }
  api: { open: number, max: number, evictedIdle: number, refusedBusy: number, closedIdle: number }
}

async function limitsOf (peer: PeerHandle): Promise<EdgeLimits> {
  return (await peer.status()).limits as EdgeLimits
}

function alive (peer: PeerHandle): boolean {
  try { process.kill(peer.pid, 0); return true } catch { return false }
}

async function rssMbOf (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Math.round(Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024)
}

async function rawNodeFor (t: Teardown, swarmKeyFile?: string): Promise<SwarmNode> {
  const node = await createSwarmNode({
    privateKey: await generateKeyPair('Ed25519'),
    dataDir: await tempDirFor(t, 'tandem-raw-'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: [],
    swarmKey: swarmKeyFile != null ? new Uint8Array(await readFile(swarmKeyFile)) : undefined,
    mdns: false
  })
  t.teardown(async () => { await node.stop() })
  return node
}

function tcpPortOf (addrs: string[]): number {
  const addr = addrs.find(a => a.startsWith('/ip4/127.0.0.1/tcp/')) as string
  return Number(addr.split('/')[4])
}

type KeylessOutcome = 'cipher' | 'refused'

/**
 * One connection of an attacker without the key, from `source` (any 127/8 address): waits for the peer's 24-byte
 * nonce, sends 24 random bytes (a nonce: the peer then builds both ciphers), closes. 'refused' when the peer hung up
 * before its nonce (its per-address rate limit or its cap of pending connections).
 */
async function keylessConnection (port: number, source: string): Promise<KeylessOutcome> {
  return await new Promise(resolve => {
    let nonce = 0
    let outcome: KeylessOutcome = 'refused'
    const socket: Socket = connect({ port, host: '127.0.0.1', localAddress: source })
    const timer = setTimeout(() => socket.destroy(), 3000)
    socket.on('data', chunk => {
      nonce += chunk.length
      if (nonce >= 24 && outcome === 'refused') {
        outcome = 'cipher'
        socket.write(randomBytes(24), () => { setTimeout(() => socket.destroy(), 30) })
      }
    })
    socket.on('error', () => {})
    socket.on('close', () => { clearTimeout(timer); resolve(outcome) })
  })
}

t.test('5,000+ short connections without the swarm key, each sending 24 random bytes: the peer lives, its cipher memory stays bounded, keyed peers still join', async t => {
  const key = await swarmKeyFor(t)
  const target = await peerFor(t, { swarmKey: key })
  const port = tcpPortOf(target.addrs)
  const before = { limits: await limitsOf(target), rssMb: await rssMbOf(target.pid) }
  // Ten source addresses, as an attacker on a LAN may have: each stays near the peer's per-address rate limit.
  const sources = Array.from({ length: 10 }, (_, i) => `127.0.0.${i + 2}`)
  const wanted = 6000
  const counts: Record<KeylessOutcome, number> = { cipher: 0, refused: 0 }
  const rssMbSeen: number[] = []
  const started = performance.now()
  let attempts = 0
  while (counts.cipher < wanted && alive(target) && performance.now() - started < 240_000) {
    const round = await Promise.all(sources.flatMap(source => Array.from({ length: 4 }, async () => await keylessConnection(port, source))))
    for (const outcome of round) counts[outcome]++
    attempts += round.length
    if (attempts % 1000 === 0) rssMbSeen.push(await rssMbOf(target.pid).catch(() => -1))
  }
  const seconds = (performance.now() - started) / 1000
  t.ok(alive(target), `the peer is alive after ${counts.cipher} connections reached its cipher (${counts.refused} refused early) in ${seconds.toFixed(0)} s`)
  t.ok(counts.cipher >= wanted, `at least ${wanted} connections got as far as both ciphers (without freeing, the peer took no keyed connection after ~5,000: each new cipher threw)`)
  // A keyed peer still joins, and a raw node with the key still connects.
  const raw = await rawNodeFor(t, key)
  const connection = await raw.libp2p.dial(multiaddr(target.addrs[0] as string), { signal: AbortSignal.timeout(5000) }).catch((err: Error) => err)
  t.equal((connection as { remotePeer?: unknown }).remotePeer?.toString(), target.peerId, `a raw node with the key still connects (${connection instanceof Error ? connection.message : 'connected'})`)
  const honest = await peerFor(t, { swarmKey: key, bootstrap: target.addrs })
  await waitFor('the keyed peer to be alive in the target', async () => (await target.status()).peers.some(p => p.peerId === honest.peerId && p.state === 'alive'), 30_000)
  t.pass('a keyed peer joined it')
  // Connections still closing are counted: settle first.
  await new Promise(resolve => setTimeout(resolve, 2000))
  const after = { limits: await limitsOf(target), rssMb: await rssMbOf(target.pid) }
  figures.keylessConnections = {
    reachedCipher: counts.cipher, refusedEarly: counts.refused, seconds: Math.round(seconds),
    cipherMemoryBytes: [before.limits.pnetCipher.memoryBytes, after.limits.pnetCipher.memoryBytes],
    ciphers: after.limits.pnetCipher,
    rssMb: { before: before.rssMb, everyThousand: rssMbSeen, after: after.rssMb }
  }
  t.equal(after.limits.pnetCipher.memoryBytes, before.limits.pnetCipher.memoryBytes, `the cipher memory did not grow (${after.limits.pnetCipher.memoryBytes} bytes)`)
  const ciphers = after.limits.pnetCipher
  t.ok(ciphers.freed >= 2 * wanted, `${ciphers.freed} ciphers freed on close; ${ciphers.liveCiphers} live (open connections)`)
  // Without freeing, slots reach 128 bytes per connection: 6,000 connections would need 768 KB, past the 640 KiB memory.
  t.ok(ciphers.highestSlotEnd < 64 * 1024, `cipher slots reached ${ciphers.highestSlotEnd} bytes at most: as many as connections open at once`)
  t.ok(alive(target), 'the peer is still alive')
})

/** Opens `count` idle TCP connections to the API (nothing sent), `batch` at a time; returns them (some may be closed). */
async function idleConnections (port: number, count: number, batch: number): Promise<Socket[]> {
  const sockets: Socket[] = []
  for (let i = 0; i < count; i += batch) {
    await Promise.all(Array.from({ length: Math.min(batch, count - i) }, async () => await new Promise<void>(resolve => {
      const socket = connect({ port, host: '127.0.0.1' })
      socket.on('error', () => {})
      socket.once('connect', () => { resolve() })
      socket.once('close', () => { resolve() })
      sockets.push(socket)
    })))
  }
  return sockets
}

t.test('thousands of idle control-API connections without the token: the peer stays alive and answers its token holder', async t => {
  const key = await swarmKeyFor(t)
  const target = await peerFor(t, { swarmKey: key })
  const watcher = await peerFor(t, { swarmKey: key, bootstrap: target.addrs })
  await waitFor('the two peers to see each other', async () => (await watcher.status()).peers.some(p => p.peerId === target.peerId && p.state === 'alive'), 30_000)
  const port = Number(target.apiAddress.split(':').at(-1))
  const fdsBefore = (await import('node:fs')).readdirSync(`/proc/${target.pid}/fd`).length
  const opened = 8000
  const started = performance.now()
  const sockets = await idleConnections(port, opened, 200)
  t.teardown(() => { for (const s of sockets) s.destroy() })
  const fdsDuring = (await import('node:fs')).readdirSync(`/proc/${target.pid}/fd`).length
  const answered = performance.now()
  const status = await target.status({ signal: AbortSignal.timeout(5000) })
  const answerMs = performance.now() - answered
  const limits = status.limits as EdgeLimits
  t.ok(alive(target), 'the peer is alive')
  t.equal(status.self.peerId, target.peerId, `the token holder got its status in ${answerMs.toFixed(0)} ms while ${opened} idle connections were opened`)
  t.ok(limits.api.open <= limits.api.max, `the API holds ${limits.api.open} connections (cap ${limits.api.max}), evicted ${limits.api.evictedIdle} idle ones`)
  t.ok(fdsDuring - fdsBefore < limits.api.max + 50, `the peer's file descriptors: ${fdsBefore} -> ${fdsDuring}`)
  // Idle connections that stay (up to the cap) are closed after their idle time.
  await waitFor('idle connections to be closed', async () => (await limitsOf(target)).api.open <= 2, 20_000)
  const stillOpen = sockets.filter(s => !s.destroyed && s.readyState === 'open').length
  t.ok((await watcher.status()).peers.some(p => p.peerId === target.peerId && p.state === 'alive'), 'the other peer still holds it alive')
  // Unauthenticated requests get 401 and the connection closes.
  const response = await fetch(`http://127.0.0.1:${port}/v1/status`)
  t.equal(response.status, 401, 'a request without the token is refused')
  t.equal(response.headers.get('connection'), 'close', 'and its connection is closed')
  figures.idleApiConnections = { opened, seconds: Math.round((answered - started) / 1000), statusAnswerMs: Math.round(answerMs), fds: [fdsBefore, fdsDuring], ...limits.api, clientSocketsStillOpen: stillOpen }
})

t.test('a 0.45 MB manifest with 40k keys is refused before parsing, fast, and the peer keeps answering', async t => {
  const target = await peerFor(t, {})
  let manifest = 'name: big\nimage: busybox\nenv:\n'
  for (let i = 0; manifest.length < 450_000; i++) manifest += `  K${i.toString(36)}: 1\n`
  const keys = manifest.split('\n').length - 4
  const started = performance.now()
  const refused = await target.client.request('POST', '/v1/missions', { manifest }).catch((err: Error & { status?: number }) => err)
  const refusedMs = performance.now() - started
  t.equal((refused as { status?: number }).status, 413, `refused with 413: ${(refused as Error).message}`)
  t.ok(refusedMs < 2000, `in ${refusedMs.toFixed(0)} ms (the unbounded parser blocked a primary's event loop for 71 s)`)
  const status = await target.status({ signal: AbortSignal.timeout(2000) })
  t.equal(status.self.peerId, target.peerId, 'the peer answers right after')
  figures.bigManifest = { bytes: manifest.length, keys, refusedMs: Math.round(refusedMs) }
})

type MissionCounters = { bytesIn: number, bytesOut: number, accepted: number, dropped: Record<string, number> }

t.test('an insider announcing forged missions with 60 KB specs: each peer holds at most its budget, and gossip stays bounded after it left', async t => {
  const { MAX_SPEC_BYTES_HELD } = await import('../peer/mission-budget.ts')
  const key = await swarmKeyFor(t)
  const target = await peerFor(t, { swarmKey: key })
  const other = await peerFor(t, { swarmKey: key, bootstrap: target.addrs })
  await waitFor('the two peers to see each other', async () => (await target.status()).peers.some(p => p.peerId === other.peerId && p.state === 'alive'), 30_000)
  const raw = await rawNodeFor(t, key)
  const pubsub = raw.libp2p.services.pubsub
  pubsub.subscribe('tandem/missions/1')
  await raw.libp2p.dial(multiaddr(target.addrs[0] as string), { signal: AbortSignal.timeout(5000) })
  await waitFor('the target to subscribe us', () => pubsub.getSubscribers('tandem/missions/1').some(id => id.toString() === target.peerId), 20_000)
  const rawId = raw.libp2p.peerId.toString()
  const env: Record<string, string> = {}
  for (let i = 0; i < 60; i++) env[`E${i}`] = 'x'.repeat(1000)
  const forged = 40
  for (let i = 0; i < forged; i++) {
    const mission = `forged-${i}`
    // Unplaceable (no board has 1 TB): it is announced forever and never runs.
    const record = {
      mission, deployId: `${rawId}-${i}`, spec: { name: mission, image: 'busybox', env, checkpointIntervalMs: 1000, placement: { minMemoryMb: 1_000_000 } },
      epoch: 0, primary: null, backup: null, view: [rawId], released: false, handoffTo: null, checkpoint: null, replicatedSeq: null,
      removed: false, started: false, imageCid: null, imageArch: null, restarts: 0, lastFailure: null
    }
    await pubsub.publish('tandem/missions/1', new TextEncoder().encode(JSON.stringify({ type: 'announce', record, claim: { votedEpoch: 0, open: false } })))
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  await new Promise(resolve => setTimeout(resolve, 2000))
  await raw.stop()
  const held = async (peer: PeerHandle): Promise<number> => ((await peer.status()).missions as Array<{ name: string }>).filter(m => m.name.startsWith('forged-')).length
  // Gossip of the peers' own announces, measured after the attacker left.
  await new Promise(resolve => setTimeout(resolve, 3000))
  const countersOf = async (peer: PeerHandle): Promise<MissionCounters> => (await peer.status()).counters.gossip['tandem/missions/1'] as unknown as MissionCounters
  const first = await countersOf(target)
  const windowMs = 10_000
  await new Promise(resolve => setTimeout(resolve, windowMs))
  const last = await countersOf(target)
  const outKBps = (last.bytesOut - first.bytesOut) / windowMs
  const budget = (await target.status()).missionBudget as { refused: Record<string, number> }
  const [heldByTarget, heldByOther] = [await held(target), await held(other)]
  const perSpec = Buffer.byteLength(JSON.stringify({ name: 'forged-00', image: 'busybox', env, checkpointIntervalMs: 1000, placement: { minMemoryMb: 1_000_000 } }))
  figures.forgedMissions = { forged, specBytes: perSpec, heldByTarget, heldByOther, refused: budget.refused, missionGossipOutKBps: +outKBps.toFixed(1) }
  t.ok(heldByTarget * perSpec <= MAX_SPEC_BYTES_HELD, `the target holds ${heldByTarget} of ${forged} forged missions (${heldByTarget * perSpec} spec bytes, budget ${MAX_SPEC_BYTES_HELD})`)
  t.ok(heldByOther * perSpec <= MAX_SPEC_BYTES_HELD, `the other peer holds ${heldByOther}`)
  // What a peer re-announces each interval is what it holds: at most the budget per second, not the attacker's 40 missions.
  t.ok(outKBps * 1000 <= 1.5 * MAX_SPEC_BYTES_HELD, `the target's mission gossip out after the attacker left: ${outKBps.toFixed(1)} KB/s`)
  t.ok(alive(target) && alive(other), 'both peers alive')
})

t.test('an insider asking for blocks on 32 streams and reading none: the serving peer stays up and serves another peer meanwhile', async t => {
  const { openSwarmBundleStore } = await import('../checkpoint/swarm-store.ts')
  const { BLOCKS_PROTOCOL, BlockExchange, MAX_REQUESTS_PER_PEER } = await import('../checkpoint/block-exchange.ts')
  const { HeliaBundleBackend } = await import('../checkpoint/backend.ts')
  const { lpStream } = await import('@libp2p/utils')
  const dagCbor = await import('@ipld/dag-cbor')
  const { CID } = await import('multiformats/cid')
  const { sha256 } = await import('multiformats/hashes/sha2')
  const raw = await import('multiformats/codecs/raw')
  const { pnetCipherMemory } = await import('../peer/pnet-cipher-fix.ts')
  const key = await swarmKeyFor(t)
  // The serving node is built as a peer builds it (createSwarmNode + openSwarmBundleStore), in this process so that
  // blocks can be put into its store; the attacker and the honest reader are separate nodes with the swarm key.
  const server = await rawNodeFor(t, key)
  const serving = await openSwarmBundleStore(server as never)
  t.teardown(async () => { await serving.stop() })
  const blocks = await Promise.all(Array.from({ length: 48 }, async () => {
    const bytes = randomBytes(1024 * 1024)
    return { cid: CID.createV1(raw.code, await sha256.digest(bytes)), bytes }
  }))
  await serving.store.backend.putMany(blocks)
  const attacker = await rawNodeFor(t, key)
  const honest = await rawNodeFor(t, key)
  const serverAddr = multiaddr(server.libp2p.getMultiaddrs()[0]!.toString())
  await attacker.libp2p.dial(serverAddr)
  await honest.libp2p.dial(serverAddr)
  const crashes: unknown[] = []
  const onCrash = (err: unknown): void => { crashes.push(err) }
  process.on('uncaughtException', onCrash)
  process.on('unhandledRejection', onCrash)
  t.teardown(() => { process.off('uncaughtException', onCrash); process.off('unhandledRejection', onCrash) })
  const cipherBefore = pnetCipherMemory().memoryBytes

  // 32 streams each asking for 1,024 MiB-blocks (a GiB each), paused before reading anything.
  const request = dagCbor.encode({ cids: Array.from({ length: 1024 }, (_, i) => blocks[i % blocks.length]!.cid) })
  const started = performance.now()
  const streams = await Promise.all(Array.from({ length: 32 }, async () => {
    const stream = await attacker.libp2p.dialProtocol(server.libp2p.peerId, BLOCKS_PROTOCOL)
    stream.pause()
    await lpStream(stream).write(request)
    return stream
  }))
  const endedAt = streams.map(s => new Promise<number>(resolve => {
    if (s.status !== 'open') resolve(performance.now() - started)
    else s.addEventListener('close', () => { resolve(performance.now() - started) }, { once: true })
  }))
  await new Promise(resolve => setTimeout(resolve, 500))
  // Meanwhile another peer fetches 16 MiB of the same blocks.
  const reader = new BlockExchange({ libp2p: honest.libp2p, backend: new HeliaBundleBackend({ helia: honest as never }) })
  const wanted = blocks.slice(0, 16).map(b => b.cid)
  const fetchStarted = performance.now()
  const got = await reader.fetchBlocks(wanted, { providers: [server.libp2p.peerId.toString()] })
  const fetchedAt = performance.now() - started
  const fetchMs = performance.now() - fetchStarted
  const stillStalled = streams.filter(s => s.status === 'open').length
  // The server ends every attacker request itself (stall or request time limit); a paused reader may not see the reset.
  await waitFor('the server to end all 32 attacker requests', () => serving.exchange.servingFigures().failed >= streams.length, 45_000)
  const ended = await Promise.all(endedAt.map(async p => await Promise.race([p, new Promise<number>(resolve => setTimeout(() => resolve(NaN), 1000))])))
  const serving_ = serving.exchange.servingFigures()
  figures.stalledBlockReaders = {
    streams: 32, honestFetchMs: Math.round(fetchMs), honestBytes: [...got.values()].reduce((n, b) => n + b.byteLength, 0),
    attackerStreamsOpenWhenHonestDone: stillStalled, attackerStreamsEndedMs: ended.filter(Number.isFinite).map(Math.round),
    ...serving_, cipherMemoryBytes: [cipherBefore, pnetCipherMemory().memoryBytes]
  }
  t.equal(got.size, wanted.length, `the honest peer got its ${wanted.length} MiB in ${fetchMs.toFixed(0)} ms`)
  // Without per-peer shares it waited for the stalled streams' abort (9.7 s measured, 2 of 32 still open at the end).
  t.equal(stillStalled, streams.length, `it was served while all ${stillStalled} attacker streams still stalled or waited (served from its own share, ${fetchedAt.toFixed(0)} ms into the attack)`)
  t.equal(serving_.waitedForPeerSlot, 32 - MAX_REQUESTS_PER_PEER, `${32 - MAX_REQUESTS_PER_PEER} of the attacker's requests waited for a slot of its own (at most ${MAX_REQUESTS_PER_PEER} per peer served at once)`)
  t.equal(serving_.failed, streams.length, 'every attacker request was ended by the server (stall or request time limit)')
  t.same(crashes, [], 'no uncaught exception, no unhandled rejection')
  t.ok(pnetCipherMemory().memoryBytes <= 16 * 1024 * 1024, `the cipher memory is ${pnetCipherMemory().memoryBytes} bytes`)
  const again = await reader.fetchBlocks(blocks.slice(16, 20).map(b => b.cid), { providers: [server.libp2p.peerId.toString()] })
  t.equal(again.size, 4, 'the server still serves after the attack')
})

t.test('a full disk (a real tmpfs filled to ENOSPC) at a state persist: the peer lives, says so, and recovers when space returns', async t => {
  if (process.getuid?.() !== 0) { t.pass('skipped: needs root (mounts a tmpfs)'); return }
  const { BoardDisk } = await import('../harness/board-disk.ts')
  const { join } = await import('node:path')
  const key = await swarmKeyFor(t)
  const disk = await BoardDisk.mount(join(await tempDirFor(t), 'disk'), 64 * 1024 * 1024)
  t.teardown(() => { disk.unmountSync() })
  // An open swarm: the raw node's unsigned announces are taken in (and persisted) instead of dropped as unauthorized.
  const target = await peerFor(t, { swarmKey: key, dataDir: join(disk.path, 'peer'), openMissions: true })
  const raw = await rawNodeFor(t, key)
  const pubsub = raw.libp2p.services.pubsub
  pubsub.subscribe('tandem/missions/1')
  await raw.libp2p.dial(multiaddr(target.addrs[0] as string), { signal: AbortSignal.timeout(5000) })
  await waitFor('the target to subscribe us', () => pubsub.getSubscribers('tandem/missions/1').some(id => id.toString() === target.peerId), 20_000)
  const rawId = raw.libp2p.peerId.toString()
  // Each new mission the target hears of is a decision it must persist.
  const announce = async (i: number): Promise<void> => {
    const mission = `m-${i}`
    const record = {
      mission, deployId: `${rawId}-${i}`, spec: { name: mission, image: 'busybox', env: {}, checkpointIntervalMs: 1000 },
      epoch: 0, primary: null, backup: null, view: [rawId], released: false, handoffTo: null, checkpoint: null, replicatedSeq: null,
      removed: false, started: false, imageCid: null, imageArch: null, restarts: 0, lastFailure: null
    }
    await pubsub.publish('tandem/missions/1', new TextEncoder().encode(JSON.stringify({ type: 'announce', record, claim: { votedEpoch: 0, open: false } })))
  }
  await announce(0)
  await waitFor('the first mission to be held', async () => ((await target.status()).missions as Array<{ name: string }>).some(m => m.name === 'm-0'), 10_000)
  const filler = await disk.fill()
  for (let i = 1; i < 5; i++) { await announce(i); await new Promise(resolve => setTimeout(resolve, 300)) }
  type Storage = { ok: boolean, problem: string | null, detail: string | null }
  await waitFor('the target to report its full disk', async () => ((await target.status()).storage as Storage).problem === 'disk full', 15_000)
  const full = (await target.status()).storage as Storage
  t.ok(alive(target), `the peer is alive with its disk full (${filler} bytes of filler)`)
  t.equal(full.problem, 'disk full', `its status says so: ${full.detail ?? ''}`)
  const events = JSON.stringify((await target.status()).missions)
  t.ok(alive(target), 'still alive after its failed persists')
  await disk.free()
  const freedAt = performance.now()
  await waitFor('the target to recover its storage', async () => ((await target.status()).storage as Storage).ok, 20_000)
  figures.fullDisk = { filler, problem: full.problem, recoveredMs: Math.round(performance.now() - freedAt), statusBytes: events.length }
  t.pass('its storage is ok again once space returned, without a restart')
  t.ok(alive(target), 'and it is alive')
})
