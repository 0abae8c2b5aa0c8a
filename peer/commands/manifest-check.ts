// `tandem mission validate`: every problem of a manifest, not only the first. The deploy path's validator
// (manifest/manifest.ts) stops at the first problem; here it is run on each field alone, inside an otherwise valid
// spec, so each field's first problem is found with the very rules a peer applies, then on the whole for the
// cross-field checks once every field passes.
import { ManifestError, parseManifest, validateMissionSpec } from '../../manifest/manifest.ts'
import { parse } from 'yaml'

export interface ManifestProblem { field: string, problem: string }

const VALID_BASE = { name: 'x', image: 'busybox' }

function problemOf (err: unknown): ManifestProblem {
  if (err instanceof ManifestError) return { field: err.field, problem: err.message.replace(/^[^:]*: /, '').replace(err.field === '' ? '' : `${err.field}: `, '') }
  return { field: '', problem: (err as Error).message }
}

function check (document: Record<string, unknown>): ManifestProblem | undefined {
  try {
    validateMissionSpec(document)
    return undefined
  } catch (err) {
    return problemOf(err)
  }
}

function isMapping (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

export function manifestProblems (text: string, filename?: string): ManifestProblem[] {
  let first: ManifestProblem
  try {
    parseManifest(text, filename)
    return []
  } catch (err) {
    if (!(err instanceof ManifestError)) throw err
    first = problemOf(err)
  }
  // Not YAML, too large, too many entries, a duplicate key, not a mapping: nothing to take apart.
  if (first.field === '') return [first]
  const document: unknown = parse(text, { maxAliasCount: 100 })
  if (!isMapping(document)) return [first]
  const problems: ManifestProblem[] = []
  const add = (problem: ManifestProblem | undefined): void => { if (problem != null) problems.push(problem) }
  for (const [field, value] of Object.entries(document)) {
    if (field === 'name' || field === 'image') continue
    if (field === 'env' && isMapping(value)) {
      for (const [key, entry] of Object.entries(value)) add(check({ ...VALID_BASE, env: { [key]: entry } }))
    } else if (field === 'command' && Array.isArray(value) && value.length > 0) {
      value.forEach((part, i) => {
        const problem = check({ ...VALID_BASE, command: [part] })
        add(problem == null ? undefined : { ...problem, field: problem.field.replace('command[0]', `command[${i}]`) })
      })
    } else if (field === 'placement' && isMapping(value)) {
      for (const [key, entry] of Object.entries(value)) add(check({ ...VALID_BASE, placement: { [key]: entry } }))
    } else {
      add(check({ ...VALID_BASE, [field]: value }))
    }
  }
  add(document.name === undefined ? { field: 'name', problem: 'is required' } : check({ ...VALID_BASE, name: document.name }))
  if (isMapping(document.image)) {
    for (const [arch, ref] of Object.entries(document.image)) add(check({ ...VALID_BASE, image: { [arch]: ref } }))
    if (Object.keys(document.image).length === 0) add(check({ ...VALID_BASE, image: {} }))
  } else {
    add(document.image === undefined ? { field: 'image', problem: 'is required' } : check({ ...VALID_BASE, image: document.image }))
  }
  // Every field passes alone: the whole spec's own checks (e.g. placement.architectures against image) decide.
  if (problems.length === 0) {
    try { parseManifest(text, filename) } catch (err) { add(problemOf(err)) }
  }
  return problems
}
