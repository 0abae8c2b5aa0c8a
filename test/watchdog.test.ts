// The peer's watchdog kills the peer's mission containers when the peer process dies (SIGKILL), and leaves them
// alone when the peer says goodbye. It enforces the peer's lease: a peer that stops renewing (SIGSTOP) has its
// containers frozen through the cgroup freezer within the lease's validity, then killed after the grace.
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Docker from 'dockerode'
import { readFileSync } from 'node:fs'
import { startBoardDocker, loadBaseImages } from '../harness/simulated-docker.ts'
import { CHECK_INTERVAL_MS, DEFAULT_GRACE_MS, freezerDirOf, leaseValidityMs } from '../peer/watchdog.ts'
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

  /**
   * A stand-in peer: a process that starts the watchdog, renews the lease for `leased` every 50 ms like the peer's
   * tick (none: never), then waits to be killed, stopped or told to leave. The watchdog's log lines are collected.
   */
  const standInPeer = (peerId: string, leased: string[] = [], log: string[] = []) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', `
      const { startWatchdog } = await import(${JSON.stringify(WATCHDOG)})
      const w = startWatchdog(${JSON.stringify(board.dockerHost)}, ${JSON.stringify(peerId)})
      const leased = ${JSON.stringify(leased)}
      if (leased.length > 0) setInterval(() => { w.renew(${leaseValidityMs()}, leased) }, 50)
      console.log('watchdog ' + w.pid)
      process.stdin.on('data', () => { w.dismiss(); setTimeout(() => process.exit(0), 100) })
    `], { stdio: ['pipe', 'pipe', 'pipe'] })
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (chunk: string) => { log.push(...chunk.split('\n').filter(Boolean)); process.stderr.write(chunk) })
    return child
  }
  const freezerOf = async (id: string): Promise<string> => {
    const dir = freezerDirOf((await docker.getContainer(id).inspect()).State.Pid)
    if (dir == null) throw new Error(`no freezer cgroup for ${id}`)
    return dir
  }
  const stateOf = (dir: string): string => { try { return readFileSync(join(dir, 'freezer.state'), 'utf8').trim() } catch { return 'GONE' } }
  const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

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

  t.test('a peer that stops renewing (SIGSTOP): its container is frozen within the validity, then killed after the grace', async t => {
    const mine = await runLabelled('peer-d')
    const other = await runLabelled('peer-e')
    const dir = await freezerOf(mine)
    const log: string[] = []
    const peer = standInPeer('peer-d', [mine], log)
    await new Promise(resolve => peer.stdout!.once('data', resolve))
    await sleep(1500)
    t.equal(stateOf(dir), 'THAWED', 'a renewed lease leaves the container running')
    peer.kill('SIGSTOP')
    const stoppedAt = performance.now()
    t.teardown(() => { peer.kill('SIGCONT'); peer.kill('SIGKILL') })
    let frozenAt = NaN
    while (performance.now() - stoppedAt < 3000) {
      if (stateOf(dir) === 'FROZEN') { frozenAt = performance.now(); break }
      await sleep(2)
    }
    const latency = frozenAt - stoppedAt
    t.comment(`frozen ${Math.round(latency)} ms after the last renewal's peer stopped (validity ${leaseValidityMs()} ms, renewals every 50 ms, checks every ${CHECK_INTERVAL_MS} ms); watchdog: ${log.filter(l => l.includes('froze') || l.includes('frozen')).map(l => l.replace(/^\S+ /, '')).join(' | ')}`)
    t.ok(latency <= leaseValidityMs() + 100, `frozen ${Math.round(latency)} ms after the peer stopped, within validity + 100 ms`)
    t.ok(await isRunning(mine), 'Docker still sees it running (frozen, not stopped) before the grace')
    await waitFor('the frozen container to be killed after the grace', async () => !(await isRunning(mine)), DEFAULT_GRACE_MS + 3000)
    const killedAfter = performance.now() - frozenAt
    t.comment(`killed ${Math.round(killedAfter)} ms after it froze (grace ${DEFAULT_GRACE_MS} ms)`)
    t.ok(killedAfter >= DEFAULT_GRACE_MS - 100, 'not before the grace')
    t.ok(await isRunning(other), 'another peer\'s container is untouched')
    await docker.getContainer(mine).remove({ force: true })
    t.pass('the killed container is removed cleanly')
  })

  t.test('a peer back from a stop before the grace: the frozen container is killed at once, never thawed alive, and removed cleanly', async t => {
    const mine = await runLabelled('peer-f')
    const dir = await freezerOf(mine)
    const peer = standInPeer('peer-f', [mine])
    await new Promise(resolve => peer.stdout!.once('data', resolve))
    await sleep(500)
    peer.kill('SIGSTOP')
    t.teardown(() => { peer.kill('SIGCONT'); peer.kill('SIGKILL') })
    await waitFor('the container to freeze', async () => stateOf(dir) === 'FROZEN', 3000)
    await sleep(300)
    peer.kill('SIGCONT')
    const resumedAt = performance.now()
    await waitFor('the container to be killed once the peer renews again', async () => !(await isRunning(mine)), 3000)
    t.comment(`killed ${Math.round(performance.now() - resumedAt)} ms after the peer resumed`)
    t.ok(performance.now() - resumedAt < 1000, 'killed at the first renewal, not at the end of the grace')
    const removeStart = performance.now()
    await docker.getContainer(mine).remove({ force: true })
    t.ok(performance.now() - removeStart < 2000, 'docker rm -f of the fenced container returns promptly')
    peer.stdin!.write('leave\n')
    await new Promise(resolve => peer.once('exit', resolve))
  })

  t.test('a renewed lease and a goodbye leave the container running and thawed', async t => {
    const mine = await runLabelled('peer-g')
    const dir = await freezerOf(mine)
    const peer = standInPeer('peer-g', [mine])
    await new Promise(resolve => peer.stdout!.once('data', resolve))
    await sleep(1500)
    t.equal(stateOf(dir), 'THAWED', 'renewed for 1.5 s: running')
    peer.stdin!.write('leave\n')
    await new Promise(resolve => peer.once('exit', resolve))
    await sleep(1500)
    t.ok(await isRunning(mine), 'still running after the goodbye')
    t.equal(stateOf(dir), 'THAWED', 'and not frozen')
    await docker.getContainer(mine).remove({ force: true })
  })
}
