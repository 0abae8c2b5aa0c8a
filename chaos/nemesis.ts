// The faults a chaos run injects into a swarm of simulated boards, each with its heal. Real faults only: a power cut
// kills a board's whole cgroup, a freeze stops its processes where they are, a daemon freeze stops the peer process
// alone (its containers run on), a restart storm restarts one peer again and again.
import type { MissionSwarm } from '../demo/mission-swarm.ts'
import type { SimulatedBoard } from '../boards/simulated-board.ts'
import type { MissionStatus } from '../peer/missions.ts'
import type { Random } from '../consensus/simulator.ts'
import { sleep } from '../demo/observe.ts'

export const FAULT_KINDS = ['power-cut-primary', 'power-cut-backup', 'board-freeze', 'daemon-freeze', 'restart-storm', 'kill-during-restore',
  'disk-full-backup', 'corrupt-backup'] as const
/** Kinds that need each board on a disk of its own (SimulatedBoardOptions.diskBytes). */
export const DISK_FAULT_KINDS: readonly FaultKind[] = ['disk-full-backup']
export type FaultKind = typeof FAULT_KINDS[number]

export interface InjectedFault {
  kind: FaultKind
  /** Names of the boards it hit. */
  boards: string[]
  detail: string
  /** How long the fault lasts before `heal`, ms. */
  holdMs: number
  /** How many failures it is (a restart storm of 5 restarts is 5): each may cost a few epochs. */
  failures: number
  /** Ends the fault: boards powered on again, thawed, resumed. */
  heal (): Promise<void>
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
    case 'kill-during-restore': {
      const first = boardOf(ms, status.primary)
      const cutAt = Date.now()
      await first.powerCut()
      // The next primary loses its power while it restores: the takeover after it must still find the newest state.
      const second = await ms.waitFor('a new primary restoring', async () => {
        for (const board of ms.boards.filter(b => b.isOn)) {
          const s = await ms.status(board)
          const restoring = s?.events.find(e => e.at >= cutAt && /primary \(from .*\), restoring checkpoint/.test(e.text) && e.board !== first.peerId)
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
      await primary.powerCut()
      return {
        kind,
        boards: [backup.name, primary.name],
        detail: `${corrupted.flippedBytes} bytes flipped in ${corrupted.blockFiles} blockstore tables and ${corrupted.stagedFiles} staged page images of ${backup.name} (backup), then ${primary.name} (primary) cut for ${holdMs} ms`,
        holdMs,
        failures: 1,
        statusAtFailure,
        heal: async () => { await powerOn(ms, primary) }
      }
    }
  }
}
