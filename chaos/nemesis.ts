// The faults a chaos run injects into a swarm of simulated boards, each with its heal. Real faults only: a power cut
// kills a board's whole cgroup, a freeze stops its processes where they are, a daemon freeze stops the peer process
// alone (its containers run on), a restart storm restarts one peer again and again.
import type { MissionSwarm } from '../demo/mission-swarm.ts'
import type { SimulatedBoard } from '../boards/simulated-board.ts'
import type { MissionStatus } from '../peer/missions.ts'
import type { Random } from '../consensus/simulator.ts'
import { sleep } from '../demo/observe.ts'

export const FAULT_KINDS = ['power-cut-primary', 'power-cut-backup', 'board-freeze', 'daemon-freeze', 'restart-storm', 'kill-during-restore', 'kill-during-move'] as const
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
  /** What went wrong while injecting it (e.g. a move that never reached its final checkpoint): a violation. */
  violation?: string
  /** Ends the fault: boards powered on again, thawed, resumed. */
  heal (): Promise<void>
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
      const reached = await ms.waitFor(`the move's ${mark}`, async () => {
        const s = await ms.status(source)
        return s?.events.some(e => e.at >= askedAt && e.text.includes(mark)) === true ? true : undefined
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
  }
}
