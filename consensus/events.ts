// What happened to a mission, as data: the machine's events (elections, fencing, failures, moves) and the daemon's
// own (restores, image transfers, storage). Gossiped between boards and validated on arrival (parseMissionEvent);
// describe() renders the one wording that logs, the CLI and the dashboard show.
import { shortPeerId } from './peer-id.ts'
import { z } from 'zod'

const MAX_FIELD_CHARS = 500

const count = z.number().int().min(0)
const epoch = count
const ms = z.number()
/** Free text (an error, a reason) is clipped, not refused: a long error message still reports its event. */
const text = z.string().transform(s => s.slice(0, MAX_FIELD_CHARS))
const peerId = z.string().max(128)
const checkpointPoint = z.object({ epoch, seq: count })

const selfFenceCause = z.discriminatedUnion('kind', [
  /** The watchdog's lease lapsed before the daemon renewed it (a stalled or starved event loop). */
  z.object({ kind: z.literal('leaseLapsed'), lateMs: ms }),
  /** The machine was not ticked for longer than its lease (process or board frozen). */
  z.object({ kind: z.literal('frozen'), frozenMs: ms, leaseMs: ms }),
  z.object({ kind: z.literal('quorumLost'), alive: count, members: count, quorum: count })
])

const coldStartCause = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('noCheckpoint') }),
  z.object({ kind: z.literal('notHeld') }),
  z.object({ kind: z.literal('otherArch'), checkpointArch: text, arch: text })
])

const electedStart = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('restore'), seq: count }),
  /** `dataSeq`: the checkpoint whose data directory seeds the start (null: none). */
  z.object({ kind: z.literal('cold'), image: text, dataSeq: count.nullable(), because: coldStartCause })
])

/** Why the machine stops a container (the stopContainer action's reason). */
const stopReason = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('daemonRestarted') }),
  z.object({ kind: z.literal('startTimedOut') }),
  z.object({ kind: z.literal('leaseLapsed') }),
  z.object({ kind: z.literal('quorumLost') }),
  /** This board learned epoch `epoch`, whose primary is `primary`. */
  z.object({ kind: z.literal('newerEpoch'), epoch, primary: peerId.nullable() }),
  z.object({ kind: z.literal('fenced'), epoch }),
  z.object({ kind: z.literal('removed'), by: z.enum(['request', 'message', 'announce']), from: peerId.nullable() }),
  z.object({ kind: z.literal('replaced'), deployId: text })
])

/** What failed: the container exited (or was found gone), a restore or a cold start failed or timed out. */
const failureKind = z.enum(['exited', 'containerGone', 'restoreFailed', 'coldStartFailed', 'startTimedOut'])

/** Which requirement no live board meets (see the machine's blocked reason). */
const blockedRequirement = z.enum(['imageMap', 'architectures', 'boards', 'memory', 'docker', 'image'])

