// consensus/events.ts: every kind renders its wording, survives the wire's parser unchanged, and the parser refuses
// what it does not know.
import t from 'tap'
import { describe, MISSION_EVENT_KINDS, parseMissionEvent } from '../consensus/events.ts'
import { kindOf } from '../peer/swarm-events.ts'
import { markOf } from '../peer/mission-events.ts'
import { EVENT_SAMPLES as SAMPLES } from '../harness/event-samples.ts'

/** Their wording, as the machine and the daemon wrote it before events were data. */
const WORDING = [
  'restarted as primary of epoch 1: container stopped, a new election follows',
  'unknown mission m',
  're-signed by operator key k\u2026',
  'running under epoch 1',
  'self-fence: the watchdog\'s lease lapsed 1 ms before this daemon renewed it (stalled or starved): container killed, handing over',
  'self-fence: not ticked for 1 ms (frozen), the lease of 1 ms expired',
  'self-fence: only 1 of 3 members alive (quorum 2)',
  'image i stored in the swarm (c)',
  'storing the image in the swarm failed: e; retry in 1 ms',
  'fetching image i failed: e; retry in 1 ms',
  'move aborted: final checkpoint failed: e',
  'checkpoints fail on this primary (1 in a row: e): not protected, a failover would lose the state since checkpoint #1',
  'checkpoint #1 taken: checkpoints work again after 1 failures',
  'fetching checkpoints failed 1 times in a row (e); next try in 1 ms',
  'blocked: no live board has Docker',
  'blocked: image x is on no live board',
  'backup p exited: replacing it by j',
  'holds no checkpoint, older than #1 (epoch 1) of the boards that are down: waiting up to 1 ms for one of them before running on it',
  'no board with checkpoint #1 came back: running on the image (cold start), the state since is lost',
  'claim of epoch 1 by c refused: it would restore nothing, this board holds #? (epoch ?)',
  'epoch 1: reconfigured, view a, backup -',
  'epoch 1: primary (from deploy), restoring checkpoint #1',
  'epoch 1: primary (from x), cold start from image i (no checkpoint yet)',
  'b: r; restarts 1',
  'fenced: stopped epoch 1, epoch 2 is p\'s',
  'fence for epoch 1 received: stopping epoch 1',
  'removed by request',
  'deploy refused: m is already deployed (remove it first)',
  'deployed (view of 1)',
  'move refused: t is not an alive board that can run m',
  'move to t: different architecture or no CRIU there, the mission restarts cold',
  'move to t: taking the final checkpoint',
  'final checkpoint #1 taken, container stopped: handing over to t',
  'fetching image i from the swarm (backup)',
  'fetching image i from the swarm (next candidate)',
  'r; restarts 1, next start in 1 ms at the earliest (this board waits 1 ms)',
  'r; next start is cold; restarts 1, next start in 1 ms at the earliest (this board waits 1 ms)',
  'storage: p on this board (d): it takes no backup duty and acknowledges no checkpoint until its storage works again',
  'storage: works again after 0 s of faults',
  'container started from image i under epoch 1',
  'staged files of checkpoint #1 are corrupt (r): not restored, written again from the verified store',
  'checkpoint #1: 1 corrupt block in this board\'s store fetched again from the swarm before the restore',
  'restored checkpoint #1 in 1 ms (create 1, files 1, CRIU 1)',
  'restore of checkpoint #1 refused: e',
  'checkpoint #1 took 1 ms, longer than checkpointIntervalMs 1: checkpoints follow each other back to back and state lost on a failure can exceed one interval',
  'final checkpoint #1 taken (paused 1 ms), container stopped',
  'container of epoch 1 stopped: start timed out',
  'container of epoch 1 exited: r',
  'stale container of epoch 1 stopped at daemon start (known epoch none)',
  'image i stored for the swarm: 0.0 MB in all, 0.0 MB new, in 1 ms',
  'storing image i for the swarm failed: e',
  'image i loaded from the swarm in 1 ms: 0.0 MB fetched, 0.0 MB of layers this board lacked',
  'fetching image i failed: e',
  'checkpoint #1: 1 block this board held did not match its CID (corrupt): deleted and fetched again before the ack',
  'env values refused (not-a-recipient): the env values are sealed for 2 other board(s), not this one; the mission does not start here without them',
  'env values sealed again for the view\'s 2 boards (seal 1)'
]

t.test('every kind renders its wording', async t => {
  t.same(SAMPLES.map(describe), WORDING)
})

t.test('every event survives the wire\'s parser unchanged; each has a swarm kind', async t => {
  for (const event of SAMPLES) {
    t.same(parseMissionEvent(JSON.parse(JSON.stringify(event))), event, event.kind)
    t.type(kindOf(event), 'string')
  }
  t.same([...new Set(SAMPLES.map(e => e.kind))].sort(), [...MISSION_EVENT_KINDS].sort(), 'every kind is sampled')
})

t.test('the parser refuses unknown kinds and bad fields, clips long texts', async t => {
  t.equal(parseMissionEvent(null), null)
  t.equal(parseMissionEvent('deployed (view of 3)'), null, 'prose is no event')
  t.equal(parseMissionEvent({ kind: 'launched', epoch: 1 }), null, 'an unknown kind')
  t.equal(parseMissionEvent({ kind: 'running', epoch: 1.5 }), null, 'a fractional epoch')
  t.equal(parseMissionEvent({ kind: 'running' }), null, 'a missing field')
  t.equal(parseMissionEvent({ kind: 'selfFenced', cause: { kind: 'bored' } }), null, 'an unknown nested kind')
  t.same(parseMissionEvent({ kind: 'containerExited', epoch: 2, reason: 'y'.repeat(900) }), { kind: 'containerExited', epoch: 2, reason: 'y'.repeat(500) })
})

t.test('marks: when the container last ran and first runs on a board', async t => {
  t.same(markOf({ kind: 'restored', seq: 1, epoch: 4, ms: 1, phases: { createMs: 1, filesMs: 1, criuMs: 1 }, staged: false, imageLoaded: false }), { kind: 'running', epoch: 4 })
  t.same(markOf({ kind: 'containerStopped', epoch: 3, reason: { kind: 'quorumLost' } }), { kind: 'stopped', epoch: 3 })
  t.equal(markOf({ kind: 'deployed', viewSize: 3 }), undefined)
})
