// Checks a mission's recorded history (every container's output, followed live on every board), not only the final
// state: one checker per invariant, each returning what it found wrong.
import { samplesOf } from '../demo/vehicle-log.ts'
import type { FollowedContainer } from '../demo/observe.ts'

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
 * Two containers that both reported within one window for longer than `toleranceMs`: two copies of the mission ran
 * at once. (The tolerance is one report period: a copy's last line and the next copy's first may share a tick.)
 */
export function overlaps (containers: readonly FollowedContainer[], toleranceMs = 0): string[] {
  const spans = spansOf(containers)
  const found: string[] = []
  for (let i = 0; i < spans.length; i++) {
    for (let j = i + 1; j < spans.length; j++) {
      const a = spans[i] as Span
      const b = spans[j] as Span
      if (b.first.wall <= a.last.wall - toleranceMs) {
        found.push(`${a.container.board} (epoch ${a.container.epoch}) reported until ${a.last.wall}, ${b.container.board} (epoch ${b.container.epoch}) from ${b.first.wall}: ${a.last.wall - b.first.wall} ms at once`)
      }
    }
  }
  return found
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
