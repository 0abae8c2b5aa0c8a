// Mission events, replicated: every peer gossips the events that happen on it, and keeps the newest of every
// board's per mission, so `tandem mission show` on any peer lists the same events, each naming its board.
import { GossipDrop, type Gossip } from './gossip.ts'
import type { LogLine } from './logger.ts'
import { describe, missionEventSchema, parseMissionEvent, type MissionEventData } from '../consensus/events.ts'
import { describeIssue, z } from '../schema/schema.ts'

export const MISSION_EVENTS_TOPIC = 'tandem/mission-events/1'
const MAX_EVENTS_PER_MISSION = 100
const MAX_TEXT_CHARS = 500
const MAX_MESSAGE_BYTES = 4096

/** Moments that measurements (e.g. a move's downtime) are taken from, marked on the event that reports them. */
export type EventMark =
  /** The mission's container ran for the last time on this board under `epoch` (paused for a final checkpoint, or stopped). */
  | { kind: 'stopped', epoch: number }
  /** The mission's container runs under `epoch` on this board. */
  | { kind: 'running', epoch: number }

export interface MissionEvent {
  /** Wall clock of the board it happened on, ms. */
  at: number
  /** Peer id of the board it happened on. */
  board: string
  event: MissionEventData
  /** The event in words (describe), for display. */
  text: string
  mark?: EventMark
}

/** The moment a measurement is taken from that the event reports, if any. */
export function markOf (event: MissionEventData): EventMark | undefined {
  switch (event.kind) {
    case 'containerStarted':
    case 'restored':
      return { kind: 'running', epoch: event.epoch }
    case 'finalCheckpointTaken':
    case 'containerStopped':
    case 'containerExited':
      return { kind: 'stopped', epoch: event.epoch }
    default:
      return undefined
  }
}

/** `text` and `mark` are derived from `event` (describe, markOf); sent for peers that only read those. */
export interface EventMessage { mission: string, seq: number, at: number, event: MissionEventData, text?: string, mark?: EventMark }

/** What arrives: text and mark are not read, they are derived again from the event (its schema: consensus/events.ts). */
const eventMessageSchema = z.object({
  mission: z.string().max(128),
  seq: z.int(),
  at: z.number(),
  event: missionEventSchema
})

/** A gossiped mission event (a GossipDrop if it is not one). */
export function validateEvent (payload: unknown): EventMessage {
  const result = eventMessageSchema.safeParse(payload)
  if (!result.success) throw new GossipDrop('malformed', describeIssue(result.error))
  const { mission, seq, at, event } = result.data
  return { mission, seq, at, event }
}

/** The event as this log keeps it: with its wording and its mark. */
export function missionEvent (at: number, board: string, event: MissionEventData): MissionEvent {
  const mark = markOf(event)
  return { at, board, event, text: describe(event).slice(0, MAX_TEXT_CHARS), ...(mark !== undefined ? { mark } : {}) }
}

export class MissionEventLog {
  readonly #self: string
  readonly #gossip: Gossip
  readonly #log: LogLine
  readonly #events = new Map<string, MissionEvent[]>()
  /** Newest sequence number seen per board: gossip may deliver a message twice. */
  readonly #seen = new Map<string, Set<number>>()
  readonly #listeners = new Set<(mission: string, event: MissionEvent) => void>()
  #seq = 0
  #unsubscribe: (() => void) | undefined

  constructor (options: { self: string, gossip: Gossip, log: LogLine }) {
    this.#self = options.self
    this.#gossip = options.gossip
    this.#log = options.log
  }

  start (): void {
    this.#unsubscribe = this.#gossip.subscribe(MISSION_EVENTS_TOPIC, validateEvent, (message, sender) => {
      let seen = this.#seen.get(sender)
      if (seen == null) { seen = new Set(); this.#seen.set(sender, seen) }
      if (seen.has(message.seq)) return
      seen.add(message.seq)
      if (seen.size > 4 * MAX_EVENTS_PER_MISSION) seen.delete(seen.values().next().value as number)
      this.#add(message.mission, missionEvent(message.at, sender, message.event))
    }, { maxBytes: MAX_MESSAGE_BYTES })
  }

  stop (): void { this.#unsubscribe?.() }

  /** Records an event that happened on this board (at `at`, default now) and tells the swarm. */
  record (mission: string, data: MissionEventData, at = Date.now()): void {
    // Through the wire's parser, so this board keeps the event as the others receive it (long texts clipped).
    const event = missionEvent(at, this.#self, parseMissionEvent(data) ?? data)
    const mark = event.mark
    this.#add(mission, event)
    this.#log(`mission ${mission}: ${event.text}`, { mission, ...(mark !== undefined ? { epoch: mark.epoch } : {}) })
    const message: EventMessage = { mission, seq: ++this.#seq, at: event.at, event: event.event, text: event.text, ...(mark !== undefined ? { mark } : {}) }
    this.#gossip.publish(MISSION_EVENTS_TOPIC, message).catch(() => {
      // No peer subscribed yet (a board alone): the event is still kept here.
    })
  }

  /** The mission's events from every board, oldest first. */
  of (mission: string): MissionEvent[] { return this.#events.get(mission) ?? [] }

  forget (mission: string): void { this.#events.delete(mission) }

  /** Calls `listener` with every event as it is recorded here or arrives from another board; returns an unsubscribe. */
  onEvent (listener: (mission: string, event: MissionEvent) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  #add (mission: string, event: MissionEvent): void {
    let events = this.#events.get(mission)
    if (events == null) { events = []; this.#events.set(mission, events) }
    // Boards' clocks differ a little; order by the time each board gave, keeping arrival order for ties.
    let at = events.length
    while (at > 0 && (events[at - 1] as MissionEvent).at > event.at) at--
    events.splice(at, 0, event)
    if (events.length > MAX_EVENTS_PER_MISSION) events.splice(0, events.length - MAX_EVENTS_PER_MISSION)
    for (const listener of this.#listeners) listener(mission, event)
  }
}
