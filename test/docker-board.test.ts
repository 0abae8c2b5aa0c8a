// Simulated boards' own Docker daemons: side by side with nothing shared, a container on one board,
// a power cut that leaves no process behind, a restart on the same data root, a checkpoint on a board.
import t from 'tap'
import { gateOn } from './helpers/requirements.ts'
import Docker from 'dockerode'
import { execFile, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { BASE_IMAGE_CACHE_TAR } from '../boards/base-images.ts'
import { DOCKERD_PATH, loadBaseImages, reapOrphanBoards, startBoardDocker, type BoardDocker } from '../harness/simulated-docker.ts'

const run = promisify(execFile)

function missingRequirement (): string | undefined {
  if (process.platform !== 'linux') return 'simulated board daemons need Linux'
  if (process.getuid?.() !== 0) return 'simulated board daemons need root'
  if (!existsSync(DOCKERD_PATH)) return `${DOCKERD_PATH} missing (run scripts/provision.sh)`
  if (!existsSync(BASE_IMAGE_CACHE_TAR)) return `${BASE_IMAGE_CACHE_TAR} missing (run scripts/provision.sh)`
  return undefined
}

/** A process that is gone or a zombie (dead, waiting for its new parent to reap it). */
function isDead (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')
  } catch {
    return true
  }
}

async function docker (board: BoardDocker, ...args: string[]): Promise<string> {
  const { stdout } = await run('docker', ['-H', board.dockerHost, ...args])
  return stdout.trim()
}

t.test('rejects a bad board name with a clear error', async t => {
  await t.rejects(startBoardDocker({ dir: tmpdir(), name: '../evil' }), { name: 'BoardDockerError' })
  await t.rejects(startBoardDocker({ dir: tmpdir(), name: '' }), /invalid board name/)
})

