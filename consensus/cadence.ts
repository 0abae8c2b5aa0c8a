// How often a primary checkpoints, how stale its backup may get, and how long failures back off. Pure arithmetic
// over what the machine measured; all times in ms.

/**
 * How long after the start of one checkpoint the next one starts. The spec's interval bounds the work a failover
 * may lose: the backup must hold a state at most that old at any moment, so a checkpoint must be acknowledged
 * within one interval of the previous one's start. Each starts early by the slowest recent replication (`lags`, plus
 * `slackMs`), but never more often than twice per interval: a mission is paused for every dump.
 */
export function checkpointPeriod (intervalMs: number, lags: readonly number[], slackMs: number): number {
  // Nothing measured yet (a new primary, a new backup still syncing): assume the slowest allowed.
  if (lags.length === 0) return intervalMs / 2
  return Math.max(intervalMs / 2, intervalMs - Math.max(...lags) - slackMs)
}

/**
 * How old the backup's state may get at worst: the spacing of checkpoint starts (the period, or longer when a dump
 * outlasted it: the next one starts only after it) plus the slowest recent replication; never less than the age the
 * backup's state has right now (a checkpoint stuck in flight, a fetch backing off show at once).
 */
export function stalenessBound (periodMs: number, starts: readonly number[], lags: readonly number[], backupStateAgeMs: number): number {
  const spacing = Math.max(periodMs, ...starts.slice(1).map((since, i) => since - (starts[i] as number)))
  const steady = lags.length > 0 ? spacing + Math.max(...lags) : 0
  return Math.max(steady, backupStateAgeMs)
}

/** The wait after `failures` in a row: none, then `baseMs` doubling up to `maxMs`. */
export function backoffMs (failures: number, baseMs: number, maxMs: number): number {
  if (failures <= 0) return 0
  return Math.min(maxMs, baseMs * 2 ** Math.min(30, failures - 1))
}
