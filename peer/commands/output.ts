// How a command prints what it got: a table (short peer ids), `wide` (full ids), JSON or YAML, like kubectl's -o.
import { UsageError } from './command.ts'
import { printable } from './terminal.ts'

export type OutputFormat = 'table' | 'wide' | 'json' | 'yaml'
const FORMATS: readonly OutputFormat[] = ['table', 'wide', 'json', 'yaml']

/** From `-o FORMAT` and the older `--json` (the same as `-o json`). */
export function outputFormatOf (values: { output?: string, json?: boolean }): OutputFormat {
  if (values.output == null) return values.json === true ? 'json' : 'table'
  if (!(FORMATS as readonly string[]).includes(values.output)) throw new UsageError(`-o: '${printable(values.output)}' is not one of ${FORMATS.join(', ')}`)
  if (values.json === true && values.output !== 'json') throw new UsageError(`--json and -o ${values.output} contradict each other`)
  return values.output as OutputFormat
}

/** The text to print: the value as JSON or YAML, else the human form (`wide`: full peer ids), made printable. */
export async function render (format: OutputFormat, value: unknown, human: (wide: boolean) => string): Promise<string> {
  if (format === 'json') return JSON.stringify(value, null, 2)
  // Loaded only when asked for: the yaml package costs ~40 ms of start-up.
  if (format === 'yaml') return (await import('yaml')).stringify(value).trimEnd()
  return human(format === 'wide').split('\n').map(printable).join('\n')
}
