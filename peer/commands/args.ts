// Flag parsing shared by the commands: node:util parseArgs with its errors turned into UsageError (exit 2).
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { UsageError } from './command.ts'

export function parseFlags<O extends NonNullable<ParseArgsConfig['options']>> (argv: string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}
