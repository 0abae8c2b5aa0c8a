// The faults a chaos run injects into a swarm of simulated boards, each with its heal. Real faults only: a power cut
// kills a board's whole cgroup, a freeze stops its processes where they are, a daemon freeze stops the peer process
// alone (its containers run on), a restart storm restarts one peer again and again, a partition drops packets between
// the boards' network namespaces (iptables), a slow board runs under a CPU quota on its cgroup.
import type { MissionSwarm } from '../harness/mission-swarm.ts'
import type { SimulatedBoard } from '../harness/simulated-board.ts'
import type { MissionStatus } from '../peer/missions/index.ts'
import type { Random } from '../harness/consensus-simulator.ts'
import { sleep } from '../harness/observe.ts'

export const FAULT_KINDS = ['power-cut-primary', 'power-cut-backup', 'board-freeze', 'daemon-freeze', 'restart-storm', 'kill-during-restore',
  'kill-during-move', 'partition-primary', 'partition-backup', 'partition-bridge', 'partition-flap',
  'slow-board', 'disk-full-backup', 'corrupt-backup'] as const
/** Kinds that need each board on a disk of its own (SimulatedBoardOptions.diskBytes). */
export const DISK_FAULT_KINDS: readonly FaultKind[] = ['disk-full-backup']
export type FaultKind = typeof FAULT_KINDS[number]

/** Kinds that cut links: the boards run in network namespaces (harness/netns.ts) when any of them is chosen. */
export const PARTITION_KINDS: ReadonlySet<FaultKind> = new Set(['partition-primary', 'partition-backup', 'partition-bridge', 'partition-flap'])

export interface InjectedFault {
  kind: FaultKind
  /** Names of the boards it hit. */
  boards: string[]
  detail: string
  /** How long the fault lasts before `heal`, ms. */
  holdMs: number
  /** How many failures it is (a restart storm of 5 restarts is 5): each may cost a few epochs. */
  failures: number
  /** What went wrong while injecting it (e.g. a move that never reached its final checkpoint): a violation. */
  violation?: string
  /** Ends the fault: boards powered on again, thawed, resumed. */
  heal (): Promise<void>
  /**
   * A primary cut off from its majority: the container it ran, and each cut (wall ms, from applied to healed). Cut
   * for longer than the watchdog's lease validity, that container must stop reporting within it, for good.
   */
  isolatedPrimary?: { containerId: string, cuts: Array<{ from: number, to: number }> }
  /**
   * For a failure injected some time after the fault began (corrupt-backup): the primary's status just before it,
   * which sets what the failure may lose (not the status when the fault began).
   */
  statusAtFailure?: MissionStatus
}

interface Context { ms: MissionSwarm, status: MissionStatus, rng: Random }

function boardOf (ms: MissionSwarm, peerId: string | null): SimulatedBoard {
  const board = ms.boardOf(peerId)
  if (board == null) throw new Error(`no board runs peer ${peerId ?? '(none)'}`)
  return board
}

async function powerOn (ms: MissionSwarm, board: SimulatedBoard): Promise<void> {
  if (!board.isOn) await board.powerOn(ms.swarm.bootstrapFor(board))
}

