// Mutations of real inputs for the decoder fuzz (harness/fuzz/targets.ts): fast-check draws a plan (which seed, which
// places, what to put there) and the plan is applied to a copy of the seed. Mutating real messages, rather than
// drawing values from nothing, gets past the first shape check into the code behind it.
import fc from 'fast-check'

/** Values that break assumptions: boundaries of safe integers and 32-bit fields, empty and huge, wrong types. */
const EDGE_VALUES: unknown[] = [
  -1, 0, 1, 2, 0.5, -0.0, 255, 256, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 40, 2 ** 40 + 1, 2 ** 53 - 1, 2 ** 53, -(2 ** 53), 1e308, -1e308, 5e-324,
  '', ' ', '0', '-1', 'NaN', 'Infinity', 'null', '__proto__', 'constructor', '../../etc/passwd', '/etc/passwd', 'a/../../b', '.', '..', 'a\u0000b', '\ud800',
  'x'.repeat(4096), 'é'.repeat(300), null, true, false, [], {}, [null], [[[[[[]]]]]], { __proto__: null }, { length: 1e9 }
]

/** Keys an attacker adds to objects: prototype names and fields the code reads. */
const EDGE_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'then', 'length', 'type', 'epoch', 'proof', 'grant', 'path', 'kind', 'v']

/** A JSON value an attacker might send in place of any other. */
export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...EDGE_VALUES) },
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 64 }) },
  { weight: 1, arbitrary: fc.integer({ min: -(2 ** 53) + 1, max: 2 ** 53 - 1 }) },
  { weight: 1, arbitrary: fc.nat({ max: 8 }).map(depth => nest(depth * 25)) }
)

/** A value nested `depth` deep (deeper ones are made in the text: see deepText, as copying them overflows the stack here). */
function nest (depth: number): unknown {
  let value: unknown = 0
  for (let i = 0; i < depth; i++) value = i % 2 === 0 ? [value] : { a: value }
  return value
}

type Edit =
  | { kind: 'replace', at: number, value: unknown }
  | { kind: 'copy', at: number, from: number }
  | { kind: 'nudge', at: number, by: number }
  | { kind: 'delete', at: number }
  | { kind: 'insert', at: number, key: string, value: unknown }
  | { kind: 'repeat', at: number, times: number }

const edit: fc.Arbitrary<Edit> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), value: hostileValue }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('copy' as const), at: fc.nat(), from: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('nudge' as const), at: fc.nat(), by: fc.integer({ min: -3, max: 1000 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), key: fc.oneof(fc.constantFrom(...EDGE_KEYS), fc.string({ maxLength: 8 })), value: hostileValue }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('repeat' as const), at: fc.nat(), times: fc.integer({ min: 2, max: 2000 }) }) }
)

/** Where a value sits in its parent (the root has no parent). */
interface Slot { parent: Record<string, unknown> | unknown[] | null, key: string | number, value: unknown }

function slots (root: unknown): Slot[] {
  const out: Slot[] = [{ parent: null, key: '', value: root }]
  for (let i = 0; i < out.length && out.length < 10_000; i++) {
    const { value } = out[i]!
    if (value instanceof Uint8Array || value === null || typeof value !== 'object') continue
    if (Array.isArray(value)) value.forEach((v, k) => out.push({ parent: value, key: k, value: v }))
    else for (const [k, v] of Object.entries(value)) out.push({ parent: value as Record<string, unknown>, key: k, value: v })
  }
  return out
}

function put (parent: Slot['parent'], key: string | number, value: unknown): void {
  if (parent === null) return
  // defineProperty: an own "__proto__" key, as JSON.parse makes it (plain assignment would set the prototype).
  Object.defineProperty(parent, key, { value, enumerable: true, writable: true, configurable: true })
}

/** A deep copy that keeps byte arrays as bytes (dag-cbor nodes hold them). */
function copy<T> (value: T): T { return structuredClone(value) }

function apply (root: unknown, edits: Edit[]): unknown {
  try { return applyEdits(root, edits) } catch (err) {
    // Edits that copy a value into itself can nest it past what structuredClone recurses through: keep the seed.
    if (err instanceof RangeError) return copy(root)
    throw err
  }
}

function applyEdits (root: unknown, edits: Edit[]): unknown {
  let out = copy(root)
  for (const e of edits) {
    const all = slots(out)
    const slot = all[e.at % all.length]!
    const replace = (value: unknown): void => { if (slot.parent === null) out = value; else put(slot.parent, slot.key, value) }
    switch (e.kind) {
      case 'replace': replace(copy(e.value)); break
      case 'copy': replace(copy(all[e.from % all.length]!.value)); break
      case 'nudge':
        if (typeof slot.value === 'number') replace(slot.value + e.by)
        else if (typeof slot.value === 'string') replace(e.by < 0 ? slot.value.slice(0, e.by) : slot.value + String.fromCharCode(32 + (e.by % 95)))
        else if (slot.value instanceof Uint8Array) replace(slot.value.subarray(0, Math.max(0, slot.value.byteLength - Math.abs(e.by))))
        break
      case 'delete':
        if (Array.isArray(slot.parent)) slot.parent.splice(slot.key as number, 1)
        else if (slot.parent !== null) Reflect.deleteProperty(slot.parent, slot.key)
        break
      case 'insert':
        if (Array.isArray(slot.value)) slot.value.push(copy(e.value))
        else if (slot.value !== null && typeof slot.value === 'object' && !(slot.value instanceof Uint8Array)) put(slot.value as Record<string, unknown>, e.key, copy(e.value))
        break
      case 'repeat':
        if (Array.isArray(slot.value) && slot.value.length > 0) replace(Array.from({ length: e.times }, (_, i) => copy((slot.value as unknown[])[i % (slot.value as unknown[]).length])))
        else if (typeof slot.value === 'string') replace(slot.value.repeat(Math.min(e.times, 200)))
    }
  }
  return out
}