if (gateOn(t, missingRequirement())) {
  t.test('board daemons', async t => {
    const dir = await mkdtemp(join(tmpdir(), 'tandem-boards-'))
    const boards: BoardDocker[] = []
    t.teardown(async () => {
      for (const board of boards) await board.stop().catch(() => {})
      await rm(dir, { recursive: true, force: true })
    })

    const [b1, b2] = await Promise.all([startBoardDocker({ dir, name: 'b1' }), startBoardDocker({ dir, name: 'b2' })])
    boards.push(b1, b2)
    t.comment(`board daemon start: b1 ${b1.startMs.toFixed(0)} ms, b2 ${b2.startMs.toFixed(0)} ms (started together)`)
    t.not(b1.socketPath, b2.socketPath)
    t.not(b1.dataRoot, b2.dataRoot)
    t.ok(Buffer.byteLength(b1.socketPath) < 108, 'socket path fits a unix socket address')
    t.equal(b1.dockerHost, `unix://${b1.socketPath}`)

    await t.test('images loaded into one board are not on the other', async t => {
      const first = await loadBaseImages(b1)
      t.equal(first.loaded, true)
      t.comment(`image load into a fresh board: ${first.ms.toFixed(0)} ms (${first.images.map(image => image.ref).join(', ')})`)
      const again = await loadBaseImages(b1)
      t.equal(again.loaded, false, 'a board with current images is left alone')
      const onB2 = await new Docker({ socketPath: b2.socketPath }).listImages()
      t.same(onB2, [], 'b2 has no images')
    })

    await t.test('a container without network runs on b1 only', async t => {
      const api = new Docker({ socketPath: b1.socketPath })
      const container = await api.createContainer({
        name: 'counter', Image: 'tandem/busybox:latest',
        Cmd: ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done'],
        HostConfig: { NetworkMode: 'none' }
      })
      await container.start()
      const info = await container.inspect()
      t.equal(info.State.Running, true)
      t.ok(info.State.Pid > 0)
      t.ok(b1.processIds().includes(info.State.Pid), "the container's process is in b1's cgroup")
      t.same(await new Docker({ socketPath: b2.socketPath }).listContainers({ all: true }), [], 'b2 sees no container')
    })

    await t.test('a checkpoint and restore on a board daemon (runc finds CRIU >= 4.1)', async t => {
      await docker(b1, 'checkpoint', 'create', 'counter', 'cp1')
      // Docker 20.10 leaves the checkpoint blob in containerd's content store until its GC runs; an in-place
      // restore of the identical bytes meanwhile fails with "already exists" (moby#42900, fixed in later moby).
      // tandem restores into new containers from re-materialized files, so only this in-place test meets it.
      for (let attempt = 1; ; attempt++) {
        const failure = await docker(b1, 'start', '--checkpoint', 'cp1', 'counter').then(() => null, (err: Error) => err)
        if (failure == null) break
        if (!/already exists/.test(failure.message) || attempt >= 20) throw failure
        await new Promise(resolve => setTimeout(resolve, 250))
      }
      t.equal(await docker(b1, 'inspect', '-f', '{{.State.Running}}', 'counter'), 'true')
    })

    await t.test('kill() is a power cut: no process of the board survives', async t => {
      const before = b1.processIds()
      t.ok(before.length >= 4, `dockerd, containerd, a shim and the container run (${before.length} processes)`)
      t.ok(before.includes(b1.pid))
      await b1.kill()
      t.equal(b1.running, false)
      t.same(b1.processIds(), [], "b1's cgroup is empty")
      t.same(before.filter(pid => !isDead(pid)), [], 'every process seen before the kill is dead')
      t.equal(b2.running, true, 'b2 is untouched')
      await new Docker({ socketPath: b2.socketPath }).ping()
    })

    await t.test('restart() brings the board back on the same data root', async t => {
      const dataRoot = b1.dataRoot
      const oldPid = b1.pid
      await b1.restart()
      t.equal(b1.running, true)
      t.not(b1.pid, oldPid)
      t.equal(b1.dataRoot, dataRoot)
      const reload = await loadBaseImages(b1)
      t.equal(reload.loaded, false, 'images survived the power cut on the data root')
      const state = await docker(b1, 'inspect', '-f', '{{.State.Running}} {{.State.ExitCode}}', 'counter')
      t.match(state, /^false /, 'the container is remembered, not running')
      await docker(b1, 'start', 'counter')
      t.equal(await docker(b1, 'inspect', '-f', '{{.State.Running}}', 'counter'), 'true', 'and starts again')
    })

    await t.test('stop() is graceful and leaves nothing running', async t => {
      const before = b1.processIds()
      await b1.stop()
      t.same(b1.processIds(), [])
      t.same(before.filter(pid => !isDead(pid)), [])
      t.notOk(existsSync(b1.socketPath), 'socket removed')
      const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(line => line.includes(b1.dataRoot))
      t.same(mounts, [], 'no mount left under the data root')
    })
  })

  t.test('a board whose owner process was SIGKILLed is reaped by the next start', async t => {
    const dir = await mkdtemp(join(tmpdir(), 'tandem-orphan-'))
    const owner = spawn(process.execPath, ['--input-type=module', '-e', `
      const { startBoardDocker } = await import(${JSON.stringify(join(import.meta.dirname, '..', 'harness', 'simulated-docker.ts'))})
      const board = await startBoardDocker({ dir: ${JSON.stringify(dir)}, name: 'orphan' })
      console.log(JSON.stringify({ pids: board.processIds() }))
      setInterval(() => {}, 1000)
    `], { stdio: ['ignore', 'pipe', 'inherit'] })
    t.teardown(async () => {
      owner.kill('SIGKILL')
      reapOrphanBoards()
      await rm(dir, { recursive: true, force: true })
    })
    const line = await new Promise<string>((resolve, reject) => {
      owner.stdout.once('data', (chunk: Buffer) => { resolve(chunk.toString('utf8')) })
      owner.once('exit', code => { reject(new Error(`owner exited with ${code}`)) })
    })
    const { pids } = JSON.parse(line) as { pids: number[] }
    t.ok(pids.length >= 2, 'the orphan board runs dockerd and containerd')
    owner.kill('SIGKILL')
    await new Promise(resolve => owner.once('exit', resolve))
    t.ok(pids.some(pid => !isDead(pid)), 'its daemon outlives the SIGKILLed owner')
    t.ok(reapOrphanBoards() >= 1, 'reaped')
    t.same(pids.filter(pid => !isDead(pid)), [], 'no process of the orphan board is left')
  })
}

if (missingRequirement() === undefined) {
  t.test('a power cut also kills a container paused by Docker (frozen cgroup)', async t => {
    const dir = await mkdtemp(join(tmpdir(), 'tandem-boards-'))
    const board = await startBoardDocker({ dir, name: 'paused' })
    t.teardown(async () => { await board.stop().catch(() => {}); await rm(dir, { recursive: true, force: true }) })
    await loadBaseImages(board)
    const id = await docker(board, 'run', '-d', '--network', 'none', 'tandem/busybox', 'sleep', '600')
    await docker(board, 'pause', id)
    await board.kill()
    t.same(board.processIds(), [], 'no process of the board survives, the paused container included')
  })
}
