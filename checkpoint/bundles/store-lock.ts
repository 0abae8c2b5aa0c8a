// Writes and fetches share the block store; pruning (deleting blocks) runs alone, so it never deletes a block that an
// in-flight checkpoint found already present and linked to. Pruning only starts on an idle store and never queues:
// a write or fetch is never held up behind a waiting prune.
import createMortice, { type Mortice } from 'mortice'
import { randomUUID } from 'node:crypto'

export class StoreLock {
  readonly #mutex: Mortice = createMortice({ name: `tandem-bundle-store-${randomUUID()}`, singleProcess: true, autoFinalize: true })
  /** Mortice's queue of holders; a single-process lock always has one. */
  readonly #queue = this.#mutex.queue as NonNullable<Mortice['queue']>
  /** Holders and waiters: mortice's own queue lags its releases by a few ticks. */
  #users = 0

  async shared<T> (fn: () => Promise<T>): Promise<T> {
    this.#users++
    try {
      const release = await this.#mutex.readLock()
      try { return await fn() } finally { release() }
    } finally { this.#users-- }
  }

  /** Runs `fn` alone once nobody holds the lock. */
  async exclusive<T> (fn: () => Promise<T>): Promise<T> {
    while (this.#users > 0) await this.#queue.onIdle()
    return await this.#alone(fn)
  }

  /** Runs `fn` alone if nobody holds the lock now; otherwise returns undefined at once without running it. */
  async exclusiveIfIdle<T> (fn: () => Promise<T>): Promise<T | undefined> {
    if (this.#users > 0) return undefined
    return await this.#alone(fn)
  }

  async #alone<T> (fn: () => Promise<T>): Promise<T> {
    this.#users++
    try {
      const release = await this.#mutex.writeLock()
      try { return await fn() } finally { release() }
    } finally { this.#users-- }
  }
}
