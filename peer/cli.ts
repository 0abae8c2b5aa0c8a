#!/usr/bin/env node
// The `tandem` command line: each subcommand lives in peer/commands/ and is looked up here.
import { readFileSync } from 'node:fs'
import { UsageError, type Command } from './commands/command.ts'
import { printable } from './commands/terminal.ts'

const commands: Record<string, () => Promise<{ command: Command }>> = {
  peer: () => import('./commands/peer.ts'),
  status: () => import('./commands/status.ts'),
  'swarm-key': () => import('./commands/swarm-key.ts'),
  'operator-key': () => import('./commands/operator-key.ts'),
  mission: () => import('./commands/mission.ts'),
  doctor: () => import('./commands/doctor.ts'),
  events: () => import('./commands/events.ts'),
  ui: () => import('./commands/ui.ts'),
  completion: () => import('./commands/completion.ts')
}

function usage (): string {
  return `usage: tandem <command> [options]\n       tandem --version\n\ncommands:\n${Object.keys(commands).map(name => `  ${name}`).join('\n')}\n\n` +
    'Run \'tandem <command> --help\' for a command\'s options. TANDEM_API and TANDEM_DATA_DIR stand in for --api and --data-dir.'
}

function version (): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
  return `tandem ${pkg.version} (node ${process.version})`
}

async function main (argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name == null || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage())
    return name == null ? 2 : 0
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    console.log(version())
    return 0
  }
  const load = commands[name]
  if (load == null) {
    console.error(`tandem: unknown command '${printable(name)}'\n\n${usage()}`)
    return 2
  }
  const { command } = await load()
  try {
    return await command.run(rest)
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`tandem ${name}: ${err.message.split('\n').map(printable).join('\n')}`)
      return 2
    }
    throw err
  }
}

main(process.argv.slice(2)).then(code => { process.exitCode = code }, err => {
  // Messages may quote what a peer or a file said: printed with their control characters made visible.
  console.error(`tandem: ${printable(err instanceof Error ? err.message : String(err))}`)
  process.exitCode = 1
})
