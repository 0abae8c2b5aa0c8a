// Who runs the mission next, and with whom: the candidates in rank order (every peer computes the same order from the
// same facts), the view and backup a primary wants, and the boards that fetch the image ahead of need.
import { hrwRank } from './hrw.ts'
import type { Ctx } from './context.ts'
import { failedInEpoch, type Mission } from './mission-state.ts'
import { boardInfo, canPlace, canRestore, eligible, eligibleBackup, hasImage, loneClaimantOf, quorumReachable, stateOf, takesPart } from './membership.ts'
import type { MissionRecord } from './types.ts'

/** Peers that may run the mission next, best first; every peer computes the same order from the same facts. */
export function rankCandidates (ctx: Ctx, now: number, record: MissionRecord): string[] {
  const ids = new Set<string>([ctx.self.peerId, ...ctx.peers.keys(), ...record.view])
  const usable = [...ids].filter(p => stateOf(ctx, now, p) === 'alive' && eligible(ctx, record.spec, p) &&
    !(p === record.primary && !record.released))
  const lone = loneClaimantOf(ctx, record)
  const allowed = record.view.length === 2 && lone !== null
    ? usable.filter(p => p === lone || quorumReachable(ctx, now, record, p))
    : usable
  const preferred: string[] = []
  for (const p of [record.handoffTo, record.released ? record.primary : null, record.backup]) {
    if (p !== null && allowed.includes(p) && !preferred.includes(p)) preferred.push(p)
  }
  const rest = hrwRank(record.mission, allowed.filter(p => !preferred.includes(p)))
  rest.sort((a, b) => Number(canRestore(ctx, b, record.checkpoint)) - Number(canRestore(ctx, a, record.checkpoint)))
  // A board outside the env values' seal cannot start the mission (env-missing), and only a running primary reseals:
  // the seal's recipients go first. (Chaos seed 25: a board elected before the seal reached it failed its restore.)
  const ranked = [...preferred, ...rest].sort((a, b) => Number(opensEnv(record, b)) - Number(opensEnv(record, a)))
  // The board whose start or run just failed (it released this epoch) goes last while others can run it.
  // (Not a board that failed in an earlier epoch and was released now by its restart: a board killed while it restored
  // came back as the only holder of the newest checkpoint, ranked last for a failure of 5 epochs before, and a spare
  // took over with 158 ticks older state.)
  const failed = record.released && failedInEpoch(record) ? record.primary : null
  if (failed !== null && ranked.length > 1 && ranked.includes(failed)) return [...ranked.filter(p => p !== failed), failed]
  return ranked
}

/** The board can open the mission's env values: they are sealed for it, or the mission has no seal. */
export function opensEnv (record: MissionRecord, peerId: string): boolean {
  return record.envSeal === undefined || record.envSeal.to.some(w => w.peer === peerId)
}

/** The view and backup this board wants for `mission` on the basis of `record`: live boards that take part, and the best backup. */
export function desiredLayout (ctx: Ctx, now: number, mission: Mission, record: MissionRecord, keepRecentlyDead = false): { view: string[], backup: string | null } {
  const members = new Set<string>([ctx.self.peerId])
  for (const p of ctx.peers.keys()) if (stateOf(ctx, now, p) === 'alive' && takesPart(ctx, now, mission, p)) members.add(p)
  for (const p of record.view) if (stateOf(ctx, now, p) === 'suspect') members.add(p)
  if (keepRecentlyDead && record.view.length >= 3) {
    for (const p of record.view) {
      if (stateOf(ctx, now, p) === 'dead' && !ctx.revoked.has(p) && now - (ctx.deadSince.get(p) ?? -Infinity) < ctx.config.viewLeaveAfterMs) members.add(p)
    }
  }
  const view = [...members].sort()
  const current = record.backup
  const best = chooseBackup(ctx, now, record, view)
  // The current backup stays unless it left, cannot hold the image, or cannot restore this board's checkpoints while
  // another board could (a board that fetches the image can become a better backup than one that held it at first).
  if (current !== null && current !== ctx.self.peerId && view.includes(current) && stateOf(ctx, now, current) !== 'dead' &&
      eligibleBackup(ctx, record, current) && (restoresHere(ctx, current) || best === null || !restoresHere(ctx, best))) {
    return { view, backup: current }
  }
  return { view, backup: best }
}

/** The board could restore checkpoints this board takes (same architecture, CRIU). */
export function restoresHere (ctx: Ctx, peerId: string): boolean {
  const info = boardInfo(ctx, peerId)
  return info !== undefined && info.arch === ctx.self.arch && info.canCheckpoint
}

/** Best backup: can restore this board's checkpoints (same arch, CRIU), then holds the image, then rendezvous order. */
export function chooseBackup (ctx: Ctx, now: number, record: MissionRecord, view: string[]): string | null {
  const options = hrwRank(record.mission, view.filter(p => p !== ctx.self.peerId && stateOf(ctx, now, p) === 'alive' && eligibleBackup(ctx, record, p)))
  const score = (p: string): number => (restoresHere(ctx, p) ? 2 : 0) + (hasImage(ctx, record.spec, p) ? 1 : 0)
  return options.map((p, i) => ({ p, i, s: score(p) })).sort((a, b) => b.s - a.s || a.i - b.i)[0]?.p ?? null
}

/** The two boards after the primary and the backup that would run the mission next (image presence aside). */
export function fetchRank (ctx: Ctx, now: number, record: MissionRecord): string[] {
  const ids = [ctx.self.peerId, ...ctx.peers.keys()].filter(p => p !== record.primary && p !== record.backup &&
    stateOf(ctx, now, p) === 'alive' && boardInfo(ctx, p)?.canRun === true && boardInfo(ctx, p)?.arch === record.imageArch && canPlace(ctx, record.spec, p))
  const ranked = hrwRank(record.mission, ids)
  ranked.sort((a, b) => Number(canRestore(ctx, b, record.checkpoint)) - Number(canRestore(ctx, a, record.checkpoint)))
  return ranked.slice(0, 2)
}
