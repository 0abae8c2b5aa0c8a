// Keeps a connection to every member: every peer holds one to each other, so pings, close hints and direct
// beats work. Dials who we hear of, redials the dead, replaces connections that carry no gossip or whose
// direct path failed, and keeps dialling the bootstrap addresses while alone.
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Connection, PeerId, PeerInfo } from '@libp2p/interface'
import type { SwarmNode } from '../node.ts'
import type { Membership } from '../membership.ts'
import { HEARTBEAT_TOPIC } from '../heartbeat.ts'
import type { LogLine } from '../logger.ts'

/** How long the peer with the larger id waits for the other one to dial before it dials itself. */
const DIAL_GRACE_MS = 4000
/**
 * How often a member declared dead is dialled again. A link cut long enough for a verdict drops the connection, and
 * nothing else dials it back: after a 28 s bridge partition healed, the primary held its backup dead for 28 s more
 * and fenced itself when its other member died. As often as live members are checked: a mission's majority may be
 * this very link once the next fault cuts another. A board that is really off refuses or times out: cheap.
 */
const DEAD_REDIAL_MS = 2000
/** At most one forced reconnect per peer this often (a flapping link must not churn connections). */
const RECONNECT_MIN_MS = 5000
/** How often the members' connections are checked. */
const MAINTAIN_MS = 2000

export interface ConnectionKeeperOptions {
  libp2p: SwarmNode['libp2p']
  membership: Membership
  bootstrap: string[]
  log: LogLine
  /** The peer is stopping: dial nobody. */
  stopping: () => boolean
}

export class ConnectionKeeper {
  readonly #libp2p: SwarmNode['libp2p']
  readonly #membership: Membership
  readonly #bootstrap: string[]
  readonly #log: LogLine
  readonly #stopping: () => boolean
  readonly #lastDialAt = new Map<string, number>()
  readonly #lastReconnectAt = new Map<string, number>()
  readonly #directPathLostAt = new Map<string, number>()
  readonly #unconnectedSince = new Map<string, number>()
  readonly #unsubscribedChecks = new Map<string, number>()
  /** The last error of each bootstrap address's dial (for the lonely report). */
  readonly bootstrapErrors: Record<string, string> = {}

  constructor (options: ConnectionKeeperOptions) {
    this.#libp2p = options.libp2p
    this.#membership = options.membership
    this.#bootstrap = options.bootstrap
    this.#log = options.log
    this.#stopping = options.stopping
  }

  /** A closed connection is a hint to probe the peer; a discovered peer is dialled. Returns the unsubscribe. */
  watchEvents (): () => void {
    const libp2p = this.#libp2p
    const membership = this.#membership
    const selfId = libp2p.peerId.toString()
    const onDisconnect = (event: CustomEvent<PeerId>): void => { membership.disconnected(event.detail.toString()) }
    const onDiscovery = (event: CustomEvent<PeerInfo>): void => {
      const id = event.detail.id.toString()
      if (id !== selfId && membership.get(id)?.state !== 'dead') {
        void libp2p.peerStore.merge(event.detail.id, { multiaddrs: event.detail.multiaddrs }).catch(() => {})
          .then(() => { this.ensureConnected(id, []) })
      }
    }
    libp2p.addEventListener('peer:disconnect', onDisconnect)
    libp2p.addEventListener('peer:discovery', onDiscovery)
    return () => {
      libp2p.removeEventListener('peer:disconnect', onDisconnect)
      libp2p.removeEventListener('peer:discovery', onDiscovery)
    }
  }

