// consensus/quorum.ts and consensus/cadence.ts, table by table.
import t from 'tap'
import { loneClaimant, majority, quorumReached, stepView, type QuorumBasis } from '../consensus/quorum.ts'
import { backoffMs, checkpointPeriod, stalenessBound } from '../consensus/cadence.ts'

const basis = (voters: string[], lone: string | null = null, heldBack = false): QuorumBasis => ({ voters, loneClaimant: () => lone, heldBack: () => heldBack })

t.test('majority', async t => {
  t.same([1, 2, 3, 4, 5, 6, 7].map(majority), [1, 2, 2, 3, 3, 4, 4])
})

t.test('quorumReached', async t => {
  const cases: Array<[string, QuorumBasis, string, string[], boolean]> = [
    ['3 of 5', basis(['a', 'b', 'c', 'd', 'e']), 'a', ['a', 'b', 'c'], true],
    ['2 of 5', basis(['a', 'b', 'c', 'd', 'e']), 'a', ['a', 'b'], false],
    ['2 of 3', basis(['a', 'b', 'c']), 'a', ['a', 'c'], true],
    ['votes from outside the view do not count', basis(['a', 'b', 'c']), 'a', ['a', 'x', 'y'], false],
    ['2 of 4', basis(['a', 'b', 'c', 'd']), 'a', ['a', 'b'], false],
    ['both of 2', basis(['a', 'b']), 'a', ['a', 'b'], true],
    ['the lone claimant alone', basis(['a', 'b'], 'a'), 'a', ['a'], true],
    ['the lone claimant holding back', basis(['a', 'b'], 'a', true), 'a', ['a'], false],
    ['not the lone claimant', basis(['a', 'b'], 'b'), 'a', ['a'], false],
    ['the only member', basis(['a'], 'a'), 'a', ['a'], true],
    ['an empty view: the candidate itself', basis([]), 'a', ['a'], true],
    ['an empty view without its own vote', basis([]), 'a', ['b'], false]
  ]
  for (const [name, b, candidate, granted, expected] of cases) t.equal(quorumReached(b, candidate, new Set(granted)), expected, name)
})

t.test('loneClaimant', async t => {
  const all = (): boolean => true
  t.equal(loneClaimant({ mission: 'm', view: ['a'], primary: null }, all), 'a', 'the only member')
  t.equal(loneClaimant({ mission: 'm', view: ['a', 'b', 'c'], primary: 'a' }, all), null, 'none in a view of 3')
  t.equal(loneClaimant({ mission: 'm', view: ['a', 'b'], primary: 'a' }, all), 'b', 'the partner of the primary')
  t.equal(loneClaimant({ mission: 'm', view: ['a', 'b'], primary: 'x' }, p => p === 'b'), 'b', 'no primary in the view: the one the placement allows')
  t.equal(loneClaimant({ mission: 'm', view: ['a', 'b'], primary: null }, () => false), null, 'none allowed')
  const picked = loneClaimant({ mission: 'm', view: ['a', 'b'], primary: null }, all)
  t.equal(loneClaimant({ mission: 'm', view: ['b', 'a'], primary: null }, all), picked, 'the same pick whatever the order')
})

t.test('stepView: one member at a time', async t => {
  const cases: Array<[string, string[], string[], string, string[]]> = [
    ['the new primary joins first', ['a', 'b', 'c'], ['b', 'c', 'd'], 'd', ['a', 'b', 'c', 'd']],
    ['then a dead member leaves', ['a', 'b', 'c', 'd'], ['b', 'c', 'd'], 'd', ['b', 'c', 'd']],
    ['then one joins', ['b', 'c', 'd'], ['b', 'c', 'd', 'e', 'f'], 'd', ['b', 'c', 'd', 'e']],
    ['nothing to change', ['a', 'b'], ['a', 'b'], 'a', ['a', 'b']]
  ]
  for (const [name, from, desired, self, expected] of cases) t.same(stepView(from, new Set(desired), self), expected, name)
})

t.test('checkpointPeriod', async t => {
  const cases: Array<[string, number, number[], number, number]> = [
    ['nothing measured: half the interval', 1000, [], 60, 500],
    ['early by the slowest lag and the slack', 1000, [100, 200], 60, 740],
    ['never more often than twice per interval', 1000, [900], 60, 500]
  ]
  for (const [name, interval, lags, slack, expected] of cases) t.equal(checkpointPeriod(interval, lags, slack), expected, name)
})

t.test('stalenessBound', async t => {
  t.equal(stalenessBound(500, [0, 500, 1000], [], 300), 300, 'nothing measured: the age of the backup\'s state')
  t.equal(stalenessBound(500, [0, 500, 1000], [200], 100), 700, 'the period plus the slowest lag')
  t.equal(stalenessBound(500, [0, 500, 1300], [200], 100), 1000, 'a dump that outlasted the period widens the spacing')
  t.equal(stalenessBound(500, [0], [200], 5000), 5000, 'never less than the state\'s age now')
})

t.test('backoffMs', async t => {
  t.same([0, 1, 2, 3, 4, 10, 1000].map(n => backoffMs(n, 1000, 60_000)), [0, 1000, 2000, 4000, 8000, 60_000, 60_000])
})