const machineEvents = [
  z.object({ kind: z.literal('restartedAsPrimary'), epoch }),
  z.object({ kind: z.literal('unknownMission'), mission: text }),
  z.object({ kind: z.literal('regranted'), key: text }),
  z.object({ kind: z.literal('running'), epoch }),
  z.object({ kind: z.literal('selfFenced'), cause: selfFenceCause }),
  /** `image`: the normalized ref for this board (null: none for its architecture). */
  z.object({ kind: z.literal('imageStored'), image: text.nullable(), cid: text }),
  z.object({ kind: z.literal('imageStoreFailed'), error: text, retryMs: ms }),
  z.object({ kind: z.literal('imageFetchFailed'), image: text.nullable(), error: text, retryMs: ms }),
  z.object({ kind: z.literal('moveAborted'), error: text }),
  /** `since`: the newest checkpoint the swarm has (null: none). */
  z.object({ kind: z.literal('checkpointsFailing'), failures: count, error: text, since: count.nullable() }),
  z.object({ kind: z.literal('checkpointsRecovered'), seq: count, failures: count }),
  z.object({ kind: z.literal('fetchesFailing'), failures: count, error: text, retryMs: ms }),
  z.object({ kind: z.literal('blocked'), requirement: blockedRequirement, reason: text }),
  z.object({ kind: z.literal('replacingBackup'), partner: peerId, joiner: peerId }),
  /** A lone claimant with older state than the newest checkpoint waits for a board that holds it. */
  z.object({ kind: z.literal('staleWait'), held: checkpointPoint.nullable(), newest: checkpointPoint, waitMs: ms }),
  z.object({ kind: z.literal('staleGiveUp'), heldSeq: count.nullable(), newestSeq: count }),
  /** Refused for holding newer state: the candidate would restore `wouldRestore`, this board holds `held`. */
  z.object({ kind: z.literal('claimRefused'), epoch, candidate: peerId, wouldRestore: checkpointPoint.nullable(), held: checkpointPoint.nullable() }),
  z.object({ kind: z.literal('reconfigured'), epoch, view: z.array(peerId).max(64), backup: peerId.nullable() }),
  /** Won `epoch`: `from` is the previous primary (null: the deployment), `takeover` when that was another board. */
  z.object({ kind: z.literal('elected'), epoch, from: peerId.nullable(), takeover: z.boolean(), start: electedStart }),
  /** A failure another board wrote into the record. */
  z.object({ kind: z.literal('failureLearned'), board: peerId, reason: text, restarts: count }),
  z.object({ kind: z.literal('fenced'), stoppedEpoch: epoch, epoch, primary: peerId.nullable() }),
  z.object({ kind: z.literal('fenceReceived'), epoch, stoppedEpoch: epoch }),
  z.object({ kind: z.literal('removed'), by: z.enum(['request', 'message', 'announce']), from: peerId.nullable() }),
  z.object({ kind: z.literal('deployRefused'), mission: text }),
  z.object({ kind: z.literal('deployed'), viewSize: count }),
  z.object({ kind: z.literal('moveRefused'), to: peerId, mission: text }),
  z.object({ kind: z.literal('moveCold'), to: peerId }),
  z.object({ kind: z.literal('moveStarted'), to: peerId }),
  z.object({ kind: z.literal('handingOver'), seq: count, to: peerId.nullable() }),
  z.object({ kind: z.literal('fetchingImage'), image: text, as: z.enum(['backup', 'candidate']) }),
  /** A start, restore or run failed (`reason` as the record keeps it); when the next start may come. */
  z.object({ kind: z.literal('failed'), failure: failureKind, reason: text, coldNext: z.boolean(), restarts: count, waitMs: ms, localWaitMs: ms })
] as const

const peerEvents = [
  z.object({ kind: z.literal('storageFailed'), problem: text, detail: text }),
  z.object({ kind: z.literal('storageRecovered'), afterMs: ms, problem: text.nullable() }),
  /** `data`: the checkpoint whose data seeded it; `error` when it could not be had (the state starts empty). */
  z.object({ kind: z.literal('containerStarted'), image: text, epoch, data: z.object({ seq: count, error: text.nullable() }).nullable() }),
  z.object({ kind: z.literal('stagedRejected'), seq: count, reason: text }),
  z.object({ kind: z.literal('restoreRepaired'), seq: count, blocks: count }),
  z.object({
    kind: z.literal('restored'), seq: count, epoch, ms: count,
    phases: z.object({ createMs: ms, filesMs: ms, criuMs: ms }), staged: z.boolean(), imageLoaded: z.boolean()
  }),
  z.object({ kind: z.literal('restoreRefused'), seq: count, error: text }),
  z.object({ kind: z.literal('checkpointOverrun'), seq: count, tookMs: count, intervalMs: ms }),
  z.object({ kind: z.literal('finalCheckpointTaken'), seq: count, epoch, pausedMs: ms }),
  z.object({ kind: z.literal('containerStopped'), epoch, reason: stopReason }),
  z.object({ kind: z.literal('containerExited'), epoch, reason: text }),
  z.object({ kind: z.literal('staleContainerStopped'), epoch, knownEpoch: epoch.nullable() }),
  z.object({ kind: z.literal('imageShared'), image: text, totalBytes: count, newBytes: count, ms }),
  z.object({ kind: z.literal('imageShareFailed'), image: text, error: text }),
  z.object({ kind: z.literal('imageLoaded'), image: text, ms, fetchedBytes: count, totalBytes: count, reusedLayers: count }),
  z.object({ kind: z.literal('imageLoadFailed'), image: text, error: text }),
  z.object({ kind: z.literal('fetchRepaired'), seq: count, blocks: count }),
  /** The env values sealed in the record could not be opened or did not match the signed digests. */
  z.object({ kind: z.literal('envRefused'), problem: text, detail: text }),
  z.object({ kind: z.literal('envResealed'), gen: count, members: count })
] as const

