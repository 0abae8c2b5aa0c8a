// One CRIU dump of a running container: by runc directly (CRIU writes its images straight into the bundle's
// directory, optionally holding the freeze through tandem's post-dump hook), or through Docker's checkpoint API.
import { access, mkdir, readFile, readdir, open, stat, type FileHandle } from 'node:fs/promises'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type Docker from 'dockerode'
import { parseStatsDump, type CriuDumpStats } from './criu-stats.ts'
import { prepareCriuHook, type CriuHook } from './criu-hook.ts'
import { CheckpointError, CriuError } from './errors.ts'

/** Who ran CRIU: runc directly, or Docker's checkpoint API (when runc's state dir was not found). */
export type DumpPath = 'runc' | 'docker'
/**
 * Where the CRIU figures come from: its stats-dump file, or (when containerd deleted that too soon)
 * dump.log timestamps plus page image sizes (then freezing/memdump/memwrite times are 0), or nowhere.
 */
export type CriuStatsSource = 'stats-dump' | 'dump-log' | 'none'
/**
 * How the mission is held still while CRIU dumps it and its files are copied (runc path only; Docker's checkpoint
 * API always pauses first). 'criu-hook': CRIU freezes the container itself, and a post-dump action script keeps it
 * frozen until the rootfs changes and data dir are copied; CRIU's network lock is skipped (see criu-hook.ts).
 * 'pause': the container is paused through Docker for runc's whole run (the old way, kept to measure against).
 */
export type FreezeMode = 'criu-hook' | 'pause'

/** The container to dump and where its daemon keeps runc's and containerd's state. */
export interface DumpTarget {
  containerId: string
  container: Docker.Container
  /** runc's state root of the daemon's containers. */
  runcRoot: string
  /** Docker's data root (containerd's task dirs are under it). */
  dockerRootDir: string
}

/**
 * How this container is dumped. runc directly when this daemon's runc state is where the runtime expects it: CRIU
 * writes its images straight into the bundle's directory. Otherwise Docker's checkpoint API, which has containerd
 * pack the images into its content store and unpack them again, ~0.2 s more for a small Node.js mission.
 */
export async function startDumper (target: DumpTarget, freezeMode: FreezeMode, scratch: string, imagesDir: string, seq: number): Promise<Dumper> {
  const { runcRoot, containerId } = target
  if (await access(join(runcRoot, containerId, 'state.json')).then(() => true, () => false)) {
    const hook = freezeMode === 'criu-hook' ? await prepareCriuHook(scratch, await freezerStateOf(runcRoot, containerId)) : null
    return runcDumper(runcRoot, containerId, scratch, imagesDir, hook)
  }
  const taskDir = join(target.dockerRootDir, 'containerd/daemon/io.containerd.runtime.v2.task/moby', containerId)
  return dockerDumper(target.container, taskDir, scratch, imagesDir, `tandem-${seq}-${randomBytes(3).toString('hex')}`)
}

export interface HeldDump {
  outcome: DumpOutcome
  /** How long the mission was held still, ms. */
  pausedMs: number
}

/**
 * Dumps the container and runs `copyFiles` while it is held still, so the CRIU images, rootfs changes and data dir
 * agree with each other. With the hook, the container is frozen at CRIU's pre-dump action (by this process, or by
 * CRIU itself on cgroup v2) and CRIU's post-dump action waits for the copy: runc's start-up and CRIU's own
 * preparation run while the mission runs. Otherwise it is paused through Docker around the dump.
 */
