#!/usr/bin/env node
// The `tandem` command line: each subcommand lives in peer/commands/ and is looked up here.
import { UsageError, type Command } from './commands/command.ts'

const commands: Record<string, () => Promise<{ command: Command }>> = {
  peer: () => import('./commands/peer.ts'),
  status: () => import('./commands/status.ts'),
  'swarm-key': () => import('./commands/swarm-key.ts'),
  mission: () => import('./commands/mission.ts'),
  doctor: () => import('./commands/doctor.ts'),
  events: () => import('./commands/events.ts')
}

function usage (): string {
  return `usage: tandem <command> [options]\n\ncommands:\n${Object.keys(commands).map(name => `  ${name}`).join('\n')}\n\nRun 'tandem <command> --help' for a command's options.`
}

async function main (argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name == null || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage())
    return name == null ? 2 : 0
  }
  const load = commands[name]
  if (load == null) {
    console.error(`tandem: unknown command '${name}'\n\n${usage()}`)
    return 2
  }
  const { command } = await load()
  try {
    return await command.run(rest)
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`tandem ${name}: ${err.message}`)
      return 2
    }
    throw err
  }
}

main(process.argv.slice(2)).then(code => { process.exitCode = code }, err => {
  console.error(`tandem: ${err instanceof Error ? err.message : String(err)}`)
  process.exitCode = 1
})
