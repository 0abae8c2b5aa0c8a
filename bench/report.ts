// Shared by the benchmarks: percentiles, a plain table, and the JSON file under bench/results/.
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

export const RESULTS_DIR = new URL('./results/', import.meta.url).pathname

export interface Distribution { n: number, p50: number | null, p99: number | null, min: number | null, max: number | null }

/** Nearest-rank percentile of an ascending list. */
export function percentile (sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p / 100 * sorted.length) - 1))] ?? null
}

export function distribution (values: readonly number[]): Distribution {
  const sorted = [...values].sort((a, b) => a - b)
  return { n: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), min: sorted[0] ?? null, max: sorted.at(-1) ?? null }
}

export function table (rows: ReadonlyArray<ReadonlyArray<string | number | null>>): string {
  const cells = rows.map(row => row.map(cell => cell == null ? '—' : typeof cell === 'number' ? String(Math.round(cell * 10) / 10) : cell))
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map(row => (row[i] ?? '').length)))
  return cells.map(row => row.map((cell, i) => i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)).join('  ')).join('\n')
}

/** Writes `<name>-<timestamp>.json` under bench/results/ and returns its path. */
export async function writeResults (name: string, results: unknown): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true })
  const path = join(RESULTS_DIR, `${name}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
  await writeFile(path, JSON.stringify(results, null, 2) + '\n')
  return path
}
