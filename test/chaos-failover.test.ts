// Chaos on three simulated boards (own peer process and Docker daemon each, real CRIU): power cuts of the primary,
// of the next primary and of the backup; a board coming back is fenced. After each step at most one container of
// the mission runs in the swarm, and the vehicle's state continues from a replicated checkpoint.
import t, { type Test } from 'tap'
import { startMissionSwarm, type MissionSwarm } from '../harness/mission-swarm.ts'
import { gateDockerCriu } from './checkpoint-helpers.ts'
import { samplesOf } from '../demo/vehicle-log.ts'
import { lastRestore } from '../harness/observe.ts'
import type { SimulatedBoard } from '../harness/simulated-board.ts'

if (gateDockerCriu(t)) {
  let ms: MissionSwarm | undefined
  t.teardown(async () => { await ms?.stop() })

  /** Cuts the primary's power and checks that `expected` takes over from a checkpoint at least as new as the one replicated. */
  const cutPrimaryAndCheckTakeover = async (t: Test, ms: MissionSwarm, step: string): Promise<SimulatedBoard> => {
    const before = await ms.waitFor(`${step}: a synced backup`, async () => {
      const s = await ms.anyStatus()
      return s?.state === 'running' && s.backup != null && s.replicatedSeq != null && s.replicatedSeq >= 1 ? s : undefined
    })
    const primary = ms.boardOf(before.primary)!
    const backup = ms.boardOf(before.backup)!
    const oldContainer = (await ms.running()).find(c => c.board === primary.name)
    t.ok(oldContainer, `${step}: the primary ${primary.name} runs the container`)
    const backupView = await ms.status(backup)
    const replicated = backupView?.heldSeq ?? 0
    const lastTickBefore = samplesOf(ms.logs.get(oldContainer?.id ?? '')?.entries ?? []).at(-1)?.tick ?? 0

    await primary.powerCut()
    const after = await ms.waitFor(`${step}: ${backup.name} takes over`, async () => {
      const s = await ms.status(backup)
      return s?.primary === backup.peerId && s.state === 'running' && s.epoch > before.epoch && s.container != null ? s : undefined
    })
    t.pass(`${step}: ${backup.name} took over at epoch ${after.epoch} (was ${before.epoch})`)
    const restored = lastRestore(after.events)
    t.ok(restored, `${step}: the new primary restored a checkpoint (events: ${after.events.slice(-5).map(e => e.text).join(' | ')})`)
    t.ok((restored?.seq ?? -1) >= replicated, `${step}: restored #${restored?.seq ?? '?'} >= #${replicated}, the newest the backup held`)

    const firstAfter = await ms.waitFor(`${step}: the restored vehicle reports`, async () => samplesOf(ms.logs.get(after.container!.id)?.entries ?? [])[0])
    t.ok(firstAfter.tick > 0, `${step}: the vehicle continues at tick ${firstAfter.tick}, not from zero (last report before the cut: ${lastTickBefore})`)
    const events = ms.logs.get(after.container!.id)?.entries.filter(e => e.kind === 'event').map(e => e.kind === 'event' ? e.event.event : '')
    t.notOk(events?.includes('start') === true || events?.includes('cold-start') === true, `${step}: the process was restored by CRIU, not started again`)
    const running = await ms.running()
    t.equal(running.length, 1, `${step}: exactly one container of the mission runs (${JSON.stringify(running)})`)
    return primary
  }

  t.test('three boards: primary dies, then the next primary, a board returns fenced, the backup dies', async t => {
    ms = await startMissionSwarm(3)
    const firstDead = await cutPrimaryAndCheckTakeover(t, ms, 'step 1')
    await cutPrimaryAndCheckTakeover(t, ms, 'step 2')

    // The first failed board comes back: it must not run the mission under its old epoch and may become the backup.
    const epochNow = (await ms.anyStatus())!.epoch
    await firstDead.powerOn(ms.swarm.bootstrapFor(firstDead))
    const rejoined = await ms.waitFor('the returning board to learn the current epoch', async () => {
      const s = await ms!.status(firstDead)
      return s != null && s.epoch >= epochNow ? s : undefined
    })
    t.ok(rejoined.epoch >= epochNow, `the returning board knows epoch ${rejoined.epoch}`)
    const synced = await ms.waitFor('the returning board to become the synced backup', async () => {
      const s = await ms!.anyStatus()
      return s?.backup === firstDead.peerId && s.replicatedSeq != null && (s.lastCheckpoint?.seq ?? 0) > 0 ? s : undefined
    }, 90_000)
    t.equal(synced.backup, firstDead.peerId, 'the fenced board is the new backup')
    t.equal((await ms.running()).filter(c => c.board === firstDead.name).length, 0, 'the returning board runs no container of the mission')
    t.equal((await ms.running()).length, 1, 'exactly one container of the mission runs')

    // The backup dies: a new backup is chosen (the only other board with power) and synced.
    const primaryBoard = ms.boardOf(synced.primary)!
    await firstDead.powerCut()
    const secondDead = ms.boards.find(b => !b.isOn)!
    await secondDead.powerOn(ms.swarm.bootstrapFor(secondDead))
    const newBackup = await ms.waitFor('a new backup to be chosen and synced', async () => {
      const s = await ms!.status(primaryBoard)
      return s?.backup === secondDead.peerId && s.replicatedSeq != null && s.primary === primaryBoard.peerId ? s : undefined
    }, 90_000)
    t.equal(newBackup.backup, secondDead.peerId, `${secondDead.name} is the new synced backup (replicated #${newBackup.replicatedSeq})`)
    t.equal((await ms.running()).length, 1, 'exactly one container of the mission runs')
  })

  t.test('two boards (left and right controller): the survivor takes over', async t => {
    await ms?.stop()
    ms = await startMissionSwarm(2)
    await cutPrimaryAndCheckTakeover(t, ms, 'two boards')
  })
}
