// The context every role module works on: this board's identity and configuration, what it knows of its peers, its
// missions, and the actions out (in order), with the helpers that emit them.
import type { MachineEvent } from './events.ts'
import type { Mission } from './mission-state.ts'
import type { VoteKeys } from './quorum-proof.ts'
import type { Action, AuthorityRefusal, ConsensusConfig, LocalEvent, PeerInfo, PersistedState } from './types.ts'

/**
 * What this peer is: its identity and hardware (the failure detector never reports self). The caller may change
 * canRun, canCheckpoint, images and fetchingImages at any time (then tick): the machine reads this object live.
 */
export type SelfInfo = Omit<PeerInfo, 'state' | 'gone'>

export interface MachineInit {
  self: SelfInfo
  now: number
  config?: Partial<ConsensusConfig>
  persisted?: PersistedState
  /**
   * Signs this board's votes and checks others' (consensus/quorum-proof.ts): with it, a newer epoch is adopted and
   * its fence obeyed only with a proof of its election. Without it (machines of unit tests) votes go unsigned and
   * proofs are neither made nor checked.
   */
  voteKeys?: VoteKeys
}

/** One kind of local event, as its handler receives it. */
export type LocalOf<T extends LocalEvent['type']> = Extract<LocalEvent, { type: T }>

/** The shared state of a ClusterMachine, passed to every module of consensus/ that acts on it. */
export interface Ctx {
  readonly self: SelfInfo
  readonly config: ConsensusConfig
  readonly startedAt: number
  lastTickAt: number
  readonly peers: Map<string, PeerInfo>
  readonly deadSince: Map<string, number>
  readonly heardAt: Map<string, number>
  /** Peers whose exit the detector proved (`gone`) while they were still in contact (alive or suspect before). */
  readonly exitProven: Set<string>
  readonly missions: Map<string, Mission>
  /** Boards the operator revoked: dead and gone for good, no vote, no say (see revoke()). */
  readonly revoked: Set<string>
  readonly voteKeys: VoteKeys | undefined
  readonly refusals: Record<AuthorityRefusal, number>
  actions: Action[]
  /** The machine's tick (some transitions re-run the per-mission loop at once). */
  readonly tick: (now: number) => void
}

export function emit (ctx: Ctx, action: Action): void { ctx.actions.push(action) }

export function emitEvent (ctx: Ctx, mission: string, event: MachineEvent): void { emit(ctx, { type: 'event', mission, event }) }

export function refuse (ctx: Ctx, reason: AuthorityRefusal): void { ctx.refusals[reason]++ }
