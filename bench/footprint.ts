// `npm run bench:footprint`: what a tandem peer costs its board. In one run:
// - a lone idle peer (no mission, no swarm): the RSS of the peer process and of its watchdog;
// - a 3-board swarm running the vehicle mission at one checkpoint per second: every peer's and watchdog's RSS,
//   and the CPU the primary's peer (and its watchdog) spend, as a share of one core over the window.
// RSS is read from /proc/<pid>/status (VmRSS), CPU from /proc/<pid>/stat (utime + stime) at the window's ends.
import { parseArgs } from 'node:util'
import { readFile } from 'node:fs/promises'
import { startMissionSwarm } from '../harness/mission-swarm.ts'
import { spawnPeer } from '../harness/spawn-peer.ts'
import { sleep } from '../harness/observe.ts'
import { distribution, table, writeResults } from './report.ts'

const USAGE = `usage: npm run bench:footprint -- [--seconds N] [--quick] [--peer-env NAME=VALUE]...

  --seconds N            the measuring window of the running swarm (default 60; --quick: 20)
  --peer-env NAME=VALUE  extra environment of every peer (and so its watchdog), e.g. NODE_OPTIONS=--max-semi-space-size=4
                         or MALLOC_ARENA_MAX=2, to compare settings
  --heap-snapshots DIR   at the end of the window, each running peer writes a V8 heap snapshot into DIR (SIGUSR2)`

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on Linux for every architecture tandem runs on). */
const USER_HZ = 100

async function rssMb (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1])
  return kb / 1024
}

async function cpuTicks (pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name (which may hold spaces, inside parentheses): utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(fields[11]) + Number(fields[12])
}

