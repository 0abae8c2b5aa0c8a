// The vehicle-controller mission app: determinism, the live loop's output, state.json, cold restart.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import {
  COURSE, REPORT_EVERY_TICKS, STATE_WRITE_EVERY_TICKS, initialState, parseState, report, simulate, step,
  type VehicleState
} from '../examples/vehicle/controller.js'

interface TeardownHost { teardown: (fn: () => unknown) => void }

const CONTROLLER = join(import.meta.dirname, '..', 'examples', 'vehicle', 'controller.js')

interface RunningController {
  child: ChildProcess
  lines: Array<Record<string, unknown>>
  /** Resolves with the first line matching `predicate` (already seen or yet to come). */
  waitFor: (predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number) => Promise<Record<string, unknown>>
  exited: Promise<number | null>
}

function startController (t: TeardownHost, dataDir: string): RunningController {
  const child = spawn(process.execPath, [CONTROLLER], {
    env: { ...process.env, DATA_DIR: dataDir },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  const lines: Array<Record<string, unknown>> = []
  const waiters: Array<{ predicate: (line: Record<string, unknown>) => boolean, resolve: (line: Record<string, unknown>) => void }> = []
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  createInterface({ input: child.stdout! }).on('line', text => {
    const line = JSON.parse(text) as Record<string, unknown>
    lines.push(line)
    for (const waiter of [...waiters]) {
      if (waiter.predicate(line)) {
        waiters.splice(waiters.indexOf(waiter), 1)
        waiter.resolve(line)
      }
    }
  })
  const waitFor = async (predicate: (line: Record<string, unknown>) => boolean, timeoutMs = 30_000): Promise<Record<string, unknown>> => {
    const seen = lines.find(predicate)
    if (seen !== undefined) return seen
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('controller did not print the expected line in time')), timeoutMs)
      waiters.push({ predicate, resolve: line => { clearTimeout(timer); resolve(line) } })
      void exited.then(code => { clearTimeout(timer); reject(new Error(`controller exited (${String(code)}) before the expected line`)) })
    })
  }
  return { child, lines, waitFor, exited }
}

function withoutWall (line: Record<string, unknown>): Record<string, unknown> {
  const { wall: _wall, ...rest } = line
  return rest
}

async function tempDataDir (t: TeardownHost): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-vehicle-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

t.test('the simulation is a pure function of the tick count', async t => {
  let stepped: VehicleState = initialState()
  for (let i = 0; i < 1234; i++) stepped = step(stepped)
  t.same(simulate(1234), stepped, 'stepping one by one equals simulate(N)')
  t.same(simulate(1234), simulate(1234), 'two runs agree')
  t.same(simulate(600, simulate(634)), simulate(1234), 'continuing from a saved state equals an uninterrupted run')
  t.same(JSON.parse(JSON.stringify(simulate(777))), simulate(777), 'state survives a JSON round trip exactly')
})

t.test('the vehicle follows the course and keeps moving', async t => {
  const lap = simulate(2500)
  t.ok(lap.lap >= 1, 'completes a lap of the figure-eight within 50 s')
  let state = initialState()
  let farthest = 0
  for (let i = 0; i < 6000; i++) {
    state = step(state)
    const nearest = Math.min(...COURSE.map(([x, y]) => Math.hypot(x - state.x, y - state.y)))
    farthest = Math.max(farthest, nearest)
  }
  t.ok(farthest < 10, `stays within 10 m of a waypoint (max ${farthest.toFixed(2)} m)`)
  t.ok(state.speed > 3, 'still driving after two minutes')
})

t.test('parseState rejects bad state files with a reason', async t => {
  t.type(parseState(simulate(10)), 'object')
  t.match(parseState(null), /not an object/)
  t.match(parseState({ ...simulate(10), v: 99 }), /version/)
  t.match(parseState({ ...simulate(10), x: 'far' }), /field x/)
  t.match(parseState({ ...simulate(10), tick: 1.5 }), /tick/)
  t.match(parseState({ ...simulate(10), wp: COURSE.length }), /wp/)
})

