// `npm run chaos -- --minutes M --seed S`: a Jepsen-style run on simulated boards (real peers, Docker, CRIU). A
// nemesis injects a fault every ~10 s and heals it; every container's output ever produced is recorded and checked:
// no two copies of the mission report at once (3+ boards, one tick tolerated), the vehicle's state never goes back by
// more than one checkpoint interval, the mission runs again within a bound after each heal, no epoch storm.
import { parseArgs } from 'node:util'
import { createWriteStream, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { startMissionSwarm, type MissionSwarm } from '../harness/mission-swarm.ts'
import { sleep } from '../harness/observe.ts'
import { samplesOf } from '../demo/vehicle-log.ts'
import { Random } from '../harness/consensus-simulator.ts'
import { TICK_INTERVAL_MS } from '../examples/vehicle/controller.js'
import type { MissionStatus } from '../peer/missions/index.ts'
import { distribution, RESULTS_DIR, table, writeResults } from '../bench/report.ts'
import { DISK_FAULT_KINDS, FAULT_KINDS, PARTITION_KINDS, inject, type FaultKind, type InjectedFault } from './nemesis.ts'
import { leaseValidityMs } from '../peer/watchdog.ts'
import { longestSilence, overlaps, promisedTicks as promisedTicksOf, regressions, spansOf } from './history.ts'

const CHECKPOINT_INTERVAL_MS = 1000
/** The most ticks a failover may lose: one checkpoint interval (and one tick of report resolution). */
const MAX_TICKS_LOST = CHECKPOINT_INTERVAL_MS / TICK_INTERVAL_MS + 1
/** The chaos vehicle reports every tick: the promise is one interval, or the status's bound plus one tick. */
const PROMISE = { floorTicks: MAX_TICKS_LOST, resolutionTicks: 1 }
/**
 * A daemon-only freeze leaves the container running, unchecked, until the watchdog's lease lapses (its validity,
 * 650 ms): that work is lost too. The guarantee for that fault is one interval plus the lease validity.
 */
const MAX_TICKS_LOST_DAEMON_FREEZE = MAX_TICKS_LOST + Math.ceil(leaseValidityMs() / TICK_INTERVAL_MS)
/**
 * A primary cut off from its majority runs on, like a frozen daemon's container, until the watchdog's lease lapses
 * (650 ms after it last heard a majority, which is before the cut): that work is lost with the minority. What the
 * takeover resumes from is held to the status's promise at the cut on its own (`isolationRegressions`).
 */
const RUNS_ON_UNTIL_THE_LEASE: ReadonlySet<FaultKind> = new Set(['daemon-freeze', 'partition-primary', 'partition-flap'])
/** The watchdog checks its lease every 20 ms and freezes at once; one report may be in flight. */
const FENCE_MARGIN_MS = 20 + TICK_INTERVAL_MS
/** How long after a cut a primary cut off from its majority may still report: its lease validity, and the margin. */
export const MINORITY_FENCE_BOUND_MS = leaseValidityMs() + FENCE_MARGIN_MS
const RECOVERY_BOUND_MS = 30_000
/** Each board's own tmpfs disk when a fault fills one (TANDEM_CHAOS_DISK_BYTES overrides; a board holds ~0.3-0.5 GB). */
const BOARD_DISK_BYTES = Number(process.env.TANDEM_CHAOS_DISK_BYTES ?? 1536 * 1024 * 1024)
/** More epochs than this per failure (a takeover, a new backup, a rejoin) is a storm. */
const EPOCHS_PER_FAILURE = 3

export interface ChaosOptions {
  seed: number
  boards: number
  /** Run for this long, faults back to back; or `kinds` once each when `once`. */
  minutes: number
  once: boolean
  kinds: readonly FaultKind[]
  log: (line: string) => void
  /** Every line every peer printed goes to this file (the diagnosis of a violation needs the whole story). */
  peerLogFile?: string
}

export interface FaultRecord {
  kind: FaultKind
  boards: string[]
  detail: string
  injectedAt: number
  healedAt: number
  /** From the heal to the mission reporting again with exactly one container, ms; null: not within the bound. */
  recoveryMs: number | null
  /** The longest time without any report of the mission from the injection to the recovery, ms. */
  outageMs: number
  epochs: number
  /** What the primary's status promised just before the fault: the loss it may cause (null: not protected, nothing promised). */
  promised: { ticks: number | null, checkpointSeq: number | null, replicatedSeq: number | null, checkpointAgeMs: number | null, stalenessBoundMs: number | null }
  overlaps: string[]
  regressions: string[]
  /** What the primary's status said during the fault (polled every 500 ms). */
  protection: ProtectionSeen
  /** How much of the fault's hold the vehicle advanced, % of its 50 ticks a second (checkpoint pauses and outages cost it). */
  progressPercent: number | null
  /** The most ticks any takeover in the window resumed behind its predecessor's last report. */
  ticksLost: number
  /** The mission events every board reported from the injection on, `+ms board: text`. */
  events: string[]
}

export interface ChaosResult { seed: number, boards: number, faults: FaultRecord[], violations: string[] }

/**
 * The mission runs as one container (and is protected, if asked). Before a fault also every board is back in its
 * view (a rejoin still pending counted its epoch towards the next fault: an epoch "storm" of 4 for one power cut),
 * and every board has adopted its epoch (seed 27: a board still on an older epoch 7 s after a flap claimed the next
 * number just as the next fault began, and that fault counted 4 epochs for one failure).
 */
async function steady (ms: MissionSwarm, beforeFault: boolean): Promise<MissionStatus | undefined> {
  const status = await ms.anyStatus()
  if (status?.state !== 'running' || (beforeFault && (!status.protected || status.view.length < ms.boards.length))) return undefined
  if (beforeFault && (await Promise.all(ms.boards.map(async board => await ms.status(board)))).some(s => s?.epoch !== status.epoch)) return undefined
  const running = await ms.running()
  return running.length === 1 ? status : undefined
}

export async function runChaos (options: ChaosOptions): Promise<ChaosResult> {
  const rng = new Random(options.seed)
  const { log } = options
  log(`chaos: seed ${options.seed}, ${options.boards} boards, ${options.once ? `each of ${options.kinds.join(', ')} once` : `${options.minutes} min`}`)
  const peerLog = options.peerLogFile == null ? undefined : createWriteStream(options.peerLogFile)
  const netns = options.kinds.some(kind => PARTITION_KINDS.has(kind))
  const ms = await startMissionSwarm(options.boards, {
    reportEveryTicks: 1,
    checkpointIntervalMs: CHECKPOINT_INTERVAL_MS,
    netns,
    diskBytes: options.kinds.some(k => DISK_FAULT_KINDS.includes(k)) ? BOARD_DISK_BYTES : undefined,
    onLine: peerLog == null ? undefined : (board, line) => { peerLog.write(`[${board}] ${line}\n`) }
  })
  const faults: FaultRecord[] = []
  const violations: string[] = []
  try {
    const deadline = Date.now() + options.minutes * 60_000
    const queue = options.once ? [...options.kinds].sort(() => rng.next() - 0.5) : []
    while (options.once ? queue.length > 0 : Date.now() < deadline) {
      const before = await ms.waitFor('a steady, protected mission before the next fault', async () => await steady(ms, true), 90_000).catch(() => undefined)
      if (before == null) { violations.push('the mission was not steady and protected within 90 s before a fault'); break }
      await sleep(rng.int(1000, 4000))
      const status = (await steady(ms, true)) ?? before
      const kind = options.once ? queue.shift()! : rng.pick(options.kinds)
      // The loss a failure may cause is what the primary's status promises: one interval while replication keeps up,
      // its reported bound when a loaded board cannot (the status says so: withinInterval false).
      let promisedBefore: number | null = promisedTicksOf(status.protection.stalenessBoundMs, PROMISE)
      const injectedAt = Date.now()
      const fault = await inject(kind, { ms, status, rng })
      if (fault.statusAtFailure != null) {
        // A failure some time into the fault: what the primary's status promised then. Not protected: no promise.
        const then = fault.statusAtFailure
        promisedBefore = then.protected ? promisedTicksOf(then.protection.stalenessBoundMs, PROMISE) : null
        if (promisedBefore == null) log(`chaos: ${kind}: the status said not protected before the failure (${then.protection.reason ?? '?'}): its loss is not judged`)
      }
      log(`chaos: ${kind}: ${fault.detail}`)
      peerLog?.write(`---- chaos: ${new Date(injectedAt).toISOString()} ${kind}: ${fault.detail}\n`)
      const protection = await watchProtection(ms, fault.holdMs)
      await fault.heal()
      const healedAt = Date.now()
      // A board slowed down during the fault says so in its status (withinInterval false, and its bound): its promise.
      const promisedTicks = promisedBefore == null || kind !== 'slow-board' ? promisedBefore : Math.max(promisedBefore, promisedTicksOf(protection.maxStalenessBoundMs, PROMISE))
      const recovered = await ms.waitFor('the mission to run again', async () => {
        const s = await steady(ms, false)
        // A report after the heal, by the one running container.
        return s != null && ms.logs.containers().some(c => samplesOf(c.entries).some(r => r.wall > healedAt)) ? s : undefined
      }, RECOVERY_BOUND_MS).catch(async (err: Error) => {
        log(`chaos: ${kind}: not recovered; containers running: ${JSON.stringify(await ms.running().catch(() => []))}\n${err.message}`)
        return undefined
      })
      const recoveredAt = recovered != null ? Date.now() : null
      await sleep(2000)
      const after = await ms.anyStatus()
      const inWindow = ms.logs.containers().filter(c => samplesOf(c.entries).some(r => r.wall >= injectedAt - 2000))
      const record: FaultRecord = {
        kind,
        boards: fault.boards,
        detail: fault.detail,
        injectedAt,
        healedAt,
        recoveryMs: recoveredAt == null ? null : recoveredAt - healedAt,
        outageMs: longestSilence(inWindow, injectedAt, recoveredAt ?? Date.now()),
        epochs: (after?.epoch ?? status.epoch) - status.epoch,
        promised: {
          ticks: promisedTicks,
          checkpointSeq: status.lastCheckpoint?.seq ?? null,
          replicatedSeq: status.replicatedSeq,
          checkpointAgeMs: status.lastCheckpoint?.ageMs ?? null,
          stalenessBoundMs: status.protection.stalenessBoundMs
        },
        overlaps: overlaps(inWindow, TICK_INTERVAL_MS),
        // Not protected when the failure came: the status promised nothing, and the loss is not judged.
        regressions: promisedTicks == null ? [] : [
          ...regressions(inWindow, promisedTicks + (RUNS_ON_UNTIL_THE_LEASE.has(kind) ? MAX_TICKS_LOST_DAEMON_FREEZE - MAX_TICKS_LOST : 0)),
          ...isolationRegressions(ms, fault, promisedTicks)
        ],
        ticksLost: ticksLost(inWindow),
        progressPercent: progressDuring(inWindow, injectedAt, healedAt),
        protection,
        events: await eventsSince(ms, injectedAt)
      }
      const unfenced = unfencedMinority(ms, fault)
      faults.push(record)
      log(`chaos: ${kind}: outage ${record.outageMs} ms, recovered ${record.recoveryMs ?? 'NOT'} ms after the heal, ${record.epochs} epochs, ${record.ticksLost} ticks lost (promised ${promisedTicks}), ` +
        `the vehicle advanced ${record.progressPercent ?? '-'} % of the time; ` +
        `status during the fault: ${protection.notWithinInterval} of ${protection.samples} samples not within the interval, bound up to ${protection.maxStalenessBoundMs} ms, checkpoints up to ${protection.maxTakeMs} ms (paused up to ${protection.maxPausedMs} ms)` +
        `${record.overlaps.length > 0 ? `, OVERLAP ${record.overlaps.join('; ')}` : ''}${record.regressions.length > 0 ? `, REGRESSION ${record.regressions.join('; ')}` : ''}`)
      for (const line of record.events) log(`chaos:   ${line}`)
      if (record.overlaps.length > 0 || record.regressions.length > 0) {
        // What the peers said around it, for the diagnosis.
        log(`chaos: peer output around the ${kind}:\n${ms.output.filter(line => /mission|watchdog|fence|lease|froze|killed/.test(line)).slice(-80).join('\n')}`)
      }
      if (fault.violation != null) violations.push(`${kind}: ${fault.violation}`)
      if (record.recoveryMs == null) violations.push(`${kind} (${fault.detail}): the mission did not run again within ${RECOVERY_BOUND_MS / 1000} s of the heal`)
      if (record.epochs > EPOCHS_PER_FAILURE * fault.failures) violations.push(`${kind} (${fault.detail}): ${record.epochs} epochs for ${fault.failures} failure${fault.failures === 1 ? '' : 's'} (an epoch storm)`)
      for (const o of record.overlaps) violations.push(`${kind}: two copies at once: ${o}`)
      for (const u of unfenced) violations.push(`${kind}: the minority primary did not fence within its lease: ${u}`)
      for (const r of record.regressions) violations.push(`${kind}: state went back: ${r}`)
      if (record.recoveryMs == null) break
    }
    // The whole history once more, beyond the fault windows.
    const all = ms.logs.containers()
    for (const o of overlaps(all, TICK_INTERVAL_MS)) if (!violations.some(v => v.includes(o))) violations.push(`two copies at once: ${o}`)
    // Per-fault bounds (what the status promised) were checked above; the whole run is not judged again.
    log(`chaos: ${spansOf(all).length} containers reported over the run`)
  } finally {
    // Every peer's output (the newest lines), for a diagnosis after the run.
    if (process.env.TANDEM_CHAOS_OUTPUT != null) await writeFile(process.env.TANDEM_CHAOS_OUTPUT, ms.output.join('\n') + '\n').catch(() => {})
    await ms.stop()
    peerLog?.end()
  }
  return { seed: options.seed, boards: options.boards, faults, violations }
}

interface ProtectionSeen { samples: number, notWithinInterval: number, maxStalenessBoundMs: number, maxTakeMs: number, maxPausedMs: number }

/** Polls the primary's protection while a fault holds: how often it said it was not within its interval, and its worst bound. */
async function watchProtection (ms: MissionSwarm, holdMs: number): Promise<ProtectionSeen> {
  const seen: ProtectionSeen = { samples: 0, notWithinInterval: 0, maxStalenessBoundMs: 0, maxTakeMs: 0, maxPausedMs: 0 }
  const until = Date.now() + holdMs
  while (Date.now() < until) {
    const s = await ms.anyStatus().catch(() => undefined)
    if (s?.role === 'primary' && s.protection.withinInterval != null) {
      seen.samples++
      if (!s.protection.withinInterval) seen.notWithinInterval++
      seen.maxStalenessBoundMs = Math.max(seen.maxStalenessBoundMs, s.protection.stalenessBoundMs ?? 0)
      seen.maxTakeMs = Math.max(seen.maxTakeMs, s.lastTake?.totalMs ?? 0)
      seen.maxPausedMs = Math.max(seen.maxPausedMs, s.lastTake?.pausedMs ?? 0)
    }
    await sleep(Math.min(500, Math.max(0, until - Date.now())))
  }
  return seen
}

function progressDuring (containers: Parameters<typeof spansOf>[0], from: number, to: number): number | null {
  if (to - from < 1000) return null
  const ticks = containers.flatMap(c => samplesOf(c.entries)).filter(s => s.wall >= from && s.wall <= to).map(s => s.tick)
  if (ticks.length < 2) return 0
  return Math.round((Math.max(...ticks) - Math.min(...ticks)) / ((to - from) / TICK_INTERVAL_MS) * 100)
}

function ticksLost (containers: Parameters<typeof spansOf>[0]): number {
  const spans = spansOf(containers)
  return Math.max(0, ...spans.slice(1).map((span, i) => (spans[i] as typeof span).last.tick - span.first.tick))
}

/** Every mission event any powered board knows from `from` on, in order, peers named by board. */
async function eventsSince (ms: MissionSwarm, from: number): Promise<string[]> {
  const seen = new Map<string, { at: number, line: string }>()
  for (const board of ms.boards.filter(b => b.isOn)) {
    for (const e of (await ms.status(board).catch(() => undefined))?.events ?? []) {
      if (e.at < from) continue
      let text = e.text
      for (const b of ms.boards) { try { text = text.split(b.peerId.slice(-6)).join(b.name) } catch {} }
      seen.set(`${e.board}|${e.at}|${e.text}`, { at: e.at, line: `+${e.at - from} ms ${ms.boardOf(e.board)?.name ?? e.board.slice(-6)}: ${text}` })
    }
  }
  return [...seen.values()].sort((a, b) => a.at - b.at).map(e => e.line)
}

/** Cut for longer than its lease, the isolated primary's container reported later than the lease allows. */
function unfencedMinority (ms: MissionSwarm, fault: InjectedFault): string[] {
  const isolated = fault.isolatedPrimary
  if (isolated == null) return []
  const samples = samplesOf(ms.logs.get(isolated.containerId)?.entries ?? [])
  const bound = MINORITY_FENCE_BOUND_MS
  return isolated.cuts.filter(cut => cut.to - cut.from > bound).flatMap(cut => {
    const late = samples.find(s => s.wall > cut.from + bound)
    return late == null ? [] : [`container ${isolated.containerId.slice(0, 12)} reported tick ${late.tick} ${late.wall - cut.from} ms after the cut (lease ${leaseValidityMs()} ms)`]
  })
}

/**
 * After a primary was cut off: every container that started after the cut resumed no further back than the status
 * promised from the old primary's last report before the cut (its run-on in the minority is lost, bounded above).
 */
function isolationRegressions (ms: MissionSwarm, fault: InjectedFault, promisedTicks: number): string[] {
  const isolated = fault.isolatedPrimary
  const cut = isolated?.cuts[0]
  if (isolated == null || cut == null) return []
  const atCut = samplesOf(ms.logs.get(isolated.containerId)?.entries ?? []).filter(s => s.wall <= cut.from).at(-1)
  if (atCut == null) return []
  return ms.logs.containers().flatMap(c => {
    const first = samplesOf(c.entries)[0]
    if (c.id === isolated.containerId || first == null || first.wall < cut.from) return []
    const lost = atCut.tick - first.tick
    return lost > promisedTicks ? [`${c.board} (epoch ${c.epoch}) resumed at tick ${first.tick}, ${lost} ticks behind tick ${atCut.tick} reported at the cut (promised ${promisedTicks})`] : []
  })
}

export function summaryTable (result: ChaosResult): string {
  const rows: Array<Array<string | number | null>> = [['fault', 'runs', 'overlaps', 'longest overlap ms', 'regressions', 'ticks lost max', 'outage p50 ms', 'outage max ms', 'recovery p50 ms', 'recovery max ms', 'epochs max', 'not recovered']]
  for (const kind of FAULT_KINDS) {
    const runs = result.faults.filter(f => f.kind === kind)
    if (runs.length === 0) continue
    const outage = distribution(runs.map(f => f.outageMs))
    const recovery = distribution(runs.flatMap(f => f.recoveryMs ?? []))
    const longest = Math.max(0, ...runs.flatMap(f => f.overlaps.map(o => Number(/: (-?\d+) ms at once/.exec(o)?.[1] ?? 0))))
    rows.push([kind, runs.length, runs.reduce((n, f) => n + f.overlaps.length, 0), longest, runs.reduce((n, f) => n + f.regressions.length, 0), Math.max(...runs.map(f => f.ticksLost)),
      outage.p50, outage.max, recovery.p50, recovery.max, Math.max(...runs.map(f => f.epochs)), runs.filter(f => f.recoveryMs == null).length])
  }
  return table(rows)
}

const USAGE = `usage: npm run chaos -- [--minutes M] [--seed S] [--boards N] [--once] [--faults a,b,...]

  --minutes M   how long to inject faults (default 10)
  --seed S      the nemesis's choices and timings (default: from the clock; printed)
  --boards N    simulated boards, 3 to 5 (default 3)
  --once        each fault kind once, in a seeded order, then stop (what CI runs)
  --faults      kinds to use (default all): ${FAULT_KINDS.join(', ')}`

async function main (): Promise<number> {
  let values
  try {
    values = parseArgs({ options: { minutes: { type: 'string' }, seed: { type: 'string' }, boards: { type: 'string' }, once: { type: 'boolean' }, faults: { type: 'string' }, help: { type: 'boolean' } } }).values
  } catch (err) {
    console.error(`chaos: ${(err as Error).message}\n${USAGE}`)
    return 2
  }
  if (values.help === true) { console.log(USAGE); return 0 }
  const minutes = Number(values.minutes ?? 10)
  const seed = Number(values.seed ?? Date.now() % 1_000_000)
  const boards = Number(values.boards ?? 3)
  const kinds = (values.faults?.split(',') ?? [...FAULT_KINDS]) as FaultKind[]
  const bad = kinds.find(k => !(FAULT_KINDS as readonly string[]).includes(k))
  if (!(minutes > 0) || !Number.isInteger(seed) || !Number.isInteger(boards) || boards < 3 || boards > 5 || bad != null) {
    console.error(`chaos: bad ${bad != null ? `fault kind '${bad}'` : '--minutes, --seed or --boards'}\n${USAGE}`)
    return 2
  }
  if (process.getuid?.() !== 0) { console.error('chaos: needs root (one Docker daemon per simulated board, CRIU)'); return 1 }
  mkdirSync(RESULTS_DIR, { recursive: true })
  const peerLogFile = join(RESULTS_DIR, `chaos-${seed}-${new Date().toISOString().replace(/[:.]/g, '-')}.log`)
  console.log(`chaos: every peer's output goes to ${peerLogFile}`)
  const result = await runChaos({ seed, boards, minutes, once: values.once === true, kinds, peerLogFile, log: line => { console.log(line) } })
  console.log(`\n${summaryTable(result)}\n`)
  console.log(result.violations.length === 0 ? `no violation in ${result.faults.length} faults (seed ${seed})` : `${result.violations.length} violations (seed ${seed}):\n${result.violations.join('\n')}`)
  console.log(`results: ${await writeResults('chaos', result)}`)
  return result.violations.length === 0 ? 0 : 1
}

if (process.argv[1] === new URL(import.meta.url).pathname) {
  main().then(code => { process.exitCode = code }, err => {
    console.error(`chaos: ${(err as Error).stack ?? String(err)}`)
    process.exitCode = 1
  })
}
