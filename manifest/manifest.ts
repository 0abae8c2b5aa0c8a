// Mission manifest: YAML or JSON text -> a validated MissionSpec. Every error names the offending field.
import { isMap, isScalar, isSeq, Lexer, parseDocument, type Node as YamlNode } from 'yaml'
import { reportedIssue, z } from '../schema/schema.ts'

/**
 * CPU architectures as Node's process.arch names them: the one vocabulary of boards, heartbeats, manifests and the
 * consensus. Only checkpoint/ speaks Docker's (GOARCH: amd64), mapped at the Docker boundary by normalizeArch.
 */
export const ARCHITECTURES = ['x64', 'arm64', 'arm', 'ia32'] as const
export type Architecture = typeof ARCHITECTURES[number]

export const DEFAULT_CHECKPOINT_INTERVAL_MS = 1000
/**
 * Largest manifest: its text (the API refuses bigger bodies before parsing) and the canonical JSON of the spec. A
 * mission record carries the spec in every announce, and gossip refuses messages over 256 KiB: with this bound a
 * record always fits.
 */
export const MAX_MANIFEST_BYTES = 64 * 1024
export const MAX_ENV_ENTRIES = 1024
export const MAX_COMMAND_ARGS = 256
export const MAX_PLACEMENT_BOARDS = 64
/** Every entry counted twice (a flow mapping has ':' and ','), plus the fixed fields. */
const MAX_YAML_ITEMS = 2 * (MAX_ENV_ENTRIES + MAX_COMMAND_ARGS + MAX_PLACEMENT_BOARDS) + 64
export const MIN_CHECKPOINT_INTERVAL_MS = 100
export const MAX_CHECKPOINT_INTERVAL_MS = 3_600_000

export class ManifestError extends Error {
  readonly field: string
  readonly filename: string | undefined
  constructor (field: string, problem: string, filename?: string) {
    super(`${filename ?? 'manifest'}: ${field === '' ? '' : `${field}: `}${problem}`)
    this.name = 'ManifestError'
    this.field = field
    this.filename = filename
  }
}

const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/
const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/
// Docker reference: [registry[:port]/]path[:tag][@digest], lower-case path components.
const IMAGE_PATTERN = /^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(\/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$/
const TOP_LEVEL_FIELDS = ['name', 'image', 'command', 'env', 'data', 'checkpointIntervalMs', 'placement']
const PLACEMENT_FIELDS = ['architectures', 'boards', 'minMemoryMb']
const NAME_PROBLEM = 'must be 1-63 characters of a-z, 0-9 and -, starting and ending with a letter or digit'
const DATA_PROBLEM = 'must be an absolute container path without ".." (e.g. /data)'
const INTERVAL_PROBLEM = `must be between ${MIN_CHECKPOINT_INTERVAL_MS} and ${MAX_CHECKPOINT_INTERVAL_MS}`

function isArchitecture (value: string): value is Architecture {
  return (ARCHITECTURES as readonly string[]).includes(value)
}

/** Parse and validate a manifest (YAML; JSON is YAML too). Throws ManifestError naming the field. */
export function parseManifest (text: string, filename?: string): MissionSpec {
  const bytes = utf8Length(text)
  if (bytes > MAX_MANIFEST_BYTES) throw new ManifestError('', `is ${bytes} bytes, more than the limit of ${MAX_MANIFEST_BYTES}`, filename)
  return validateMissionSpec(parseText(text, filename), filename)
}

/**
 * YAML or JSON text -> plain data; a duplicate key anywhere is refused. Linear in the text: the yaml package's own
 * uniqueKeys check compares every key with every earlier one (a 0.45 MB manifest of 40k keys took 71 s).
 */
function parseText (text: string, filename: string | undefined): unknown {
  const invalid = (detail: string): ManifestError => new ManifestError('', `not valid YAML or JSON: ${detail}`, filename)
  if (/^\s*\{/.test(text)) {
    // JSON fast path (most API bodies); JSON-like YAML flow mappings fall through to the YAML parser.
    let value: unknown
    let json = true
    try { value = JSON.parse(text) } catch { json = false }
    // With a duplicate key the YAML parser below finds and names it.
    if (json && !jsonHasDuplicateKey(text, value)) return value
  }
  // Composing a YAML document costs ~10 us per entry on a fast core: count the entries first (the lexer is cheap) and
  // refuse more than a valid spec can have, so the worst case stays bounded (< 50 ms for 64 KiB).
  const items = yamlIndicators(text)
  if (items > MAX_YAML_ITEMS) throw new ManifestError('', `has ${items} YAML entries, more than a mission spec can have (${MAX_YAML_ITEMS})`, filename)
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: false })
  const error = doc.errors[0]
  if (error !== undefined) throw invalid(error.message.split('\n')[0] ?? '')
  const keyProblem = yamlKeyProblem(doc.contents)
  if (keyProblem !== undefined) throw invalid(keyProblem)
  try {
    return doc.toJS({ maxAliasCount: 100 })
  } catch (err) {
    throw invalid((err as Error).message.split('\n')[0] ?? '')
  }
}