export async function dumpHoldingStill (dumper: Dumper, container: Docker.Container, copyFiles: () => Promise<void>, signal?: AbortSignal): Promise<HeldDump> {
  let outcome: DumpOutcome = { wallMs: 0, stats: null, statsSource: 'none', log: null }
  let pausedAt = performance.now()
  let resumedAt = pausedAt
  if (dumper.hook != null) {
    const hook = dumper.hook
    const dumping = dumper.dump(signal)
    const settled = dumping.done.then(() => true, () => false)
    try {
      // A failed dump rejects done; a dump that ends without the hook (it cannot, unless CRIU ignored it) is an error.
      const frozen = await Promise.race([hook.frozen.then(() => true), dumping.done.then(() => false)])
      if (!frozen) throw new CriuError('CRIU finished without running tandem\'s post-dump hook', [])
      pausedAt = hook.selfFrozenAt ?? performance.now()
      try { await copyFiles() } finally { hook.release(); resumedAt = performance.now() }
      await dumping.done
      // Frozen by this process at pre-dump: CRIU left it frozen, thawed now that runc is done.
      if (hook.selfFrozenAt != null) { await hook.thaw(); resumedAt = performance.now() }
    } finally {
      hook.release()
      await settled
      await hook.thaw().catch(() => {})
      outcome = await dumper.finish()
      await hook.close()
    }
  } else {
    try {
      await container.pause()
      const dumping = dumper.dump(signal)
      dumping.done.catch(() => {})
      // Once CRIU has written its images the rest of the dump is file copying: the mission may run on.
      await Promise.race([dumping.done, dumping.criuWritten])
      await copyFiles()
      await container.unpause()
      resumedAt = performance.now()
      await dumping.done
    } finally {
      if (resumedAt === pausedAt) {
        await container.unpause().catch(() => {})
        resumedAt = performance.now()
      }
      outcome = await dumper.finish()
    }
  }
  // With the hook and CRIU freezing: from its freeze request to its thaw (CRIU's own figures, the copy included).
  const stats = outcome.stats
  const pausedMs = dumper.hook != null && dumper.hook.selfFrozenAt == null && stats != null && stats.frozenTimeUs > 0
    ? (stats.freezingTimeUs + stats.frozenTimeUs) / 1000
    : resumedAt - pausedAt
  return { outcome, pausedMs }
}

export interface DumpOutcome {
  wallMs: number
  stats: CriuDumpStats | null
  statsSource: CriuStatsSource
  /** CRIU's dump.log, when it could be read. */
  log: string | null
}

/** One CRIU dump of a paused container, by runc or by Docker. */
export interface Dumper {
  readonly path: DumpPath
  /** CRIU's post-dump hook holding the freeze (runc path with freezeMode 'criu-hook'), else null. */
  readonly hook: CriuHook | null
  /** Starts the dump; `criuWritten` resolves once CRIU is done, `done` once the images are in place. */
  dump (signal?: AbortSignal): { criuWritten: Promise<void>, done: Promise<void> }
  /** After the dump (or its failure): CRIU's own figures. */
  finish (): Promise<DumpOutcome>
  /** Moves the images into the bundle's criu directory (when they were written elsewhere). */
  placeImages (): Promise<void>
}

function runcDumper (runcRoot: string, containerId: string, scratch: string, imagesDir: string, hook: CriuHook | null): Dumper {
  const workDir = join(scratch, 'criu-work')
  let wallMs = 0
  return {
    path: 'runc',
    hook,
    dump (signal) {
      const started = performance.now()
      const done = (async () => {
        await mkdir(imagesDir, { recursive: true })
        await mkdir(workDir, { recursive: true })
        try {
          await run('runc', ['--root', runcRoot, 'checkpoint', '--leave-running', '--image-path', imagesDir, '--work-path', workDir, containerId], signal, hook?.env)
        } catch (err) {
          const log = (await readFile(join(workDir, 'dump.log'), 'utf8').catch(() => '')).split('\n')
          const errors = log.filter(l => /Error|Warn/.test(l))
          throw new CriuError(`CRIU checkpoint failed: ${(err as Error).message}`, (errors.length > 0 ? errors : log).slice(-20))
        }
        wallMs = performance.now() - started
      })()
      return { criuWritten: done, done }
    },
    async finish () {
      const stats = parseStatsDump(await readFile(join(workDir, 'stats-dump')).catch(() => new Uint8Array()))
      const log = await readFile(join(workDir, 'dump.log'), 'latin1').catch(() => null)
      if (stats != null) return { wallMs, stats, statsSource: 'stats-dump', log }
      const fromLog = log != null ? await statsFromDumpLog(log, imagesDir) : null
      return { wallMs, stats: fromLog, statsSource: fromLog != null ? 'dump-log' : 'none', log }
    },
    async placeImages () {}
  }
}

