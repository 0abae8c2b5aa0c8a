// `tandem completion bash|zsh`: each script parses (`bash -n`, `zsh -n`) and, run in that shell with the completion
// builtins' inputs set by hand, offers the CLI's commands, a command's subcommands and a subcommand's flags.
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI_PATH } from '../harness/spawn-peer.ts'

function cli (...args: string[]): string { return execFileSync(process.execPath, [CLI_PATH, ...args], { encoding: 'utf8' }) }

function has (shell: string): boolean { return spawnSync(shell, ['-c', 'true']).status === 0 }

const commandsOfHelp = (): string[] => {
  const help = spawnSync(process.execPath, [CLI_PATH, '--help'], { encoding: 'utf8' }).stdout
  return help.split('commands:\n')[1]!.split('\n\n')[0]!.split('\n').map(line => line.trim()).filter(Boolean)
}

t.test('bash', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-completion-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = join(dir, 'tandem.bash')
  await writeFile(file, cli('completion', 'bash'))
  t.equal(spawnSync('bash', ['-n', file]).status, 0, 'bash -n parses it')
  const complete = (...words: string[]): string[] => {
    const script = `source ${file}; COMP_WORDS=(${words.map(w => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _tandem; printf '%s\\n' "\${COMPREPLY[@]}"`
    return execFileSync('bash', ['-c', script], { encoding: 'utf8', cwd: dir }).split('\n').filter(Boolean)
  }
  const top = complete('tandem', '')
  for (const name of commandsOfHelp()) t.ok(top.includes(name), `offers '${name}' (from tandem --help)`)
  t.same(complete('tandem', 'mi'), ['mission'])
  t.same(complete('tandem', 'mission', '').sort(), ['deploy', 'logs', 'ls', 'move', 'resign', 'rm', 'show', 'validate'])
  t.ok(complete('tandem', 'mission', 'logs', 'x', '--').includes('--follow'), 'mission logs flags')
  t.same(complete('tandem', 'events', '--mi'), ['--mission'], 'a command without subcommands completes its flags')
  t.same(complete('tandem', 'status', '-o', 'j'), ['json'], 'values of -o')
})

// Under CI the provisioning installs zsh: a missing one fails there instead of skipping.
t.test('zsh', { skip: has('zsh') || process.env.CI === 'true' ? false : 'zsh is not installed' }, async t => {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-completion-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = join(dir, '_tandem')
  await writeFile(file, cli('completion', 'zsh'))
  t.equal(spawnSync('zsh', ['-n', file]).status, 0, 'zsh -n parses it')
  // compadd and compdef stand in for the completion system's builtins: they print what the script offers.
  const complete = (...words: string[]): string[] => {
    const script = `compadd () { [[ $1 == -- ]] && shift; printf '%s\\n' "$@" }; compdef () { }; _files () { echo FILES }; source ${file}
words=(${words.map(w => `'${w}'`).join(' ')}); CURRENT=${words.length}; PREFIX='${words.at(-1) as string}'; _tandem`
    return execFileSync('zsh', ['-f', '-c', script], { encoding: 'utf8', cwd: dir }).split('\n').filter(Boolean)
  }
  const top = complete('tandem', '')
  for (const name of commandsOfHelp()) t.ok(top.includes(name), `offers '${name}'`)
  t.same(complete('tandem', 'mission', '').sort(), ['deploy', 'logs', 'ls', 'move', 'resign', 'rm', 'show', 'validate'])
  t.ok(complete('tandem', 'mission', 'logs', 'x', '-').includes('--since'), 'mission logs flags')
  t.same(complete('tandem', 'status', '-o', ''), ['table', 'wide', 'json', 'yaml'], 'values of -o')
})

t.test('a shell it does not know', async t => {
  const r = spawnSync(process.execPath, [CLI_PATH, 'completion', 'fish'], { encoding: 'utf8' })
  t.equal(r.status, 2)
  t.match(r.stderr, /unknown shell 'fish'/)
})
