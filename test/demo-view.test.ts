// The demo's terminal view: snapshots -> lines, widths, colours, and the live writer's modes.
import t from 'tap'
import {
  MAX_WIDTH, SCREEN_WIDTH, renderLine, renderMiniMap, renderScreen, renderStatusLine, renderSummary, renderTty, stripAnsi, visibleWidth,
  type BoardView, type DemoSummary, type ViewSnapshot
} from '../demo/view.ts'
import { TerminalView, chooseMode } from '../demo/terminal.ts'
import { simulate } from '../examples/vehicle/controller.js'

const vehicle = simulate(1234)

function snapshot (overrides: Partial<ViewSnapshot> = {}): ViewSnapshot {
  return {
    boards: [
      { name: 'board-1', peerId: '12D3KooWQx4fJ2s9h1YqDkP6Hq3nZ8F8mB2oC7uVtWy', state: 'dead', role: 'fenced', epoch: 1 },
      { name: 'board-2', peerId: '12D3KooWAbCdEfGh1234567890', state: 'alive', role: 'primary', epoch: 2 },
      { name: 'board-3', peerId: '12D3KooWZzZz', state: 'suspect', role: 'backup', epoch: 2 }
    ],
    mission: {
      name: 'vehicle-controller', epoch: 2, primary: 'board-2', backup: 'board-3', tick: vehicle.tick, x: vehicle.x, y: vehicle.y,
      speed: vehicle.speed, heading: vehicle.heading, checkpointAgeMs: 312, checkpointSeq: 42, replicatedSeq: 41, lagSeq: 1
    },
    events: [
      { atMs: 1200, text: 'swarm formed: 3 peers', kind: 'ok' },
      { atMs: 10_000, text: 'power cut: board-1', kind: 'fault' },
      { atMs: 10_800, text: 'board-3 suspects board-1', kind: 'warn' }
    ],
    phase: 'takeover',
    elapsedMs: 12_345,
    ...overrides
  }
}

const manyBoards: BoardView[] = Array.from({ length: 12 }, (_, i) => ({
  name: `board-with-a-very-long-name-${i}`, peerId: `12D3KooW${'x'.repeat(40)}${i}`, state: 'alive', role: 'idle'
}))

const hostile: ViewSnapshot[] = [
  snapshot(),
  snapshot({ boards: [], events: [], phase: 'starting', elapsedMs: 0, mission: { name: 'vehicle-controller', epoch: 0 } }),
  snapshot({ boards: manyBoards, phase: 'a phase name that goes on and on and on and on and on', elapsedMs: 98_765_432 }),
  snapshot({
    events: Array.from({ length: 30 }, (_, i) => ({ atMs: i * 1000, text: `event ${i} \x1b[31mred\x1b[0m\ttab\nnewline ${'y'.repeat(i * 7)}` }))
  }),
  snapshot({
    mission: {
      name: 'm'.repeat(80), epoch: 123_456_789, primary: 'p'.repeat(40), backup: null, tick: 9_999_999_999, x: 1e9, y: -1e9,
      speed: Number.NaN, heading: Number.POSITIVE_INFINITY, checkpointAgeMs: 1e12, checkpointSeq: 1e9, replicatedSeq: null, lagSeq: 1e9
    }
  })
]

t.test('no line is wider than 100 columns; every screen line has the same width', async t => {
  for (const [index, shot] of hostile.entries()) {
    for (const color of [false, true]) {
      const lines = renderScreen(shot, { color })
      const widths = new Set(lines.map(visibleWidth))
      t.equal(widths.size, 1, `snapshot ${index} color=${color}: a rectangular box (${[...widths].join(',')})`)
      t.ok(Math.max(...widths) <= MAX_WIDTH, `snapshot ${index} color=${color}: fits ${MAX_WIDTH} columns`)
      t.notOk(lines.some(line => stripAnsi(line).includes('\x1b')), 'no stray escape bytes')
      t.notOk(lines.some(line => /[\n\t\r]/.test(line)), 'no control characters inside a line')
    }
  }
})

