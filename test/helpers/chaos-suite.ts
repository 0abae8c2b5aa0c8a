// The chaos suite as CI runs it: each fault kind of a group once, in a seeded order, on three simulated boards (real
// peers, Docker, CRIU); the recorded history of every container must hold every invariant (see chaos/run.ts). The
// kinds are split over two test files so each stays within tap's per-file timeout.
import type { Test } from 'tap'
import { FAULT_KINDS, type FaultKind } from '../../chaos/nemesis.ts'
import { runChaos, summaryTable } from '../../chaos/run.ts'

/** Partitions (boards in network namespaces), a CPU quota and the backup's disk: the second file's half. */
export const NETWORK_AND_DISK_KINDS: readonly FaultKind[] = ['partition-primary', 'partition-backup', 'partition-bridge', 'partition-flap',
  'slow-board', 'disk-full-backup', 'corrupt-backup']
/** Power cuts, freezes, restarts and double faults: the first file's half. */
export const PROCESS_KINDS: readonly FaultKind[] = FAULT_KINDS.filter(kind => !NETWORK_AND_DISK_KINDS.includes(kind))

export async function chaosSuite (t: Test, kinds: readonly FaultKind[]): Promise<void> {
  const seed = Number(process.env.CHAOS_SEED ?? 7)
  const result = await runChaos({ seed, boards: 3, minutes: 0, once: true, kinds, log: line => { t.comment(line) } })
  t.comment(`\n${summaryTable(result)}`)
  t.equal(result.faults.length, kinds.length, `every fault kind was injected (seed ${seed})`)
  t.same(result.violations, [], 'no invariant violated')
}
