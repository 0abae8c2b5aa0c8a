// The one schema library for input from the network, the disk and the user: zod. A schema gives the check and, through
// z.infer, the type. Measured on the hot path (bench/parse-cost.ts: one heartbeat, one announce) before adopting it.
import { z } from 'zod'

export { z }

/**
 * How deep objects and arrays may nest in an open-ended field. JSON.stringify and structuredClone recurse: a 10 KB
 * heartbeat whose extras nested 5,000 deep (found by bench/fuzz.ts) would have made every later status of the
 * board that kept it throw.
 */
export const MAX_OPEN_DEPTH = 32

/** Whether objects and arrays in `value` nest at most `max` deep (byte arrays, CIDs and other class instances are leaves). */
export function nestsAtMost (value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]]
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!
    if (v === null || typeof v !== 'object') continue
    const proto = Object.getPrototypeOf(v)
    if (!Array.isArray(v) && proto !== Object.prototype && proto !== null) continue
    if (depth >= max) return false
    for (const child of Object.values(v)) stack.push([child, depth + 1])
  }
  return true
}

/** A plain object (not an array, not null) nested at most MAX_OPEN_DEPTH deep, passed through as it is: for open-ended fields such as heartbeat extras. */
export const plainObject = z.custom<Record<string, unknown>>(
  value => typeof value === 'object' && value !== null && !Array.isArray(value) && nestsAtMost(value, MAX_OPEN_DEPTH),
  { error: `must be an object nested at most ${MAX_OPEN_DEPTH} deep` }
)

/** A safe integer >= 0 (counters, epochs, sequence numbers, sizes). */
export const natural = z.int({ error: 'must be a non-negative safe integer' }).min(0, { error: 'must be a non-negative safe integer' })

/** A finite number >= 0. */
export const nonNegative = z.number({ error: 'must be a non-negative number' }).min(0, { error: 'must be a non-negative number' })

/** A string of at most `max` characters (and at least `min`). */
export function text (max: number, min = 0): z.ZodString {
  const message = min > 0 ? `must be a string of ${min} to ${max} chars` : `must be a string of at most ${max} chars`
  return z.string({ error: message }).min(min, { error: message }).max(max, { error: message })
}

/** `a.b[0].c`: where in the input an issue is. */
export function issuePath (path: ReadonlyArray<PropertyKey>): string {
  let out = ''
  for (const key of path) out += typeof key === 'number' ? `[${key}]` : `${out === '' ? '' : '.'}${String(key)}`
  return out
}

/** An issue to report: where (`a.b[0]`), what, and the zod issue itself. */
export interface ReportedIssue { field: string, message: string, issue: z.core.$ZodIssue }

/**
 * The issue to report of a failed parse: the given one or the first. Of a union, the issue of the alternative the
 * input had the type of (a string that is no image reference, not "matches no alternative").
 */
export function reportedIssue (error: z.ZodError, pick?: (issues: z.core.$ZodIssue[]) => z.core.$ZodIssue | undefined): ReportedIssue | undefined {
  let issue = pick?.(error.issues) ?? error.issues[0]
  if (issue === undefined) return undefined
  let path = [...issue.path]
  while (issue.code === 'invalid_union') {
    const matched: z.core.$ZodIssue[] | undefined = issue.errors.find(issues => !issues.every(i => i.code === 'invalid_type' && i.path.length === 0))
    const inner: z.core.$ZodIssue | undefined = matched?.[0]
    if (inner === undefined) break
    issue = inner
    path = [...path, ...inner.path]
  }
  if (issue.code === 'unrecognized_keys' && issue.keys[0] !== undefined) path = [...path, issue.keys[0]]
  return { field: issuePath(path), message: issue.message, issue }
}

/** The first issue of a failed parse as `field: problem` (the field left out at the top level). */
export function describeIssue (error: z.ZodError): string {
  const reported = reportedIssue(error)
  if (reported === undefined) return 'invalid'
  const { issue, field: path } = reported
  const message = issue.code === 'invalid_type' && issue.message.startsWith('Invalid input') ? `must be ${/^[aeiou]/.test(issue.expected) ? 'an' : 'a'} ${issue.expected}` : issue.message
  return path === '' ? message : `${path}: ${message}`
}