t.test('color=false has no ANSI; color=true paints roles and health', async t => {
  const plain = renderScreen(snapshot(), { color: false }).join('\n')
  t.notOk(plain.includes('\x1b'), 'no escape sequences at all')
  const painted = renderScreen(snapshot(), { color: true }).join('\n')
  t.match(painted, /\x1b\[1;32mprimary\x1b\[0m/, 'primary in bold green')
  t.match(painted, /\x1b\[31mdead\x1b\[0m/, 'dead in red')
  t.equal(stripAnsi(painted), plain, 'colour changes nothing but the escapes')
})

t.test('the screen shows boards, roles, epoch, tick, position, checkpoint age and replication lag', async t => {
  const text = renderScreen(snapshot()).join('\n')
  for (const expected of ['board-1', 'board-2', 'board-3', 'fenced', 'primary', 'backup', 'suspect', 'dead', 'epoch 2',
    `tick ${vehicle.tick}`, vehicle.x.toFixed(2), vehicle.y.toFixed(2), '#42', '312 ms ago', '#41', 'lag 1', 'takeover', '12.3 s',
    'power cut: board-1', '12D3KooW…VtWy']) {
    t.ok(text.includes(expected), `shows ${expected}`)
  }
  const empty = renderScreen(hostile[1]!).join('\n')
  t.ok(empty.includes('(no boards yet)'))
  t.ok(empty.includes('tick —'), 'unknown values show a dash')
})

t.test('the event log keeps the newest maxEvents events', async t => {
  const shot = hostile[3]!
  const text = renderScreen(shot, { maxEvents: 5 }).join('\n')
  t.ok(text.includes('event 29'))
  t.ok(text.includes('event 25'))
  t.notOk(text.includes('event 24 '))
  t.equal(renderScreen(shot, { maxEvents: 5 }).length, renderScreen(shot, { maxEvents: 6 }).length - 1, 'one line per event slot')
})

t.test('the mini-map draws the course and the vehicle with its heading', async t => {
  const course = [[-10, -5], [10, -5], [10, 5], [-10, 5]] as const
  const map = renderMiniMap(course, { x: 10, y: 5, heading: 0 }, 21, 11)
  t.equal(map.length, 11)
  t.ok(map.every(line => visibleWidth(line) === 21))
  t.equal(map[0]!.at(-1), '→', 'vehicle in the top-right corner heading east')
  t.equal(map[10]![0], '·', 'course drawn in the bottom-left corner')
  t.equal(renderMiniMap(course, { x: 0, y: 0, heading: Math.PI / 2 }, 21, 11)[5]![10], '↑')
  t.equal(renderMiniMap(course, { x: 0, y: 0 }, 21, 11)[5]![10], '●', 'no heading: a dot')
  t.equal(renderMiniMap(course, { x: 1e6, y: -1e6 }, 21, 11)[10]!.at(-1), '●', 'off the map: clamped to the edge')
  t.ok(renderMiniMap(course, { x: null, y: null }, 21, 11).join('').includes('·'), 'no position: only the course')
})

t.test('renderTty redraws in place', async t => {
  const frame = renderTty(snapshot())
  t.ok(frame.startsWith('\x1b[H'), 'cursor home first')
  t.ok(frame.endsWith('\x1b[J'), 'clears the rest of the screen')
  const lines = frame.slice(3, -3).split('\n').filter(line => line !== '')
  t.equal(lines.length, renderScreen(snapshot()).length)
  t.ok(lines.every(line => line.endsWith('\x1b[K')), 'each line clears to its end')
  t.notOk(renderTty(snapshot(), { color: false }).replace(/\x1b\[(H|K|J)/g, '').includes('\x1b'), 'color=false: only cursor control')
})

t.test('renderLine and renderStatusLine: plain single lines for --no-tty', async t => {
  const line = renderLine({ atMs: 10_800, text: 'board-3 suspects board-1', kind: 'warn' })
  t.equal(line, '[  10.800 s] warn  board-3 suspects board-1')
  t.equal(renderLine({ atMs: 5, text: 'hello' }), '[   0.005 s] info  hello', 'kind defaults to info')
  const nasty = renderLine({ atMs: 1, text: `a\nb\x1b[31mc${'z'.repeat(300)}` })
  t.notOk(nasty.includes('\n') || nasty.includes('\x1b'))
  t.ok(visibleWidth(nasty) <= MAX_WIDTH)
  t.ok(visibleWidth(renderLine({ atMs: 1, text: 'z'.repeat(300), kind: 'fault' }, { color: true })) <= MAX_WIDTH)
  for (const shot of hostile) {
    const status = renderStatusLine(shot)
    t.ok(visibleWidth(status) <= MAX_WIDTH && !status.includes('\x1b') && !status.includes('\n'))
  }
  t.match(renderStatusLine(snapshot()), /^\[ {2}12\.345 s\] state takeover e2 tick 1234 \(.+\) ckpt #42 312 ms lag 1 \| P board-2 B board-3/)
})

const summary: DemoSummary = {
  mission: 'vehicle-controller',
  boards: 3,
  takeover: true,
  failedBoard: 'board-1',
  newPrimary: 'board-2',
  epochBefore: 1,
  epochAfter: 2,
  detectionMs: 812,
  restoreMs: 356,
  downtimeMs: 1204,
  stateLostTicks: 21,
  ticksPerSecond: 50,
  checkpointIntervalMs: 500,
  positionBefore: { tick: 1510, x: 12.3456, y: -5.6 },
  positionAfter: { tick: 1490, x: 12.1, y: -5.4 },
  trajectoryVerified: true,
  fencedBoard: 'board-1',
  newBackup: 'board-1'
}

t.test('renderSummary reports the takeover figures', async t => {
  const lines = renderSummary(summary)
  const text = lines.join('\n')
  for (const expected of ['yes: board-1 → board-2 (epoch 1 → 2)', '812 ms', '356 ms', '1204 ms', '21 ticks, 420 ms of driving',
    'tick 1510  x 12.35  y -5.60', 'tick 1490  x 12.10  y -5.40', 'continued on the same trajectory', 'board-1: its stale epoch was refused']) {
    t.ok(text.includes(expected), `shows ${expected}`)
  }
  t.equal(new Set(lines.map(visibleWidth)).size, 1, 'a rectangular box')
  t.ok(lines.every(line => visibleWidth(line) <= MAX_WIDTH && !line.includes('\x1b')))

  const failed = renderSummary({ mission: 'vehicle-controller', boards: 2, takeover: false, notes: ['n'.repeat(300)] }, { color: true })
  t.ok(stripAnsi(failed.join('\n')).includes('NO: the mission was not taken over'))
  t.ok(failed.every(line => visibleWidth(line) <= MAX_WIDTH))
  t.ok(stripAnsi(failed.join('\n')).includes('downtime          —'), 'missing figures show a dash')

  const restarted = renderSummary({ ...summary, positionAfter: { tick: 0, x: 0, y: 0 } }).join('\n')
  t.ok(restarted.includes('NOT continued'), 'a restart from tick 0 is called out')
})

interface Collected { chunks: string[], write: (text: string) => void }
function collector (): Collected {
  const chunks: string[] = []
  return { chunks, write: text => { chunks.push(text) } }
}

t.test('TerminalView tty mode: hides the cursor, throttles redraws, restores the cursor at stop', async t => {
  const output = collector()
  let now = 0
  const view = new TerminalView({ output, mode: 'tty', refreshMs: 1000, now: () => now })
  view.update(snapshot())
  t.equal(output.chunks.length, 0, 'nothing before start')
  view.start()
  t.ok(output.chunks[0]!.includes('\x1b[?25l'), 'cursor hidden')
  view.update(snapshot())
  t.equal(output.chunks.length, 2, 'first update draws at once')
  now = 10
  view.update(snapshot({ phase: 'second' }))
  view.update(snapshot({ phase: 'third' }))
  t.equal(output.chunks.length, 2, 'updates within refreshMs wait')
  view.event({ atMs: 1, text: 'ignored in tty mode' })
  view.stop(summary)
  const tail = output.chunks.slice(2).join('')
  t.ok(tail.includes('third'), 'the final screen shows the latest snapshot')
  t.ok(tail.includes('\x1b[?25h'), 'cursor shown again')
  t.ok(stripAnsi(tail).includes('summary'), 'summary printed')
  t.notOk(output.chunks.join('').includes('ignored in tty mode'))
})

t.test('TerminalView lines and json modes', async t => {
  const lines = collector()
  let now = 0
  const plain = new TerminalView({ output: lines, mode: 'lines', statusEveryMs: 1000, now: () => now })
  plain.start()
  plain.event({ atMs: 1500, text: 'swarm formed', kind: 'ok' })
  plain.update(snapshot())
  now = 500
  plain.update(snapshot())
  now = 1000
  plain.update(snapshot())
  plain.stop(summary)
  const text = lines.chunks.join('')
  t.notOk(text.includes('\x1b'), 'no ANSI in lines mode')
  t.ok(text.includes('[   1.500 s] ok    swarm formed\n'))
  t.equal(text.split('\n').filter(line => line.includes('ckpt #42')).length, 2, 'status lines throttled to statusEveryMs')
  t.ok(text.includes('downtime'), 'summary at the end')

  const json = collector()
  const structured = new TerminalView({ output: json, mode: 'json', now: () => 0 })
  structured.start()
  structured.event({ atMs: 1, text: 'e' })
  structured.update(snapshot())
  structured.stop(summary)
  const objects = json.chunks.join('').trim().split('\n').map(line => JSON.parse(line) as { type: string })
  t.same(objects.map(object => object.type), ['event', 'snapshot', 'summary'])
  t.match(objects[2], { type: 'summary', downtimeMs: 1204, stateLostTicks: 21 })
})

t.test('chooseMode: json, lines for pipes and narrow terminals, tty otherwise', async t => {
  t.equal(chooseMode({ json: true }, { isTTY: true, columns: 200 }), 'json')
  t.equal(chooseMode({ noTty: true }, { isTTY: true, columns: 200 }), 'lines')
  t.equal(chooseMode({}, { isTTY: false }), 'lines')
  t.equal(chooseMode({}, { isTTY: true, columns: SCREEN_WIDTH - 1 }), 'lines')
  t.equal(chooseMode({}, { isTTY: true, columns: SCREEN_WIDTH }), 'tty')
  t.ok(SCREEN_WIDTH <= MAX_WIDTH)
  t.equal(visibleWidth(renderScreen(snapshot())[0]!), SCREEN_WIDTH)
})
