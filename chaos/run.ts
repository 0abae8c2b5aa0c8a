// `npm run chaos -- --minutes M --seed S`: a Jepsen-style run on simulated boards (real peers, Docker, CRIU). A
// nemesis injects a fault every ~10 s and heals it; every container's output ever produced is recorded and checked:
// no two copies of the mission report at once (3+ boards, one tick tolerated), the vehicle's state never goes back by
// more than one checkpoint interval, the mission runs again within a bound after each heal, no epoch storm.
import { parseArgs } from 'node:util'
import { writeFile } from 'node:fs/promises'
import { startMissionSwarm, type MissionSwarm } from '../demo/mission-swarm.ts'
import { sleep } from '../demo/observe.ts'
import { samplesOf } from '../demo/vehicle-log.ts'
import { Random } from '../consensus/simulator.ts'
import { TICK_INTERVAL_MS } from '../examples/vehicle/controller.js'
import type { MissionStatus } from '../peer/missions.ts'
import { distribution, table, writeResults } from '../bench/report.ts'
import { DISK_FAULT_KINDS, FAULT_KINDS, inject, type FaultKind } from './nemesis.ts'
import { leaseValidityMs } from '../peer/watchdog.ts'
import { longestSilence, overlaps, regressions, spansOf } from './history.ts'

const CHECKPOINT_INTERVAL_MS = 1000
/** The most ticks a failover may lose: one checkpoint interval (and one tick of report resolution). */
const MAX_TICKS_LOST = CHECKPOINT_INTERVAL_MS / TICK_INTERVAL_MS + 1
/**
 * A daemon-only freeze leaves the container running, unchecked, until the watchdog's lease lapses (its validity,
 * 650 ms): that work is lost too. The guarantee for that fault is one interval plus the lease validity.
 */
const MAX_TICKS_LOST_DAEMON_FREEZE = MAX_TICKS_LOST + Math.ceil(leaseValidityMs() / TICK_INTERVAL_MS)
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
  overlaps: string[]
  regressions: string[]
}

export interface ChaosResult { seed: number, boards: number, faults: FaultRecord[], violations: string[] }

/** The mission runs with one container (and, before a fault, is protected). */
async function steady (ms: MissionSwarm, needProtected: boolean): Promise<MissionStatus | undefined> {
  const status = await ms.anyStatus()
  if (status?.state !== 'running' || (needProtected && !status.protected)) return undefined
  const running = await ms.running()
  return running.length === 1 ? status : undefined
}

export async function runChaos (options: ChaosOptions): Promise<ChaosResult> {
  const rng = new Random(options.seed)
  const { log } = options
  log(`chaos: seed ${options.seed}, ${options.boards} boards, ${options.once ? `each of ${options.kinds.join(', ')} once` : `${options.minutes} min`}`)
  const ms = await startMissionSwarm(options.boards, {
    reportEveryTicks: 1,
    checkpointIntervalMs: CHECKPOINT_INTERVAL_MS,
    diskBytes: options.kinds.some(k => DISK_FAULT_KINDS.includes(k)) ? BOARD_DISK_BYTES : undefined
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
      let promisedTicks: number | null = Math.max(MAX_TICKS_LOST, Math.ceil((status.protection.stalenessBoundMs ?? 0) / TICK_INTERVAL_MS) + 1)
      const injectedAt = Date.now()
      const fault = await inject(kind, { ms, status, rng })
      if (fault.statusAtFailure != null) {
        // A failure some time into the fault: what the primary's status promised then. Not protected: no promise.
        const then = fault.statusAtFailure
        promisedTicks = then.protected ? Math.max(MAX_TICKS_LOST, Math.ceil((then.protection.stalenessBoundMs ?? 0) / TICK_INTERVAL_MS) + 1) : null
        if (promisedTicks == null) log(`chaos: ${kind}: the status said not protected before the failure (${then.protection.reason ?? '?'}): its loss is not judged`)
      }
      log(`chaos: ${kind}: ${fault.detail}`)
      await sleep(fault.holdMs)
      await fault.heal()
      const healedAt = Date.now()
      const recovered = await ms.waitFor('the mission to run again', async () => {
        const s = await steady(ms, false)
        // A report after the heal, by the one running container.
        return s != null && ms.logs.containers().some(c => samplesOf(c.entries).some(r => r.wall > healedAt)) ? s : undefined
      }, RECOVERY_BOUND_MS).catch(() => undefined)
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
        overlaps: overlaps(inWindow, TICK_INTERVAL_MS),
        regressions: promisedTicks == null ? [] : regressions(inWindow, promisedTicks + (kind === 'daemon-freeze' ? MAX_TICKS_LOST_DAEMON_FREEZE - MAX_TICKS_LOST : 0))
      }
      faults.push(record)
      log(`chaos: ${kind}: outage ${record.outageMs} ms, recovered ${record.recoveryMs ?? 'NOT'} ms after the heal, ${record.epochs} epochs` +
        `${record.overlaps.length > 0 ? `, OVERLAP ${record.overlaps.join('; ')}` : ''}${record.regressions.length > 0 ? `, REGRESSION ${record.regressions.join('; ')}` : ''}`)
      if (record.overlaps.length > 0 || record.regressions.length > 0) {
        // What the peers said around it, for the diagnosis.
        log(`chaos: peer output around the ${kind}:\n${ms.output.filter(line => /mission|watchdog|fence|lease|froze|killed/.test(line)).slice(-80).join('\n')}`)
      }
      if (record.recoveryMs == null) violations.push(`${kind} (${fault.detail}): the mission did not run again within ${RECOVERY_BOUND_MS / 1000} s of the heal`)
      if (record.epochs > EPOCHS_PER_FAILURE * fault.failures) violations.push(`${kind} (${fault.detail}): ${record.epochs} epochs for ${fault.failures} failure${fault.failures === 1 ? '' : 's'} (an epoch storm)`)
      for (const o of record.overlaps) violations.push(`${kind}: two copies at once: ${o}`)
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
  }
  return { seed: options.seed, boards: options.boards, faults, violations }
}

export function summaryTable (result: ChaosResult): string {
  const rows: Array<Array<string | number | null>> = [['fault', 'runs', 'overlaps', 'longest overlap ms', 'regressions', 'outage p50 ms', 'outage max ms', 'recovery p50 ms', 'recovery max ms', 'epochs max', 'not recovered']]
  for (const kind of FAULT_KINDS) {
    const runs = result.faults.filter(f => f.kind === kind)
    if (runs.length === 0) continue
    const outage = distribution(runs.map(f => f.outageMs))
    const recovery = distribution(runs.flatMap(f => f.recoveryMs ?? []))
    const longest = Math.max(0, ...runs.flatMap(f => f.overlaps.map(o => Number(/: (-?\d+) ms at once/.exec(o)?.[1] ?? 0))))
    rows.push([kind, runs.length, runs.reduce((n, f) => n + f.overlaps.length, 0), longest, runs.reduce((n, f) => n + f.regressions.length, 0),
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
  const result = await runChaos({ seed, boards, minutes, once: values.once === true, kinds, log: line => { console.log(line) } })
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