/** Entries of every YAML mapping and sequence: all ':', ',', '-', '?' indicator tokens (scalars are skipped). */
function yamlIndicators (text: string): number {
  let count = 0
  let scalarNext = false
  for (const token of new Lexer().lex(text)) {
    if (scalarNext) { scalarNext = false; continue }
    if (token === '\u001f') scalarNext = true
    else if (token === ':' || token === ',' || token === '-' || token === '?') count++
  }
  return count
}

function yamlKeyProblem (root: unknown): string | undefined {
  const stack: unknown[] = [root]
  while (stack.length > 0) {
    const node = stack.pop() as YamlNode | null | undefined
    if (isMap(node)) {
      const seen = new Set<string>()
      for (const pair of node.items) {
        // A sequence or mapping as a key (`? [a, b]: x`) has no JSON form (the yaml package stringifies it and warns).
        if (pair.key !== null && !isScalar(pair.key)) return 'a mapping key must be a plain value, not a sequence or mapping'
        const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key)
        if (seen.has(key)) return `Map keys must be unique: duplicate key ${JSON.stringify(key)}`
        seen.add(key)
        stack.push(pair.value)
      }
    } else if (isSeq(node)) {
      for (const item of node.items) stack.push(item)
    }
  }
  return undefined
}

/**
 * Whether valid JSON text has a duplicate key: every string token followed by ':' is a key, so fewer keys in the
 * parsed value than key tokens in the text means one was repeated (JSON.parse keeps the last silently).
 */
function jsonHasDuplicateKey (text: string, value: unknown): boolean {
  let tokens = 0
  for (const match of text.matchAll(/"(?:[^"\\]|\\.)*"(\s*:)?/g)) if (match[1] !== undefined) tokens++
  let keys = 0
  const stack: unknown[] = [value]
  while (stack.length > 0) {
    const node = stack.pop()
    if (Array.isArray(node)) {
      for (const item of node) stack.push(item)
    } else if (typeof node === 'object' && node !== null) {
      for (const item of Object.values(node)) { keys++; stack.push(item) }
    }
  }
  return keys !== tokens
}

function utf8Length (text: string): number {
  let bytes = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0x80) bytes += 1
    else if (c < 0x800) bytes += 2
    else if (c >= 0xd800 && c < 0xdc00) { bytes += 4; i++ } else bytes += 3
  }
  return bytes
}

/**
 * An image reference as Docker lists it: `repo` -> `repo:latest`, the implicit `docker.io/` and `library/` prefixes
 * dropped; a digest reference (`repo@sha256:...`) and an image id (`sha256:...`) are kept as they are.
 */
export function normalizeImageRef (ref: string): string {
  if (ref.startsWith('sha256:') || ref.includes('@')) return ref
  let name = ref
  if (name.startsWith('docker.io/')) name = name.slice('docker.io/'.length)
  if (name.startsWith('library/') && name.split('/').length === 2) name = name.slice('library/'.length)
  const lastSlash = name.lastIndexOf('/')
  return name.slice(lastSlash + 1).includes(':') ? name : `${name}:latest`
}

/** Any number, YAML's .inf and .nan included (an env value `.inf` is the string "Infinity"). */
const anyNumber = z.custom<number>(value => typeof value === 'number')

const imageRef = z.string({ error: 'must be a valid image reference' }).regex(IMAGE_PATTERN, { error: 'must be a valid image reference' })

const imageSchema = z.union([
  z.string().regex(IMAGE_PATTERN, { error: iss => `"${String(iss.input)}" is not a valid image reference` }),
  z.partialRecord(z.enum(ARCHITECTURES), imageRef, {
    error: iss => (iss.code as string) === 'unrecognized_keys' ? `unknown architecture (allowed: ${ARCHITECTURES.join(', ')})` : 'must be a valid image reference'
  }).refine(images => Object.keys(images).length > 0, { error: 'mapping must name at least one architecture' })
], { error: iss => iss.input === undefined ? 'is required' : 'must be an image name or a mapping from architecture (x64, arm64, arm, ia32) to image' })

