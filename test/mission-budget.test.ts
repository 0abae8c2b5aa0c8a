// The budget of missions a peer takes in from gossip (peer/mission-budget.ts): counts and spec bytes.
import t from 'tap'
import { MissionBudget, MAX_MISSION_RECORDS, MAX_SPEC_BYTES_HELD, specBytesOf } from '../peer/mission-budget.ts'
import type { MissionSpec } from '../consensus/index.ts'

const specOf = (name: string, envBytes = 0): MissionSpec => ({ name, image: 'busybox', env: envBytes > 0 ? { E: 'x'.repeat(envBytes) } : {}, checkpointIntervalMs: 1000 })

t.test('new missions past the count or the held spec bytes are refused; known ones and tombstones always pass', async t => {
  const budget = new MissionBudget()
  const small = Array.from({ length: MAX_MISSION_RECORDS }, (_, i) => specOf(`m${i}`))
  const held = (specs: MissionSpec[]) => ({ holds: (name: string) => specs.some(s => s.name === name), specs: () => specs })
  t.equal(budget.refusalOfNew('m0', specOf('m0'), held(small)), null, 'a mission already held passes')
  t.equal(budget.refusalOfNew('new', specOf('new'), held(small))?.reason, 'too many missions')
  const big = Array.from({ length: 7 }, (_, i) => specOf(`b${i}`, 60_000))
  t.equal(budget.refusalOfNew('one-more', specOf('one-more', 60_000), held(big)), null, `eight 60 KB specs fit (${MAX_SPEC_BYTES_HELD} bytes)`)
  const eight = [...big, specOf('b7', 60_000)]
  t.equal(budget.refusalOfNew('ninth', specOf('ninth', 60_000), held(eight))?.reason, 'too many spec bytes')
  t.ok(specBytesOf(eight[0] as MissionSpec) > 60_000)
  t.same(budget.refused, { 'too many missions': 1, 'too many spec bytes': 1 }, 'refusals are counted')
})
