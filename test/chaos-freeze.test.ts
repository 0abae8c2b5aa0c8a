// Frozen primaries on three simulated boards (own peer process and Docker daemon each, real CRIU), the two cases of
// issue 10: a zombie primary (its peer process stopped while its dockerd and container keep running) and a whole
// board frozen and thawed. The watchdog's lease (peer/watchdog.ts) freezes the old container before the backup may
// take over; the history of every container's output shows whether two copies ever reported at once.
import t, { type Test } from 'tap'
import { startMissionSwarm, type MissionSwarm } from '../harness/mission-swarm.ts'
import { gateDockerCriu } from './checkpoint-helpers.ts'
import { samplesOf } from '../demo/vehicle-log.ts'
import { lastRestore } from '../harness/observe.ts'
import { overlaps, promisedTicks, regressions } from '../chaos/history.ts'
import type { SimulatedBoard } from '../harness/simulated-board.ts'

const FREEZE_MS = 5000
/**
 * Whole-board freeze: how long the old container may still report after the thaw. Every process of the board thaws
 * at the same instant on one host, the mission's overdue timer included, while the watchdog needs a wake-up and a
 * write to the freezer: measured (2 runs) the freeze 0-1 ms after the thaw and no report of the old container after
 * it; a report is due on one tick in ten, so one report within the thaw's first ms is possible: bound 100 ms.
 */
const THAW_BOUND_MS = 100

