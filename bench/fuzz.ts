// Fuzz of the decoders at tandem's edges (harness/fuzz/targets.ts): mutations of real messages, records, manifests,
// bundle nodes, sealed blocks and CRIU stats, fed as the daemon feeds them, with the consumer behind each decoder.
// Prints a table per target (inputs, accepted, refused, crashes, invariant violations, slowest input) and writes JSON.
//
//   npm run bench:fuzz -- [--inputs 1000000] [--seconds 1200] [--seed 1] [--targets "mission gossip,manifests"]
//
// --inputs is the total, split evenly over the targets; --seconds bounds the whole run (each target gets its share).
// Exit 1 if any input crashed a target or broke an invariant.
import { parseArgs } from 'node:util'
import { fuzzTargets } from '../harness/fuzz/targets.ts'
import { runTarget, type TargetResult } from '../harness/fuzz/run.ts'
import { table, writeResults } from './report.ts'

const { values } = parseArgs({
  options: {
    inputs: { type: 'string', default: '1000000' },
    seconds: { type: 'string', default: '1200' },
    seed: { type: 'string', default: '1' },
    targets: { type: 'string' }
  }
})
const total = Number(values.inputs)
const seconds = Number(values.seconds)
const seed = Number(values.seed)
for (const [name, v] of [['--inputs', total], ['--seconds', seconds], ['--seed', seed]] as const) {
  if (!Number.isSafeInteger(v) || v < 1) { console.error(`fuzz: ${name} must be a positive integer`); process.exit(2) }
}

let targets = await fuzzTargets(seed)
if (values.targets !== undefined) {
  const wanted = values.targets.split(',').map(s => s.trim())
  const unknown = wanted.filter(w => !targets.some(t => t.name === w))
  if (unknown.length > 0) { console.error(`fuzz: no target ${unknown.join(', ')} (targets: ${targets.map(t => t.name).join(', ')})`); process.exit(2) }
  targets = targets.filter(t => wanted.includes(t.name))
}

const runs = Math.ceil(total / targets.length)
const results: TargetResult[] = []
const started = performance.now()
for (const target of targets) {
  const result = runTarget(target, { runs, seed, timeLimitMs: seconds * 1000 / targets.length })
  results.push(result)
  console.log(`fuzz: ${result.name}: ${result.inputs} inputs in ${(result.ms / 1000).toFixed(1)} s, ${result.crashes} crashes, ${result.violations.length} violations${result.note === '' ? '' : `; ${result.note}`}`)
  for (const e of result.examples) console.log(`  crash: ${e.error.split('\n')[0]}\n    input: ${e.input}`)
  for (const v of result.violations.slice(0, 5)) console.log(`  violation: ${v}`)
  console.log(`  slowest input: ${result.slowestMs.toFixed(1)} ms: ${result.slowestInput}`)
}
const wallMs = performance.now() - started

console.log('')
console.log(table([
  ['target', 'feeds', 'inputs', 'accepted', 'refused', 'crashes', 'violations', 'inputs/s', 'slowest ms'],
  ...results.map(r => [r.name, r.what, r.inputs, r.accepted, r.refused, r.crashes, r.violations.length, Math.round(r.inputs / (r.ms / 1000)), r.slowestMs]),
  ['all', '', results.reduce((n, r) => n + r.inputs, 0), results.reduce((n, r) => n + r.accepted, 0), results.reduce((n, r) => n + r.refused, 0),
    results.reduce((n, r) => n + r.crashes, 0), results.reduce((n, r) => n + r.violations.length, 0), null, Math.max(...results.map(r => r.slowestMs))]
]))
const path = await writeResults('fuzz', { seed, requestedInputs: total, seconds, wallMs, node: process.version, results })
console.log(`\nfuzz: ${(wallMs / 1000).toFixed(0)} s; results in ${path}`)
process.exit(results.some(r => r.crashes > 0 || r.violations.length > 0) ? 1 : 0)
