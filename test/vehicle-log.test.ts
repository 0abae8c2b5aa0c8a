// Reading the vehicle controller's log lines and measuring a takeover from two containers' logs.
import t from 'tap'
import { isOnTrajectory, measureTakeover, parseVehicleLine, parseVehicleLog, samplesOf, takeoverFigures } from '../demo/vehicle-log.ts'
import { renderSummary } from '../demo/view.ts'
import { REPORT_EVERY_TICKS, report, simulate } from '../examples/vehicle/controller.js'

const WALL_START = 1_800_000_000_000

function reportLine (tick: number, wall: number): string {
  return JSON.stringify({ ...report(simulate(tick)), wall })
}

/** Log text of a controller that printed reports for ticks (from, to], 20 ms per tick. */
function logText (fromTick: number, toTick: number, wallAtFrom: number, firstLine?: string): string {
  const lines = firstLine === undefined ? [] : [firstLine]
  for (let tick = fromTick + 1; tick <= toTick; tick++) {
    if (tick % REPORT_EVERY_TICKS === 0) lines.push(reportLine(tick, wallAtFrom + (tick - fromTick) * 20))
  }
  return lines.join('\n') + '\n'
}

t.test('parseVehicleLine reads reports and events and ignores anything else', async t => {
  const line = reportLine(120, WALL_START)
  t.match(parseVehicleLine(line), { kind: 'report', sample: { tick: 120, wall: WALL_START } })
  t.match(parseVehicleLine(`2026-11-25T06:00:00.123456789Z ${line}`), { kind: 'report', sample: { tick: 120 } }, 'docker --timestamps prefix')
  t.match(parseVehicleLine(`\u0001\u0000\u0000\u0000\u0000\u0000\u0000\u0080${line}`), { kind: 'report' }, 'multiplexing header')
  t.match(parseVehicleLine('{"t":"vehicle","event":"cold-start","fromTick":50,"wall":1}'), { kind: 'event', event: { event: 'cold-start', fromTick: 50 } })
  t.equal(parseVehicleLine('npm notice something'), undefined)
  t.equal(parseVehicleLine('{"t":"vehicle","tick":'), undefined, 'cut line')
  t.equal(parseVehicleLine('{"t":"other","tick":1}'), undefined, 'another app')
  t.equal(parseVehicleLine('{"t":"vehicle","tick":"1"}'), undefined, 'wrong types')
  t.equal(parseVehicleLog(`junk\n${line}\n\n${line}`).length, 2)
})

t.test('isOnTrajectory checks a sample against the deterministic simulation', async t => {
  const sample = samplesOf(parseVehicleLog(reportLine(3000, WALL_START)))[0]!
  t.ok(isOnTrajectory(sample))
  t.notOk(isOnTrajectory({ ...sample, x: sample.x + 0.001 }))
  t.notOk(isOnTrajectory({ ...sample, tick: sample.tick + 10 }))
})

t.test('a CRIU-style takeover: no start event in the new log, state lost bounded by the report interval', async t => {
  const before = parseVehicleLog(logText(0, 1000, WALL_START, '{"t":"vehicle","event":"start","fromTick":0,"wall":0}'))
  const checkpointTick = 973
  const after = parseVehicleLog(logText(checkpointTick, 1200, WALL_START + 1000 * 20 + 900))
  const measured = measureTakeover(before, after)
  t.equal(measured.lastBefore.tick, 1000)
  t.equal(measured.firstAfter.tick, 980)
  t.equal(measured.resumedFrom, 'checkpoint')
  t.equal(measured.resumedFromTick, 970)
  t.equal(measured.stateLostTicks, 30, 'an upper bound: the true loss is 27 ticks')
  t.equal(measured.stateLostResolutionTicks, REPORT_EVERY_TICKS)
  t.equal(measured.downtimeMs, 900 + (980 - checkpointTick) * 20)
  t.equal(measured.trajectoryVerified, true)
})

t.test('a cold start is measured exactly; a restart from zero is recognised', async t => {
  const before = parseVehicleLog(logText(0, 500, WALL_START))
  const cold = measureTakeover(before, parseVehicleLog(logText(450, 600, WALL_START + 20_000, '{"t":"vehicle","event":"cold-start","fromTick":450,"wall":1}')))
  t.match(cold, { resumedFrom: 'cold-start', resumedFromTick: 450, stateLostTicks: 50, stateLostResolutionTicks: 0, trajectoryVerified: true })
  const fresh = measureTakeover(before, parseVehicleLog(logText(0, 100, WALL_START + 20_000, '{"t":"vehicle","event":"start","fromTick":0,"wall":1}')))
  t.match(fresh, { resumedFrom: 'start', resumedFromTick: 0, stateLostTicks: 500 })
})

t.test('a new primary off the trajectory is flagged; empty logs are clear errors', async t => {
  const before = parseVehicleLog(logText(0, 500, WALL_START))
  const tampered = logText(480, 600, WALL_START + 20_000).replace(/"x":[-0-9.]+/, '"x":12345')
  t.equal(measureTakeover(before, parseVehicleLog(tampered)).trajectoryVerified, false)
  t.throws(() => measureTakeover([], before), /old primary's log holds no vehicle report/)
  t.throws(() => measureTakeover(before, parseVehicleLog('{"t":"vehicle","event":"cold-start","fromTick":1}')), /new primary's log holds no vehicle report/)
})

t.test('takeoverFigures fills the demo summary', async t => {
  const before = parseVehicleLog(logText(0, 500, WALL_START))
  const measured = measureTakeover(before, parseVehicleLog(logText(473, 600, WALL_START + 10_000)))
  const figures = takeoverFigures(measured)
  t.match(figures, { downtimeMs: measured.downtimeMs, stateLostTicks: 30, ticksPerSecond: 50, trajectoryVerified: true })
  t.match(figures.positionBefore, { tick: 500 })
  t.match(figures.positionAfter, { tick: 480 })
  const text = renderSummary({ mission: 'vehicle-controller', boards: 3, takeover: true, ...figures }).join('\n')
  t.ok(text.includes('30 ticks, 600 ms of driving'))
  t.ok(text.includes('continued on the same trajectory'))
})
