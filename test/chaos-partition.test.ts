// Real partitions of a vehicle-mission swarm: every board's peer in its own network namespace (harness/netns.ts),
// links cut with iptables DROP. Scenarios: the primary alone in a minority, the backup alone, a bridge partition
// (primary and backup cannot see each other, both see the spare), and two boards split. Every scenario prints the
// time the mission was down (from the vehicle's own reports) and the epochs claimed; the safety properties (no two
// copies at once, no state regression beyond one checkpoint interval) are checked on the whole recorded history.
import t, { type Test } from 'tap'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { startMissionSwarm, type MissionSwarm } from '../harness/mission-swarm.ts'
import { lastRestore, sleep, type FollowedContainer } from '../harness/observe.ts'
import { samplesOf } from '../demo/vehicle-log.ts'
import type { MissionEvent } from '../peer/mission-events.ts'
import type { MissionStatus } from '../peer/missions/index.ts'
import type { SimulatedBoard } from '../harness/simulated-board.ts'
import { gateDockerCriu } from './checkpoint-helpers.ts'
import { gateOn } from './helpers/requirements.ts'
import { overlaps, promisedTicks, regressions } from '../chaos/history.ts'
import { MINORITY_FENCE_BOUND_MS } from '../chaos/run.ts'
import { TICK_INTERVAL_MS } from '../examples/vehicle/controller.js'

const PARTITION_MS = 15_000
/** One checkpoint interval (1 s = 50 ticks) plus the report resolution (10 ticks). */
const MAX_TICKS_LOST = 60

function netnsMissing (): string | null {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)'
  for (const tool of ['ip', 'iptables-restore', 'nsenter']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `no ${tool} on PATH`
  }
  return null
}

/** What the swarm did during a scenario: every mission event any board reported, and every epoch any board knew. */
class Recorder {
  readonly events = new Map<string, MissionEvent & { seenOn: string }>()
  readonly epochsKnown = new Set<number>()
  /** Most containers of the mission running at once, by Docker, on all boards (polled). */
  maxRunning = 0
  readonly #ms: MissionSwarm
  #timer: NodeJS.Timeout | undefined
  #busy = false