t.test('--simulate prints the state after N ticks; bad arguments exit 2', async t => {
  const output = await new Promise<{ code: number | null, stdout: string }>(resolve => {
    const child = spawn(process.execPath, [CONTROLLER, '--simulate', '250'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    child.stdout.on('data', chunk => { stdout += String(chunk) })
    child.once('exit', code => resolve({ code, stdout }))
  })
  t.equal(output.code, 0)
  t.same(JSON.parse(output.stdout), report(simulate(250)))
  const bad = await new Promise<number | null>(resolve => {
    spawn(process.execPath, [CONTROLLER, '--simulate', 'lots'], { stdio: 'ignore' }).once('exit', resolve)
  })
  t.equal(bad, 2)
})

t.test('live loop: reports advance on the deterministic trajectory, state.json is written, SIGTERM exits 0', async t => {
  const dataDir = await tempDataDir(t)
  const first = startController(t, dataDir)
  t.match(await first.waitFor(line => line.event !== undefined), { t: 'vehicle', event: 'start', fromTick: 0 })
  await first.waitFor(line => typeof line.tick === 'number' && line.tick >= STATE_WRITE_EVERY_TICKS + REPORT_EVERY_TICKS)

  const reports = first.lines.filter(line => line.event === undefined)
  t.ok(reports.length >= 6, `${reports.length} report lines`)
  reports.forEach((line, index) => {
    t.equal(line.tick, (index + 1) * REPORT_EVERY_TICKS, `report ${index} is tick ${(index + 1) * REPORT_EVERY_TICKS}`)
    t.type(line.wall, 'number')
    t.same(withoutWall(line), report(simulate(line.tick as number)), `tick ${String(line.tick)} is on the trajectory`)
  })

  const written = parseState(JSON.parse(await readFile(join(dataDir, 'state.json'), 'utf8')))
  if (typeof written === 'string') throw new Error(written)
  t.ok(written.tick >= STATE_WRITE_EVERY_TICKS, 'state.json written during the run')

  first.child.kill('SIGTERM')
  t.equal(await first.exited, 0, 'SIGTERM exits 0')
  const stop = first.lines.at(-1)!
  t.match(stop, { event: 'stop', signal: 'SIGTERM' })
  const final = parseState(JSON.parse(await readFile(join(dataDir, 'state.json'), 'utf8')))
  if (typeof final === 'string') throw new Error(final)
  t.equal(final.tick, stop.tick, 'the final state write holds the last tick')
  t.same(final, simulate(final.tick), 'state.json holds the exact deterministic state')
  t.same(await readdir(dataDir), ['state.json'], 'no temporary file left behind')

  t.test('a cold start resumes from state.json and continues the same trajectory', async t => {
    const second = startController(t, dataDir)
    t.match(await second.waitFor(line => line.event !== undefined), { event: 'cold-start', fromTick: final.tick })
    await second.waitFor(line => typeof line.tick === 'number' && line.tick >= final.tick + 3 * REPORT_EVERY_TICKS)
    const resumed = second.lines.filter(line => line.event === undefined)
    t.ok((resumed[0]!.tick as number) > final.tick, 'first report comes after the restored tick')
    for (const line of resumed) t.same(withoutWall(line), report(simulate(line.tick as number)), `tick ${String(line.tick)} continues the trajectory`)
    second.child.kill('SIGTERM')
    t.equal(await second.exited, 0)
  })
})

t.test('a corrupt state.json is reported and ignored, never a crash', async t => {
  const dataDir = await tempDataDir(t)
  await writeFile(join(dataDir, 'state.json'), '{"v":1,"tick":')
  const run = startController(t, dataDir)
  t.match(await run.waitFor(line => line.event === 'state-ignored'), { reason: /not JSON/ })
  t.match(await run.waitFor(line => line.event === 'start'), { fromTick: 0 })
  t.match(await run.waitFor(line => line.tick === REPORT_EVERY_TICKS), report(simulate(REPORT_EVERY_TICKS)))
  run.child.kill('SIGTERM')
  t.equal(await run.exited, 0)
})

t.test('mission.yaml and Dockerfile describe the same app', async t => {
  const { parse } = await import('yaml')
  const manifest = parse(await readFile(join(import.meta.dirname, '..', 'examples', 'vehicle', 'mission.yaml'), 'utf8')) as Record<string, unknown>
  t.match(manifest, {
    name: 'vehicle-controller',
    image: 'tandem/vehicle',
    command: ['node', '/app/controller.js'],
    env: { DATA_DIR: '/data' },
    data: '/data'
  })
  t.ok(typeof manifest.checkpointIntervalMs === 'number' && manifest.checkpointIntervalMs >= 500 && manifest.checkpointIntervalMs <= 1000)
  t.same(Object.keys(manifest).sort(), ['checkpointIntervalMs', 'command', 'data', 'env', 'image', 'name'], 'only the manifest fields')
  const dockerfile = await readFile(join(import.meta.dirname, '..', 'examples', 'vehicle', 'Dockerfile'), 'utf8')
  t.match(dockerfile, /^FROM tandem\/node-base$/m)
  t.match(dockerfile, /^COPY controller\.js \/app\/controller\.js$/m)
  t.match(dockerfile, /^CMD \["node", "\/app\/controller\.js"\]$/m)
})
