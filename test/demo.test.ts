// The README's main job, as CI runs it: `npm run demo -- --no-tty --json` must take over, continue the vehicle's
// state and fence the failed board, and say so in its JSON summary (the last line) and its exit code.
import t from 'tap'
import { spawn } from 'node:child_process'
import { gateDockerCriu } from './checkpoint-helpers.ts'

const DEMO = new URL('../demo/run.ts', import.meta.url).pathname

function runDemo (args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return new Promise(resolve => {
    const child = spawn(process.execPath, [DEMO, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    child.on('exit', code => { resolve({ code, stdout, stderr }) })
  })
}

t.test('bad flags exit 2 with the usage', async t => {
  const result = await runDemo(['--boards', 'many'])
  t.equal(result.code, 2)
  t.match(result.stderr, /--boards must be a whole number/)
})

if (gateDockerCriu(t)) {
  t.test('the vehicle demo: takeover, state continued, failed board fenced', async t => {
    const result = await runDemo(['--no-tty', '--json', '--kill-after', '2'])
    const lines = result.stdout.trim().split('\n')
    let summary: Record<string, unknown> = {}
    try {
      summary = JSON.parse(lines.at(-1) ?? '{}') as Record<string, unknown>
    } catch {
      t.fail(`the last line is not JSON: ${lines.at(-1) ?? ''}`)
    }
    t.equal(result.code, 0, `the demo exits 0 (stderr: ${result.stderr.slice(-2000)})`)
    t.equal(summary.type, 'summary', 'the last line is the summary')
    t.equal(summary.takeover, true, 'the takeover happened')
    t.ok(typeof summary.newPrimary === 'string' && summary.newPrimary !== summary.failedBoard, `a surviving board drives on (${String(summary.newPrimary)})`)
    t.ok((summary.positionAfter as { tick?: number } | undefined)?.tick != null && ((summary.positionAfter as { tick: number }).tick > 0), 'the vehicle continued from its state, not from tick 0')
    t.equal(summary.trajectoryVerified, true, 'the restored vehicle is on its deterministic trajectory')
    t.equal(summary.fencedBoard, summary.failedBoard, 'the failed board came back fenced')
    t.ok(typeof summary.downtimeMs === 'number', `downtime measured: ${String(summary.downtimeMs)} ms`)
  })
}
