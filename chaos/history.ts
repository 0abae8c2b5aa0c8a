// Checks a mission's recorded history (every container's output, followed live on every board), not only the final
// state: one checker per invariant, each returning what it found wrong.
import { samplesOf } from '../demo/vehicle-log.ts'
import type { FollowedContainer } from '../harness/observe.ts'
import { TICK_INTERVAL_MS } from '../examples/vehicle/controller.js'

/**
 * The ticks a failover may lose by what the primary's status promised: its staleness bound (`stalenessBoundMs`) plus
 * the reports' resolution, and never less than `floorTicks` (one checkpoint interval).
 */
export function promisedTicks (stalenessBoundMs: number | null, options: { floorTicks: number, resolutionTicks: number }): number {
  return Math.max(options.floorTicks, Math.ceil((stalenessBoundMs ?? 0) / TICK_INTERVAL_MS) + options.resolutionTicks)
}

/** Reporting span of one container: its first and last vehicle report, by the reports' own wall clock. */
export interface Span { container: FollowedContainer, first: { tick: number, wall: number }, last: { tick: number, wall: number } }

export function spansOf (containers: readonly FollowedContainer[]): Span[] {
  const spans: Span[] = []
  for (const container of containers) {
    const samples = samplesOf(container.entries)
    const first = samples[0]
    const last = samples.at(-1)
    if (first != null && last != null) spans.push({ container, first, last })
  }
  return spans.sort((a, b) => a.first.wall - b.first.wall)
}

/**
 * A container's active stretches: runs of reports no more than `gapMs` apart. A longer silence is a frozen or paused
 * container (a board freeze, a checkpoint under load), not a running one.
 */
export function activeStretches (container: FollowedContainer, gapMs: number): Array<{ from: number, to: number }> {
  const stretches: Array<{ from: number, to: number }> = []
  for (const { wall } of samplesOf(container.entries)) {
    const last = stretches.at(-1)
    if (last != null && wall - last.to <= gapMs) last.to = wall
    else stretches.push({ from: wall, to: wall })
  }
  return stretches
}

/**
 * Two containers active at the same time: two copies of the mission ran at once. Reported when their active
 * stretches share at least `toleranceMs` (0: any shared moment; one report period tolerates a single line of one copy
 * inside the other's run, e.g. the line a thawed container prints before its watchdog freezes it again).
 */
export function overlaps (containers: readonly FollowedContainer[], toleranceMs = 0, gapMs = 2500): string[] {
  const found: string[] = []
  const active = containers.map(c => ({ c, stretches: activeStretches(c, gapMs) }))
  for (let i = 0; i < active.length; i++) {
    for (let j = i + 1; j < active.length; j++) {
      const a = active[i]!
      const b = active[j]!
      for (const x of a.stretches) {
        for (const y of b.stretches) {
          const shared = sharedReporting(a.c, b.c, Math.max(x.from, y.from), Math.min(x.to, y.to))
          if (shared === null) continue
          const { from, to } = shared
          if (toleranceMs > 0 && to - from < toleranceMs) continue
          found.push(`${a.c.board} (epoch ${a.c.epoch}) and ${b.c.board} (epoch ${b.c.epoch}) both reported from ${from} to ${to}: ${to - from} ms at once`)
        }
      }
    }
  }
  return found
}

/**
 * Where both containers reported inside the window their stretches share: from the later of their first reports
 * there to the earlier of their last. A stretch bridges silences up to its gap, so a container frozen for less than
 * that and thawed for one line would otherwise count the whole time since the other started.
 */
function sharedReporting (a: FollowedContainer, b: FollowedContainer, from: number, to: number): { from: number, to: number } | null {
  if (to < from) return null
  const within = (c: FollowedContainer): number[] => samplesOf(c.entries).map(s => s.wall).filter(wall => wall >= from && wall <= to)
  const inA = within(a)
  const inB = within(b)
  if (inA.length === 0 || inB.length === 0) return null
  const shared = { from: Math.max(inA[0]!, inB[0]!), to: Math.min(inA.at(-1)!, inB.at(-1)!) }
  return shared.to < shared.from ? null : shared
}

/** A container that took over from an older state than `maxTicksLost` behind its predecessor's last report. */
export function regressions (containers: readonly FollowedContainer[], maxTicksLost: number): string[] {
  const spans = spansOf(containers)
  const found: string[] = []
  for (let i = 1; i < spans.length; i++) {
    const before = spans[i - 1] as Span
    const after = spans[i] as Span
    const lost = before.last.tick - after.first.tick
    if (lost > maxTicksLost) found.push(`${after.container.board} (epoch ${after.container.epoch}) resumed at tick ${after.first.tick}, ${lost} ticks behind the last report ${before.last.tick} of ${before.container.board}`)
  }
  return found
}

/** The longest stretch without any report from any container between `from` and `to` (wall ms). */
export function longestSilence (containers: readonly FollowedContainer[], from: number, to: number): number {
  const walls = containers.flatMap(c => samplesOf(c.entries).map(s => s.wall)).filter(w => w >= from && w <= to).sort((a, b) => a - b)
  let longest = 0
  let previous = from
  for (const wall of walls) {
    longest = Math.max(longest, wall - previous)
    previous = wall
  }
  return Math.max(longest, to - previous)
}
