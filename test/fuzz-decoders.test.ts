// The decoder fuzz (harness/fuzz/targets.ts) in CI: a few thousand mutated inputs per target, seeded, must crash
// nothing and break no invariant of the consumers behind the decoders. The long run is `npm run bench:fuzz`.
// FUZZ_RUNS and FUZZ_SEED replay or lengthen it.
import t from 'tap'
import fc from 'fast-check'
import { fuzzTargets, type FuzzTarget } from '../harness/fuzz/targets.ts'
import { runTarget } from '../harness/fuzz/run.ts'
import { validateHeartbeat } from '../peer/heartbeat.ts'
import { MAX_OPEN_DEPTH, nestsAtMost } from '../schema/schema.ts'

const runs = Number(process.env.FUZZ_RUNS ?? 2000)
const seed = Number(process.env.FUZZ_SEED ?? 7)

t.test('every target: no crash, no broken invariant; its mutations reach past the first check', async t => {
  for (const target of await fuzzTargets(seed)) {
    const result = runTarget(target, { runs, seed })
    t.equal(result.inputs, runs, `${target.name}: ${runs} inputs`)
    t.same(result.examples, [], `${target.name}: no input crashed it (${result.crashes} did)`)
    t.same(result.violations.slice(0, 5), [], `${target.name}: no invariant broken`)
    // Sealed blocks accept only unchanged seeds (a replay), a handful in a few thousand.
    t.ok(result.accepted > 0, `${target.name}: some inputs accepted (${result.accepted})`)
    t.ok(result.refused > result.inputs / 10, `${target.name}: many refused (${result.refused})`)
  }
})

t.test('the runner counts a crash and keeps its input', async t => {
  const target: FuzzTarget = {
    name: 'self-test',
    what: 'throws on odd numbers',
    input: fc.nat(),
    feed: n => { if ((n as number) % 2 === 1) throw new RangeError('odd'); return (n as number) % 4 === 0 }
  }
  const result = runTarget(target, { runs: 200, seed: 3 })
  t.ok(result.crashes > 0 && result.accepted > 0 && result.refused > 0)
  t.equal(result.crashes + result.accepted + result.refused, 200)
  t.match(result.examples[0], { error: /RangeError: odd/, input: /^\d+$/ })
})

t.test('found by the fuzz: open-ended fields nested deeper than MAX_OPEN_DEPTH are refused', async t => {
  // A 10 KB heartbeat whose extras nested 5,000 deep was accepted, and every later status of the board that kept it
  // threw (JSON.stringify overflows its stack).
  const heartbeat = (extras: string): unknown => JSON.parse('{"v":1,"peerId":"p","incarnation":1,"seq":1,"sentAt":1,"addrs":[],' +
    '"board":{"name":"generic","arch":"x64","cores":1,"memoryMb":512},"capabilities":{"criu":{},"docker":{}},' +
    `"load":{"loadPerCore":0,"lagMs":0,"rssMb":1,"healthScore":0},"extras":${extras}}`)
  const deep = `{"a":${'['.repeat(5000)}${']'.repeat(5000)}}`
  t.throws(() => validateHeartbeat(heartbeat(deep), 'p'), { reason: 'malformed', message: /extras: must be an object nested at most 32 deep/ })
  t.match(validateHeartbeat(heartbeat('{"images":{"docker":true,"present":["a"]}}'), 'p').extras, { images: { docker: true } })
  let nested: unknown = 0
  for (let i = 1; i < MAX_OPEN_DEPTH; i++) nested = [nested]
  t.ok(nestsAtMost({ a: nested }, MAX_OPEN_DEPTH), `${MAX_OPEN_DEPTH} levels pass`)
  t.notOk(nestsAtMost({ a: [nested] }, MAX_OPEN_DEPTH), 'one more does not')
  t.ok(nestsAtMost({ bytes: new Uint8Array(4) }, 1), 'byte arrays are leaves')
})
