// The chaos suite as CI runs it: every fault kind once, in a seeded order, on three simulated boards (real peers,
// Docker, CRIU); the recorded history of every container must hold every invariant (see chaos/run.ts).
import t from 'tap'
import { FAULT_KINDS } from '../chaos/nemesis.ts'
import { runChaos, summaryTable } from '../chaos/run.ts'
import { gateDockerCriu } from './checkpoint-helpers.ts'

if (gateDockerCriu(t)) {
  t.test('each fault kind once: no two copies at once, no state going back, recovery after every heal, no epoch storm', async t => {
    const seed = Number(process.env.CHAOS_SEED ?? 7)
    const result = await runChaos({ seed, boards: 3, minutes: 0, once: true, kinds: FAULT_KINDS, log: line => { t.comment(line) } })
    t.comment(`\n${summaryTable(result)}`)
    t.equal(result.faults.length, FAULT_KINDS.length, `every fault kind was injected (seed ${seed})`)
    t.same(result.violations, [], 'no invariant violated')
  })
}
