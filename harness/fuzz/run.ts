// Runs a fuzz target for a number of inputs or a time, seeded: counts what was accepted and refused, keeps the first
// inputs that crashed it (a throw from its feed) and the slowest input's time.
import fc from 'fast-check'
import type { FuzzTarget } from './targets.ts'

export interface Crash { error: string, input: string }

export interface TargetResult {
  name: string
  what: string
  inputs: number
  accepted: number
  refused: number
  crashes: number
  /** The first few crashing inputs, each with its error. */
  examples: Crash[]
  /** Invariants of the consumer broken (stateful targets). */
  violations: string[]
  /** The target's own account of the run (stateful targets), or ''. */
  note: string
  ms: number
  slowestMs: number
  /** The slowest input (its time includes any GC pause that fell into it). */
  slowestInput: string
}

/** A printable preview of an input: text where it is text, else hex. */
export function preview (input: unknown, max = 300): string {
  const show = (value: unknown): string => {
    if (value instanceof Uint8Array) {
      const text = Buffer.from(value).toString('utf8')
      return /^[\x20-\x7e\s]*$/.test(text) ? text : `hex:${Buffer.from(value).toString('hex')}`
    }
    if (value !== null && typeof value === 'object') return `{${Object.entries(value).map(([k, v]) => `${k}: ${show(v)}`).join(', ')}}`
    return String(value)
  }
  const text = show(input)
  return text.length > max ? `${text.slice(0, max)}… (${text.length} chars)` : text
}

export function runTarget (target: FuzzTarget, options: { runs: number, seed: number, timeLimitMs?: number }): TargetResult {
  const result: TargetResult = { name: target.name, what: target.what, inputs: 0, accepted: 0, refused: 0, crashes: 0, examples: [], violations: [], note: '', ms: 0, slowestMs: 0, slowestInput: '' }
  const started = performance.now()
  fc.check(fc.property(target.input, input => {
    const t0 = performance.now()
    try {
      if (target.feed(input)) result.accepted++
      else result.refused++
    } catch (err) {
      result.crashes++
      if (result.examples.length < 5) result.examples.push({ error: err instanceof Error ? `${err.name}: ${err.message}\n${err.stack?.split('\n').slice(1, 4).join('\n') ?? ''}` : String(err), input: preview(input) })
    }
    const ms = performance.now() - t0
    if (ms > result.slowestMs) { result.slowestMs = ms; result.slowestInput = preview(input, 200) }
    result.inputs++
    return true
  }), { numRuns: options.runs, seed: options.seed, ...(options.timeLimitMs === undefined ? {} : { interruptAfterTimeLimit: options.timeLimitMs, markInterruptAsFailure: false }) })
  result.ms = performance.now() - started
  result.violations = [...(target.violations?.() ?? [])]
  result.note = target.note?.() ?? ''
  return result
}
