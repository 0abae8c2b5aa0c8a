// What mission gossip may make a peer hold and re-announce. Every peer announces every mission it knows each
// announce interval, so a record accepted once is paid for by all peers, every second, after its sender left: 10
// forged unplaceable missions with 200 KB specs raised mission gossip from ~1 to 480-790 KB/s and idle CPU from 4 % to
// 18-20 % on every peer, for good. A spec is at most 64 KiB as JSON (validateMissionSpec, in every entry point); here
// new missions past the count and byte budget are refused before the machine sees them (who may announce at all is
// the operator keys' part).
import type { ConsensusMessage, MissionSpec } from '../consensus/index.ts'

/** Missions (not removed) a peer holds at most; announces of further new missions are refused. */
export const MAX_MISSION_RECORDS = 256
/** Spec bytes of all held missions at most: what this peer re-announces each interval (eight 64 KiB specs). */
export const MAX_SPEC_BYTES_HELD = 512 * 1024

export type BudgetRefusal = 'too many missions' | 'too many spec bytes'

const specBytesCache = new WeakMap<MissionSpec, number>()

export function specBytesOf (spec: MissionSpec): number {
  let bytes = specBytesCache.get(spec)
  if (bytes === undefined) {
    bytes = Buffer.byteLength(JSON.stringify(spec))
    specBytesCache.set(spec, bytes)
  }
  return bytes
}

/** What the peer holds now, as the budget needs it. */
export interface HeldMissions {
  /** Whether a (live or removed) record of this mission is held. */
  holds: (mission: string) => boolean
  /** Specs of the missions held and not removed. */
  specs: () => MissionSpec[]
}

export class MissionBudget {
  readonly refused: Record<BudgetRefusal, number> = { 'too many missions': 0, 'too many spec bytes': 0 }

  /** Why this message may not be taken in, or null. Only a live announce of a mission not held makes a new one. */
  refusal (message: ConsensusMessage, held: HeldMissions): { reason: BudgetRefusal, detail: string } | null {
    if (message.type !== 'announce' || message.record.removed) return null
    return this.refusalOfNew(message.record.mission, message.record.spec, held)
  }

  /** Why a new mission (a deploy here, or one first heard of) would pass the budget, or null. */
  refusalOfNew (mission: string, spec: MissionSpec, held: HeldMissions): { reason: BudgetRefusal, detail: string } | null {
    if (held.holds(mission)) return null
    const bytes = specBytesOf(spec)
    const specs = held.specs()
    if (specs.length >= MAX_MISSION_RECORDS) return this.#refuse('too many missions', `${specs.length} missions held already, at most ${MAX_MISSION_RECORDS}`)
    const heldBytes = specs.reduce((sum, s) => sum + specBytesOf(s), 0)
    if (heldBytes + bytes > MAX_SPEC_BYTES_HELD) return this.#refuse('too many spec bytes', `${heldBytes} spec bytes held already, ${bytes} more would pass ${MAX_SPEC_BYTES_HELD}`)
    return null
  }

  #refuse (reason: BudgetRefusal, detail: string): { reason: BudgetRefusal, detail: string } {
    this.refused[reason]++
    return { reason, detail }
  }
}
