// The history checkers of the chaos suite on made-up outputs: what counts as two copies at once, and as state going back.
import t from 'tap'
import { overlaps, regressions, longestSilence } from '../chaos/history.ts'
import type { FollowedContainer } from '../harness/observe.ts'

/** A container that reported every 20 ms from `from` to `to` (wall ms), its tick counting on from `tick`. */
function reporting (board: string, epoch: number, runs: Array<[from: number, to: number, tick: number]>): FollowedContainer {
  const entries: FollowedContainer['entries'] = []
  for (const [from, to, tick] of runs) {
    for (let wall = from, n = tick; wall <= to; wall += 20, n++) {
      entries.push({ kind: 'report', sample: { tick: n, x: 0, y: 0, speed: 0, heading: 0, wp: 0, lap: 0, odo: 0, wall } })
    }
  }
  return { board, id: `${board}-${epoch}`, epoch, seenAt: runs[0]?.[0] ?? 0, entries }
}

t.test('two copies running at once are found, with how long', async t => {
  const a = reporting('a', 1, [[0, 3000, 0]])
  const b = reporting('b', 2, [[2000, 6000, 90]])
  const found = overlaps([a, b], 20)
  t.equal(found.length, 1)
  t.match(found[0], /both reported from 2000 to 3000: 1000 ms at once/)
})

t.test('a frozen container that prints one line after its thaw is one tick, not the whole freeze', async t => {
  const a = reporting('a', 1, [[0, 1000, 0], [6000, 6000, 51]])
  const b = reporting('b', 2, [[2500, 9000, 40]])
  t.same(overlaps([a, b], 20), [], 'tolerated with one report period')
  t.equal(overlaps([a, b], 0).length, 1, 'but found without tolerance')
})

t.test('a thaw line after a freeze shorter than the stretch gap is one tick, not the time since the other started', async t => {
  // Frozen at 1000 for 2 s (less than the 2.5 s gap), the other copy reporting from 2700; one line at the thaw.
  const a = reporting('a', 1, [[0, 1000, 0], [3000, 3000, 51]])
  const b = reporting('b', 2, [[2700, 9000, 40]])
  t.same(overlaps([a, b], 20), [], 'tolerated with one report period')
  t.match(overlaps([a, b], 0)[0], /from 3000 to 3000: 0 ms at once/, 'found without tolerance, as the one moment it was')
  const twoLines = reporting('a', 1, [[0, 1000, 0], [3000, 3020, 51]])
  t.match(overlaps([twoLines, b], 20)[0], /from 3000 to 3020: 20 ms at once/, 'two lines after the thaw are found')
})

t.test('a copy that follows the other is no overlap', async t => {
  t.same(overlaps([reporting('a', 1, [[0, 1000, 0]]), reporting('b', 2, [[1500, 3000, 40]])], 0), [])
})

t.test('state going back beyond the bound is found', async t => {
  const a = reporting('a', 1, [[0, 2000, 0]])
  t.equal(regressions([a, reporting('b', 2, [[3000, 4000, 60]])], 51).length, 0, '40 ticks lost: within 51')
  t.match(regressions([a, reporting('b', 2, [[3000, 4000, 20]])], 51)[0], /80 ticks behind/)
  t.equal(longestSilence([a, reporting('b', 2, [[3000, 4000, 60]])], 0, 4000), 1000)
})
