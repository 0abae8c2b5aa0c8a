// The machine's persisted decisions in level (the data dir's `missions`): read once at start, written before anything
// that depends on them happens.
import { join } from 'node:path'
import { Level } from 'level'
import { storageProblemOf, StoreReopener } from '../../checkpoint/storage-health.ts'
import type { PersistedState } from '../../consensus/types.ts'

const STATE_KEY = 'consensus-state'
const PROBE_KEY = 'storage-probe'
/** The only layout of PersistedState this version reads. */
const STATE_VERSION = 1

export interface MissionStateStoreOptions {
  dataDir: string
  /** A write that failed even after the store was reopened and the write tried again. */
  onWriteFailed: (err: unknown) => void
}

export class MissionStateStore {
  readonly path: string
  readonly #onWriteFailed: (err: unknown) => void
  readonly #db: Level<string, string>
  readonly #reopener: StoreReopener
  #writes: Promise<void> = Promise.resolve()

  constructor (options: MissionStateStoreOptions) {
    this.path = join(options.dataDir, 'missions')
    this.#onWriteFailed = options.onWriteFailed
    this.#db = new Level<string, string>(this.path, { valueEncoding: 'utf8' })
    this.#reopener = new StoreReopener(this.#db)
  }

  async open (): Promise<void> { await this.#db.open() }

  async close (): Promise<void> { await this.#db.close() }

  async load (): Promise<PersistedState | undefined> {
    const text = await this.#db.get(STATE_KEY)
    if (text == null) return undefined
    try {
      const state = JSON.parse(text) as PersistedState
      if (state.version !== STATE_VERSION) throw new Error(`unknown version ${String(state.version)}`)
      return state
    } catch (err) {
      throw new Error(`persisted mission state in ${this.path} is unreadable (${(err as Error).message}); move it aside to rejoin with no memory of missions`)
    }
  }

  /**
   * Writes the machine's decisions, one write at a time; after a storage fault the store is reopened and the write
   * tried again. If it still fails, the caller must not apply what depends on the decision (a vote, a start).
   */
  async persist (state: PersistedState): Promise<void> {
    const write = async (): Promise<void> => {
      await this.#reopener.run('persisting decisions', async () => { await this.#db.put(STATE_KEY, JSON.stringify(state), { sync: true } as object) })
    }
    const done = this.#writes.catch(() => {}).then(async () => {
      try {
        await write()
      } catch (err) {
        if (storageProblemOf(err) == null) throw err
        await new Promise(resolve => setTimeout(resolve, 100))
        await write()
      }
    })
    this.#writes = done.catch(err => { this.#onWriteFailed(err) })
    await done
  }

  /** Resolves when every write queued so far has ended. */
  async settled (): Promise<void> { await this.#writes.catch(() => {}) }

  /** A synced write (fails while the storage does). */
  async probe (): Promise<void> {
    await this.#reopener.run('probing the missions store', async () => { await this.#db.put(PROBE_KEY, String(Date.now()), { sync: true } as object) })
  }
}
