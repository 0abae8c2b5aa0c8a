// Types of controller.js for TypeScript importers (tests, demo, benchmarks).

/** The controller's complete state; state.json holds exactly this. */
export interface VehicleState {
  v: number
  tick: number
  x: number
  y: number
  speed: number
  heading: number
  integral: number
  prevError: number
  wp: number
  lap: number
  odo: number
}

/** One stdout report line (`wall` is added by the running loop, absent from `report()`). */
export interface VehicleReport {
  t: 'vehicle'
  tick: number
  x: number
  y: number
  speed: number
  heading: number
  wp: number
  lap: number
  odo: number
  wall?: number
}

export declare const TICK_HZ: number
export declare const DT_SECONDS: number
export declare const TICK_INTERVAL_MS: number
export declare const REPORT_EVERY_TICKS: number
export declare const STATE_WRITE_EVERY_TICKS: number
export declare const STATE_VERSION: number
/** Waypoints of the course in metres, [x, y], driven in order. */
export declare const COURSE: ReadonlyArray<readonly [number, number]>

export declare function initialState (): VehicleState
export declare function step (state: VehicleState): VehicleState
export declare function simulate (ticks: number, from?: VehicleState): VehicleState
export declare function report (state: VehicleState): VehicleReport
/** The validated state, or a message saying what is wrong. */
export declare function parseState (value: unknown): VehicleState | string