function dockerDumper (container: Docker.Container, taskDir: string, scratch: string, imagesDir: string, name: string): Dumper {
  const statsWatch = watchCriuWork(taskDir)
  let wallMs = 0
  return {
    path: 'docker',
    hook: null,
    dump (signal) {
      const started = performance.now()
      const done = (container as unknown as { createCheckpoint: (o: object) => Promise<unknown> })
        .createCheckpoint({ CheckpointID: name, CheckpointDir: scratch, Exit: false, abortSignal: signal })
        .then(() => { wallMs = performance.now() - started }, async (err: unknown) => { throw await criuFailure('checkpoint', err) })
      return { criuWritten: statsWatch.criuDone, done }
    },
    async finish () {
      const criu = await statsWatch.stop()
      const stats = criu.stats ?? (criu.log != null ? await statsFromDumpLog(criu.log, join(scratch, name)) : null)
      return { wallMs, stats, statsSource: criu.stats != null ? 'stats-dump' : stats != null ? 'dump-log' : 'none', log: criu.log }
    },
    async placeImages () { await renameDir(join(scratch, name), imagesDir) }
  }
}

/**
 * containerd runs CRIU in `<data-root>/containerd/.../<id>/criu-work` and deletes that directory as soon
 * as the dump returns. Polling every 2 ms: dump.log (open for the whole dump) is opened and followed, so
 * the end of CRIU's work is seen before Docker finishes copying the images, and it stays readable through
 * its descriptor after the deletion; stats-dump (written last) is read when caught in time.
 */
function watchCriuWork (taskDir: string): {
  /** Resolves when CRIU reports the dump finished (or the watch stops). */
  criuDone: Promise<void>
  stop: () => Promise<{ stats: CriuDumpStats | null, log: string | null }>
} {
  const workDir = join(taskDir, 'criu-work')
  let stats: CriuDumpStats | null = null
  let log: FileHandle | null = null
  let logText = ''
  let stopped = false
  let markDone: () => void = () => {}
  const criuDone = new Promise<void>(resolve => { markDone = resolve })
  const follow = async (handle: FileHandle): Promise<void> => {
    const buf = Buffer.alloc(256 * 1024)
    for (;;) {
      const { bytesRead } = await handle.read(buf, 0, buf.length, Buffer.byteLength(logText))
      if (bytesRead === 0) return
      logText += buf.subarray(0, bytesRead).toString('latin1')
    }
  }
  const poll = async (): Promise<void> => {
    while (!stopped && stats == null) {
      if (log == null) log = await open(join(workDir, 'dump.log'), 'r').catch(() => null)
      if (log != null) {
        await follow(log).catch(() => {})
        if (logText.includes('Dumping finished successfully')) markDone()
      }
      try { stats = parseStatsDump(await readFile(join(workDir, 'stats-dump'))) } catch {}
      if (stats != null) markDone()
      else await new Promise(resolve => setTimeout(resolve, 2))
    }
  }
  const polling = poll()
  return {
    criuDone,
    stop: async () => {
      stopped = true
      markDone()
      await polling
      const handle = log as FileHandle | null
      if (handle == null) return { stats, log: null }
      try {
        await follow(handle).catch(() => {})
        return { stats, log: logText }
      } finally { await handle.close() }
    }
  }
}

/**
 * When stats-dump was deleted before it could be read: CRIU's frozen time from the timestamps of
 * dump.log (first task seized .. tasks unfrozen) and pages written from the size of the page images.
 */