const placementSchema = z.strictObject({
  architectures: z.array(z.enum(ARCHITECTURES, { error: `must be one of ${ARCHITECTURES.join(', ')}` }), { error: 'must be a non-empty list' })
    .min(1, { error: 'must be a non-empty list' }).optional(),
  boards: z.array(z.string({ error: 'must be a non-empty string' }).min(1, { error: 'must be a non-empty string' }), { error: 'must be a non-empty list of board names' })
    .min(1, { error: 'must be a non-empty list of board names' })
    .max(MAX_PLACEMENT_BOARDS, { error: iss => `lists ${(iss.input as unknown[]).length} boards, at most ${MAX_PLACEMENT_BOARDS}` }).optional(),
  minMemoryMb: z.int({ error: 'must be an integer between 1 and 1048576' }).min(1, { error: 'must be an integer between 1 and 1048576' })
    .max(1_048_576, { error: 'must be an integer between 1 and 1048576' }).optional()
}, { error: iss => iss.code === 'unrecognized_keys' ? `unknown field (allowed: ${PLACEMENT_FIELDS.join(', ')})` : 'must be a mapping (architectures, boards, minMemoryMb)' })

const missionSpecSchema = z.strictObject({
  name: z.string({ error: iss => iss.input === undefined ? 'is required' : NAME_PROBLEM }).regex(NAME_PATTERN, { error: NAME_PROBLEM }),
  image: imageSchema,
  command: z.array(z.string({ error: 'must be a string' }), { error: 'must be a non-empty list of strings' })
    .min(1, { error: 'must be a non-empty list of strings' })
    .max(MAX_COMMAND_ARGS, { error: iss => `has ${(iss.input as unknown[]).length} arguments, at most ${MAX_COMMAND_ARGS}` }).optional(),
  env: z.record(
    z.string().regex(ENV_NAME_PATTERN),
    z.union([z.string(), anyNumber, z.boolean()], { error: 'must be a string, number or boolean' }).transform(String),
    { error: iss => iss.code === 'invalid_key' ? 'is not a valid environment variable name' : 'must be a mapping of NAME: value' }
  ).check(z.refine(env => Object.keys(env).length <= MAX_ENV_ENTRIES, { error: iss => `has ${Object.keys(iss.input as object).length} entries, at most ${MAX_ENV_ENTRIES}` }))
    .nullish().transform(env => env ?? {}),
  data: z.string({ error: DATA_PROBLEM })
    .refine(data => data.startsWith('/') && !data.includes('\0') && !data.split('/').includes('..'), { error: DATA_PROBLEM })
    .refine(data => data !== '/', { error: 'cannot be the container root' }).optional(),
  checkpointIntervalMs: z.int({ error: 'must be an integer number of milliseconds' })
    .min(MIN_CHECKPOINT_INTERVAL_MS, { error: INTERVAL_PROBLEM }).max(MAX_CHECKPOINT_INTERVAL_MS, { error: INTERVAL_PROBLEM })
    .default(DEFAULT_CHECKPOINT_INTERVAL_MS),
  placement: placementSchema.optional()
}, {
  error: iss => iss.code === 'unrecognized_keys' ? `unknown field (allowed: ${TOP_LEVEL_FIELDS.join(', ')})` : 'must be a mapping with at least `name`, `image`'
}).superRefine((spec, ctx) => {
  if (typeof spec.image !== 'string') {
    for (const arch of spec.placement?.architectures ?? []) {
      if (spec.image[arch] === undefined) ctx.addIssue({ code: 'custom', path: ['placement', 'architectures'], message: `lists ${arch} but image has no ${arch} entry` })
    }
  }
})

/** What a mission is, as the manifest says it (defaults applied). */
export type MissionSpec = z.output<typeof missionSpecSchema>
export type Placement = NonNullable<MissionSpec['placement']>

/** Validate an already-parsed object (e.g. a spec received over the control API). */
export function validateMissionSpec (document: unknown, filename?: string): MissionSpec {
  const result = missionSpecSchema.safeParse(document)
  if (!result.success) {
    // An unknown top-level field is named first, as a typo there explains the other errors.
    const reported = reportedIssue(result.error, issues => issues.find(i => i.code === 'unrecognized_keys' && i.path.length === 0))
    throw new ManifestError(reported?.field ?? '', reported?.message ?? 'is invalid', filename)
  }
  const spec = result.data
  const bytes = utf8Length(JSON.stringify(spec))
  if (bytes > MAX_MANIFEST_BYTES) throw new ManifestError('', `the mission spec is ${bytes} bytes as JSON, more than the limit of ${MAX_MANIFEST_BYTES}`, filename)
  return spec
}

/** The image a board of this architecture runs, or undefined when the mission cannot run there. */
export function imageFor (spec: MissionSpec, arch: string): string | undefined {
  if (typeof spec.image === 'string') return spec.image
  return isArchitecture(arch) ? spec.image[arch] : undefined
}
