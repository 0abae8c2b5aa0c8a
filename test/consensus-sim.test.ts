// Thousands of random fault schedules through the deterministic simulator, invariants checked continuously.
// Replay one: SEED=123 npx tap test/consensus-sim.test.ts (prints its event log). SCHEDULES=N changes the count.
import t from 'tap'
import { runSchedule, CRASH_LOOP_MAX_STARTS } from '../harness/consensus-simulator.ts'

const OVERLAP_BOUND_MS = 0
const RECOVERY_BOUND_MS = 15_000

const replay = process.env.SEED
if (replay !== undefined && replay !== '') {
  t.test(`replay seed ${replay}`, async t => {
    const result = runSchedule(Number(replay), RECOVERY_BOUND_MS)
    t.comment(result.log.join('\n'))
    t.comment(`peers ${result.peers}, messages ${result.messages}, max overlap ${result.maxOverlapMs} ms, ending ${result.ending}, ` +
      `recovered in ${result.recoveredInMs ?? '-'} ms, quiet-window claims ${result.quietClaims}, crash-loop starts ${result.crashLoopStarts}`)
    t.same(result.violations, [], 'no invariant violated')
  })
} else {
  t.test('random schedules of kills, restarts, pauses, partitions, loss, delay, duplication, image loss and arrival, failing starts and crash loops', async t => {
    const count = Number(process.env.SCHEDULES ?? 2000)
    const started = performance.now()
    const failures: string[] = []
    let maxOverlap = 0
    let slowestRecovery = 0
    let messages = 0
    const endings = { settle: 0, blocked: 0, 'crash-loop': 0 }
    let maxCrashLoopStarts = 0
    for (let seed = 1; seed <= count; seed++) {
      const result = runSchedule(seed, RECOVERY_BOUND_MS)
      maxOverlap = Math.max(maxOverlap, result.maxOverlapMs)
      slowestRecovery = Math.max(slowestRecovery, result.recoveredInMs ?? 0)
      messages += result.messages
      endings[result.ending]++
      maxCrashLoopStarts = Math.max(maxCrashLoopStarts, result.crashLoopStarts)
      if (result.violations.length > 0) {
        failures.push(`SEED=${seed} npx tap test/consensus-sim.test.ts  # ${result.violations[0]}`)
      }
    }
    const seconds = (performance.now() - started) / 1000
    t.comment(`${count} schedules in ${seconds.toFixed(1)} s, ${messages} messages; longest overlap of two containers ` +
      `(views >= 3) ${maxOverlap} ms (bound ${OVERLAP_BOUND_MS}); slowest recovery after faults ${slowestRecovery} ms (bound ${RECOVERY_BOUND_MS}, ` +
      `plus 60 s of back-off after failed starts); endings: ${endings.settle} settled, ${endings.blocked} blocked, ${endings['crash-loop']} crash loops ` +
      `(at most ${maxCrashLoopStarts} starts in 30 s; bound ${CRASH_LOOP_MAX_STARTS})`)
    t.same(failures.slice(0, 20), [], `${failures.length} failing schedules`)
    t.ok(maxOverlap <= OVERLAP_BOUND_MS)
  })
}