async function statsFromDumpLog (log: string, imagesDir: string): Promise<CriuDumpStats | null> {
  const stamp = (line: string | undefined): number | null => {
    const m = /^\((\d+)\.(\d+)\)/.exec(line ?? '')
    return m?.[1] != null && m[2] != null ? Number(m[1]) * 1e6 + Number(m[2].padEnd(6, '0').slice(0, 6)) : null
  }
  const lines = log.split('\n')
  const frozen = stamp(lines.find(l => /Seized task|freezer\.state=FROZEN/.test(l)))
  const thawed = stamp(lines.findLast(l => /Unfreezing tasks|Unseizing/.test(l)))
  if (frozen == null || thawed == null || thawed < frozen) return null
  let pageBytes = 0
  try {
    for (const f of await readdir(imagesDir)) if (/^pages-\d+\.img$/.test(f)) pageBytes += (await stat(join(imagesDir, f))).size
  } catch {}
  const pages = Math.round(pageBytes / 4096)
  return { freezingTimeUs: 0, frozenTimeUs: thawed - frozen, memdumpTimeUs: 0, memwriteTimeUs: 0, pagesScanned: 0, pagesSkippedParent: 0, pagesWritten: pages }
}

/** Turns a Docker checkpoint/restore error into a CriuError carrying CRIU's own log lines. */
export async function criuFailure (what: 'checkpoint' | 'restore', err: unknown): Promise<Error> {
  const message = (err as { json?: { message?: string } })?.json?.message ?? (err as Error)?.message ?? String(err)
  if (!/criu|runc/i.test(message)) return err instanceof Error ? err : new Error(message)
  const logPath = /path=\s*(\S+\.log)/.exec(message)?.[1] ?? /log file:\s*(\S+\.log)/.exec(message)?.[1]
  let lines: string[] = []
  if (logPath != null) {
    try {
      const log = (await readFile(logPath, 'utf8')).split('\n')
      const errors = log.filter(l => /Error|Warn/.test(l))
      lines = (errors.length > 0 ? errors : log).slice(-20)
    } catch {}
  }
  return new CriuError(`CRIU ${what} failed: ${message}`, lines)
}

/**
 * Runs a command in a process group of its own; an abort kills the whole group, so runc's CRIU dies with it. (A board
 * frozen mid-dump whose container the watchdog then killed left CRIU in wait4 on ptraced zombies of the dying pid
 * namespace, which waited on CRIU in turn: the dump never ended, and killing runc alone would leave CRIU holding
 * the container.)
 */
export async function run (cmd: string, args: string[], signal?: AbortSignal, env?: NodeJS.ProcessEnv): Promise<void> {
  signal?.throwIfAborted()
  await new Promise<void>((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: env ?? process.env, detached: true })
    let err = ''
    const kill = (): void => {
      try { if (p.pid != null) process.kill(-p.pid, 'SIGKILL') } catch {}
    }
    signal?.addEventListener('abort', kill, { once: true })
    p.stderr.on('data', (d: Buffer) => { err += d.toString() })
    p.on('error', reject)
    p.on('close', code => {
      signal?.removeEventListener('abort', kill)
      if (signal?.aborted === true) reject(new CheckpointError(`${cmd} ${args[0] ?? ''} aborted (${(signal.reason as Error)?.message ?? 'deadline'}): its process group was killed`))
      else if (code === 0) resolve()
      else reject(new CheckpointError(`${cmd} ${args.join(' ')}: ${err.trim()}`))
    })
  })
}

/** The container's cgroup v1 freezer.state, from runc's state.json; null on cgroup v2 or when unknown. */
async function freezerStateOf (runcRoot: string, containerId: string): Promise<string | null> {
  try {
    const state = JSON.parse(await readFile(join(runcRoot, containerId, 'state.json'), 'utf8')) as { cgroup_paths?: Record<string, string> }
    const dir = state.cgroup_paths?.freezer
    if (dir == null || !dir.startsWith('/sys/fs/cgroup/')) return null
    const file = join(dir, 'freezer.state')
    await access(file)
    return file
  } catch {
    return null
  }
}

async function renameDir (from: string, to: string): Promise<void> {
  await run('mv', ['-T', from, to])
}