if (gateDockerCriu(t)) {
  let ms: MissionSwarm | undefined
  const stopped: SimulatedBoard[] = []
  const frozenPids: number[] = []
  t.teardown(async () => {
    // No process stays stopped: thaw and continue everything before stopping the swarm.
    for (const board of stopped) { try { board.thaw() } catch {} }
    for (const pid of frozenPids) { try { process.kill(pid, 'SIGCONT') } catch {} }
    await ms?.stop()
  })

  const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

  const syncedPrimary = async (ms: MissionSwarm, step: string) => {
    // Every board back in the view too: the freeze is judged on a view of three (two-board mode may take over alone).
    const before = await ms.waitFor(`${step}: a synced backup, every board in the view`, async () => {
      const s = await ms.anyStatus()
      return s?.state === 'running' && s.backup != null && s.replicatedSeq != null && s.replicatedSeq >= 1 && s.view.length === ms.boards.length ? s : undefined
    }, 90_000)
    const primary = ms.boardOf(before.primary)!
    const backup = ms.boardOf(before.backup)!
    const old = (await ms.running()).find(c => c.board === primary.name)
    // The stop comes right after the backup acknowledged a new checkpoint, in steady state: the ticks lost are then
    // the checkpoint's age plus the lease (the container runs on, unchecked, until the watchdog freezes it), and
    // fit the 60-tick bound; a stop just before the next checkpoint would add up to one interval (50 ticks).
    const held = (await ms.status(backup))?.heldSeq ?? 0
    await ms.waitFor(`${step}: the backup to hold a checkpoint newer than #${held}`, async () => ((await ms.status(backup))?.heldSeq ?? 0) > Math.max(held, 2))
    // What a failure may lose is what the primary's status promises: one interval while replication keeps up, its
    // staleness bound when this loaded host cannot (the first checkpoints after a takeover are slow).
    const bound = (await ms.status(primary))?.protection.stalenessBoundMs ?? null
    return { before, primary, backup, old, promisedTicks: promisedTicks(bound, { floorTicks: 60, resolutionTicks: 10 }) }
  }

  /** After the primary was stopped and resumed: takeover from a checkpoint, the old primary fenced, the history clean. */
  const checkAfter = async (t: Test, ms: MissionSwarm, step: string, s: Awaited<ReturnType<typeof syncedPrimary>>, resumedAt: number) => {
    const { before, primary, backup, old } = s
    const after = await ms.waitFor(`${step}: ${backup.name} takes over`, async () => {
      const v = await ms.status(backup)
      return v?.primary === backup.peerId && v.state === 'running' && v.epoch > before.epoch && v.container != null ? v : undefined
    })
    t.pass(`${step}: ${backup.name} took over at epoch ${after.epoch} (was ${before.epoch})`)
    const restored = lastRestore(after.events)
    t.ok(restored, `${step}: the new primary restored a checkpoint (#${restored?.seq ?? '?'})`)
    const firstAfter = await ms.waitFor(`${step}: the restored vehicle reports`, async () => samplesOf(ms.logs.get(after.container!.id)?.entries ?? [])[0])
    t.ok(firstAfter.tick > 0, `${step}: the vehicle continues at tick ${firstAfter.tick}`)

    const rejoined = await ms.waitFor(`${step}: the old primary ${primary.name} rejoins, fenced`, async () => {
      const v = await ms.status(primary)
      const mine = (await ms.running()).filter(c => c.board === primary.name)
      return v != null && v.epoch >= after.epoch && v.role !== 'primary' && mine.length === 0 ? v : undefined
    }, 30_000)
    t.ok(rejoined.epoch >= after.epoch, `${step}: ${primary.name} knows epoch ${rejoined.epoch} and runs no container of the mission`)
    await sleep(1000)
    const running = await ms.running()
    t.equal(running.length, 1, `${step}: exactly one container of the mission runs (${JSON.stringify(running)})`)

    const oldSamples = samplesOf(ms.logs.get(old?.id ?? '')?.entries ?? [])
    const lateReports = oldSamples.filter(x => x.wall >= resumedAt - 5)
    const ranAfterResume = lateReports.length > 0 ? (lateReports.at(-1)!.wall - resumedAt) : null
    const newFirstWall = samplesOf(ms.logs.get(after.container!.id)?.entries ?? [])[0]?.wall ?? NaN
    t.comment(`${step}: old container's last report ${oldSamples.at(-1) != null ? `${oldSamples.at(-1)!.wall - newFirstWall} ms relative to the new primary's first` : 'none'}; ` +
      `reports after the resume: ${lateReports.length}${ranAfterResume != null ? ` (last ${ranAfterResume} ms after it)` : ''}`)
    const lost = (oldSamples.at(-1)?.tick ?? 0) - firstAfter.tick
    t.comment(`${step}: resumed at ${new Date(resumedAt).toISOString()}; ticks lost ${lost}; watchdog of ${primary.name}: ` +
      ms.output.filter(l => l.startsWith(`[${primary.name}]`) && l.includes('tandem watchdog')).slice(-4).map(l => l.replace(/^\[[^\]]+\] /, '')).join(' | '))
    return { after, lateReports, ranAfterResume }
  }

  t.test('zombie primary (its peer process SIGSTOPped 5 s, container and dockerd running): fenced by the watchdog, no overlap', async t => {
    ms = await startMissionSwarm(3)
    const s = await syncedPrimary(ms, 'zombie')
    t.ok(s.old, `zombie: the primary ${s.primary.name} runs the container`)
    const pid = s.primary.peer!.pid
    frozenPids.push(pid)
    process.kill(pid, 'SIGSTOP')
    await sleep(FREEZE_MS)
    process.kill(pid, 'SIGCONT')
    const resumedAt = Date.now()
    const { lateReports } = await checkAfter(t, ms, 'zombie', s, resumedAt)
    t.equal(lateReports.length, 0, 'zombie: the old container reported nothing after its peer resumed')
    const found = overlaps(ms.logs.containers())
    t.same(found, [], `zombie: no two containers reported at once (${found.join('; ')})`)
    // The container ran on, unchecked, for the lease's validity (650 ms, 33 ticks) before the watchdog froze it.
    t.same(regressions(ms.logs.containers(), s.promisedTicks + 33), [], `zombie: no takeover lost more than the ${s.promisedTicks} ticks promised plus the lease`)
  })

  t.test('whole board frozen 5 s, then thawed: fenced by the watchdog, old container bounded after the thaw', async t => {
    if (ms == null) ms = await startMissionSwarm(3)
    const s = await syncedPrimary(ms, 'board')
    t.ok(s.old, `board: the primary ${s.primary.name} runs the container`)
    stopped.push(s.primary)
    s.primary.freeze()
    await sleep(FREEZE_MS)
    const thawedAt = Date.now()
    s.primary.thaw()
    stopped.splice(stopped.indexOf(s.primary), 1)
    const { lateReports, ranAfterResume } = await checkAfter(t, ms, 'board', s, thawedAt)
    t.ok(lateReports.length <= 1 && (ranAfterResume ?? 0) <= THAW_BOUND_MS,
      `board: the old container reported ${lateReports.length} time(s) after the thaw${ranAfterResume != null ? `, the last ${ranAfterResume} ms after it` : ''} (bound: one report within ${THAW_BOUND_MS} ms)`)
    // Reports of the old container after the thaw make the checker see one span from before the freeze to the thaw:
    // check the history without them, and the strict history when there were none.
    const containers = ms.logs.containers()
    const found = overlaps(lateReports.length === 0 ? containers : containers.map(c => c.id === s.old?.id ? { ...c, entries: c.entries.filter(e => e.kind !== 'report' || !lateReports.includes(e.sample)) } : c))
    t.same(found, [], `board: apart from the thaw instant, no two containers reported at once (${found.join('; ')})`)
    t.same(regressions(containers, s.promisedTicks), [], `board: no takeover lost more than the ${s.promisedTicks} ticks the status promised`)
  })
}