export const missionEventSchema = z.discriminatedUnion('kind', [...machineEvents, ...peerEvents])

export type SelfFenceCause = z.infer<typeof selfFenceCause>
export type ColdStartCause = z.infer<typeof coldStartCause>
export type ElectedStart = z.infer<typeof electedStart>
export type StopReason = z.infer<typeof stopReason>
export type BlockedRequirement = z.infer<typeof blockedRequirement>
export type FailureKind = z.infer<typeof failureKind>
export type MachineEvent = z.infer<(typeof machineEvents)[number]>
export type PeerEvent = z.infer<(typeof peerEvents)[number]>
/** Everything that happens to a mission, on any board. */
export type MissionEventData = MachineEvent | PeerEvent
export type MissionEventKind = MissionEventData['kind']
export type EventOf<K extends MissionEventKind> = Extract<MissionEventData, { kind: K }>

/** Every kind this version knows. */
export const MISSION_EVENT_KINDS: readonly MissionEventKind[] = missionEventSchema.options.map(option => option.shape.kind.value)

/** The event, when `value` is one (a kind this version knows, its fields checked); else null. */
export function parseMissionEvent (value: unknown): MissionEventData | null {
  const parsed = missionEventSchema.safeParse(value)
  return parsed.success ? parsed.data : null
}

export function seconds (ms: number): string {
  return ms >= 1000 || ms === 0 ? `${Math.round(ms / 100) / 10} s` : `${Math.round(ms)} ms`
}

/** A peer id inside event wording: its last 6 characters (consensus/peer-id.ts). */
export function short (peerId: string | null): string {
  return shortPeerId(peerId, { tailOnly: true })
}

function plural (n: number, one: string, many = `${one}s`): string { return n === 1 ? one : many }
function mb (bytes: number): string { return (bytes / 1e6).toFixed(1) }
function point (p: { seq: number, epoch: number }): string { return `#${p.seq} (epoch ${p.epoch})` }

export function describeSelfFence (cause: SelfFenceCause): string {
  switch (cause.kind) {
    case 'leaseLapsed': return `self-fence: the watchdog's lease lapsed ${Math.round(cause.lateMs)} ms before this daemon renewed it (stalled or starved)`
    case 'frozen': return `self-fence: not ticked for ${cause.frozenMs} ms (frozen), the lease of ${cause.leaseMs} ms expired`
    case 'quorumLost': return `self-fence: only ${cause.alive} of ${cause.members} members alive (quorum ${cause.quorum})`
  }
}

export function describeRemoval (removal: { by: 'request' | 'message' | 'announce', from: string | null }): string {
  switch (removal.by) {
    case 'request': return 'removed by request'
    case 'message': return `removed by ${removal.from ?? '?'}`
    case 'announce': return `removed (learned from ${short(removal.from)})`
  }
}

export function describeStopReason (reason: StopReason): string {
  switch (reason.kind) {
    case 'daemonRestarted': return 'daemon restarted: rejoining under a new epoch'
    case 'startTimedOut': return 'start timed out'
    case 'leaseLapsed': return 'lease lapsed (self-fence)'
    case 'quorumLost': return 'lost quorum (self-fence)'
    case 'newerEpoch': return `fenced: epoch ${reason.epoch} belongs to ${short(reason.primary)}`
    case 'fenced': return `fenced by epoch ${reason.epoch}`
    case 'removed': return describeRemoval(reason)
    case 'replaced': return `replaced by deployment ${reason.deployId}`
  }
}

