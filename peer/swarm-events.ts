// The swarm's events as one journal per peer, served at GET /v1/events (`tandem events`): the mission events every
// board gossips (elections, takeovers, fencing, checkpoint failures, back-offs: see mission-events.ts), so a board
// that took no part in a takeover lists it too, and this peer's own membership changes (every board sees a power cut
// itself). Each entry gets a sequence number on arrival: `?after=SEQ` returns only what came since (for -f);
// `&wait=SECONDS` (at most 25) holds an empty answer until an event comes, so a follower (the dashboard) sees it at once.
import { ApiError } from './api.ts'
import type { Peer } from './daemon.ts'
import type { MemberState, MembershipChange } from './membership.ts'
import type { MissionEvent, MissionEventLog } from './mission-events.ts'
import type { MissionEventData, StopReason } from '../consensus/events.ts'

export type SwarmEventKind = 'membership' | 'deploy' | 'election' | 'takeover' | 'fencing' | 'checkpoint' | 'backoff' | 'container' | 'image' | 'move' | 'other'

export interface SwarmEvent {
  /** Arrival order on the peer that serves the journal. */
  seq: number
  /** Wall clock of the board it happened on, ms. */
  at: number
  /** Peer id of the board that reported it. */
  board: string
  kind: SwarmEventKind
  mission: string | null
  text: string
  /** Membership changes: the peer whose state changed, and its new state. */
  member?: string
  memberState?: MemberState
  /** Mission events: what happened, as data (`text` is its wording). */
  event?: MissionEventData
}

const JOURNAL_LENGTH = 5000
const MAX_PAGE = 1000
/** The longest `wait` of GET /v1/events, s. */
export const MAX_EVENTS_WAIT_S = 25

/** The kind of a mission event (consensus/events.ts), for filtering and the table. */
export function kindOf (event: MissionEventData): SwarmEventKind {
  switch (event.kind) {
    case 'selfFenced': case 'fenced': case 'fenceReceived':
      return 'fencing'
    case 'containerStopped':
      return FENCING_STOPS.has(event.reason.kind) ? 'fencing' : 'container'
    case 'elected':
      return event.takeover ? 'takeover' : 'election'
    case 'reconfigured': case 'claimRefused': case 'restartedAsPrimary':
      return 'election'
    case 'failed': case 'failureLearned': case 'imageStoreFailed': case 'imageFetchFailed': case 'fetchesFailing':
      return 'backoff'
    case 'moveAborted': case 'moveRefused': case 'moveCold': case 'moveStarted': case 'handingOver': case 'finalCheckpointTaken':
      return 'move'
    case 'checkpointsFailing': case 'checkpointsRecovered': case 'staleWait': case 'staleGiveUp': case 'storageFailed': case 'stagedRejected':
    case 'restoreRepaired': case 'restored': case 'restoreRefused': case 'checkpointOverrun': case 'fetchRepaired':
      return 'checkpoint'
    case 'containerStarted':
      return event.data === null ? 'image' : 'checkpoint'
    case 'blocked':
      return event.requirement === 'image' || event.requirement === 'imageMap' ? 'image' : 'other'
    case 'imageStored': case 'fetchingImage': case 'imageShared': case 'imageShareFailed': case 'imageLoaded': case 'imageLoadFailed':
      return 'image'
    case 'replacingBackup': case 'containerExited': case 'staleContainerStopped':
      return 'container'
    case 'removed': case 'deployRefused': case 'deployed':
      return 'deploy'
    case 'unknownMission': case 'regranted': case 'running': case 'storageRecovered': case 'envRefused': case 'envResealed':
      return 'other'
  }
}

const FENCING_STOPS = new Set<StopReason['kind']>(['leaseLapsed', 'quorumLost', 'newerEpoch', 'fenced'])

export class SwarmEventJournal {
  readonly #events: SwarmEvent[] = []
  readonly #waiters = new Set<() => void>()
  #seq = 0

  add (event: Omit<SwarmEvent, 'seq'>): SwarmEvent {
    const entry = { ...event, seq: ++this.#seq }
    this.#events.push(entry)
    if (this.#events.length > JOURNAL_LENGTH) this.#events.splice(0, this.#events.length - JOURNAL_LENGTH)
    for (const wake of [...this.#waiters]) wake()
    return entry
  }

  /** Resolves when an event is added, after `ms`, or when `signal` aborts, whichever comes first. */
  async nextEvent (ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted === true) return
    await new Promise<void>(resolve => {
      const done = (): void => { clearTimeout(timer); this.#waiters.delete(done); signal?.removeEventListener('abort', done); resolve() }
      const timer = setTimeout(done, ms)
      this.#waiters.add(done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  mission (mission: string, event: MissionEvent): void {
    this.add({ at: event.at, board: event.board, kind: kindOf(event.event), mission, text: event.text, event: event.event })
  }

  membership (self: string, change: MembershipChange & { at?: number }): void {
    this.add({
      at: change.at ?? Date.now(),
      board: self,
      kind: 'membership',
      mission: null,
      member: change.peerId,
      memberState: change.state,
      text: `${change.peerId} ${change.previous ?? 'new'} -> ${change.state} (${change.reason})`
    })
  }

  /** Entries after `after` (a seq), oldest first, at most `limit`; `next` is the seq to ask after next time. */
  page (options: { after?: number, mission?: string, limit?: number } = {}): { events: SwarmEvent[], next: number } {
    const after = options.after ?? 0
    const limit = Math.min(options.limit ?? MAX_PAGE, MAX_PAGE)
    const events: SwarmEvent[] = []
    let next = after
    for (const event of this.#events) {
      if (event.seq <= after) continue
      if (events.length >= limit) break
      next = event.seq
      if (options.mission != null && event.mission !== options.mission) continue
      events.push(event)
    }
    // Nothing newer: the cursor stays where the journal ends, so a follower does not rescan.
    if (events.length < limit) next = Math.max(next, this.#seq)
    return { events, next }
  }
}

/** Feeds a journal from the peer's membership and the mission event log, and serves it at GET /v1/events. */
export function serveSwarmEvents (peer: Peer, missionEvents: MissionEventLog): () => void {
  const journal = new SwarmEventJournal()
  const self = peer.peerId
  for (const change of peer.membership.history()) journal.membership(self, change)
  const offMembership = peer.membership.on(change => { journal.membership(self, change) })
  const offMissions = missionEvents.onEvent((mission, event) => { journal.mission(mission, event) })
  peer.api.route('GET', '/v1/events', async request => {
    const number = (name: string): number | undefined => {
      const text = request.query.get(name)
      if (text == null) return undefined
      const value = Number(text)
      if (!Number.isSafeInteger(value) || value < 0) throw new ApiError(400, `${name} must be a whole number >= 0`)
      return value
    }
    const mission = request.query.get('mission') ?? undefined
    const options = { after: number('after'), limit: number('limit'), mission }
    const waitS = Math.min(number('wait') ?? 0, MAX_EVENTS_WAIT_S)
    const deadline = Date.now() + waitS * 1000
    let page = journal.page(options)
    // Long poll: an empty page waits for the next event (one of another mission wakes it too: page again).
    while (page.events.length === 0 && !request.signal.aborted && Date.now() < deadline) {
      await journal.nextEvent(deadline - Date.now(), request.signal)
      page = journal.page({ ...options, after: page.next })
    }
    return { body: page }
  })
  return () => { offMembership(); offMissions() }
}
