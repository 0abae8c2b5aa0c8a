// Shared/exclusive lock: stores and fetches share the block store; pruning (deleting blocks) runs alone,
// so it never deletes a block that an in-flight checkpoint found already present and linked to.
export class SharedExclusiveLock {
  private shared = 0
  private exclusive = false
  private readonly waiters: Array<() => void> = []

  async withShared<T> (fn: () => Promise<T>): Promise<T> {
    while (this.exclusive) await this.wait()
    this.shared++
    try { return await fn() } finally { this.shared--; this.wake() }
  }

  async withExclusive<T> (fn: () => Promise<T>): Promise<T> {
    while (this.exclusive || this.shared > 0) await this.wait()
    this.exclusive = true
    try { return await fn() } finally { this.exclusive = false; this.wake() }
  }

  /** Runs `fn` alone if nobody holds the lock now; otherwise returns undefined at once without running it. */
  async tryExclusive<T> (fn: () => Promise<T>): Promise<T | undefined> {
    if (this.exclusive || this.shared > 0) return undefined
    this.exclusive = true
    try { return await fn() } finally { this.exclusive = false; this.wake() }
  }

  private async wait (): Promise<void> {
    await new Promise<void>(resolve => this.waiters.push(resolve))
  }

  private wake (): void {
    for (const w of this.waiters.splice(0)) w()
  }
}
