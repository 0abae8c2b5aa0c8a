// This board's storage health: failing from a storage fault on until a probe succeeds. Heartbeats carry it
// (`storage`), so the consensus gives a failing board no backup duty.
import { open as openFile, rm as removeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, type MissionEventData } from '../../consensus/events.ts'
import { BlockCorruptError } from '../../checkpoint/errors.ts'
import { StorageError, storageProblemOf, type StorageProblem } from '../../checkpoint/storage-health.ts'

/** While its storage fails, the board probes it this often (a write of PROBE_BYTES, synced, and a store record). */
export const STORAGE_PROBE_MS = 1000
const PROBE_BYTES = 256 * 1024

/** The storage health a board reports in its heartbeats (`storage`) and status. */
export interface StorageHealth { ok: boolean, problem: StorageProblem | null, detail: string | null, since: number | null }

export function storageExtraOf (extras: Record<string, unknown> | undefined): StorageHealth {
  const value = extras?.storage as Partial<StorageHealth> | undefined
  const problem = value?.problem === 'disk full' || value?.problem === 'I/O error' || value?.problem === 'store corrupt' ? value.problem : null
  return { ok: value?.ok !== false, problem, detail: typeof value?.detail === 'string' ? value.detail : null, since: typeof value?.since === 'number' ? value.since : null }
}

export interface StorageMonitorOptions {
  dataDir: string
  /** Writes to the stores beside the data dir (the bundle store, the missions store); each fails while storage does. */
  probes: Array<() => Promise<void>>
  /** The missions to tell when no single one is concerned. */
  missions: () => string[]
  record: (mission: string, event: MissionEventData) => void
  log: (line: string) => void
  /** The health changed: the machine must hear of it. */
  onChange: () => void
}

export class StorageMonitor {
  readonly #options: StorageMonitorOptions
  #health: StorageHealth = { ok: true, problem: null, detail: null, since: null }
  #probing = false

  constructor (options: StorageMonitorOptions) { this.#options = options }

  get health (): StorageHealth { return { ...this.#health } }
  get ok (): boolean { return this.#health.ok }

  /** A storage fault of this board, if `err` is one: reported (event, heartbeat, status) and probed until it works again. */
  failed (err: unknown, mission: string | null): void {
    // A block that does not match its CID is fetched again, not a fault of the storage itself.
    const problem = err instanceof BlockCorruptError || (err instanceof StorageError && !err.write && err.problem === 'store corrupt') ? null : storageProblemOf(err)
    if (problem == null) return
    const detail = (err as Error).message
    if (!this.#health.ok) return
    this.#health = { ok: false, problem, detail, since: Date.now() }
    const event = { kind: 'storageFailed' as const, problem, detail }
    for (const name of mission != null ? [mission] : this.#options.missions()) this.#options.record(name, event)
    this.#options.log(`missions: ${describe(event)}`)
    this.#options.onChange()
  }

  /** While the storage fails: a synced write in the data dir and the stores' probes; all work again: recovered. */
  async probe (): Promise<void> {
    if (this.#health.ok || this.#probing) return
    this.#probing = true
    const path = join(this.#options.dataDir, '.storage-probe')
    try {
      const fh = await openFile(path, 'w')
      try {
        await fh.write(Buffer.alloc(PROBE_BYTES, 0x5a))
        await fh.sync()
      } finally { await fh.close() }
      await removeFile(path, { force: true })
      for (const probe of this.#options.probes) await probe()
      const was = this.#health
      this.#health = { ok: true, problem: null, detail: null, since: null }
      const event = { kind: 'storageRecovered' as const, afterMs: Date.now() - (was.since ?? Date.now()), problem: was.problem }
      for (const name of this.#options.missions()) this.#options.record(name, event)
      this.#options.log(`missions: ${describe(event)}`)
      this.#options.onChange()
    } catch {
      await removeFile(path, { force: true }).catch(() => {})
    } finally {
      this.#probing = false
    }
  }
}
