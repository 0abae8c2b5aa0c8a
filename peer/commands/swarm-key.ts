// `tandem swarm-key generate [--out FILE]`: a new pre-shared key for a private swarm (libp2p pnet format).
import { writeFile } from 'node:fs/promises'
import { generateKey } from '@libp2p/pnet'
import { UsageError, type Command } from './command.ts'
import { parseFlags } from './args.ts'
import { printable } from './terminal.ts'

const USAGE = 'usage: tandem swarm-key generate [--out FILE]   (without --out the key is printed)'

export function generateSwarmKey (): Uint8Array {
  const key = new Uint8Array(95)
  generateKey(key)
  return key
}

export const command: Command = {
  async run (argv) {
    const [sub, ...rest] = argv
    if (sub === '--help' || sub === '-h' || rest.includes('--help') || rest.includes('-h')) { console.log(USAGE); return 0 }
    if (sub !== 'generate') throw new UsageError(sub == null ? `missing subcommand\n${USAGE}` : `unknown subcommand '${printable(sub)}'\n${USAGE}`)
    const { values, positionals } = parseFlags(rest, { out: { type: 'string' } }, true)
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0] as string}'`)
    const key = Buffer.concat([generateSwarmKey(), Buffer.from('\n')])
    if (values.out == null) {
      process.stdout.write(key)
      return 0
    }
    try {
      await writeFile(values.out, key, { mode: 0o600, flag: 'wx' })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new UsageError(`--out: ${values.out} exists; not overwriting a swarm key`)
      throw err
    }
    console.error(`swarm key written to ${values.out} (copy it to every board of the swarm)`)
    return 0
  }
}
