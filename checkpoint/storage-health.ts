// Storage faults of a board (a full disk, I/O errors, a corrupt store) told apart from other errors, and the level
// stores reopened after one: LevelDB keeps failing every write after a failed one until it is reopened.
import { CheckpointError } from './errors.ts'

export type StorageProblem = 'disk full' | 'I/O error' | 'store corrupt'

/** What kind of storage fault an error is (from its code or message, through wrapping errors), or null. */
export function storageProblemOf (err: unknown): StorageProblem | null {
  const seen = new Set<unknown>()
  let e: unknown = err
  while (e != null && typeof e === 'object' && !seen.has(e)) {
    seen.add(e)
    if (e instanceof StorageError) return e.problem
    const { code, message } = e as { code?: unknown, message?: unknown }
    const text = `${typeof code === 'string' ? code : ''} ${typeof message === 'string' ? message : ''}`
    if (/ENOSPC|No space left|disk full/i.test(text)) return 'disk full'
    if (/\bEIO\b|\bIO error\b|I\/O error|EROFS|read-only file system/i.test(text)) return 'I/O error'
    if (/Corruption:|corrupted/i.test(text)) return 'store corrupt'
    e = (e as { cause?: unknown }).cause
  }
  return null
}

/** A storage fault of this board, named by its problem (`storage: disk full`). */
export class StorageError extends CheckpointError {
  override name = 'StorageError'
  readonly problem: StorageProblem
  /** Whether a write failed (a corrupt record met by a read is fetched again; a store that cannot write is broken). */
  readonly write: boolean
  constructor (problem: StorageProblem, what: string, cause?: unknown, write = true) {
    super(`storage: ${problem} (${what}${cause == null ? '' : `: ${(cause as Error).message ?? String(cause)}`})`, { cause })
    this.problem = problem
    this.write = write
  }
}

export interface Reopenable { open: () => Promise<void>, close: () => Promise<void> }

/**
 * Reopens a level store after a storage fault, once at a time (callers that fail together share one reopen); a
 * failed reopen is retried by the next fault.
 */
export class StoreReopener {
  readonly #store: Reopenable
  #reopening: Promise<void> | null = null
  /** The fault that closed the store: a failed reopen (its cause is not kept by level's wrappers) is that fault still. */
  #lastProblem: StorageProblem | null = null
  reopens = 0

  constructor (store: Reopenable) { this.#store = store }

  async reopen (): Promise<void> {
    this.#reopening ??= (async () => {
      try {
        await this.#store.close().catch(() => {})
        await this.#store.open()
        this.reopens++
      } finally { this.#reopening = null }
    })()
    await this.#reopening
  }

  /**
   * Runs `op`; a storage fault reopens the store and is rethrown as a StorageError (the caller retries later). A
   * corrupt record met by a read stays corrupt however often the store is reopened (it is deleted and fetched again
   * instead); a write that fails on corruption (LevelDB stops writing after a failed compaction) reopens it.
   */
  async run<T> (what: string, op: () => Promise<T>, options: { write?: boolean } = {}): Promise<T> {
    try {
      return await op()
    } catch (err) {
      const problem = storageProblemOf(err)
      if (problem == null && /not open/i.test((err as Error)?.message ?? '')) {
        // The reopen after an earlier fault failed (a full disk refuses the new log file too): try again now.
        try {
          await this.reopen()
        } catch (openErr) {
          throw new StorageError(storageProblemOf(openErr) ?? this.#lastProblem ?? 'I/O error', `reopening the store for ${what}`, openErr)
        }
        return await this.run(what, op, options)
      }
      if (problem == null) throw err
      this.#lastProblem = problem
      if (problem !== 'store corrupt' || options.write === true) await this.reopen().catch(() => {})
      throw new StorageError(problem, what, err, options.write === true)
    }
  }
}