/** A seed (drawn from `seeds`) with 1 to 4 edits applied; one in 20 is a seed unchanged (a replay). */
export function mutatedValue<T> (seeds: readonly T[]): fc.Arbitrary<unknown> {
  if (seeds.length === 0) throw new Error('mutatedValue needs at least one seed')
  const seed = fc.nat({ max: seeds.length - 1 })
  return fc.oneof(
    { weight: 19, arbitrary: fc.record({ seed, edits: fc.array(edit, { minLength: 1, maxLength: 4 }) }).map(({ seed, edits }) => apply(seeds[seed], edits)) },
    { weight: 1, arbitrary: seed.map(i => copy(seeds[i])) }
  )
}

type ByteEdit =
  | { kind: 'flip', at: number, bit: number }
  | { kind: 'set', at: number, byte: number }
  | { kind: 'insert', at: number, bytes: Uint8Array }
  | { kind: 'delete', at: number, length: number }
  | { kind: 'truncate', at: number }
  | { kind: 'duplicate', at: number, length: number }
  | { kind: 'splice', at: number, seed: number, from: number }

const byteEdit: fc.Arbitrary<ByteEdit> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat({ max: 7 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.constantFrom(0, 0xff, 0x7f, 0x80, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x9f, 0xbf, 0xf6, 0xf7, 0x22, 0x5c) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 16 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('duplicate' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 64 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('splice' as const), at: fc.nat(), seed: fc.nat(), from: fc.nat() }) }
)

function applyBytes (seed: Uint8Array, seeds: readonly Uint8Array[], edits: ByteEdit[]): Uint8Array {
  let out: Uint8Array = Uint8Array.from(seed)
  for (const e of edits) {
    const at = out.byteLength === 0 ? 0 : e.at % (out.byteLength + 1)
    switch (e.kind) {
      case 'flip': if (at < out.byteLength) out[at]! ^= 1 << e.bit; break
      case 'set': if (at < out.byteLength) out[at] = e.byte; break
      case 'insert': out = concat(out.subarray(0, at), e.bytes, out.subarray(at)); break
      case 'delete': out = concat(out.subarray(0, at), out.subarray(at + e.length)); break
      case 'truncate': out = out.slice(0, at); break
      case 'duplicate': out = concat(out.subarray(0, at + e.length), out.subarray(at)); break
      case 'splice': {
        const other = seeds[e.seed % seeds.length]!
        out = concat(out.subarray(0, at), other.subarray(other.byteLength === 0 ? 0 : e.from % other.byteLength))
      }
    }
  }
  return out
}

function concat (...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let offset = 0
  for (const p of parts) { out.set(p, offset); offset += p.byteLength }
  return out
}

/** Seed bytes with 1 to 6 byte edits, or (one in 10) random bytes. */
export function mutatedBytes (seeds: readonly Uint8Array[]): fc.Arbitrary<Uint8Array> {
  if (seeds.length === 0) throw new Error('mutatedBytes needs at least one seed')
  return fc.oneof(
    { weight: 9, arbitrary: fc.record({ seed: fc.nat({ max: seeds.length - 1 }), edits: fc.array(byteEdit, { minLength: 1, maxLength: 6 }) }).map(({ seed, edits }) => applyBytes(seeds[seed]!, seeds, edits)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }) }
  )
}

const DEEP = '\u0001deep\u0001'

/**
 * A seed's JSON text with one value replaced by arrays or objects nested 100 to 20,000 deep, written as text: what
 * JSON.parse accepts and JSON.stringify or structuredClone of the result may not (their recursion overflows).
 */
function deepText (seeds: readonly unknown[]): fc.Arbitrary<Uint8Array> {
  return fc.record({ seed: fc.nat({ max: seeds.length - 1 }), at: fc.nat(), depth: fc.integer({ min: 100, max: 20_000 }), arrays: fc.boolean() }).map(({ seed, at, depth, arrays }) => {
    const text = JSON.stringify(apply(seeds[seed], [{ kind: 'replace', at, value: DEEP }])) ?? 'null'
    const deep = arrays ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '0' + '}'.repeat(depth)
    return new TextEncoder().encode(text.replace(JSON.stringify(DEEP), deep))
  })
}

/** A seed's JSON text after structural edits, byte edits, or both, or with a deeply nested value: what arrives over gossip. */
export function mutatedJsonText (seeds: readonly unknown[]): fc.Arbitrary<Uint8Array> {
  const texts = seeds.map(s => new TextEncoder().encode(JSON.stringify(s)))
  const structural = mutatedValue(seeds).map(v => new TextEncoder().encode(JSON.stringify(v) ?? 'undefined'))
  return fc.oneof(
    { weight: 6, arbitrary: structural },
    { weight: 2, arbitrary: mutatedBytes(texts) },
    { weight: 1, arbitrary: fc.tuple(structural, byteEdit).map(([bytes, e]) => applyBytes(bytes, texts, [e])) },
    { weight: 1, arbitrary: deepText(seeds) }
  )
}
