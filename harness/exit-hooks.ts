// Children of a process (peer processes, board daemons) must not outlive it, even when it is killed by a signal.

/**
 * Runs `cleanup` (synchronous) when this process exits or receives SIGINT, SIGTERM or SIGHUP; after the last such
 * hook ran, the signal is raised again so the process still ends the way it was told to.
 */
export function onOwnerExit (cleanup: () => void): void {
  process.on('exit', cleanup)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      cleanup()
      process.off(signal, onSignal)
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
    }
    process.on(signal, onSignal)
  }
}