/** The peer's watchdog: its only child process running peer/watchdog.ts. */
async function watchdogOf (peerPid: number): Promise<number> {
  const children = (await readFile(`/proc/${peerPid}/task/${peerPid}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean).map(Number)
  for (const child of children) {
    const cmdline = await readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '')
    if (cmdline.includes('watchdog.ts')) return child
  }
  throw new Error(`no watchdog under peer ${peerPid}`)
}

interface Sample { role: string, peerRssMb: number, watchdogRssMb: number }

/** Where a peer's memory is, from its own /metrics (prom-client's Node.js metrics), MB. */
async function heapOf (peer: { apiAddress: string, token: string }): Promise<{ heapUsedMb: number, heapTotalMb: number, externalMb: number }> {
  const text = await (await fetch(`http://${peer.apiAddress}/metrics`, { headers: { authorization: `Bearer ${peer.token}` }, signal: AbortSignal.timeout(10_000) })).text()
  const metric = (name: string): number => Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1]) / 1024 / 1024
  return { heapUsedMb: metric('nodejs_heap_size_used_bytes'), heapTotalMb: metric('nodejs_heap_size_total_bytes'), externalMb: metric('nodejs_external_memory_bytes') }
}

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: 'string' }, quick: { type: 'boolean' }, 'peer-env': { type: 'string', multiple: true }, 'heap-snapshots': { type: 'string' }, help: { type: 'boolean' } } })
  if (values.help === true) { console.log(USAGE); return }
  const seconds = Number(values.seconds ?? (values.quick === true ? 20 : 60))
  if (!Number.isFinite(seconds) || seconds < 5) { console.error(`bench:footprint: --seconds must be a number >= 5\n${USAGE}`); process.exit(2) }
  const peerEnv: NodeJS.ProcessEnv = {}
  for (const pair of values['peer-env'] ?? []) {
    const at = pair.indexOf('=')
    if (at < 1) { console.error(`bench:footprint: --peer-env takes NAME=VALUE, not '${pair}'\n${USAGE}`); process.exit(2) }
    peerEnv[pair.slice(0, at)] = pair.slice(at + 1)
  }
  const snapshotDir = values['heap-snapshots']
  if (snapshotDir != null) peerEnv.NODE_OPTIONS = `${peerEnv.NODE_OPTIONS ?? ''} --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${snapshotDir}`.trim()
  if (Object.keys(peerEnv).length > 0) console.log(`bench:footprint: peer environment ${JSON.stringify(peerEnv)}`)

  console.log('bench:footprint: a lone idle peer (10 s after it is ready)')
  const lone = await spawnPeer({ openMissions: true, env: peerEnv })
  let idle: Sample
  try {
    await sleep(10_000)
    idle = { role: 'idle, alone', peerRssMb: await rssMb(lone.pid), watchdogRssMb: await rssMb(await watchdogOf(lone.pid)) }
  } finally {
    await lone.stop()
  }

  console.log(`bench:footprint: 3 boards, the vehicle mission at 1000 ms per checkpoint, ${seconds} s window`)
  const ms = await startMissionSwarm(3, { checkpointIntervalMs: 1000, peerEnv })
  try {
    const status = (await ms.anyStatus())!
    const roleOf = (peerId: string): string => peerId === status.primary ? 'primary' : peerId === status.backup ? 'backup' : 'spare'
    const boards = ms.boards.map(board => ({ board, role: roleOf(board.peerId), pid: board.peer!.pid }))
    const withWatchdogs = await Promise.all(boards.map(async b => ({ ...b, watchdog: await watchdogOf(b.pid) })))
    const primary = withWatchdogs.find(b => b.role === 'primary')!
    const startTicks = { peer: await cpuTicks(primary.pid), watchdog: await cpuTicks(primary.watchdog) }
    const startSeq = status.lastCheckpoint?.seq ?? 0
    const startedAt = performance.now()
    const rss = new Map<string, { peer: number[], watchdog: number[] }>()
    while (performance.now() - startedAt < seconds * 1000) {
      await sleep(1000)
      for (const b of withWatchdogs) {
        const entry = rss.get(b.role) ?? { peer: [], watchdog: [] }
        entry.peer.push(await rssMb(b.pid))
        entry.watchdog.push(await rssMb(b.watchdog))
        rss.set(b.role, entry)
      }
    }
    const elapsedS = (performance.now() - startedAt) / 1000
    const peerCpu = (await cpuTicks(primary.pid) - startTicks.peer) / USER_HZ / elapsedS * 100
    const watchdogCpu = (await cpuTicks(primary.watchdog) - startTicks.watchdog) / USER_HZ / elapsedS * 100
    const endStatus = await ms.status(primary.board)
    const checkpoints = (endStatus?.lastCheckpoint?.seq ?? startSeq) - startSeq

    if (snapshotDir != null) {
      for (const b of withWatchdogs) process.kill(b.pid, 'SIGUSR2')
      await sleep(15_000)
      console.log(`heap snapshots of ${withWatchdogs.map(b => `${b.role} ${b.pid}`).join(', ')} in ${snapshotDir}`)
    }
    const heaps = new Map(await Promise.all(withWatchdogs.map(async b => [b.role, await heapOf(b.board.peer!)] as const)))
    const rows: Array<Array<string | number | null>> = [['process', 'RSS p50 MB', 'RSS max MB', 'CPU % of a core', 'JS heap used / total MB', 'external MB']]
    rows.push(['peer, idle alone', idle.peerRssMb, idle.peerRssMb, null, null, null])
    rows.push(['watchdog, idle alone', idle.watchdogRssMb, idle.watchdogRssMb, null, null, null])
    const figures: Record<string, unknown> = { peerEnv, idle, seconds: elapsedS, checkpoints, primaryPeerCpuPercent: peerCpu, primaryWatchdogCpuPercent: watchdogCpu, rss: {} }
    for (const role of ['primary', 'backup', 'spare']) {
      const entry = rss.get(role)
      if (entry == null) continue
      const peer = distribution(entry.peer)
      const watchdog = distribution(entry.watchdog)
      const heap = heaps.get(role)
      ;(figures.rss as Record<string, unknown>)[role] = { peer, watchdog, heap }
      rows.push([`peer, ${role}`, peer.p50, peer.max, role === 'primary' ? peerCpu : null, heap == null ? null : `${heap.heapUsedMb.toFixed(0)} / ${heap.heapTotalMb.toFixed(0)}`, heap?.externalMb ?? null])
      rows.push([`watchdog, ${role}`, watchdog.p50, watchdog.max, role === 'primary' ? watchdogCpu : null, null, null])
    }
    console.log(table(rows))
    console.log(`${checkpoints} checkpoints in ${elapsedS.toFixed(1)} s on the primary`)
    console.log(`results: ${await writeResults('footprint', figures)}`)
  } finally {
    await ms.stop()
  }
}

await main()
