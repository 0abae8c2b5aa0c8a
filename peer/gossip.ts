// Typed gossip over gossipsub: JSON payloads, per-topic size limits, validation and drop counters.
// Signatures are checked by gossipsub itself (StrictSign): a handler's `sender` is the verified signer.
import { TopicValidatorResult, type GossipSub, type Message } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { LogLine } from './logger.ts'

/**
 * `stranger`: a claim (e.g. a verdict) from a peer that is not a live member. `unauthorized`: an operation without a
 * valid operator signature (consensus/authority.ts). `revoked`: anything from a board the operator revoked.
 */
export type DropReason = 'oversized' | 'malformed' | 'forged' | 'replayed' | 'unsigned' | 'stranger' | 'unauthorized' | 'revoked'

/** Thrown by a validator to drop a message with a reason (other errors count as `malformed`). */
export class GossipDrop extends Error {
  readonly reason: DropReason
  constructor (reason: DropReason, message: string) {
    super(message)
    this.reason = reason
  }
}

/** Turns the decoded JSON into a typed message or throws (GossipDrop for a specific reason). */
export type Validator<T> = (payload: unknown, sender: string) => T
export type Handler<T> = (message: T, sender: string) => void

export interface TopicCounters {
  accepted: number
  published: number
  bytesIn: number
  bytesOut: number
  dropped: Record<DropReason, number>
}

export interface SubscribeOptions<T> {
  /** Largest payload accepted, in bytes (default 64 KiB). */
  maxBytes?: number
  /**
   * Whether gossipsub should pass an accepted message on to other peers (default: always). Messages that
   * reach every peer directly (a full mesh of connections) need not be relayed; the handler still gets them.
   */
  relay?: (message: T) => boolean
}

const DEFAULT_MAX_BYTES = 64 * 1024

function emptyCounters (): TopicCounters {
  return { accepted: 0, published: 0, bytesIn: 0, bytesOut: 0, dropped: { oversized: 0, malformed: 0, forged: 0, replayed: 0, unsigned: 0, stranger: 0, unauthorized: 0, revoked: 0 } }
}

export class Gossip {
  readonly #pubsub: GossipSub
  readonly #counters = new Map<string, TopicCounters>()
  readonly #log: LogLine
  /** Senders whose every message is dropped (boards the operator revoked). */
  #refused: (sender: string) => boolean = () => false

  constructor (pubsub: GossipSub, log: LogLine = () => {}) {
    this.#pubsub = pubsub
    this.#log = log
  }

  /** Drops (as `revoked`) every message on every topic whose signer `refused` names. */
  refuseSenders (refused: (sender: string) => boolean): void { this.#refused = refused }

  #countersOf (topic: string): TopicCounters {
    let counters = this.#counters.get(topic)
    if (counters == null) {
      counters = emptyCounters()
      this.#counters.set(topic, counters)
    }
    return counters
  }

  /**
   * Subscribes to a topic. Each message is size-checked, JSON-decoded and validated before gossipsub
   * forwards it; rejected messages are neither delivered nor forwarded. Returns an unsubscribe function.
   */
  subscribe<T> (topic: string, validate: Validator<T>, handler: Handler<T>, options: SubscribeOptions<T> = {}): () => void {
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES
    const counters = this.#countersOf(topic)
    const drop = (reason: DropReason, detail: string, from: string): TopicValidatorResult => {
      counters.dropped[reason]++
      // Late copies arriving out of order are routine; only count them.
      if (reason !== 'replayed') this.#log(`gossip: dropped ${reason} message on ${topic} from ${from}: ${detail}`, { level: 'warn', member: from })
      // A replay may be an honest late copy: ignore it without penalising whoever forwarded it.
      return reason === 'replayed' ? TopicValidatorResult.Ignore : TopicValidatorResult.Reject
    }
    const validator = (_propagationSource: PeerId, message: Message): TopicValidatorResult => {
      if (message.type !== 'signed') return drop('unsigned', 'no signature', 'unknown')
      const sender = message.from.toString()
      if (this.#refused(sender)) return drop('revoked', 'sender revoked by the operator', sender)
      if (message.data.byteLength > maxBytes) return drop('oversized', `${message.data.byteLength} > ${maxBytes} bytes`, sender)
      let value: T
      try {
        value = validate(JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(message.data)), sender)
      } catch (err) {
        return drop(err instanceof GossipDrop ? err.reason : 'malformed', (err as Error).message, sender)
      }
      counters.accepted++
      counters.bytesIn += message.data.byteLength
      try {
        handler(value, sender)
      } catch (err) {
        this.#log(`gossip: handler for ${topic} failed: ${(err as Error).stack ?? String(err)}`, { level: 'error' })
      }
      // Ignore = already handled here, not passed on (and not held against whoever sent it).
      return options.relay == null || options.relay(value) ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore
    }
    this.#pubsub.topicValidators.set(topic, validator)
    this.#pubsub.subscribe(topic)
    return () => {
      this.#pubsub.unsubscribe(topic)
      if (this.#pubsub.topicValidators.get(topic) === validator) this.#pubsub.topicValidators.delete(topic)
    }
  }

  /** Publishes a JSON-serialisable message, signed with this peer's key. Resolves to how many peers it was sent to. */
  async publish (topic: string, message: unknown): Promise<number> {
    const data = new TextEncoder().encode(JSON.stringify(message))
    const counters = this.#countersOf(topic)
    const result = await this.#pubsub.publish(topic, data)
    counters.published++
    counters.bytesOut += data.byteLength
    return result.recipients.length
  }

  counters (): Record<string, TopicCounters> {
    return Object.fromEntries([...this.#counters].map(([topic, counters]) => [topic, structuredClone(counters)]))
  }
}