export async function inject (kind: FaultKind, { ms, status, rng }: Context): Promise<InjectedFault> {
  const holdMs = rng.int(3000, 10_000)
  switch (kind) {
    case 'power-cut-primary':
    case 'power-cut-backup': {
      const board = boardOf(ms, kind === 'power-cut-primary' ? status.primary : status.backup)
      await board.powerCut()
      return { kind, boards: [board.name], detail: `${board.name} off for ${holdMs} ms`, holdMs, failures: 1, heal: async () => { await powerOn(ms, board) } }
    }
    case 'board-freeze': {
      const board = boardOf(ms, status.primary)
      board.freeze()
      return { kind, boards: [board.name], detail: `${board.name} (primary) frozen for ${holdMs} ms`, holdMs, failures: 1, heal: async () => { board.thaw() } }
    }
    case 'daemon-freeze': {
      const board = boardOf(ms, status.primary)
      board.peer?.kill('SIGSTOP')
      return { kind, boards: [board.name], detail: `${board.name}'s peer (primary) stopped for ${holdMs} ms, its containers left running`, holdMs, failures: 1, heal: async () => { board.peer?.kill('SIGCONT') } }
    }
    case 'partition-primary':
    case 'partition-backup': {
      const board = boardOf(ms, kind === 'partition-primary' ? status.primary : status.backup)
      const partitionMs = rng.int(5000, 30_000)
      await ms.swarm.partition([[board], ms.boards.filter(b => b !== board)])
      const cut = { from: Date.now(), to: Infinity }
      return {
        kind,
        boards: [board.name],
        detail: `${board.name} (${kind === 'partition-primary' ? 'primary' : 'backup'}) cut off from every other board for ${partitionMs} ms`,
        holdMs: partitionMs,
        failures: 1,
        heal: async () => { await ms.swarm.heal(); cut.to = Date.now() },
        ...(kind === 'partition-primary' && status.container != null ? { isolatedPrimary: { containerId: status.container.id, cuts: [cut] } } : {})
      }
    }
    case 'partition-bridge': {
      // A sees B, B sees C, A does not see C: the primary and its backup cut apart, both still reach the others.
      const primary = boardOf(ms, status.primary)
      const backup = boardOf(ms, status.backup)
      const partitionMs = rng.int(5000, 30_000)
      await ms.swarm.cut(primary, backup)
      return {
        kind,
        boards: [primary.name, backup.name],
        detail: `link ${primary.name} (primary) - ${backup.name} (backup) cut for ${partitionMs} ms, both still reach ${ms.boards.filter(b => b !== primary && b !== backup).map(b => b.name).join(', ')}`,
        holdMs: partitionMs,
        failures: 1,
        heal: async () => { await ms.swarm.heal() }
      }
    }
    case 'partition-flap': {
      // The primary's board loses and regains its network again and again; every cut is a failure of its own.
      const board = boardOf(ms, status.primary)
      const others = ms.boards.filter(b => b !== board)
      const times = rng.int(3, 6)
      const cuts: Array<{ from: number, to: number }> = []
      const rounds: string[] = []
      for (let i = 0; i < times; i++) {
        const downMs = rng.int(300, 3000)
        const upMs = rng.int(300, 3000)
        await ms.swarm.partition([[board], others])
        const from = Date.now()
        await sleep(downMs)
        await ms.swarm.heal()
        cuts.push({ from, to: Date.now() })
        await sleep(upMs)
        rounds.push(`${downMs}/${upMs}`)
      }
      return {
        kind,
        boards: [board.name],
        detail: `${board.name} (primary) cut off and rejoined ${times} times (down/up ms: ${rounds.join(', ')})`,
        holdMs: 0,
        failures: times,
        heal: async () => { await ms.swarm.heal() },
        ...(status.container != null ? { isolatedPrimary: { containerId: status.container.id, cuts } } : {})
      }
    }
    case 'slow-board': {
      const board = boardOf(ms, status.primary)
      const cpus = rng.int(20, 50) / 100
      const slowMs = rng.int(25_000, 35_000)
      board.throttle(cpus)
      return {
        kind,
        boards: [board.name],
        detail: `${board.name} (primary: peer, watchdog, dockerd, containers) under a CPU quota of ${Math.round(cpus * 100)} % of a core for ${slowMs} ms`,
        holdMs: slowMs,
        failures: 1,
        heal: async () => { board.unthrottle() }
      }
    }
    case 'restart-storm': {
      const board = rng.pick(ms.boards.filter(b => b.isOn))
      const restarts = 5
      for (let i = 0; i < restarts; i++) {
        await board.stopPeer()
        await sleep(rng.int(200, 1000))
        await powerOn(ms, board)
        await sleep(rng.int(500, 1500))
      }
      return { kind, boards: [board.name], detail: `${board.name}'s peer restarted ${restarts} times`, holdMs: 0, failures: restarts, heal: async () => {} }
    }
    case 'kill-during-move': {
      // A planned migration to the backup, and the source's power cut somewhere in it: before its final checkpoint
      // is taken, while the target fetches it, or just after. The target must not wait forever for a checkpoint only
      // the dead source holds, nor may anyone restore older state than the target holds.
      const source = boardOf(ms, status.primary)
      const target = boardOf(ms, status.backup)
      const askedAt = Date.now()
      const move = source.peer!.client.request('POST', `/v1/missions/${encodeURIComponent(status.name)}/move`, { to: target.peerId }, { timeoutMs: 120_000 })
      move.catch(() => {})
      // Half the time during the final dump, half the time once it is taken, while the target fetches it.
      const during = rng.chance(0.5) ? 'dump' : 'transfer'
      const mark = during === 'dump' ? 'taking the final checkpoint' : 'container stopped: handing over'
      const markKind = during === 'dump' ? 'moveStarted' : 'handingOver'
      const reached = await ms.waitFor(`the move's ${mark}`, async () => {
        const s = await ms.status(source)
        return s?.events.some(e => e.at >= askedAt && e.event.kind === markKind) === true ? true : undefined
      }, 30_000).catch(() => false)
      const delayMs = during === 'dump' ? rng.int(0, 300) : 0
      await sleep(delayMs)
      await source.powerCut()
      return {
        kind,
        boards: [source.name, target.name],
        detail: `move ${source.name} -> ${target.name}, ${source.name} cut ${during === 'dump' ? `${delayMs} ms into its final checkpoint` : 'once its final checkpoint was taken, while the target fetches it'}, off for ${holdMs} ms`,
        holdMs,
        failures: 2,
        ...(reached ? {} : { violation: `the move ${source.name} -> ${target.name} did not reach "${mark}" within 30 s` }),
        heal: async () => { await powerOn(ms, source) }
      }
    }
    case 'kill-during-restore': {
      const first = boardOf(ms, status.primary)
      const cutAt = Date.now()
      await first.powerCut()
      // The next primary loses its power while it restores: the takeover after it must still find the newest state.
      const second = await ms.waitFor('a new primary restoring', async () => {
        for (const board of ms.boards.filter(b => b.isOn)) {
          const s = await ms.status(board)
          const restoring = s?.events.find(e => e.at >= cutAt && e.event.kind === 'elected' && e.event.start.kind === 'restore' && e.board !== first.peerId)
          if (restoring != null) return ms.boardOf(restoring.board)
        }
        return undefined
      }, 30_000)
      await second.powerCut()
      return {
        kind,
        boards: [first.name, second.name],
        detail: `${first.name} (primary) cut, then ${second.name} while restoring; both off for ${holdMs} ms`,
        holdMs,
        failures: 2,
        heal: async () => { await powerOn(ms, first); await powerOn(ms, second) }
      }
    }
    case 'disk-full-backup': {
      const board = boardOf(ms, status.backup)
      const filler = await board.fillDisk()
      return {
        kind,
        boards: [board.name],
        detail: `${board.name}'s disk (backup) filled for ${holdMs} ms (${Math.round(filler / 1e6)} MB filler)`,
        holdMs,
        failures: 1,
        heal: async () => { await board.freeDisk() }
      }
    }
    case 'corrupt-backup': {
      const backup = boardOf(ms, status.backup)
      const primary = boardOf(ms, status.primary)
      const corrupted = await backup.corruptStorage({ blocks: true, staged: true })
      // The bad bytes sit on the backup's disk for a few checkpoint intervals, then the primary dies: the backup must
      // take over from what it holds (verified, or fetched again while the primary lived).
      await sleep(rng.int(2000, 4000))
      const statusAtFailure = (await ms.status(primary)) ?? status
      // Staging the checkpoints since rewrote the page images that changed: flipped again right before the cut and
      // right after it, so the restore meets corrupt staged files (the blockstore's flipped values may sit in blocks
      // no restore reads). Before the cut alone, a checkpoint staged in between rewrote the flipped image (CI); after
      // it alone, the staging of the last checkpoint fetched could have the standby dir empty at that instant. The
      // second flip follows the SIGKILL at once, not the end of the cut: the cut waits for the board's dockerd to die,
      // which took longer than the takeover under load (CI), so the restore had verified the files before the flip.
      const beforeCut = await backup.corruptStorage({ blocks: false, staged: true })
      const cut = primary.powerCut() // its peer is SIGKILLed before the first await
      const afterCut = await backup.corruptStorage({ blocks: false, staged: true })
      await cut
      const again = { flippedBytes: beforeCut.flippedBytes + afterCut.flippedBytes, stagedFiles: Math.max(beforeCut.stagedFiles, afterCut.stagedFiles) }
      return {
        kind,
        boards: [backup.name, primary.name],
        detail: `${corrupted.flippedBytes} bytes flipped in ${corrupted.blockFiles} blockstore tables and ${corrupted.stagedFiles} staged page images of ${backup.name} (backup), ${again.flippedBytes} in its ${again.stagedFiles} staged page images again around the cut, then ${primary.name} (primary) cut for ${holdMs} ms`,
        holdMs,
        failures: 1,
        statusAtFailure,
        heal: async () => { await powerOn(ms, primary) }
      }
    }
  }
}
