// The member record the failure detector (peer/membership.ts) keeps per peer, and the changes it reports.
import type { HeartbeatInfo } from '../heartbeat.ts'

export type MemberState = 'alive' | 'suspect' | 'dead'

export interface Member {
  peerId: string
  state: MemberState
  /** Incarnation of the peer's process (grows on restart and after a detected pause). */
  incarnation: number
  /** Sequence number of the newest heartbeat heard in this incarnation. */
  seq: number
  /**
   * Local clock (ms) of the last sign of life: a heartbeat or a successful probe; moved on by this process's own
   * pauses, which are no evidence against the peer (see Membership.tick).
   */
  lastHeardAt: number
  /**
   * Local clock (ms) when the last sign of life actually arrived, never moved on: the fencing lease counts from it
   * (peer/missions/service.ts): a primary paused and cut off meanwhile renewed its lease as if it had heard its
   * majority at the end of the pause. (Beats sent before the cut and read only after the pause still count as
   * received then: see "What the lease counts from" in the README.)
   */
  lastReceivedAt: number
  /** Wall-clock time (ms since epoch) of the last sign of life. */
  lastSeenWallMs: number
  /** Local clock (ms) when the current state began. */
  stateSince: number
  /** Why the current state was entered, e.g. `silent`, `refused`, `heartbeat`. */
  reason: string
  /**
   * Dead because a redial was refused (here or by the verdict's issuer): nothing listens on its port, its process
   * exited, and its watchdog (peer/watchdog.ts) killed its containers. False in every other case.
   */
  exitProven: boolean
  info: HeartbeatInfo | null
  /** The peer's own Lifeguard health score, from its newest heartbeat or direct beat (0 = healthy). */
  healthScore: number
}

export interface MembershipChange {
  peerId: string
  state: MemberState
  previous: MemberState | null
  reason: string
}

/** A change with its wall-clock time (ms since epoch), as kept in the recent history. */
export interface MembershipEvent extends MembershipChange { at: number }

export interface HeardResult { accepted: boolean, reason: 'new' | 'fresh' | 'replayed' }

export type Clock = () => number