  constructor (ms: MissionSwarm) { this.#ms = ms }

  start (): this {
    this.#timer = setInterval(() => { void this.#poll() }, 250)
    return this
  }

  async stop (): Promise<void> {
    clearInterval(this.#timer)
    while (this.#busy) await sleep(20)
    await this.#poll()
  }

  async #poll (): Promise<void> {
    if (this.#busy) return
    this.#busy = true
    try {
      const statuses = await Promise.all(this.#ms.boards.map(async b => [b, await this.#ms.status(b)] as const))
      for (const [board, s] of statuses) {
        if (s == null) continue
        this.epochsKnown.add(s.epoch)
        for (const e of s.events) this.events.set(`${e.board}|${e.at}|${e.text}`, { ...e, seenOn: board.name })
      }
      this.maxRunning = Math.max(this.maxRunning, (await this.#ms.running()).length)
    } finally {
      this.#busy = false
    }
  }

  /** Events since `from` (wall clock), in order, as `+ms board: text`, with short peer ids replaced by board names. */
  timeline (from: number): string[] {
    return [...this.events.values()].filter(e => e.at >= from).sort((a, b) => a.at - b.at)
      .map(e => `+${e.at - from} ms ${this.#ms.boardOf(e.board)?.name ?? e.board.slice(-6)}: ${named(this.#ms, e.text)}`)
  }

  /** Epoch numbers claimed after `from` (from the `epoch N: ...` events of the winners). */
  claimed (from: number): number[] {
    const epochs = new Set<number>()
    for (const e of this.events.values()) {
      if ((e.event.kind === 'elected' || e.event.kind === 'reconfigured') && e.at >= from) epochs.add(e.event.epoch)
    }
    return [...epochs].sort((a, b) => a - b)
  }
}

/** The consensus names peers by the last 6 characters of their id: name them by board. */
function named (ms: MissionSwarm, text: string): string {
  let out = text
  for (const b of ms.boards) {
    try { out = out.split(b.peerId.slice(-6)).join(b.name) } catch {}
  }
  return out
}

/** Gaps in the vehicle's reports (all containers merged) between `from` and `to`: the time the mission was down. */
function downtime (ms: MissionSwarm, from: number, to: number): { totalMs: number, gaps: string[], failoverMs: number, pausesMs: number, pauses: number, longestPauseMs: number } {
  const samples = ms.logs.containers().flatMap(c => samplesOf(c.entries).map(s => ({ wall: s.wall, tick: s.tick, id: c.id, board: c.board, epoch: c.epoch })))
    .sort((a, b) => a.wall - b.wall)
  const inWindow = samples.filter(s => s.wall >= from - 1000 && s.wall <= to)
  let totalMs = 0
  let failoverMs = 0
  let pausesMs = 0
  let pauses = 0
  let longestPauseMs = 0
  const gaps: string[] = []
  // Reports come every 10 ticks = 200 ms; a gap over 500 ms is an outage. Within one container it is the container
  // paused for a checkpoint (CRIU dumps with the process frozen); from one container to another, a failover.
  for (let i = 1; i < inWindow.length; i++) {
    const a = inWindow[i - 1]!
    const b = inWindow[i]!
    const gap = b.wall - a.wall
    if (gap > 500) {
      totalMs += gap
      if (a.id === b.id) {
        pausesMs += gap
        pauses++
        longestPauseMs = Math.max(longestPauseMs, gap)
      } else {
        failoverMs += gap
        gaps.push(`${gap} ms from +${a.wall - from} ms (${a.board} e${a.epoch} tick ${a.tick} -> ${b.board} e${b.epoch} tick ${b.tick})`)
      }
    }
  }
  const last = inWindow.at(-1)
  if (last != null && to - last.wall > 500) {
    // Still open at the end of the window: a checkpoint pause or an outage, not known yet.
    totalMs += to - last.wall
    gaps.push(`open at the end: no report for the last ${to - last.wall} ms`)
  }
  return { totalMs, gaps, failoverMs, pausesMs, pauses, longestPauseMs }
}

/** A running, protected mission with a synced backup and exactly one container. */
/**
 * One primary with a synced backup, and every board back in the view: a cut of the backup while the previous heal's
 * rejoin was pending met a two-board view, where the backup may take over alone (CI: two copies in "backup alone").
 */
async function settled (ms: MissionSwarm, what: string, timeoutMs = 90_000): Promise<MissionStatus> {
  return await ms.waitFor(`${what}: one primary with a synced backup, every board in the view`, async () => {
    const s = await ms.anyStatus()
    if (s?.state !== 'running' || s.backup == null || s.replicatedSeq == null || s.container == null || s.view.length < ms.boards.length) return undefined
    const running = await ms.running()
    return running.length === 1 ? s : undefined
  }, timeoutMs)
}

/** Every board agrees on one epoch and primary, and exactly one container of the mission runs. */
async function converged (ms: MissionSwarm, what: string, timeoutMs = 60_000): Promise<MissionStatus> {
  return await ms.waitFor(`${what}: every board agrees, one container runs`, async () => {
    const views = await Promise.all(ms.boards.map(async b => await ms.status(b)))
    const first = views[0]
    if (first == null || views.some(v => v == null || v.epoch !== first.epoch || v.primary !== first.primary)) return undefined
    const running = await ms.running()
    const primary = views.find(v => v?.role === 'primary')
    return running.length === 1 && primary?.state === 'running' && primary.container != null ? primary : undefined
  }, timeoutMs)
}

function report (t: Test, name: string, rec: Recorder, ms: MissionSwarm, from: number, to: number, epochBefore: number, epochAfter: number): void {
  const down = downtime(ms, from, to)
  const claimed = rec.claimed(from)
  t.comment(`${name}: mission down ${down.totalMs} ms in ${to - from} ms: failover ${down.failoverMs} ms${down.gaps.length > 0 ? ` (${down.gaps.join('; ')})` : ''}; ` +
    `checkpoint pauses ${down.pausesMs} ms (${down.pauses} over 500 ms, longest ${down.longestPauseMs} ms)`)
  t.comment(`${name}: epochs ${epochBefore} -> ${epochAfter}; claimed ${claimed.length} (${claimed.join(', ')}); known on boards ${[...rec.epochsKnown].sort((a, b) => a - b).join(', ')}; at most ${rec.maxRunning} container(s) running at once (Docker, polled 250 ms)`)
  for (const line of rec.timeline(from)) t.comment(`  ${line}`)
}

/** The containers of a scenario: those that reported after `from` (the one running at the cut included). */
function containersSince (ms: MissionSwarm, from: number): FollowedContainer[] {
  return ms.logs.containers().filter(c => (samplesOf(c.entries).at(-1)?.wall ?? 0) >= from - 1000)
}

function checkHistory (t: Test, ms: MissionSwarm, name: string, from: number, maxTicksLost = MAX_TICKS_LOST): void {
  const found = overlaps(ms.logs.containers())
  t.same(found, [], `${name}: no two copies reported at once${found.length > 0 ? `: ${found.join('; ')}` : ''}`)
  const back = regressions(containersSince(ms, from), maxTicksLost)
  t.same(back, [], `${name}: the state never went back more than ${maxTicksLost} ticks${back.length > 0 ? `: ${back.join('; ')}` : ''}`)
}

/** Where the primary was at the cut: its newest checkpoint, what the backup acknowledged, the vehicle's tick. */
async function atCut (ms: MissionSwarm, primary: SimulatedBoard): Promise<string> {
  const s = await ms.status(primary)
  const tick = ms.logs.latest()?.tick
  return `at the cut: vehicle tick ${tick ?? '?'}, checkpoint #${s?.lastCheckpoint?.seq ?? '?'} (${s?.lastCheckpoint?.ageMs ?? '?'} ms old), ` +
    `replicated #${s?.replicatedSeq ?? '?'}, replication lag ${s?.replicationLagMs ?? '?'} ms, last take ${s?.lastTake?.totalMs ?? '?'} ms (paused ${s?.lastTake?.pausedMs ?? '?'} ms)`
}

/** Processes in a board's namespace: pid, parent and command line. */
function processesIn (board: SimulatedBoard): Array<{ pid: number, ppid: number, cmd: string }> {
  const r = spawnSync('ip', ['netns', 'pids', board.network!.ns], { encoding: 'utf8' })
  return r.stdout.split(/\s+/).filter(x => /^\d+$/.test(x)).map(Number).flatMap(pid => {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim()
      const ppid = Number(/PPid:\s*(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])
      return [{ pid, ppid, cmd }]
    } catch {
      return []
    }
  })
}

function roles (ms: MissionSwarm, s: MissionStatus): { primary: SimulatedBoard, backup: SimulatedBoard, spare: SimulatedBoard } {
  const primary = ms.boardOf(s.primary)!
  const backup = ms.boardOf(s.backup)!
  const spare = ms.boards.find(b => b !== primary && b !== backup)!
  return { primary, backup, spare }
}

if (gateDockerCriu(t) && gateOn(t, netnsMissing())) {
  let ms: MissionSwarm | undefined
  t.teardown(async () => { await ms?.stop() })

  t.test('three boards in namespaces', async t => {
    ms = await startMissionSwarm(3, { netns: true })
    const swarm = ms
    t.comment(`deployed to protected in ${Math.round(swarm.deployToProtectedMs)} ms; boards at ${swarm.boards.map(b => `${b.name} ${b.ip}`).join(', ')}`)
    for (const board of swarm.boards) {
      const inside = processesIn(board)
      const peerPid = board.peer!.pid
      t.ok(inside.some(p => p.pid === peerPid && p.cmd.includes('cli.ts')), `${board.name}: the peer (pid ${peerPid}) runs in ${board.network!.ns}`)
      t.ok(inside.some(p => p.ppid === peerPid && p.cmd.includes('watchdog.ts')), `${board.name}: its watchdog is its child there (${JSON.stringify(inside.map(p => p.cmd.split(' ').find(a => a.endsWith('.ts'))?.split('/').at(-1)))})`)
    }

    await t.test('primary alone: [primary] | [backup, spare] for 15 s, then heal', async t => {
      await settled(swarm, 'before')
      // Cut when replication has caught up (the backup holds the newest checkpoint taken): what is lost is then the
      // checkpoint's age plus what the minority primary does until it self-fences, not a start-up backlog.
      const before = await swarm.waitFor('the backup to hold the newest checkpoint', async () => {
        const s = await swarm.anyStatus()
        return s?.state === 'running' && s.replicationLag === 0 && s.protection.stalenessBoundMs != null && s.container != null && (await swarm.running()).length === 1 ? s : undefined
      }, 60_000)
      const { primary, backup, spare } = roles(swarm, before)
      const old = (await swarm.running()).find(c => c.board === primary.name)
      t.ok(old, `${primary.name} runs the mission at epoch ${before.epoch}`)
      t.comment(`primary ${primary.name}, backup ${backup.name}, spare ${spare.name}; ${await atCut(swarm, primary)}`)
      const rec = new Recorder(swarm).start()
      // What the primary's status promises at the moment of the cut (a checkpoint may be in flight then).
      const promise = (await swarm.status(primary))?.protection ?? before.protection
      const t0 = Date.now()
      await swarm.swarm.partition([[primary], [backup, spare]])
      const fencedAfter = await swarm.waitFor('the minority primary to stop its container', async () =>
        (await swarm.running()).some(c => c.board === primary.name) ? undefined : Date.now() - t0, 20_000)
      const lastOld = samplesOf(swarm.logs.get(old?.id ?? '')?.entries ?? []).at(-1)
      t.pass(`the minority primary self-fenced: its container gone ${fencedAfter} ms after the cut (last report +${(lastOld?.wall ?? t0) - t0} ms)`)
      const majority = await swarm.waitFor('the majority to elect and run the mission', async () => {
        for (const b of [backup, spare]) {
          const s = await swarm.status(b)
          if (s?.primary === b.peerId && s.epoch > before.epoch && s.state === 'running' && s.container != null) return { board: b, s }
        }
        return undefined
      }, 30_000)
      const runningAfter = Date.now() - t0
      const restored = lastRestore(majority.s.events)
      t.ok(restored, `${majority.board.name} took over at epoch ${majority.s.epoch} after ${runningAfter} ms, restored checkpoint #${restored?.seq ?? '?'}`)
      await sleep(Math.max(0, t0 + PARTITION_MS - Date.now()))
      const during = await swarm.running()
      t.notOk(during.some(c => c.board === primary.name), `the minority primary stayed fenced for the whole partition (${JSON.stringify(during)})`)
      const minorityView = await swarm.status(primary)
      t.comment(`minority primary at the heal: epoch ${minorityView?.epoch}, state ${minorityView?.state}, role ${minorityView?.role}`)

      await swarm.swarm.heal()
      const healedAt = Date.now()
      const after = await converged(swarm, 'after the heal')
      t.ok(after.epoch >= majority.s.epoch, `after the heal the higher epoch wins: every board at epoch ${after.epoch}, primary ${swarm.boardOf(after.primary)?.name} (converged ${Date.now() - healedAt} ms after the heal)`)
      t.not(after.primary, primary.peerId, 'the old primary did not come back as primary')
      await sleep(3000)
      await rec.stop()
      t.equal((await swarm.running()).length, 1, 'exactly one container runs after the heal')
      const lastBeforeCut = samplesOf(swarm.logs.get(old?.id ?? '')?.entries ?? []).filter(s => s.wall <= t0).at(-1)
      const firstNew = samplesOf(swarm.logs.get(majority.s.container!.id)?.entries ?? [])[0]
      t.comment(`primary alone: the old primary reported tick ${lastBeforeCut?.tick ?? '?'} at the cut and tick ${lastOld?.tick ?? '?'} last (+${(lastOld?.wall ?? t0) - t0} ms); ` +
        `the new primary resumed at tick ${firstNew?.tick ?? '?'}: ${(lastBeforeCut?.tick ?? 0) - (firstNew?.tick ?? 0)} ticks behind the cut, ${(lastOld?.tick ?? 0) - (firstNew?.tick ?? 0)} behind the last report`)
      // What a cut-off primary may lose is two parts, each bounded: the takeover resumes from the newest checkpoint the
      // backup held at the cut (at most one interval behind the state at the cut), and the minority primary's work
      // after the cut, until its watchdog's lease lapses (650 ms after the newest of its beats a majority acknowledged,
      // which is before the cut), is dropped with the minority, as a frozen daemon's is. Earlier runs lost 60-80+ ticks in all, measured
      // against the minority's last report: 30 behind the cut + 30 of run-on in the best case.
      // The status's promise at the cut: one interval while replication keeps up, its staleness bound when a loaded
      // host cannot (withinInterval false); in ticks, plus the report resolution.
      const promised = promisedTicks(promise.stalenessBoundMs, { floorTicks: MAX_TICKS_LOST, resolutionTicks: 10 })
      t.comment(`primary alone: the status promised at the cut: bound ${promise.stalenessBoundMs ?? '?'} ms, within the interval: ${promise.withinInterval}`)
      const behindCut = (lastBeforeCut?.tick ?? 0) - (firstNew?.tick ?? 0)
      t.ok(behindCut <= promised, `primary alone: the takeover resumed ${behindCut} ticks behind the state at the cut (promised at most ${promised})`)
      const runOnMs = (lastOld?.wall ?? t0) - t0
      t.ok(runOnMs <= MINORITY_FENCE_BOUND_MS, `primary alone: the minority primary's last report came ${runOnMs} ms after the cut (its lease: at most ${MINORITY_FENCE_BOUND_MS} ms)`)
      checkHistory(t, swarm, 'primary alone', t0, promised + Math.ceil(MINORITY_FENCE_BOUND_MS / TICK_INTERVAL_MS))
      report(t, 'primary alone', rec, swarm, t0, Date.now(), before.epoch, after.epoch)
    })

    await t.test('backup alone: [backup] | [primary, spare] for 15 s, then heal', async t => {
      const before = await settled(swarm, 'before')
      const { primary, backup, spare } = roles(swarm, before)
      const old = (await swarm.running()).find(c => c.board === primary.name)
      t.ok(old, `${primary.name} runs the mission at epoch ${before.epoch}, backup ${backup.name}`)
      t.comment(`primary ${primary.name}, backup ${backup.name}, spare ${spare.name}; ${await atCut(swarm, primary)}`)
      const rec = new Recorder(swarm).start()
      const t0 = Date.now()
      await swarm.swarm.partition([[backup], [primary, spare]])
      const newBackup = await swarm.waitFor('a new backup to be chosen', async () => {
        const s = await swarm.status(primary)
        return s?.backup === spare.peerId ? s : undefined
      }, PARTITION_MS).catch(err => { t.fail(`no new backup within the partition: ${(err as Error).message.slice(0, 2000)}`); return undefined })
      if (newBackup != null) t.pass(`${spare.name} is the new backup ${Date.now() - t0} ms after the cut (epoch ${newBackup.epoch})`)
      await sleep(Math.max(0, t0 + PARTITION_MS - Date.now()))
      const during = await swarm.running()
      t.same(during.map(c => c.id), [old?.id], 'during the partition only the primary\'s original container runs')
      const isolated = await swarm.status(backup)
      t.comment(`isolated backup at the heal: epoch ${isolated?.epoch}, state ${isolated?.state}, role ${isolated?.role}`)

      await swarm.swarm.heal()
      const after = await converged(swarm, 'after the heal')
      await sleep(3000)
      await rec.stop()
      const running = await swarm.running()
      t.ok(running.length <= 1, `at most one container runs after the heal (${running.length})`)
      t.equal(after.primary, primary.peerId, 'the primary kept the mission (no failover)')
      t.same(running.map(c => c.id), [old?.id], 'the same container as before the partition runs: no new copy')
      const copies = swarm.logs.containers().filter(c => c.seenAt >= t0)
      t.same(copies.map(c => `${c.board} e${c.epoch}`), [], 'no new container appeared during the scenario')
      checkHistory(t, swarm, 'backup alone', t0)
      report(t, 'backup alone', rec, swarm, t0, Date.now(), before.epoch, after.epoch)
    })

    await t.test('bridge: cut(primary, backup), each still sees the spare, for 15 s', async t => {
      const before = await settled(swarm, 'before')
      const { primary, backup, spare } = roles(swarm, before)
      t.comment(`primary ${primary.name}, backup ${backup.name}, spare ${spare.name}, epoch ${before.epoch}`)
      const rec = new Recorder(swarm).start()
      const t0 = Date.now()
      await swarm.swarm.cut(primary, backup)
      await sleep(PARTITION_MS)
      const atHeal = await swarm.anyStatus()
      t.comment(`at the heal: epoch ${atHeal?.epoch}, primary ${swarm.boardOf(atHeal?.primary)?.name}, state ${atHeal?.state}`)
      await swarm.swarm.heal()
      const healedAt = Date.now()
      await converged(swarm, 'after the heal')
      // The view went on changing after the heal in earlier runs: give it 10 s, then read the final state.
      await sleep(10_000)
      const after = await converged(swarm, '10 s after the heal')
      await rec.stop()
      t.comment(`bridge: epochs claimed after the heal: ${rec.claimed(healedAt).join(', ') || 'none'}`)
      t.equal((await swarm.running()).length, 1, `the mission runs at the end: one container (epoch ${after.epoch} on ${swarm.boardOf(after.primary)?.name})`)
      // A checkpoint pauses the vehicle for up to ~1.5 s on a loaded host: wait for a fresh report rather than sample one.
      const fresh = await swarm.waitFor('a fresh vehicle report', async () => {
        const latest = swarm.logs.latest()
        return latest != null && Date.now() - latest.wall < 500 ? latest : undefined
      }, 10_000)
      t.pass(`the vehicle reports (tick ${fresh.tick} from ${fresh.container.board} e${fresh.container.epoch})`)
      checkHistory(t, swarm, 'bridge', t0)
      report(t, 'bridge', rec, swarm, t0, Date.now(), before.epoch, after.epoch)
    })

    await t.test('a power cut in namespaces: the real peer dies with its watchdog, the backup takes over', async t => {
      const before = await settled(swarm, 'before')
      const { primary, backup } = roles(swarm, before)
      // What the status promised right before the cut: a checkpoint in flight at the cut is lost with the board, so
      // the loss can pass one interval when the status said so (CI: 70 ticks behind, the checkpoint being dumped).
      const promise = (await swarm.status(primary))?.protection ?? before.protection
      const t0 = Date.now()
      await primary.powerCut()
      const after = await swarm.waitFor(`${backup.name} takes over`, async () => {
        const s = await swarm.status(backup)
        return s?.primary === backup.peerId && s.state === 'running' && s.container != null && s.epoch > before.epoch ? s : undefined
      })
      t.pass(`${backup.name} runs epoch ${after.epoch} ${Date.now() - t0} ms after the power cut of ${primary.name}`)
      const left = await swarm.waitFor(`nothing left in ${primary.network!.ns}`, async () => processesIn(primary).length === 0 ? [] : undefined, 15_000)
        .catch(() => processesIn(primary))
      t.same(left, [], `no process left in ${primary.name}'s namespace (peer and watchdog gone)`)
      const first = await swarm.waitFor('the restored vehicle reports', async () => samplesOf(swarm.logs.get(after.container!.id)?.entries ?? [])[0])
      t.ok(first.tick > 0, `the vehicle continues at tick ${first.tick}`)
      checkHistory(t, swarm, 'power cut', t0, promisedTicks(promise.stalenessBoundMs, { floorTicks: MAX_TICKS_LOST, resolutionTicks: 10 }))
    })
  })

  t.test('two boards: [primary] | [backup] for 15 s (availability first), then heal', async t => {
    await ms?.stop()
    ms = await startMissionSwarm(2, { netns: true })
    const swarm = ms
    const before = await settled(swarm, 'before')
    const primary = swarm.boardOf(before.primary)!
    const backup = swarm.boardOf(before.backup)!
    t.comment(`primary ${primary.name}, backup ${backup.name}, epoch ${before.epoch}; ${await atCut(swarm, primary)}`)
    const old = (await swarm.running()).find(c => c.board === primary.name)
    const rec = new Recorder(swarm).start()
    const t0 = Date.now()
    await swarm.swarm.partition([[primary], [backup]])
    const solo = await swarm.waitFor('the backup to claim alone and run (two-board mode)', async () => {
      const s = await swarm.status(backup)
      return s?.primary === backup.peerId && s.state === 'running' && s.container != null && s.epoch > before.epoch ? s : undefined
    }, PARTITION_MS).catch(err => { t.fail(`the backup did not run alone: ${(err as Error).message.slice(0, 2000)}`); return undefined })
    if (solo != null) t.pass(`the backup claimed epoch ${solo.epoch} alone and runs ${Date.now() - t0} ms after the cut`)
    await sleep(Math.max(0, t0 + PARTITION_MS - Date.now()))
    const during = await swarm.running()
    t.comment(`during the partition ${during.length} container(s) run: ${during.map(c => `${c.board} e${c.epoch}`).join(', ')}`)
    t.ok(during.some(c => c.board === primary.name && c.id === old?.id), 'the primary half kept running (availability first)')
    const healedAt = Date.now()
    await swarm.swarm.heal()
    const after = await converged(swarm, 'after the heal', 30_000)
    const oneAfterMs = Date.now() - healedAt
    t.equal(after.epoch, Math.max(...rec.epochsKnown, after.epoch), `the higher epoch ${after.epoch} wins (${swarm.boardOf(after.primary)?.name}), one container ${oneAfterMs} ms after the heal`)
    t.ok(oneAfterMs < 5000, `the loser stopped within ${oneAfterMs} ms of the heal (documented: one announce interval, 1 s, plus polling)`)
    await sleep(3000)
    await rec.stop()
    t.equal((await swarm.running()).length, 1, 'exactly one container runs after the heal')
    const loser = swarm.logs.get(old?.id ?? '')
    const loserLast = samplesOf(loser?.entries ?? []).at(-1)
    const winner = swarm.logs.get(after.container!.id)
    const winnerSamples = samplesOf(winner?.entries ?? [])
    t.comment(`two boards: the loser (${loser?.board} e${loser?.epoch}) reported until +${(loserLast?.wall ?? t0) - t0} ms, tick ${loserLast?.tick ?? '?'}: its work since the split is dropped; ` +
      `the winner (${winner?.board} e${winner?.epoch}) resumed at tick ${winnerSamples[0]?.tick ?? '?'} and is at tick ${winnerSamples.at(-1)?.tick ?? '?'}`)
    const ticks = winnerSamples.map(x => x.tick)
    t.ok(ticks.every((tick, i) => i === 0 || tick > (ticks[i - 1] as number)), 'the winner\'s own state only moves forward')
    report(t, 'two boards', rec, swarm, t0, Date.now(), before.epoch, after.epoch)
  })
}
