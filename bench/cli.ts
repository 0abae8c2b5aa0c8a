// CLI start-up time (`npm run bench:cli [-- --runs N]`): wall time from spawn to exit of common `tandem` commands,
// next to a bare `node -e ''` (the runtime's own start-up, the floor), and `status` and `mission ls` against a peer
// this benchmark starts on loopback (no Docker needed). Prints a table; writes bench/results/cli-<time>.json.
import { spawnSync } from 'node:child_process'
import { cpus } from 'node:os'
import { parseArgs } from 'node:util'
import { CLI_PATH, spawnPeer, stopAllPeers } from '../harness/spawn-peer.ts'
import { distribution, table, writeResults, type Distribution } from './report.ts'

const MANIFEST = new URL('../examples/vehicle/mission.yaml', import.meta.url).pathname

interface Case { name: string, args: string[], env?: NodeJS.ProcessEnv }

function timeRuns (args: string[], runs: number, env?: NodeJS.ProcessEnv): { ms: Distribution, failures: number } {
  const times: number[] = []
  let failures = 0
  // One run first, unmeasured: the file cache warm, as a user's second call finds it.
  spawnSync(process.execPath, args, { env: { ...process.env, ...env }, stdio: 'ignore' })
  for (let i = 0; i < runs; i++) {
    const started = performance.now()
    const r = spawnSync(process.execPath, args, { env: { ...process.env, ...env }, stdio: 'ignore' })
    times.push(performance.now() - started)
    if (r.status !== 0) failures++
  }
  return { ms: distribution(times), failures }
}

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '20' } } })
  const runs = Number(values.runs)
  const peer = await spawnPeer({ openMissions: true })
  try {
    const apiEnv = { TANDEM_API: peer.apiAddress, TANDEM_DATA_DIR: peer.dataDir }
    const cases: Case[] = [
      { name: "node -e '' (floor)", args: ['-e', ''] },
      { name: 'tandem --version', args: [CLI_PATH, '--version'] },
      { name: 'tandem --help', args: [CLI_PATH, '--help'] },
      { name: 'tandem completion bash', args: [CLI_PATH, 'completion', 'bash'] },
      { name: 'tandem mission validate FILE', args: [CLI_PATH, 'mission', 'validate', MANIFEST] },
      { name: 'tandem status (live peer)', args: [CLI_PATH, 'status'], env: apiEnv },
      { name: 'tandem mission ls (live peer)', args: [CLI_PATH, 'mission', 'ls'], env: apiEnv },
      { name: 'tandem events (live peer)', args: [CLI_PATH, 'events'], env: apiEnv }
    ]
    const results = []
    for (const c of cases) {
      const { ms, failures } = timeRuns(c.args, runs, c.env)
      results.push({ command: c.name, ...ms, failures })
      process.stderr.write(`  ${c.name}: p50 ${Math.round(ms.p50 ?? 0)} ms\n`)
    }
    const floor = results[0]?.p50 ?? 0
    console.log(table([['command', 'runs', 'p50 ms', 'min ms', 'max ms', 'p50 - node floor', 'failed'],
      ...results.map(r => [r.command, r.n, r.p50, r.min, r.max, r.p50 == null ? null : r.p50 - floor, r.failures])]))
    const file = await writeResults('cli', {
      date: new Date().toISOString(),
      host: { cpus: cpus().length, model: cpus()[0]?.model ?? null, node: process.version },
      runs,
      results
    })
    console.log(`\nwrote ${file}`)
    if (results.some(r => r.failures > 0)) process.exitCode = 1
  } finally {
    await peer.stop()
  }
}

main().catch(async err => {
  console.error(`bench: ${(err as Error).stack ?? String(err)}`)
  await stopAllPeers()
  process.exitCode = 1
})
