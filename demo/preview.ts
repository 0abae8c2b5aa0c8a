// A preview of the demo's terminal view fed with SYNTHETIC data (the vehicle simulation and a scripted
// timeline: no swarm, no Docker, no CRIU). For looking at the renderer; the real demo is demo/run.ts.
//   node demo/preview.ts [--no-tty | --json] [--seconds N]
import { TICK_HZ, simulate, type VehicleState } from '../examples/vehicle/controller.js'
import { TerminalView, chooseMode, type TerminalMode } from './terminal.ts'
import type { BoardView, ViewEvent, ViewSnapshot } from './view.ts'

interface PreviewOptions { mode: TerminalMode, seconds: number }

function parseArguments (argv: string[]): PreviewOptions {
  let seconds = 14
  for (let i = 0; i < argv.length; i++) {
    const argument = argv[i]
    if (argument === '--no-tty' || argument === '--json') continue
    if (argument === '--seconds') {
      seconds = Number(argv[++i])
      if (!Number.isFinite(seconds) || seconds < 1 || seconds > 600) throw new Error('--seconds takes a number from 1 to 600')
    } else throw new Error(`unknown argument ${String(argument)}; usage: node demo/preview.ts [--no-tty | --json] [--seconds N]`)
  }
  const mode = chooseMode({ json: argv.includes('--json'), noTty: argv.includes('--no-tty') }, process.stdout)
  return { mode, seconds }
}

async function preview (options: PreviewOptions, signal: AbortSignal): Promise<void> {
  const view = new TerminalView({ output: process.stdout, mode: options.mode })
  const events: ViewEvent[] = []
  const cutAtMs = options.seconds * 1000 * 0.4
  const takeoverAtMs = cutAtMs + 900
  const rejoinAtMs = options.seconds * 1000 * 0.7
  const started = Date.now()
  let vehicle: VehicleState = simulate(0)
  let checkpointTick = 0
  let lostTicks = 0
  const log = (atMs: number, text: string, kind: ViewEvent['kind'] = 'info'): void => {
    const event = { atMs, text, kind }
    events.push(event)
    view.event(event)
  }

  let cutLogged = false
  let rejoinLogged = false
  view.start()
  log(0, 'preview with synthetic data: no swarm, no Docker', 'warn')
  try {
    while (!signal.aborted) {
      const elapsedMs = Date.now() - started
      if (elapsedMs > options.seconds * 1000) break
      const down = elapsedMs >= cutAtMs && elapsedMs < takeoverAtMs
      if (!down) vehicle = simulate(1, vehicle)
      if (vehicle.tick % (TICK_HZ / 2) === 0 && !down) checkpointTick = vehicle.tick
      if (down && !cutLogged) { cutLogged = true; log(elapsedMs, 'power cut: board-1', 'fault') }
      if (elapsedMs >= takeoverAtMs && lostTicks === 0) {
        lostTicks = vehicle.tick - checkpointTick
        vehicle = simulate(checkpointTick)
        log(elapsedMs, `board-2 restored checkpoint at tick ${checkpointTick} (epoch 2)`, 'ok')
      }
      if (elapsedMs >= rejoinAtMs && !rejoinLogged) { rejoinLogged = true; log(elapsedMs, 'board-1 back: fenced, joins as backup', 'ok') }

      const afterCut = elapsedMs >= cutAtMs
      const rejoined = elapsedMs >= rejoinAtMs
      const boards: BoardView[] = [
        { name: 'board-1', peerId: '12D3KooWPreviewBoardOne', state: afterCut && !rejoined ? (down ? 'suspect' : 'dead') : 'alive', role: afterCut ? (rejoined ? 'backup' : 'fenced') : 'primary', epoch: rejoined ? 2 : 1 },
        { name: 'board-2', peerId: '12D3KooWPreviewBoardTwo', state: 'alive', role: afterCut && !down ? 'primary' : 'backup', epoch: afterCut && !down ? 2 : 1 },
        { name: 'board-3', peerId: '12D3KooWPreviewBoardThree', state: 'alive', role: 'idle' }
      ]
      const snapshot: ViewSnapshot = {
        boards,
        mission: {
          name: 'vehicle-controller',
          epoch: afterCut && !down ? 2 : 1,
          primary: down ? null : afterCut ? 'board-2' : 'board-1',
          backup: afterCut ? (rejoined ? 'board-1' : null) : 'board-2',
          tick: vehicle.tick,
          x: vehicle.x,
          y: vehicle.y,
          speed: vehicle.speed,
          heading: vehicle.heading,
          checkpointAgeMs: ((vehicle.tick - checkpointTick) * 1000) / TICK_HZ,
          checkpointSeq: Math.floor(checkpointTick / (TICK_HZ / 2)),
          replicatedSeq: Math.floor(checkpointTick / (TICK_HZ / 2)),
          lagSeq: 0
        },
        events,
        phase: down ? 'takeover' : rejoined ? 'rejoined' : afterCut ? 'failed over' : 'running',
        elapsedMs
      }
      view.update(snapshot)
      await new Promise(resolve => setTimeout(resolve, 1000 / TICK_HZ))
    }
  } finally {
    view.stop({
      mission: 'vehicle-controller (synthetic preview)',
      boards: 3,
      takeover: lostTicks > 0,
      failedBoard: 'board-1',
      newPrimary: 'board-2',
      epochBefore: 1,
      epochAfter: 2,
      stateLostTicks: lostTicks,
      ticksPerSecond: TICK_HZ,
      notes: ['synthetic data: run `npm run demo` for the real thing']
    })
  }
}

const controller = new AbortController()
process.once('SIGINT', () => controller.abort())
// A reader that went away (`| head`) ends the preview quietly.
process.stdout.on('error', error => {
  if ((error as NodeJS.ErrnoException).code !== 'EPIPE') throw error
  controller.abort()
})
try {
  await preview(parseArguments(process.argv.slice(2)), controller.signal)
} catch (error) {
  process.stderr.write(`preview: ${(error as Error).message}\n`)
  process.exitCode = 2
}