function describeStart (start: ElectedStart): string {
  if (start.kind === 'restore') return `restoring checkpoint #${start.seq}`
  const because = start.because
  const why = because.kind === 'noCheckpoint' ? 'no checkpoint yet' : because.kind === 'notHeld' ? 'checkpoint not held here' : `checkpoint is ${because.checkpointArch}, this board is ${because.arch}`
  return `cold start from image ${start.image}${start.dataSeq === null ? '' : ` with data of checkpoint #${start.dataSeq}`} (${why})`
}

/** The event in words, as logs, `tandem mission show`, `tandem events` and the dashboard show it. */
export function describe (e: MissionEventData): string {
  switch (e.kind) {
    case 'restartedAsPrimary': return `restarted as primary of epoch ${e.epoch}: container stopped, a new election follows`
    case 'unknownMission': return `unknown mission ${e.mission}`
    case 'regranted': return `re-signed by operator key ${e.key.slice(0, 8)}…`
    case 'running': return `running under epoch ${e.epoch}`
    case 'selfFenced': return e.cause.kind === 'leaseLapsed' ? `${describeSelfFence(e.cause)}: container killed, handing over` : describeSelfFence(e.cause)
    case 'imageStored': return `image ${e.image ?? '?'} stored in the swarm (${e.cid})`
    case 'imageStoreFailed': return `storing the image in the swarm failed: ${e.error}; retry in ${seconds(e.retryMs)}`
    case 'imageFetchFailed': return `fetching image ${e.image ?? '?'} failed: ${e.error}; retry in ${seconds(e.retryMs)}`
    case 'moveAborted': return `move aborted: final checkpoint failed: ${e.error}`
    case 'checkpointsFailing': return `checkpoints fail on this primary (${e.failures} in a row: ${e.error}): not protected, a failover would lose the state since checkpoint #${e.since ?? 'none'}`
    case 'checkpointsRecovered': return `checkpoint #${e.seq} taken: checkpoints work again after ${e.failures} failures`
    case 'fetchesFailing': return `fetching checkpoints failed ${e.failures} times in a row (${e.error}); next try in ${seconds(e.retryMs)}`
    case 'blocked': return `blocked: ${e.reason}`
    case 'replacingBackup': return `backup ${short(e.partner)} exited: replacing it by ${short(e.joiner)}`
    case 'staleWait': return `holds ${e.held === null ? 'no checkpoint' : `checkpoint ${point(e.held)}`}, older than ${point(e.newest)} of the boards that are down: ` +
      `waiting up to ${seconds(e.waitMs)} for one of them before running on it`
    case 'staleGiveUp': return `no board with checkpoint #${e.newestSeq} came back: running on ${e.heldSeq === null ? 'the image (cold start)' : `#${e.heldSeq}`}, the state since is lost`
    case 'claimRefused': return `claim of epoch ${e.epoch} by ${short(e.candidate)} refused: it would restore ${e.wouldRestore === null ? 'nothing' : point(e.wouldRestore)}, ` +
      `this board holds #${e.held?.seq ?? '?'} (epoch ${e.held?.epoch ?? '?'})`
    case 'reconfigured': return `epoch ${e.epoch}: reconfigured, view ${e.view.map(short).join(',')}, backup ${short(e.backup)}`
    case 'elected': return `epoch ${e.epoch}: primary (from ${e.from === null ? 'deploy' : e.takeover ? short(e.from) : 'self'}), ${describeStart(e.start)}`
    case 'failureLearned': return `${short(e.board)}: ${e.reason}; restarts ${e.restarts}`
    case 'fenced': return `fenced: stopped epoch ${e.stoppedEpoch}, epoch ${e.epoch} is ${short(e.primary)}'s`
    case 'fenceReceived': return `fence for epoch ${e.epoch} received: stopping epoch ${e.stoppedEpoch}`
    case 'removed': return describeRemoval(e)
    case 'deployRefused': return `deploy refused: ${e.mission} is already deployed (remove it first)`
    case 'deployed': return `deployed (view of ${e.viewSize})`
    case 'moveRefused': return `move refused: ${short(e.to)} is not an alive board that can run ${e.mission}`
    case 'moveCold': return `move to ${short(e.to)}: different architecture or no CRIU there, the mission restarts cold`
    case 'moveStarted': return `move to ${short(e.to)}: taking the final checkpoint`
    case 'handingOver': return `final checkpoint #${e.seq} taken, container stopped: handing over to ${short(e.to)}`
    case 'fetchingImage': return `fetching image ${e.image} from the swarm (${e.as === 'backup' ? 'backup' : 'next candidate'})`
    case 'failed': return `${e.reason}; ${e.coldNext ? 'next start is cold; ' : ''}restarts ${e.restarts}, ` +
      `next start in ${seconds(e.waitMs)} at the earliest (this board waits ${seconds(e.localWaitMs)})`
    case 'storageFailed': return `storage: ${e.problem} on this board (${e.detail}): it takes no backup duty and acknowledges no checkpoint until its storage works again`
    case 'storageRecovered': return `storage: works again after ${Math.round(e.afterMs / 1000)} s of ${e.problem ?? 'faults'}`
    case 'containerStarted': {
      const data = e.data === null ? '' : e.data.error === null ? ` with the data of checkpoint #${e.data.seq}` : ` WITHOUT the data of checkpoint #${e.data.seq} (${e.data.error}): its state starts empty`
      return `container started from image ${e.image}${data} under epoch ${e.epoch}`
    }
    case 'stagedRejected': return `staged files of checkpoint #${e.seq} are corrupt (${e.reason}): not restored, written again from the verified store`
    case 'restoreRepaired': return `checkpoint #${e.seq}: ${e.blocks} corrupt ${plural(e.blocks, 'block')} in this board's store fetched again from the swarm before the restore`
    case 'restored': return `restored checkpoint #${e.seq} in ${e.ms} ms (create ${e.phases.createMs}, files ${e.phases.filesMs}, CRIU ${e.phases.criuMs})` +
      `${e.staged ? ', files staged ahead' : ''}${e.imageLoaded ? ', image loaded from the swarm' : ''}`
    case 'restoreRefused': return `restore of checkpoint #${e.seq} refused: ${e.error}`
    case 'checkpointOverrun': return `checkpoint #${e.seq} took ${e.tookMs} ms, longer than checkpointIntervalMs ${e.intervalMs}: ` +
      'checkpoints follow each other back to back and state lost on a failure can exceed one interval'
    case 'finalCheckpointTaken': return `final checkpoint #${e.seq} taken (paused ${e.pausedMs} ms), container stopped`
    case 'containerStopped': return `container of epoch ${e.epoch} stopped: ${describeStopReason(e.reason)}`
    case 'containerExited': return `container of epoch ${e.epoch} exited: ${e.reason}`
    case 'staleContainerStopped': return `stale container of epoch ${e.epoch} stopped at daemon start (known epoch ${e.knownEpoch ?? 'none'})`
    case 'imageShared': return `image ${e.image} stored for the swarm: ${mb(e.totalBytes)} MB in all, ${mb(e.newBytes)} MB new, in ${Math.round(e.ms)} ms`
    case 'imageShareFailed': return `storing image ${e.image} for the swarm failed: ${e.error}`
    case 'imageLoaded': return `image ${e.image} loaded from the swarm in ${Math.round(e.ms)} ms: ${mb(e.fetchedBytes)} MB fetched, ` +
      `${mb(e.totalBytes)} MB of layers this board lacked${e.reusedLayers > 0 ? `, ${e.reusedLayers} ${plural(e.reusedLayers, 'layer')} already in its Docker` : ''}`
    case 'imageLoadFailed': return `fetching image ${e.image} failed: ${e.error}`
    case 'envRefused': return `env values refused (${e.problem}): ${e.detail}; the mission does not start here without them`
    case 'envResealed': return `env values sealed again for the view's ${e.members} ${plural(e.members, 'board')} (seal ${e.gen})`
    case 'fetchRepaired': return `checkpoint #${e.seq}: ${e.blocks} ${plural(e.blocks, 'block')} this board held did not match ${e.blocks === 1 ? 'its CID' : 'their CIDs'} (corrupt): deleted and fetched again before the ack`
  }
}
