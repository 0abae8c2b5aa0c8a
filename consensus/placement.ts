// Which boards may run a mission, from their static facts (architecture, board, memory, Docker) and the images they
// hold; and, when none can, the first requirement no live board meets. Pure: the machine passes the boards' facts.
import { imageFor, normalizeImageRef, type MissionSpec } from '../manifest/manifest.ts'
import type { BlockedRequirement } from './events.ts'
import { short } from './events.ts'
import type { PeerInfo } from './types.ts'

/** A board's facts as the failure detector and its heartbeats report them (its liveness aside). */
export type BoardFacts = Omit<PeerInfo, 'state'>

/** The first requirement no live board meets, and why in words. */
export interface Blocked { requirement: BlockedRequirement, reason: string }

/** The normalized image ref a board of `arch` runs (undefined: the image map has none for it). */
export function imageRef (spec: MissionSpec, arch: string): string | undefined {
  const ref = imageFor(spec, arch)
  return ref === undefined ? undefined : normalizeImageRef(ref)
}

/** The placement (and the image map) allows the board: static facts only, the same on every peer. */
export function placementOk (spec: MissionSpec, info: BoardFacts | undefined): boolean {
  if (info === undefined || imageFor(spec, info.arch) === undefined) return false
  const p = spec.placement
  if (p?.architectures !== undefined && !(p.architectures as string[]).includes(info.arch)) return false
  if (p?.boards !== undefined && !p.boards.includes(info.board)) return false
  if (p?.minMemoryMb !== undefined && info.memoryMb < p.minMemoryMb) return false
  return true
}

export function holdsImage (spec: MissionSpec, info: BoardFacts | undefined): boolean {
  const ref = info === undefined ? undefined : imageRef(spec, info.arch)
  return ref !== undefined && info?.images?.includes(ref) === true
}

export function fetchingImage (spec: MissionSpec, info: BoardFacts | undefined): boolean {
  const ref = info === undefined ? undefined : imageRef(spec, info.arch)
  return ref !== undefined && info?.fetchingImages?.includes(ref) === true
}

/**
 * Why none of the live boards can run the mission (null when one can): the first requirement that none meets, in
 * the order image map, placement, Docker, image present.
 */
export function blockedReason (spec: MissionSpec, live: readonly BoardFacts[]): Blocked | null {
  let boards = [...live]
  const archs = (): string => [...new Set(boards.map(i => i.arch))].sort().join(', ')
  const p = spec.placement
  const steps: Array<[BlockedRequirement, (info: BoardFacts) => boolean, () => string]> = [
    ['imageMap', i => imageFor(spec, i.arch) !== undefined, () => `image has no entry for the live boards' architectures [${archs()}]`],
    ['architectures', i => p?.architectures === undefined || (p.architectures as string[]).includes(i.arch), () => `no board matches placement.architectures [${p?.architectures?.join(', ') ?? ''}]`],
    ['boards', i => p?.boards === undefined || p.boards.includes(i.board), () => `no board matches placement.boards [${p?.boards?.join(', ') ?? ''}]`],
    ['memory', i => p?.minMemoryMb === undefined || i.memoryMb >= p.minMemoryMb, () => `no board matches placement.minMemoryMb ${p?.minMemoryMb ?? ''}`],
    ['docker', i => i.canRun, () => 'no live board has Docker'],
    ['image', i => holdsImage(spec, i), () => {
      const refs = [...new Set(boards.map(i => imageRef(spec, i.arch)))].join(', ')
      const fetching = boards.filter(b => fetchingImage(spec, b)).map(b => b.peerId)
      return fetching.length > 0 ? `image ${refs} is on no live board (being fetched by ${fetching.map(short).join(', ')})` : `image ${refs} is on no live board`
    }]
  ]
  for (const [requirement, ok, why] of steps) {
    const next = boards.filter(ok)
    if (next.length === 0) return { requirement, reason: why() }
    boards = next
  }
  return null
}
