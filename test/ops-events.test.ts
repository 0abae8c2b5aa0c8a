// `tandem events` on three simulated boards (own peer and Docker daemon each, real CRIU): after a power cut of the
// primary, the board that was neither primary nor backup lists the takeover (from the new primary's gossip) and the
// dead primary (its own membership view) in `events --json`; --mission filters; the table strips control characters.
import t from 'tap'
import { execFile } from 'node:child_process'
import { startMissionSwarm, MISSION, type MissionSwarm } from '../harness/mission-swarm.ts'
import { gateDockerCriu } from './checkpoint-helpers.ts'
import { CLI_PATH } from '../harness/spawn-peer.ts'
import { formatEvents } from '../peer/commands/events.ts'
import { kindOf, SwarmEventJournal, type SwarmEvent } from '../peer/swarm-events.ts'
import type { SimulatedBoard } from '../harness/simulated-board.ts'
import { describe, parseMissionEvent, type MissionEventData } from '../consensus/events.ts'

function cli (board: SimulatedBoard, ...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise(resolve => {
    execFile(process.execPath, [CLI_PATH, ...args, '--api', board.peer!.apiAddress, '--data-dir', board.peerDataDir], (err, stdout, stderr) => {
      resolve({ code: err == null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

t.test('kinds, the journal\'s cursor and the table', async t => {
  const takeover: MissionEventData = { kind: 'elected', epoch: 4, from: '12D3KooWpeerabcdef', takeover: true, start: { kind: 'restore', seq: 7 } }
  t.equal(kindOf(takeover), 'takeover')
  t.equal(describe(takeover), 'epoch 4: primary (from abcdef), restoring checkpoint #7', 'worded as before')
  const deployStart: MissionEventData = { kind: 'elected', epoch: 1, from: null, takeover: false, start: { kind: 'cold', image: 'tandem/busybox', dataSeq: null, because: { kind: 'noCheckpoint' } } }
  t.equal(kindOf(deployStart), 'election')
  t.equal(describe(deployStart), 'epoch 1: primary (from deploy), cold start from image tandem/busybox (no checkpoint yet)')
  t.equal(kindOf({ kind: 'fenced', stoppedEpoch: 3, epoch: 4, primary: '12D3KooWpeerabcdef' }), 'fencing')
  t.equal(kindOf({ kind: 'checkpointsFailing', failures: 3, error: 'x', since: null }), 'checkpoint')
  t.equal(kindOf({ kind: 'failed', failure: 'exited', reason: 'container exited: code 1', coldNext: false, restarts: 2, waitMs: 4000, localWaitMs: 1000 }), 'backoff')
  t.equal(kindOf({ kind: 'containerStopped', epoch: 2, reason: { kind: 'quorumLost' } }), 'fencing', 'a container stopped by a self-fence is fencing')
  t.equal(kindOf({ kind: 'containerStopped', epoch: 2, reason: { kind: 'startTimedOut' } }), 'container')
  t.equal(parseMissionEvent({ kind: 'no such kind' }), null, 'an unknown kind is refused')
  t.equal(parseMissionEvent({ kind: 'elected', epoch: -1, from: null, takeover: false, start: { kind: 'restore', seq: 1 } }), null, 'and a bad field')
  t.same(parseMissionEvent({ kind: 'moveAborted', error: 'x'.repeat(2000), extra: 1 }), { kind: 'moveAborted', error: 'x'.repeat(500) }, 'long texts are clipped, unknown fields dropped')
  const journal = new SwarmEventJournal()
  for (let i = 0; i < 5; i++) journal.add({ at: i, board: 'b', kind: 'other', mission: i % 2 === 0 ? 'm' : null, text: `e${i}` })
  const first = journal.page({ limit: 2 })
  t.same(first.events.map(e => e.text), ['e0', 'e1'])
  const rest = journal.page({ after: first.next })
  t.same(rest.events.map(e => e.text), ['e2', 'e3', 'e4'], 'the cursor continues where the page ended')
  t.same(journal.page({ after: rest.next }).events, [], 'nothing after the end')
  t.same(journal.page({ mission: 'm' }).events.map(e => e.text), ['e0', 'e2', 'e4'], 'filtered by mission')
  const hostile: SwarmEvent = { seq: 1, at: 0, board: 'b', kind: 'other', mission: 'm', text: 'ok\u001b]0;owned\u0007\u001b[2J' }
  const shown = formatEvents([hostile])
  t.notMatch(shown, /\u001b|\u0007/, 'no escape sequence reaches the terminal')
  t.match(shown, /ok\\x1b\]0;owned\\x07\\x1b\[2J/, 'it is shown escaped')
})

if (gateDockerCriu(t)) {
  let ms: MissionSwarm | undefined
  t.teardown(async () => { await ms?.stop() })

  t.test('a board that took no part shows the takeover after a power cut of the primary', async t => {
    ms = await startMissionSwarm(3)
    const swarm = ms
    const before = await swarm.waitFor('a synced backup', async () => {
      const s = await swarm.anyStatus()
      return s?.state === 'running' && s.backup != null && s.replicatedSeq != null && s.replicatedSeq >= 1 ? s : undefined
    })
    const primary = swarm.boardOf(before.primary)!
    const backup = swarm.boardOf(before.backup)!
    const bystander = swarm.boards.find(b => b !== primary && b !== backup)!
    t.ok(bystander != null, `${bystander.name} is neither primary (${primary.name}) nor backup (${backup.name})`)
    await primary.powerCut()
    const after = await swarm.waitFor(`${backup.name} takes over`, async () => {
      const s = await swarm.status(backup)
      return s?.primary === backup.peerId && s.state === 'running' && s.epoch > before.epoch ? s : undefined
    }, 60_000)

    const events = await swarm.waitFor('the bystander to list the takeover', async () => {
      const result = await cli(bystander, 'events', '--json')
      if (result.code !== 0) return undefined
      const lines = result.stdout.split('\n').filter(line => line !== '')
      const parsed = lines.map(line => JSON.parse(line) as SwarmEvent)
      // The takeover's epoch: above the cut primary's, at most the current one (a new backup right after raises it).
      const epochOf = (e: SwarmEvent): number => e.event?.kind === 'elected' ? e.event.epoch : -1
      return parsed.some(e => e.kind === 'takeover' && e.board === backup.peerId && e.mission === MISSION && epochOf(e) > before.epoch && epochOf(e) <= after.epoch) ? parsed : undefined
    }, 20_000)
    t.pass(`the bystander lists ${backup.name}'s takeover (epoch ${before.epoch} -> at most ${after.epoch}; ${events.length} events in NDJSON)`)
    t.ok(events.some(e => e.kind === 'membership' && e.member === primary.peerId && e.memberState === 'dead' && e.board === bystander.peerId),
      'and its own view of the primary going dead')
    const seqs = events.map(e => e.seq)
    t.same(seqs, [...seqs].sort((x, y) => x - y), 'in arrival order')
    const missionOnly = (await cli(bystander, 'events', '--json', '--mission', MISSION)).stdout.split('\n').filter(Boolean).map(line => JSON.parse(line) as SwarmEvent)
    t.ok(missionOnly.length > 0 && missionOnly.every(e => e.mission === MISSION), '--mission keeps that mission\'s events only')
    const tableOut = await cli(bystander, 'events', '--mission', MISSION)
    t.match(tableOut.stdout, /^TIME\s+BOARD\s+KIND\s+MISSION\s+EVENT/, 'a table by default')
    t.match(tableOut.stdout, /takeover/, 'naming the takeover')

    // -f: follows new events; a second takeover is not needed, a move is one more event that comes while following.
    const follow = execFile(process.execPath, [CLI_PATH, 'events', '-f', '--json', '--api', bystander.peer!.apiAddress, '--data-dir', bystander.peerDataDir])
    let followed = ''
    follow.stdout?.on('data', (chunk: Buffer) => { followed += chunk.toString() })
    t.teardown(() => { follow.kill('SIGKILL') })
    await swarm.waitFor('the follower to print the journal so far', async () => followed.includes('"takeover"') || undefined, 10_000)
    const printedBefore = followed.split('\n').filter(Boolean).length
    const protectedAgain = await swarm.waitFor('the mission protected again under the new primary', async () => {
      const s = await swarm.status(backup)
      return s?.primary === backup.peerId && s.protected && s.backup != null ? s : undefined
    }, 60_000)
    const moveTo = swarm.boardOf(protectedAgain.backup)
    if (moveTo != null) {
      await backup.peer!.client.request('POST', `/v1/missions/${MISSION}/move`, { to: moveTo.peerId }, { timeoutMs: 120_000 })
      await swarm.waitFor('the follower to print the move', async () => {
        const lines = followed.split('\n').filter(Boolean)
        return lines.length > printedBefore && lines.slice(printedBefore).some(line => (JSON.parse(line) as SwarmEvent).kind === 'move') ? true : undefined
      }, 30_000)
      t.pass('-f printed the move as it came, without printing the earlier events again')
      const all = followed.split('\n').filter(Boolean).map(line => (JSON.parse(line) as SwarmEvent).seq)
      t.equal(new Set(all).size, all.length, 'no event twice')
    } else {
      t.fail(`no backup after the takeover to move to (${JSON.stringify(after)})`)
    }
    follow.kill('SIGINT')
  })
}
