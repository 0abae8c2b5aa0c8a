// The per-peer consensus state machine for all missions: deterministic, no I/O. Inputs: tick/peerChanged/receive/
// local with a `now` in ms. Outputs: takeActions(), applied in order by the caller (persist before anything after it).
//
// This file is the router. The parts live by concept: context.ts (the shared state), persisted.ts (the persisted
// state and its load), mission-state.ts (one mission's state), membership.ts (peers, eligibility, back-offs, quorums),
// ranking.ts (candidates, layout, backup choice), election.ts (claims and votes), primary.ts (the running primary),
// backup.ts (checkpoints and images fetched, acks), records.ts (announces, fences, removals, deployments),
// lifecycle.ts (transitions every role uses), status.ts (snapshot()), step.ts (the dispatch by role and by kind).
import { DEFAULT_CONSENSUS_CONFIG, type Action, type AuthorityRefusal, type ConsensusConfig, type ConsensusMessage, type LocalEvent, type MissionSnapshot, type PeerInfo, type PersistedState } from './types.ts'
import { refuse, type Ctx, type MachineInit, type SelfInfo } from './context.ts'
import { loadPersisted, persistedState } from './persisted.ts'
import { notePeer } from './membership.ts'
import { redecideDeferredClaims } from './election.ts'
import { stepLocal, stepMessage, tickMission } from './step.ts'
import { snapshotOf } from './status.ts'

export type { MachineInit, SelfInfo } from './context.ts'
export { MAX_CLAIM_STEP, MAX_EPOCH } from './mission-state.ts'
export { majority, stepView } from './quorum.ts'

export class ClusterMachine {
  readonly self: SelfInfo
  readonly config: ConsensusConfig
  readonly #ctx: Ctx

  constructor (init: MachineInit) {
    this.self = init.self
    this.config = { ...DEFAULT_CONSENSUS_CONFIG, ...init.config }
    this.#ctx = {
      self: this.self,
      config: this.config,
      startedAt: init.now,
      lastTickAt: init.now,
      peers: new Map(),
      deadSince: new Map(),
      heardAt: new Map(),
      exitProven: new Set(),
      missions: new Map(),
      revoked: new Set(),
      voteKeys: init.voteKeys,
      refusals: { 'epoch-out-of-range': 0, 'outside-view': 0, 'not-a-member': 0, 'fence-not-authorized': 0, 'older-deployment': 0, revoked: 0, 'no-quorum-proof': 0 },
      actions: [],
      tick: now => { this.tick(now) }
    }
    loadPersisted(this.#ctx, init.now, init.persisted)
  }

  // ---- inputs ------------------------------------------------------------------------------------------------

  peerChanged (now: number, peer: PeerInfo): void {
    if (peer.peerId === this.self.peerId) return
    const noted = notePeer(this.#ctx, now, peer)
    if (noted.state === 'dead') redecideDeferredClaims(this.#ctx, now, noted.peerId)
    this.tick(now)
  }

  receive (now: number, from: string, msg: ConsensusMessage): void {
    if (from === this.self.peerId) return
    if (this.#ctx.revoked.has(from)) { refuse(this.#ctx, 'revoked'); return }
    this.#ctx.heardAt.set(from, now)
    stepMessage(this.#ctx, now, from, msg)
  }

  local (now: number, ev: LocalEvent): void { stepLocal(this.#ctx, now, ev) }

  tick (now: number): void {
    const ctx = this.#ctx
    const frozenMs = now - ctx.lastTickAt
    ctx.lastTickAt = now
    for (const mission of ctx.missions.values()) tickMission(ctx, now, mission, frozenMs)
  }

  takeActions (): Action[] {
    const actions = this.#ctx.actions
    this.#ctx.actions = []
    return actions
  }

  // ---- outputs for the caller ----------------------------------------------------------------------------------

  snapshot (now: number): MissionSnapshot[] {
    return [...this.#ctx.missions.values()].map(m => snapshotOf(this.#ctx, m, now))
  }

  /** Mission messages refused for lack of authority, by reason (since start). */
  refusals (): Record<AuthorityRefusal, number> { return { ...this.#ctx.refusals } }

  /**
   * The operator revoked this board: its messages are refused, it is dead and gone for good (its missions fail over
   * at once), and it no longer counts in any view's quorum (see quorumView in membership.ts).
   */
  revoke (now: number, peerId: string): void {
    const ctx = this.#ctx
    if (peerId === this.self.peerId || ctx.revoked.has(peerId)) return
    ctx.revoked.add(peerId)
    const info = ctx.peers.get(peerId)
    if (info !== undefined) this.peerChanged(now, { ...info, state: 'dead', gone: true })
    else { ctx.deadSince.set(peerId, now); this.tick(now) }
  }

  /** Highest epoch this peer knows per mission (for invariant checks and status). */
  knownEpoch (mission: string): number { return this.#ctx.missions.get(mission)?.record.epoch ?? -1 }

  persistedState (): PersistedState { return persistedState(this.#ctx) }
}
