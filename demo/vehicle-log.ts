// Reads the vehicle controller's stdout lines (as `docker logs` gives them) and measures a takeover:
// downtime from the last report of the old primary to the first of the new one, state lost in ticks,
// and whether the new primary continued the same deterministic trajectory.
import { REPORT_EVERY_TICKS, TICK_HZ, report, simulate, type VehicleReport } from '../examples/vehicle/controller.js'
import type { DemoSummary } from './view.ts'

/** A report line as the controller prints it (demo/vehicle-log.ts reads it back). */
export type VehicleSample = Omit<VehicleReport, 't' | 'wall'> & {
  /** Date.now() inside the container when the line was printed. */
  wall: number
}

export interface VehicleLogEvent {
  /** 'start' | 'cold-start' | 'stop' | 'state-ignored' | 'state-write-failed' */
  event: string
  wall?: number
  fromTick?: number
  tick?: number
  reason?: string
}

export type VehicleLogEntry =
  | { kind: 'report', sample: VehicleSample }
  | { kind: 'event', event: VehicleLogEvent }

const SAMPLE_FIELDS = ['tick', 'x', 'y', 'speed', 'heading', 'wp', 'lap', 'odo', 'wall'] as const

/**
 * One line of controller output; undefined for anything else. Tolerates what precedes the JSON object
 * (a `docker logs --timestamps` stamp, a stream multiplexing header).
 */
export function parseVehicleLine (line: string): VehicleLogEntry | undefined {
  const start = line.indexOf('{')
  if (start < 0) return undefined
  let value: unknown
  try {
    value = JSON.parse(line.slice(start).trim())
  } catch {
    return undefined
  }
  if (value === null || typeof value !== 'object') return undefined
  const record = value as Record<string, unknown>
  if (record.t !== 'vehicle') return undefined
  if (typeof record.event === 'string') {
    const event: VehicleLogEvent = { event: record.event }
    if (typeof record.wall === 'number') event.wall = record.wall
    if (typeof record.fromTick === 'number') event.fromTick = record.fromTick
    if (typeof record.tick === 'number') event.tick = record.tick
    if (typeof record.reason === 'string') event.reason = record.reason
    return { kind: 'event', event }
  }
  for (const field of SAMPLE_FIELDS) {
    if (typeof record[field] !== 'number' || !Number.isFinite(record[field])) return undefined
  }
  const sample = Object.fromEntries(SAMPLE_FIELDS.map(field => [field, record[field]])) as unknown as VehicleSample
  return { kind: 'report', sample }
}

/** Every controller line of a log text, in order. */
export function parseVehicleLog (text: string): VehicleLogEntry[] {
  return text.split('\n').map(parseVehicleLine).filter((entry): entry is VehicleLogEntry => entry !== undefined)
}

export function samplesOf (entries: readonly VehicleLogEntry[]): VehicleSample[] {
  return entries.flatMap(entry => entry.kind === 'report' ? [entry.sample] : [])
}

/** True when the sample is exactly where the deterministic simulation puts the vehicle at its tick. */
export function isOnTrajectory (sample: VehicleSample): boolean {
  const expected = report(simulate(sample.tick))
  return expected.x === sample.x && expected.y === sample.y && expected.speed === sample.speed &&
    expected.heading === sample.heading && expected.wp === sample.wp && expected.lap === sample.lap && expected.odo === sample.odo
}

export type ResumedFrom = 'checkpoint' | 'cold-start' | 'start'

export interface TakeoverMeasurement {
  /** Last report of the old primary. */
  lastBefore: VehicleSample
  /** First report of the new primary. */
  firstAfter: VehicleSample
  /** firstAfter.wall - lastBefore.wall (both Date.now() on the same host clock). */
  downtimeMs: number
  /**
   * 'checkpoint': the new container's log has no start event, its process was restored (CRIU);
   * 'cold-start': it began from state.json; 'start': it began from tick 0 (all state lost).
   */
  resumedFrom: ResumedFrom
  /** The tick the new primary resumed from: exact for a cold start, else the lowest it can be. */
  resumedFromTick: number
  /** Reported ticks the new primary had to redo (lastBefore.tick - resumedFromTick, at least 0). */
  stateLostTicks: number
  /** Uncertainty of stateLostTicks: reports come every REPORT_EVERY_TICKS ticks. */
  stateLostResolutionTicks: number
  /** Every report of the new primary lies on the deterministic trajectory. */
  trajectoryVerified: boolean
}

/**
 * Measures a takeover from the old primary's log entries and the new primary's (its new container only).
 * Throws when either log holds no report.
 */
export function measureTakeover (before: readonly VehicleLogEntry[], after: readonly VehicleLogEntry[]): TakeoverMeasurement {
  const lastBefore = samplesOf(before).at(-1)
  if (lastBefore === undefined) throw new Error('the old primary\'s log holds no vehicle report')
  const afterSamples = samplesOf(after)
  const firstAfter = afterSamples[0]
  if (firstAfter === undefined) throw new Error('the new primary\'s log holds no vehicle report')

  const startEvent = after.find(entry => entry.kind === 'event' && (entry.event.event === 'start' || entry.event.event === 'cold-start'))
  let resumedFrom: ResumedFrom = 'checkpoint'
  let resumedFromTick = Math.max(0, firstAfter.tick - REPORT_EVERY_TICKS)
  let resolution = REPORT_EVERY_TICKS
  if (startEvent?.kind === 'event' && startEvent.event.event === 'cold-start') {
    resumedFrom = 'cold-start'
    resumedFromTick = startEvent.event.fromTick ?? resumedFromTick
    resolution = 0
  } else if (startEvent?.kind === 'event') {
    resumedFrom = 'start'
    resumedFromTick = 0
    resolution = 0
  }

  const toVerify = afterSamples.length <= 2 ? afterSamples : [afterSamples[0]!, afterSamples[Math.floor(afterSamples.length / 2)]!, afterSamples.at(-1)!]
  return {
    lastBefore,
    firstAfter,
    downtimeMs: firstAfter.wall - lastBefore.wall,
    resumedFrom,
    resumedFromTick,
    stateLostTicks: Math.max(0, lastBefore.tick - resumedFromTick),
    stateLostResolutionTicks: resolution,
    trajectoryVerified: toVerify.every(isOnTrajectory)
  }
}

/** The summary fields a takeover measurement fills in (the rest comes from the swarm's events). */
export function takeoverFigures (measurement: TakeoverMeasurement): Pick<DemoSummary,
  'downtimeMs' | 'stateLostTicks' | 'ticksPerSecond' | 'positionBefore' | 'positionAfter' | 'trajectoryVerified'> {
  const position = (sample: VehicleSample): { tick: number, x: number, y: number } => ({ tick: sample.tick, x: sample.x, y: sample.y })
  return {
    downtimeMs: measurement.downtimeMs,
    stateLostTicks: measurement.stateLostTicks,
    ticksPerSecond: TICK_HZ,
    positionBefore: position(measurement.lastBefore),
    positionAfter: position(measurement.firstAfter),
    trajectoryVerified: measurement.trajectoryVerified
  }
}
