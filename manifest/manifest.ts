// Mission manifest: YAML or JSON text -> a validated MissionSpec. Every error names the offending field.
import { isMap, isScalar, isSeq, Lexer, parseDocument, type Node as YamlNode } from 'yaml'

/** CPU architectures as Node's process.arch names them. */
export const ARCHITECTURES = ['x64', 'arm64', 'arm', 'ia32'] as const
export type Architecture = typeof ARCHITECTURES[number]

export interface Placement {
  architectures?: Architecture[]
  boards?: string[]
  minMemoryMb?: number
}

export interface MissionSpec {
  name: string
  /** One image for every architecture, or one per architecture. */
  image: string | Partial<Record<Architecture, string>>
  command?: string[]
  env: Record<string, string>
  /** Container path of the mission's data directory; included in every checkpoint. */
  data?: string
  checkpointIntervalMs: number
  placement?: Placement
}

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

function isPlainObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

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
  const duplicate = yamlDuplicateKey(doc.contents)
  if (duplicate !== undefined) throw invalid(`Map keys must be unique: duplicate key ${JSON.stringify(duplicate)}`)
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

function yamlDuplicateKey (root: unknown): string | undefined {
  const stack: unknown[] = [root]
  while (stack.length > 0) {
    const node = stack.pop() as YamlNode | null | undefined
    if (isMap(node)) {
      const seen = new Set<string>()
      for (const pair of node.items) {
        const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key)
        if (seen.has(key)) return key
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

/** Validate an already-parsed object (e.g. a spec received over the control API). */
export function validateMissionSpec (document: unknown, filename?: string): MissionSpec {
  const fail = (field: string, problem: string): never => { throw new ManifestError(field, problem, filename) }
  if (!isPlainObject(document)) return fail('', 'must be a mapping with at least `name`, `image`')
  for (const key of Object.keys(document)) {
    if (!TOP_LEVEL_FIELDS.includes(key)) fail(key, `unknown field (allowed: ${TOP_LEVEL_FIELDS.join(', ')})`)
  }

  const name = document.name
  if (name === undefined) fail('name', 'is required')
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
    fail('name', 'must be 1-63 characters of a-z, 0-9 and -, starting and ending with a letter or digit')
  }

  const image = parseImage(document.image, fail)

  let command: string[] | undefined
  if (document.command !== undefined) {
    if (!Array.isArray(document.command) || document.command.length === 0) fail('command', 'must be a non-empty list of strings')
    if ((document.command as unknown[]).length > MAX_COMMAND_ARGS) fail('command', `has ${(document.command as unknown[]).length} arguments, at most ${MAX_COMMAND_ARGS}`)
    command = (document.command as unknown[]).map((part, i) => {
      if (typeof part !== 'string') return fail(`command[${i}]`, 'must be a string')
      return part
    })
  }

  const env: Record<string, string> = {}
  if (document.env !== undefined && document.env !== null) {
    if (!isPlainObject(document.env)) fail('env', 'must be a mapping of NAME: value')
    const count = Object.keys(document.env as object).length
    if (count > MAX_ENV_ENTRIES) fail('env', `has ${count} entries, at most ${MAX_ENV_ENTRIES}`)
    for (const [key, value] of Object.entries(document.env as Record<string, unknown>)) {
      if (!ENV_NAME_PATTERN.test(key)) fail(`env.${key}`, 'is not a valid environment variable name')
      if (typeof value === 'string') env[key] = value
      else if (typeof value === 'number' || typeof value === 'boolean') env[key] = String(value)
      else fail(`env.${key}`, 'must be a string, number or boolean')
    }
  }

  let data: string | undefined
  if (document.data !== undefined) {
    if (typeof document.data !== 'string' || !document.data.startsWith('/') || document.data.includes('\0') || document.data.split('/').includes('..')) {
      fail('data', 'must be an absolute container path without ".." (e.g. /data)')
    }
    data = document.data as string
    if (data === '/') fail('data', 'cannot be the container root')
  }

  let checkpointIntervalMs = DEFAULT_CHECKPOINT_INTERVAL_MS
  if (document.checkpointIntervalMs !== undefined) {
    const value = document.checkpointIntervalMs
    if (typeof value !== 'number' || !Number.isInteger(value)) fail('checkpointIntervalMs', 'must be an integer number of milliseconds')
    if ((value as number) < MIN_CHECKPOINT_INTERVAL_MS || (value as number) > MAX_CHECKPOINT_INTERVAL_MS) {
      fail('checkpointIntervalMs', `must be between ${MIN_CHECKPOINT_INTERVAL_MS} and ${MAX_CHECKPOINT_INTERVAL_MS}`)
    }
    checkpointIntervalMs = value as number
  }

  const placement = document.placement === undefined ? undefined : parsePlacement(document.placement, fail)

  if (typeof image !== 'string' && placement?.architectures !== undefined) {
    for (const arch of placement.architectures) {
      if (image[arch] === undefined) fail('placement.architectures', `lists ${arch} but image has no ${arch} entry`)
    }
  }

  const spec: MissionSpec = { name: name as string, image, env, checkpointIntervalMs }
  if (command !== undefined) spec.command = command
  if (data !== undefined) spec.data = data
  if (placement !== undefined) spec.placement = placement
  const bytes = utf8Length(JSON.stringify(spec))
  if (bytes > MAX_MANIFEST_BYTES) fail('', `the mission spec is ${bytes} bytes as JSON, more than the limit of ${MAX_MANIFEST_BYTES}`)
  return spec
}

function parseImage (value: unknown, fail: (field: string, problem: string) => never): MissionSpec['image'] {
  if (value === undefined) fail('image', 'is required')
  if (typeof value === 'string') {
    if (!IMAGE_PATTERN.test(value)) fail('image', `"${value}" is not a valid image reference`)
    return value
  }
  if (!isPlainObject(value)) return fail('image', 'must be an image name or a mapping from architecture (x64, arm64, arm, ia32) to image')
  const images: Partial<Record<Architecture, string>> = {}
  const entries = Object.entries(value)
  if (entries.length === 0) fail('image', 'mapping must name at least one architecture')
  for (const [arch, ref] of entries) {
    if (!isArchitecture(arch)) fail(`image.${arch}`, `unknown architecture (allowed: ${ARCHITECTURES.join(', ')})`)
    if (typeof ref !== 'string' || !IMAGE_PATTERN.test(ref)) fail(`image.${arch}`, 'must be a valid image reference')
    images[arch as Architecture] = ref as string
  }
  return images
}

function parsePlacement (value: unknown, fail: (field: string, problem: string) => never): Placement {
  if (!isPlainObject(value)) return fail('placement', 'must be a mapping (architectures, boards, minMemoryMb)')
  for (const key of Object.keys(value)) {
    if (!PLACEMENT_FIELDS.includes(key)) fail(`placement.${key}`, `unknown field (allowed: ${PLACEMENT_FIELDS.join(', ')})`)
  }
  const placement: Placement = {}
  if (value.architectures !== undefined) {
    if (!Array.isArray(value.architectures) || value.architectures.length === 0) fail('placement.architectures', 'must be a non-empty list')
    placement.architectures = (value.architectures as unknown[]).map((arch, i) => {
      if (typeof arch !== 'string' || !isArchitecture(arch)) return fail(`placement.architectures[${i}]`, `must be one of ${ARCHITECTURES.join(', ')}`)
      return arch
    })
  }
  if (value.boards !== undefined) {
    if (!Array.isArray(value.boards) || value.boards.length === 0) fail('placement.boards', 'must be a non-empty list of board names')
    if ((value.boards as unknown[]).length > MAX_PLACEMENT_BOARDS) fail('placement.boards', `lists ${(value.boards as unknown[]).length} boards, at most ${MAX_PLACEMENT_BOARDS}`)
    placement.boards = (value.boards as unknown[]).map((board, i) => {
      if (typeof board !== 'string' || board === '') return fail(`placement.boards[${i}]`, 'must be a non-empty string')
      return board
    })
  }
  if (value.minMemoryMb !== undefined) {
    const mb = value.minMemoryMb
    if (typeof mb !== 'number' || !Number.isInteger(mb) || mb < 1 || mb > 1_048_576) fail('placement.minMemoryMb', 'must be an integer between 1 and 1048576')
    placement.minMemoryMb = mb as number
  }
  return placement
}

/** The image a board of this architecture runs, or undefined when the mission cannot run there. */
export function imageFor (spec: MissionSpec, arch: string): string | undefined {
  if (typeof spec.image === 'string') return spec.image
  return isArchitecture(arch) ? spec.image[arch] : undefined
}
