// A peer's watchdog: a small process beside the peer that kills the peer's mission containers when the peer process
// dies without saying goodbye (SIGKILL, crash, OOM). A container must never outlive the peer that fences it: once
// the peer is gone nobody would stop it, while another board takes the mission over.
//
// Usage (started by the peer, not by people): node peer/watchdog.ts DOCKER_HOST PEER_ID
// The peer holds the write end of this process's stdin; end-of-file without "bye" means the peer died.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { dockerFromHost, LABEL_PEER } from '../checkpoint/runtime.ts'

const GOODBYE = 'bye\n'

/** Kills and removes every container labelled with the peer id on that Docker daemon; gives up after `timeoutMs`. */
export async function killContainersOf (dockerHost: string, peerId: string, timeoutMs = 5000): Promise<number> {
  const docker = dockerFromHost(dockerHost)
  const signal = AbortSignal.timeout(timeoutMs)
  const list = await docker.listContainers({ filters: { label: [`${LABEL_PEER}=${peerId}`] }, abortSignal: signal } as object)
  await Promise.allSettled(list.map(async c => { await docker.getContainer(c.Id).remove({ force: true, abortSignal: signal } as object) }))
  return list.length
}

export interface Watchdog {
  readonly pid: number
  /** The peer is stopping cleanly: the watchdog leaves without touching anything. */
  dismiss (): void
}

/** Starts the watchdog of a peer in its own process group (a Ctrl-C to the peer's terminal does not reach it). */
export function startWatchdog (dockerHost: string, peerId: string): Watchdog {
  const child: ChildProcess = spawn(process.execPath, [fileURLToPath(import.meta.url), dockerHost, peerId], {
    stdio: ['pipe', 'ignore', 'inherit'],
    detached: true
  })
  child.unref()
  const stdin = child.stdin as NodeJS.WritableStream & { unref?: () => void }
  stdin.on('error', () => {})
  ;(stdin as unknown as { _handle?: { unref?: () => void } })._handle?.unref?.()
  return {
    pid: child.pid ?? -1,
    dismiss: () => { stdin.end(GOODBYE) }
  }
}

async function main (dockerHost: string, peerId: string): Promise<void> {
  let received = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (chunk: string) => { received += chunk })
  await new Promise(resolve => process.stdin.once('end', resolve))
  if (received.includes(GOODBYE)) return
  try {
    const killed = await killContainersOf(dockerHost, peerId)
    if (killed > 0) process.stderr.write(`tandem watchdog: peer ${peerId} died; killed its ${killed} mission container(s)\n`)
  } catch (err) {
    // The daemon died with the peer (a power cut): its containers died too.
    process.stderr.write(`tandem watchdog: peer ${peerId} died; Docker at ${dockerHost} unreachable (${(err as Error).message})\n`)
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [dockerHost, peerId] = process.argv.slice(2)
  if (dockerHost == null || peerId == null) {
    process.stderr.write('usage: node peer/watchdog.ts DOCKER_HOST PEER_ID\n')
    process.exitCode = 2
  } else {
    await main(dockerHost, peerId)
  }
}
