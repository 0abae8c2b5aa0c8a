// CI's chaos suite, second half: partitions of each shape (boards in network namespaces), a slow board under a CPU
// quota, and the backup's disk full or corrupted. The first half is test/chaos-suite.test.ts.
import t from 'tap'
import { gateDockerCriu } from './checkpoint-helpers.ts'
import { chaosSuite, NETWORK_AND_DISK_KINDS } from './helpers/chaos-suite.ts'

if (gateDockerCriu(t)) {
  t.test('each network, CPU and disk fault once: no two copies at once, no state going back, recovery after every heal, no epoch storm', async t => {
    await chaosSuite(t, NETWORK_AND_DISK_KINDS)
  })
}
