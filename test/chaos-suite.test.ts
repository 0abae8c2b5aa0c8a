// CI's chaos suite, first half: the faults of boards and processes (power cuts, freezes, restarts, double faults).
// The other half is test/chaos-suite-network-disk.test.ts; together they hold every kind of chaos/nemesis.ts.
import t from 'tap'
import { gateDockerCriu } from './checkpoint-helpers.ts'
import { chaosSuite, PROCESS_KINDS } from './helpers/chaos-suite.ts'

if (gateDockerCriu(t)) {
  t.test('each fault of boards and processes once: no two copies at once, no state going back, recovery after every heal, no epoch storm', async t => {
    await chaosSuite(t, PROCESS_KINDS)
  })
}
