// vehicle-controller: a small electric vehicle following a figure-eight course with a PID heading
// controller, stepped at 50 Hz by a fixed dt. The state after N ticks is a pure function of N, so a
// restored process (CRIU) or a cold restart from $DATA_DIR/state.json continues the same trajectory.
//
// Runs as `node /app/controller.js` (no dependencies). `node controller.js --simulate N` prints the
// state after N ticks without waiting, for tests and tools. Importing this file starts nothing.
import { mkdirSync, readFileSync, realpathSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export const TICK_HZ = 50
export const DT_SECONDS = 1 / TICK_HZ
export const TICK_INTERVAL_MS = 1000 / TICK_HZ
export const REPORT_EVERY_TICKS = 10
export const STATE_WRITE_EVERY_TICKS = TICK_HZ
export const STATE_VERSION = 1

const CRUISE_SPEED = 6 // m/s
const MAX_ACCELERATION = 2.5 // m/s^2
const MAX_YAW_RATE = 1.4 // rad/s
const WAYPOINT_CAPTURE_RADIUS = 5 // m
const PID = { kp: 2.2, ki: 0.15, kd: 0.08, integralLimit: 2 }

/** Waypoints of a figure-eight (lemniscate of Gerono), 80 m x 40 m, metres, driven in order. */
export const COURSE = Object.freeze(Array.from({ length: 24 }, (_, i) => {
  const angle = (2 * Math.PI * i) / 24
  return Object.freeze([round(40 * Math.sin(angle), 3), round(20 * Math.sin(2 * angle), 3)])
}))

function round (value, decimals) {
  const scale = 10 ** decimals
  return Math.round(value * scale) / scale
}

function wrapAngle (angle) {
  let wrapped = angle
  while (wrapped > Math.PI) wrapped -= 2 * Math.PI
  while (wrapped <= -Math.PI) wrapped += 2 * Math.PI
  return wrapped
}

function clamp (value, limit) {
  return Math.max(-limit, Math.min(limit, value))
}

/** The state at tick 0: parked on the first waypoint, facing the second. */
export function initialState () {
  const [x0, y0] = COURSE[0]
  const [x1, y1] = COURSE[1]
  return {
    v: STATE_VERSION,
    tick: 0,
    x: x0,
    y: y0,
    speed: 0,
    heading: Math.atan2(y1 - y0, x1 - x0),
    integral: 0,
    prevError: 0,
    wp: 1,
    lap: 0,
    odo: 0
  }
}

/** Advances the state by one fixed step (pure: returns a new object). */
export function step (state) {
  let wp = state.wp
  let lap = state.lap
  let [tx, ty] = COURSE[wp]
  if (Math.hypot(tx - state.x, ty - state.y) < WAYPOINT_CAPTURE_RADIUS) {
    wp = (wp + 1) % COURSE.length
    if (wp === 1) lap += 1
    ;[tx, ty] = COURSE[wp]
  }

  const error = wrapAngle(Math.atan2(ty - state.y, tx - state.x) - state.heading)
  const integral = clamp(state.integral + error * DT_SECONDS, PID.integralLimit)
  const derivative = (error - state.prevError) / DT_SECONDS
  const yawRate = clamp(PID.kp * error + PID.ki * integral + PID.kd * derivative, MAX_YAW_RATE)
  const heading = wrapAngle(state.heading + yawRate * DT_SECONDS)

  const targetSpeed = CRUISE_SPEED * (1 - 0.6 * Math.min(Math.abs(error), 1))
  const speed = Math.max(0, state.speed + clamp(2 * (targetSpeed - state.speed), MAX_ACCELERATION) * DT_SECONDS)

  return {
    v: STATE_VERSION,
    tick: state.tick + 1,
    x: state.x + speed * Math.cos(heading) * DT_SECONDS,
    y: state.y + speed * Math.sin(heading) * DT_SECONDS,
    speed,
    heading,
    integral,
    prevError: error,
    wp,
    lap,
    odo: state.odo + speed * DT_SECONDS
  }
}

/** The state after `ticks` steps from `from` (default: tick 0). */
export function simulate (ticks, from = initialState()) {
  let state = from
  for (let i = 0; i < ticks; i++) state = step(state)
  return state
}

/** The stdout report of one state: one JSON object (without the wall-clock field). */
export function report (state) {
  return {
    t: 'vehicle',
    tick: state.tick,
    x: round(state.x, 3),
    y: round(state.y, 3),
    speed: round(state.speed, 3),
    heading: round(state.heading, 4),
    wp: state.wp,
    lap: state.lap,
    odo: round(state.odo, 2)
  }
}

const NUMERIC_FIELDS = ['tick', 'x', 'y', 'speed', 'heading', 'integral', 'prevError', 'wp', 'lap', 'odo']

/** Validates a parsed state.json; returns the state, or an error message. */
export function parseState (value) {
  if (value === null || typeof value !== 'object') return 'not an object'
  if (value.v !== STATE_VERSION) return `unsupported state version ${String(value.v)}`
  for (const field of NUMERIC_FIELDS) {
    if (typeof value[field] !== 'number' || !Number.isFinite(value[field])) return `field ${field} is not a finite number`
  }
  if (!Number.isInteger(value.tick) || value.tick < 0) return 'tick is not a non-negative integer'
  if (!Number.isInteger(value.wp) || value.wp < 0 || value.wp >= COURSE.length) return 'wp is out of range'
  const state = {}
  for (const field of ['v', ...NUMERIC_FIELDS]) state[field] = value[field]
  return state
}

function emit (object) {
  process.stdout.write(JSON.stringify(object) + '\n')
}

function writeStateAtomically (dataDir, state) {
  // The directory may be gone, e.g. after a restore into a fresh container: recreate it.
  mkdirSync(dataDir, { recursive: true })
  const target = join(dataDir, 'state.json')
  const temporary = `${target}.tmp`
  writeFileSync(temporary, JSON.stringify(state))
  renameSync(temporary, target)
}

function loadState (dataDir) {
  let text
  try {
    text = readFileSync(join(dataDir, 'state.json'), 'utf8')
  } catch (error) {
    if (error.code === 'ENOENT') return { state: undefined }
    return { error: `cannot read state.json: ${error.message}` }
  }
  let parsed
  try {
    parsed = JSON.parse(text)
  } catch (error) {
    return { error: `state.json is not JSON: ${error.message}` }
  }
  const result = parseState(parsed)
  return typeof result === 'string' ? { error: `state.json rejected: ${result}` } : { state: result }
}

/**
 * Fixed-rate pacing without setInterval's drift: each delay aims at start + n * interval. After a pause
 * (a CRIU freeze, a restore, a stalled host) or a clock that jumped, it re-anchors instead of bursting.
 */
function createPacer (intervalMs) {
  let due = performance.now()
  return {
    nextDelay () {
      due += intervalMs
      const now = performance.now()
      if (Math.abs(due - now) > 2 * intervalMs) due = now + intervalMs
      return Math.max(0, due - now)
    }
  }
}

function run () {
  const dataDir = process.env.DATA_DIR || '/data'
  // Chaos runs report every tick (REPORT_EVERY_TICKS=1), so two copies running at once show to the tick.
  const reportEvery = Math.max(1, Math.floor(Number(process.env.REPORT_EVERY_TICKS) || REPORT_EVERY_TICKS))
  mkdirSync(dataDir, { recursive: true })

  const loaded = loadState(dataDir)
  let state
  if (loaded.state !== undefined) {
    state = loaded.state
    emit({ t: 'vehicle', event: 'cold-start', fromTick: state.tick, wall: Date.now() })
  } else {
    if (loaded.error !== undefined) emit({ t: 'vehicle', event: 'state-ignored', reason: loaded.error, wall: Date.now() })
    state = initialState()
    emit({ t: 'vehicle', event: 'start', fromTick: 0, wall: Date.now() })
  }

  const pacer = createPacer(TICK_INTERVAL_MS)
  let timer
  const onTick = () => {
    state = step(state)
    if (state.tick % reportEvery === 0) emit({ ...report(state), wall: Date.now() })
    if (state.tick % STATE_WRITE_EVERY_TICKS === 0) {
      try {
        writeStateAtomically(dataDir, state)
      } catch (error) {
        emit({ t: 'vehicle', event: 'state-write-failed', tick: state.tick, reason: error.message, wall: Date.now() })
      }
    }
    timer = setTimeout(onTick, pacer.nextDelay())
  }
  timer = setTimeout(onTick, pacer.nextDelay())

  const stop = (signal) => {
    clearTimeout(timer)
    let code = 0
    try {
      writeStateAtomically(dataDir, state)
    } catch (error) {
      emit({ t: 'vehicle', event: 'state-write-failed', tick: state.tick, reason: error.message, wall: Date.now() })
      code = 1
    }
    emit({ t: 'vehicle', event: 'stop', signal, tick: state.tick, wall: Date.now() })
    process.exit(code)
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
}

function main (argv) {
  if (argv[0] === '--simulate') {
    const ticks = Number(argv[1])
    if (!Number.isInteger(ticks) || ticks < 0) {
      process.stderr.write('usage: controller.js [--simulate TICKS]\n')
      process.exit(2)
    }
    emit(report(simulate(ticks)))
    return
  }
  if (argv.length > 0) {
    process.stderr.write('usage: controller.js [--simulate TICKS]\n')
    process.exit(2)
  }
  run()
}

function isMainModule () {
  if (process.argv[1] === undefined) return false
  try {
    return realpathSync(process.argv[1]) === import.meta.filename
  } catch {
    return false
  }
}

if (isMainModule()) main(process.argv.slice(2))
