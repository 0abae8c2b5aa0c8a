// Simulated kill -> running time: a detector that proves the process exited (refused redial, PeerInfo.gone) lets the
// backup take over without the primary-silence wait. Prints p50/p99 per swarm size; SAMPLES=N changes the count.
import t from 'tap'
import { measureKillToRunning } from '../harness/consensus-simulator.ts'

const samples = Number(process.env.SAMPLES ?? 150)

function percentile (sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p / 100 * sorted.length))] ?? NaN
}

t.test('kill -> running in simulated time, exit proven vs silence only', async t => {
  const rows: string[] = []
  for (const peers of [2, 3, 5]) {
    const stats: Record<string, { p50: number, p99: number }> = {}
    for (const exitDetection of [false, true]) {
      const times: number[] = []
      const failed: number[] = []
      for (let seed = 1; seed <= samples; seed++) {
        const sample = measureKillToRunning(seed, peers, exitDetection)
        if (sample.killToRunningMs === null) failed.push(seed)
        else times.push(sample.killToRunningMs)
      }
      t.same(failed, [], `${peers} boards, exit ${exitDetection ? 'proven' : 'silent'}: a survivor runs the mission, no violation`)
      times.sort((a, b) => a - b)
      stats[String(exitDetection)] = { p50: percentile(times, 50), p99: percentile(times, 99) }
    }
    const silence = stats.false!
    const proven = stats.true!
    rows.push(`${peers} boards | silence only p50 ${silence.p50} ms, p99 ${silence.p99} ms | exit proven p50 ${proven.p50} ms, p99 ${proven.p99} ms`)
    t.ok(silence.p50 - proven.p50 >= 700, `${peers} boards: a proven exit saves ${silence.p50 - proven.p50} ms at p50`)
  }
  t.comment(`kill -> running (${samples} samples each)\n${rows.join('\n')}`)
})
