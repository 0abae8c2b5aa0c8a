// Swarm benchmark: convergence, failure detection after SIGKILL and SIGSTOP, false `dead` verdicts and
// gossip traffic, for swarms of peer processes on loopback; `--soak` runs 5 peers under a CPU hog.
//   node bench/swarm.ts [--quick] [--sizes 5,20] [--rounds 10] [--soak] [--soak-minutes 10]
// (--rounds 0: convergence, traffic and idle CPU only.)
import { parseArgs } from 'node:util'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { availableParallelism, cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { allSee, respawnPeer, spawnSwarm, stopAllPeers, waitFor, type PeerHandle } from '../harness/spawn-peer.ts'
import { generateSwarmKey } from '../peer/commands/swarm-key.ts'
import { DEFAULT_FAILURE_DETECTOR } from '../peer/config.ts'
import { HEARTBEAT_TOPIC } from '../peer/heartbeat.ts'
import type { MembershipEvent } from '../peer/membership.ts'
import { distribution, writeResults, type Distribution } from './report.ts'

interface FaultWindow { peerId: string, from: number, to: number }

interface SizeResult {
  peers: number
  convergenceMs: number
  startupToConvergedMs: number
  sigkill: { perObserver: Distribution, allObservers: Distribution, rounds: number }
  sigstop: { perObserver: Distribution, allObservers: Distribution, rounds: number }
  falseDead: number
  /** The false `dead` verdicts (at most 50): observer, peer, the detector's reason, ms after the swarm converged. */
  falseDeadEvents: Array<{ observer: string, peerId: string, reason: string, afterConvergedMs: number }>
  suspectsRecovered: number
  traffic: { windowS: number, heartbeatPayloadOutBps: number, heartbeatPayloadInBps: number, processWriteBps: number, processReadBps: number }
  /** CPU use of each peer process over the traffic window (idle swarm), % of one core: mean and max over peers. */
  idleCpu: { meanPct: number, maxPct: number }
}

interface SoakResult {
  peers: number
  minutes: number
  hogs: number
  falseDead: number
  suspects: number
  maxHealthScore: number
  pauses: number
  /** Every `dead` verdict of the soak (all false: no fault was injected), with the detector's reason. */
  deadEvents: Array<{ observer: string, peerId: string, reason: string, at: string }>
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

const CLOCK_TICKS = ((): number => {
  try { return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100 } catch { return 100 }
})()

/** CPU time (user + system) of a process so far, in seconds, from /proc/PID/stat. */
async function procCpuSeconds (pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
  // Fields after the command name (which may contain spaces) start at `state`; utime and stime are fields 14 and 15.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11] ?? 0) + Number(fields[12] ?? 0)) / CLOCK_TICKS
}

async function procIo (pid: number): Promise<{ read: number, write: number }> {
  const text = await readFile(`/proc/${pid}/io`, 'utf8').catch(() => '')
  const value = (key: string): number => Number(new RegExp(`^${key}: (\\d+)`, 'm').exec(text)?.[1] ?? 0)
  return { read: value('rchar'), write: value('wchar') }
}

/** Polls the observers until each reports `target` in `state`; returns each observer's transition time (wall ms). */
async function transitionTimes (observers: PeerHandle[], target: string, state: string, timeoutMs: number): Promise<number[]> {
  const found = new Map<string, number>()
  await waitFor(`${observers.length} peers to see ${target.slice(-6)} ${state}`, async () => {
    await Promise.all(observers.filter(o => !found.has(o.peerId)).map(async observer => {
      const entry = (await observer.status({ signal: AbortSignal.timeout(5000) })).peers.find(p => p.peerId === target)
      if (entry?.state === state) found.set(observer.peerId, entry.stateSinceAt)
    }))
    return found.size === observers.length
  }, timeoutMs, 150)
  return [...found.values()]
}

async function collectEvents (peers: PeerHandle[]): Promise<Array<MembershipEvent & { observer: string }>> {
  const all = await Promise.all(peers.map(async peer => (await peer.client.membershipEvents()).map(event => ({ ...event, observer: peer.peerId }))))
  return all.flat()
}

function classify (events: Array<MembershipEvent & { observer: string }>, windows: FaultWindow[]): { falseDead: Array<MembershipEvent & { observer: string }>, suspectsRecovered: number } {
  const inWindow = (peerId: string, at: number): boolean => windows.some(w => w.peerId === peerId && at >= w.from && at <= w.to)
  const observerFaulty = (event: { observer: string, at: number }): boolean => inWindow(event.observer, event.at)
  const falseDead = events.filter(e => e.state === 'dead' && !inWindow(e.peerId, e.at) && !observerFaulty(e))
  const suspectsRecovered = events.filter(e => e.state === 'alive' && e.previous === 'suspect').length
  return { falseDead, suspectsRecovered }
}

async function benchSize (size: number, rounds: number, trafficWindowS: number, log: (line: string) => void): Promise<SizeResult> {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-bench-'))
  const swarmKey = join(dir, 'swarm.key')
  await writeFile(swarmKey, generateSwarmKey())
  const options = { swarmKey, readyTimeoutMs: 120_000 }
  try {
    const spawnStarted = performance.now()
    const peers = await spawnSwarm(size, options)
    const readyAt = performance.now()
    await waitFor('convergence', async () => await allSee(peers, 'alive'), 180_000, 100)
    const convergedAt = performance.now()
    const convergedWallMs = Date.now()
    log(`  ${size} peers: ready in ${Math.round(readyAt - spawnStarted)} ms, converged ${Math.round(convergedAt - readyAt)} ms later`)

    const windows: FaultWindow[] = []
    const counters = async (): Promise<{ out: number, in: number }> => {
      const statuses = await Promise.all(peers.map(async peer => await peer.status()))
      return statuses.reduce((sum, s) => ({
        out: sum.out + (s.counters.gossip[HEARTBEAT_TOPIC]?.bytesOut ?? 0),
        in: sum.in + (s.counters.gossip[HEARTBEAT_TOPIC]?.bytesIn ?? 0)
      }), { out: 0, in: 0 })
    }
    await sleep(2000)
    const io0 = await Promise.all(peers.map(async peer => await procIo(peer.pid)))
    const cpu0 = await Promise.all(peers.map(async peer => await procCpuSeconds(peer.pid)))
    const c0 = await counters()
    const t0 = performance.now()
    await sleep(trafficWindowS * 1000)
    const cpu1 = await Promise.all(peers.map(async peer => await procCpuSeconds(peer.pid)))
    const io1 = await Promise.all(peers.map(async peer => await procIo(peer.pid)))
    const c1 = await counters()
    const seconds = (performance.now() - t0) / 1000
    const cpuPct = cpu1.map((used, i) => (used - (cpu0[i] ?? 0)) / seconds * 100)
    const idleCpu = { meanPct: round1(cpuPct.reduce((a, b) => a + b, 0) / size), maxPct: round1(Math.max(...cpuPct)) }
    const perPeer = (total: number): number => Math.round(total / seconds / size)
    const traffic = {
      windowS: Math.round(seconds),
      heartbeatPayloadOutBps: perPeer(c1.out - c0.out),
      heartbeatPayloadInBps: perPeer(c1.in - c0.in),
      processWriteBps: perPeer(io1.reduce((sum, io, i) => sum + io.write - (io0[i]?.write ?? 0), 0)),
      processReadBps: perPeer(io1.reduce((sum, io, i) => sum + io.read - (io0[i]?.read ?? 0), 0))
    }
    log(`  traffic per peer: heartbeat payload out ${traffic.heartbeatPayloadOutBps} B/s, in ${traffic.heartbeatPayloadInBps} B/s; process write ${traffic.processWriteBps} B/s`)
    log(`  idle CPU per peer: ${idleCpu.meanPct} % of a core (max ${idleCpu.maxPct} %), ${round1(idleCpu.meanPct * size)} % in all`)

    const killSamples: number[] = []
    const killRounds: number[] = []
    for (let round = 0; round < rounds; round++) {
      const index = 1 + (round % (size - 1))
      const victim = peers[index] as PeerHandle
      const observers = peers.filter(p => p !== victim)
      const killedAt = Date.now()
      victim.kill('SIGKILL')
      const times = (await transitionTimes(observers, victim.peerId, 'dead', 60_000)).map(at => at - killedAt)
      await victim.exited
      killSamples.push(...times)
      killRounds.push(Math.max(...times))
      const restarted = await respawnPeer(victim, { ...options, bootstrap: (peers[0] as PeerHandle).addrs })
      peers[index] = restarted
      await waitFor('the restarted peer to be alive everywhere', async () => await allSee(peers, 'alive'), 120_000, 150)
      windows.push({ peerId: victim.peerId, from: killedAt, to: Date.now() })
      log(`  SIGKILL round ${round + 1}/${rounds}: dead on all ${observers.length} others after ${Math.max(...times)} ms (median ${distribution(times).p50} ms)`)
    }

    const stopSamples: number[] = []
    const stopRounds: number[] = []
    for (let round = 0; round < rounds; round++) {
      const victim = peers[1 + (round % (size - 1))] as PeerHandle
      const observers = peers.filter(p => p !== victim)
      const stoppedAt = Date.now()
      victim.kill('SIGSTOP')
      let times: number[]
      try {
        times = (await transitionTimes(observers, victim.peerId, 'dead', 60_000)).map(at => at - stoppedAt)
      } finally {
        victim.kill('SIGCONT')
      }
      stopSamples.push(...times)
      stopRounds.push(Math.max(...times))
      await waitFor('the resumed peer to be alive everywhere', async () => await allSee(peers, 'alive'), 120_000, 150)
      windows.push({ peerId: victim.peerId, from: stoppedAt, to: Date.now() })
      log(`  SIGSTOP round ${round + 1}/${rounds}: dead on all ${observers.length} others after ${Math.max(...times)} ms (median ${distribution(times).p50} ms)`)
    }
    await sleep(1000)
    const verdicts = classify(await collectEvents(peers), windows)
    for (const e of verdicts.falseDead.slice(0, 10)) log(`  false dead: ${e.observer.slice(-8)} saw ${e.peerId.slice(-8)} dead ${e.at - convergedWallMs} ms after convergence (${e.reason})`)
    return {
      peers: size,
      convergenceMs: Math.round(convergedAt - readyAt),
      startupToConvergedMs: Math.round(convergedAt - spawnStarted),
      sigkill: { perObserver: distribution(killSamples), allObservers: distribution(killRounds), rounds },
      sigstop: { perObserver: distribution(stopSamples), allObservers: distribution(stopRounds), rounds },
      falseDead: verdicts.falseDead.length,
      falseDeadEvents: verdicts.falseDead.slice(0, 50).map(e => ({ observer: e.observer.slice(-8), peerId: e.peerId.slice(-8), reason: e.reason, afterConvergedMs: e.at - convergedWallMs })),
      suspectsRecovered: verdicts.suspectsRecovered,
      traffic,
      idleCpu
    }
  } finally {
    await stopAllPeers()
    await rm(dir, { recursive: true, force: true })
  }
}

async function soak (minutes: number, log: (line: string) => void): Promise<SoakResult> {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-soak-'))
  const swarmKey = join(dir, 'swarm.key')
  await writeFile(swarmKey, generateSwarmKey())
  const hogs: ChildProcess[] = []
  try {
    const peers = await spawnSwarm(5, { swarmKey, readyTimeoutMs: 120_000 })
    await waitFor('convergence', async () => await allSee(peers, 'alive'), 120_000, 100)
    const hogCount = availableParallelism()
    for (let i = 0; i < hogCount; i++) hogs.push(spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }))
    log(`  soak: 5 peers, ${hogCount} CPU hog processes, ${minutes} min`)
    const until = performance.now() + minutes * 60_000
    let maxHealthScore = 0
    let pauses = 0
    while (performance.now() < until) {
      await sleep(Math.min(10_000, Math.max(0, until - performance.now())))
      const statuses = await Promise.all(peers.map(async peer => await peer.status({ signal: AbortSignal.timeout(20_000) })))
      maxHealthScore = Math.max(maxHealthScore, ...statuses.map(s => s.self.healthScore))
      pauses = statuses.reduce((sum, s) => sum + s.counters.pauses, 0)
      const dead = statuses.flatMap(s => s.peers.filter(p => p.state !== 'alive').map(p => p.state))
      log(`  soak: ${Math.round((until - performance.now()) / 1000)} s left, non-alive now: ${dead.length === 0 ? 'none' : dead.join(',')}, max health score ${maxHealthScore}`)
    }
    for (const hog of hogs) hog.kill('SIGKILL')
    const events = await collectEvents(peers)
    return {
      peers: 5,
      minutes,
      hogs: hogCount,
      falseDead: events.filter(e => e.state === 'dead').length,
      suspects: events.filter(e => e.state === 'suspect').length,
      maxHealthScore,
      pauses,
      deadEvents: events.filter(e => e.state === 'dead').map(e => ({ observer: e.observer.slice(-8), peerId: e.peerId.slice(-8), reason: e.reason, at: new Date(e.at).toISOString() }))
    }
  } finally {
    for (const hog of hogs) hog.kill('SIGKILL')
    await stopAllPeers()
    await rm(dir, { recursive: true, force: true })
  }
}

