// The peer's watchdog kills the peer's mission containers when the peer process dies (SIGKILL), and leaves them
// alone when the peer says goodbye.
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Docker from 'dockerode'
import { startBoardDocker, loadBaseImages } from '../boards/simulated-docker.ts'
import { LABEL_PEER } from '../checkpoint/runtime.ts'
import { gateDockerCriu, waitFor } from './checkpoint-helpers.ts'

const WATCHDOG = new URL('../peer/watchdog.ts', import.meta.url).pathname

if (gateDockerCriu(t)) {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-watchdog-'))
  const board = await startBoardDocker({ dir, name: 'wd' })
  t.teardown(async () => { await board.stop(); await rm(dir, { recursive: true, force: true }) })
  await loadBaseImages(board)
  const docker = new Docker({ socketPath: board.socketPath })

  const runLabelled = async (peerId: string): Promise<string> => {
    const c = await docker.createContainer({ Image: 'tandem/busybox', Cmd: ['sleep', '600'], Labels: { [LABEL_PEER]: peerId }, HostConfig: { NetworkMode: 'none' } })
    await c.start()
    return c.id
  }
  /** Running, or false once the container is stopped or removed. */
  const isRunning = async (id: string): Promise<boolean> => {
    try {
      return (await docker.getContainer(id).inspect()).State.Running
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return false
      throw err
    }
  }

  /** A stand-in peer: a process that starts the watchdog, then waits to be killed or told to leave. */
  const standInPeer = (peerId: string) => spawn(process.execPath, ['--input-type=module', '-e', `
    const { startWatchdog } = await import(${JSON.stringify(WATCHDOG)})
    const w = startWatchdog(${JSON.stringify(board.dockerHost)}, ${JSON.stringify(peerId)})
    console.log('watchdog ' + w.pid)
    process.stdin.on('data', () => { w.dismiss(); setTimeout(() => process.exit(0), 100) })
  `], { stdio: ['pipe', 'pipe', 'inherit'] })

  t.test('a SIGKILLed peer takes its containers with it', async t => {
    const mine = await runLabelled('peer-a')
    const other = await runLabelled('peer-b')
    const peer = standInPeer('peer-a')
    await new Promise(resolve => peer.stdout!.once('data', resolve))
    peer.kill('SIGKILL')
    await waitFor('the container of the dead peer to stop', async () => !(await isRunning(mine)), 10_000)
    t.pass('the dead peer\'s container was killed and removed')
    t.ok(await isRunning(other), 'another peer\'s container is untouched')
  })

  t.test('a peer that says goodbye leaves its containers to itself', async t => {
    const mine = await runLabelled('peer-c')
    const peer = standInPeer('peer-c')
    await new Promise(resolve => peer.stdout!.once('data', resolve))
    peer.stdin!.write('leave\n')
    await new Promise(resolve => peer.once('exit', resolve))
    await new Promise(resolve => setTimeout(resolve, 1000))
    t.ok(await isRunning(mine), 'the container still runs after a clean goodbye')
  })
}