  /** Checks every member's connection every MAINTAIN_MS. Returns the stop function. */
  maintain (): () => void {
    // Members we hear through gossip but hold no connection to are dialled, so pings and close hints work.
    const timer = setInterval(() => {
      for (const member of this.#membership.list()) {
        if (member.state !== 'dead') this.ensureConnected(member.peerId, member.info?.addrs ?? [])
        else this.#redialDead(member.peerId)
      }
      // A first bootstrap dial can fail (the bootstrap peer busy or not up yet): keep trying while alone.
      if (this.#libp2p.getConnections().length === 0) this.#dialBootstrap()
      this.dropClosedMuxers()
      this.#resetSilentConnections()
    }, MAINTAIN_MS)
    return () => { clearInterval(timer) }
  }

  /**
   * Dials a peer we hear of but hold no connection to. Two peers that dial each other at once end up with two
   * connections, and when one of them closes gossipsub loses its streams with that peer for good; so only the
   * peer with the smaller id dials at once, the other one only if still unconnected after a grace period.
   */
  ensureConnected (peerId: string, addrs: string[]): void {
    const libp2p = this.#libp2p
    if (libp2p.getConnections(peerIdFromString(peerId)).length > 0) {
      this.#unconnectedSince.delete(peerId)
      return
    }
    const now = Date.now()
    const since = this.#unconnectedSince.get(peerId) ?? now
    this.#unconnectedSince.set(peerId, since)
    if (libp2p.peerId.toString() > peerId && now - since < DIAL_GRACE_MS) return
    if (now - (this.#lastDialAt.get(peerId) ?? 0) < 1000) return
    this.#lastDialAt.set(peerId, now)
    const id = peerIdFromString(peerId)
    const multiaddrs = addrs.flatMap(addr => {
      try { return [multiaddr(addr).decapsulateCode(421)] } catch { return [] }
    })
    void libp2p.peerStore.merge(id, { multiaddrs }).catch(() => {}).then(() => { this.#dial(peerId) })
  }

  /**
   * A connection whose gossipsub stream never came up (the remote was too busy to negotiate it) carries
   * pings but no heartbeats. After two checks without a heartbeat subscription, close it and dial again.
   */
  #resetSilentConnections (): void {
    const libp2p = this.#libp2p
    const subscribed = new Set(libp2p.services.pubsub.getSubscribers(HEARTBEAT_TOPIC).map(String))
    for (const peer of libp2p.getPeers()) {
      const id = peer.toString()
      if (subscribed.has(id)) { this.#unsubscribedChecks.delete(id); continue }
      const checks = (this.#unsubscribedChecks.get(id) ?? 0) + 1
      this.#unsubscribedChecks.set(id, checks)
      if (checks < 2) continue
      this.#unsubscribedChecks.delete(id)
      this.#log(`swarm: connection to ${id} carries no gossip; reconnecting`, { member: id })
      this.#hangUpAndRedial(id)
    }
  }

  /**
   * A connection whose stream multiplexer closed while its socket stays open is listed as open, and every stream
   * asked of it fails ("The connection muxer is "closed" and not "open""): no beats, no blocks, and no redial, as
   * the peer counts as connected. (For 100 s the backup could neither beat nor fetch over one, chaos seed 25: the
   * primary fenced itself for want of its beats, and the mission stayed unprotected.) It is aborted; the next
   * check dials again.
   */
  dropClosedMuxers (): void {
    for (const connection of this.#libp2p.getConnections()) {
      if (!muxerClosed(connection)) continue
      const id = connection.remotePeer.toString()
      this.#log(`swarm: connection to ${id} has a closed stream multiplexer; dropping it`, { member: id })
      connection.abort(new Error('stream multiplexer closed'))
      this.#lastDialAt.delete(id)
    }
  }

  /** Closes every connection to the peer; the smaller id dials again at once, the other side as ensureConnected does. */
  #hangUpAndRedial (peerId: string): void {
    const libp2p = this.#libp2p
    void libp2p.hangUp(peerIdFromString(peerId)).catch(() => {}).then(() => {
      this.#lastDialAt.delete(peerId)
      if (libp2p.peerId.toString() < peerId) this.#dial(peerId)
    })
  }

  /**
   * A direct path that fails while others reach the peer: drop the connection (it may be half-open after a cut)
   * and dial again, so beats and the lease's majority do not run through a third board.
   */
  directPathLost (peerId: string): void {
    if (this.#stopping()) return
    const now = Date.now()
    // Twice in a row within RECONNECT_MIN_MS: one late answer on a loaded board is no reason to drop a connection.
    const previous = this.#directPathLostAt.get(peerId)
    this.#directPathLostAt.set(peerId, now)
    if (previous === undefined || now - previous > RECONNECT_MIN_MS) return
    if (!this.#reconnectAllowed(peerId, now)) return
    if (this.#libp2p.getConnections(peerIdFromString(peerId)).length > 0) this.#log(`swarm: ${peerId} reached through others but not directly: reconnecting`, { member: peerId })
    this.#hangUpAndRedial(peerId)
  }

  /** At most one hang-up and redial of a peer every RECONNECT_MIN_MS; true (and counted) when this one may go. */
  #reconnectAllowed (peerId: string, now: number): boolean {
    if (now - (this.#lastReconnectAt.get(peerId) ?? 0) < RECONNECT_MIN_MS) return false
    this.#lastReconnectAt.set(peerId, now)
    return true
  }

  #redialDead (peerId: string): void {
    const libp2p = this.#libp2p
    if (this.#stopping()) return
    if (libp2p.getConnections(peerIdFromString(peerId)).length > 0) {
      // Dead over an open connection: a cut that dropped packets left it half-open, and TCP's retransmission back-off
      // delivered again only 11 s after the heal (two boards, no third to notice the lost direct path). Hang it up and
      // dial afresh, at most every RECONNECT_MIN_MS.
      const now = Date.now()
      if (!this.#reconnectAllowed(peerId, now)) return
      this.#log(`swarm: ${peerId} is dead over an open connection: reconnecting`, { member: peerId })
      this.#hangUpAndRedial(peerId)
      return
    }
    // Only the smaller id, as in ensureConnected: two dials at once leave gossipsub without streams.
    if (libp2p.peerId.toString() > peerId) return
    const now = Date.now()
    if (now - (this.#lastDialAt.get(peerId) ?? 0) < DEAD_REDIAL_MS) return
    this.#lastDialAt.set(peerId, now)
    // Quiet: a board that is off fails this every time.
    libp2p.dial(peerIdFromString(peerId), { signal: AbortSignal.timeout(5000) }).catch(() => {})
  }

  #dialBootstrap (): void {
    for (const addr of this.#bootstrap) {
      this.#libp2p.dial(multiaddr(addr), { signal: AbortSignal.timeout(5000) }).catch(err => {
        this.bootstrapErrors[addr] = errorText(err)
        this.#log(`swarm: bootstrap dial ${addr} failed: ${(err as Error).message}`, { level: 'warn' })
      })
    }
  }

  #dial (peerId: string): void {
    if (this.#stopping()) return
    this.#libp2p.dial(peerIdFromString(peerId), { signal: AbortSignal.timeout(5000) }).catch(err => {
      this.#log(`swarm: dial ${peerId} failed: ${(err as Error).message}`, { level: 'warn', member: peerId })
    })
  }
}

/** An error's message with the messages (or codes) of the errors it wraps, which say why a dial failed. */
function errorText (err: unknown, depth = 0): string {
  if (err == null || typeof err !== 'object' || depth > 4) return String(err)
  const e = err as { message?: unknown, code?: unknown, errors?: unknown, cause?: unknown }
  const parts = [typeof e.message === 'string' && e.message !== '' ? e.message : String(e.code ?? 'error')]
  if (Array.isArray(e.errors)) for (const inner of e.errors.slice(0, 3)) parts.push(errorText(inner, depth + 1))
  if (e.cause != null) parts.push(errorText(e.cause, depth + 1))
  return [...new Set(parts)].join(': ').slice(0, 300)
}

/**
 * The connection counts as open but its stream multiplexer does not: libp2p's `Connection` interface does not show
 * the multiplexer, whose status its `newStream` checks first; read here through the implementation's field.
 */
export function muxerClosed (connection: Pick<Connection, 'status'>): boolean {
  const muxer = (connection as { muxer?: { status?: string } }).muxer
  return connection.status === 'open' && muxer?.status !== undefined && muxer.status !== 'open'
}