function round1 (n: number): number { return Math.round(n * 10) / 10 }

function fmt (d: Distribution): string { return `${d.p50 ?? '-'} / ${d.p99 ?? '-'}` }

const USAGE = 'usage: node bench/swarm.ts [--quick] [--sizes 5,20] [--rounds N] [--soak [--soak-minutes M]] [--no-sizes]'

async function main (): Promise<void> {
  let values
  try {
    values = parseArgs({
      options: {
        quick: { type: 'boolean' },
        soak: { type: 'boolean' },
        sizes: { type: 'string' },
        rounds: { type: 'string' },
        'soak-minutes': { type: 'string' },
        'no-sizes': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' }
      }
    }).values
  } catch (err) {
    console.error(`bench:swarm: ${(err as Error).message}\n${USAGE}`)
    process.exitCode = 2
    return
  }
  if (values.help === true) { console.log(USAGE); return }
  const quick = values.quick === true
  const sizes = values['no-sizes'] === true ? [] : (values.sizes ?? (quick ? '5' : '5,20')).split(',').map(Number)
  const rounds = Number(values.rounds ?? (quick ? 3 : 10))
  const soakMinutes = Number(values['soak-minutes'] ?? (quick ? 1 : 10))
  if (sizes.some(n => !Number.isInteger(n) || n < 2) || !Number.isInteger(rounds) || rounds < 0 || !(soakMinutes > 0)) {
    console.error(USAGE)
    process.exitCode = 2
    return
  }
  const log = (line: string): void => { console.log(line) }
  const onSignal = (): void => { void stopAllPeers().finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  const results: SizeResult[] = []
  const failures: Array<{ peers: number, error: string }> = []
  for (const size of sizes) {
    log(`swarm of ${size} peers, ${rounds} rounds per fault`)
    try {
      results.push(await benchSize(size, rounds, quick ? 5 : 10, log))
    } catch (err) {
      log(`  ${size} peers: FAILED: ${(err as Error).message}`)
      failures.push({ peers: size, error: (err as Error).message })
    }
  }
  const soakResult = values.soak === true ? await soak(soakMinutes, log) : null

  console.log('\n| peers | converge ms | SIGKILL dead p50/p99 ms (per observer) | SIGKILL all-others p50/p99 | SIGSTOP dead p50/p99 (per observer) | SIGSTOP all-others p50/p99 | false dead | suspects recovered | heartbeat B/s out/in per peer | process write B/s per peer | idle CPU % per peer (mean / max) |')
  console.log('|---|---|---|---|---|---|---|---|---|---|---|')
  for (const r of results) {
    console.log(`| ${r.peers} | ${r.convergenceMs} | ${fmt(r.sigkill.perObserver)} | ${fmt(r.sigkill.allObservers)} | ${fmt(r.sigstop.perObserver)} | ${fmt(r.sigstop.allObservers)} | ${r.falseDead} | ${r.suspectsRecovered} | ${r.traffic.heartbeatPayloadOutBps} / ${r.traffic.heartbeatPayloadInBps} | ${r.traffic.processWriteBps} | ${r.idleCpu.meanPct} / ${r.idleCpu.maxPct} |`)
  }
  if (soakResult != null) {
    console.log(`\nsoak: ${soakResult.peers} peers, ${soakResult.minutes} min, ${soakResult.hogs} CPU hogs: false dead ${soakResult.falseDead}, suspicions ${soakResult.suspects}, max local health score ${soakResult.maxHealthScore}, pauses ${soakResult.pauses}`)
  }
  const file = await writeResults('swarm', {
    date: new Date().toISOString(),
    host: { cpus: cpus().length, model: cpus()[0]?.model ?? null, node: process.version },
    options: { quick, sizes, rounds, soak: values.soak === true, soakMinutes },
    failureDetector: DEFAULT_FAILURE_DETECTOR,
    targets: { sigkillAllOthersP99Ms: 1000, sigstopAllOthersP99Ms: 1500, soakFalseDead: 0 },
    results,
    failures,
    soak: soakResult
  })
  for (const failure of failures) console.log(`\n${failure.peers} peers failed: ${failure.error}`)
  console.log(`\nwrote ${file}`)
  if (failures.length > 0) process.exitCode = 1
}

main().catch(async err => {
  console.error(`bench: ${(err as Error).stack ?? String(err)}`)
  await stopAllPeers()
  process.exitCode = 1
})
