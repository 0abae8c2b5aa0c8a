// The status object of `GET /v1/status`: this peer, every member as this peer sees it, the gossip counters, and
// the sections others add with `peer.status.extend(name, provider)`.
import { peerIdFromString } from '@libp2p/peer-id'
import type { TopicCounters } from '../gossip.ts'
import { HEARTBEAT_TOPIC, type HeartbeatInfo } from '../heartbeat.ts'
import type { MemberState } from '../membership.ts'
import type { BoardProfile } from '../../boards/profiles.ts'
import type { HostCapabilities } from '../../boards/detect.ts'
import type { Peer } from '../daemon.ts'

export interface PeerStatusEntry {
  peerId: string
  state: MemberState
  /** Milliseconds since the last sign of life (heartbeat or answered probe). */
  lastSeenMs: number
  /** Wall-clock time of the last sign of life, ms since epoch. */
  lastSeenAt: number
  /** Milliseconds in the current state, the wall-clock time it began, and why it was entered. */
  stateForMs: number
  stateSinceAt: number
  reason: string
  incarnation: number
  board: string | null
  arch: string | null
  connected: boolean
  info: HeartbeatInfo | null
}

export interface PeerStatus {
  self: {
    peerId: string
    board: string
    arch: string
    addrs: string[]
    incarnation: number
    profile: BoardProfile
    capabilities: HostCapabilities
    healthScore: number
    lagMs: number
    dockerHost: string
    startedAt: number
    /** Open libp2p connections, and how many of those peers gossip heartbeats with us. */
    connections: number
    heartbeatSubscribers: number
    /** Peers we send direct beats to (our watchers), and peers whose beats we receive (we watch them). */
    watchers: string[]
    watching: string[]
  }
  peers: PeerStatusEntry[]
  counters: { gossip: Record<string, TopicCounters>, pauses: number }
  /** Sections added with `peer.status.extend(name, provider)`, e.g. `missions`. */
  [section: string]: unknown
}

/** What the status reads of the peer that only the peer itself holds; read after the sections are in. */
export interface OwnStatus {
  incarnation: () => number
  startedAt: () => number
  watchers: () => string[]
}

export async function assembleStatus (peer: Pick<Peer, 'membership' | 'node' | 'board' | 'status' | 'peerId' | 'addrs' | 'capabilities' | 'config' | 'gossip'>, own: OwnStatus): Promise<PeerStatus> {
  const membership = peer.membership
  const libp2p = peer.node.libp2p
  const board = peer.board
  const now = performance.now()
  const wallNow = Date.now()
  const peers: PeerStatusEntry[] = membership.list().map(member => ({
    peerId: member.peerId,
    state: member.state,
    lastSeenMs: Math.max(0, Math.round(now - member.lastHeardAt)),
    lastSeenAt: member.lastSeenWallMs,
    stateForMs: Math.round(now - member.stateSince),
    stateSinceAt: Math.round(wallNow - (now - member.stateSince)),
    reason: member.reason,
    incarnation: member.incarnation,
    board: member.info?.board.name ?? null,
    arch: member.info?.board.arch ?? null,
    connected: libp2p.getConnections(peerIdFromString(member.peerId)).length > 0,
    info: member.info
  }))
  const sections = await peer.status.collect()
  return {
    ...sections,
    self: {
      peerId: peer.peerId,
      board: board.name,
      arch: board.arch,
      addrs: peer.addrs(),
      incarnation: own.incarnation(),
      profile: board,
      capabilities: peer.capabilities,
      healthScore: membership.healthScore,
      lagMs: Math.round(membership.lastLagMs),
      dockerHost: peer.config.dockerHost,
      startedAt: own.startedAt(),
      connections: libp2p.getConnections().length,
      heartbeatSubscribers: libp2p.services.pubsub.getSubscribers(HEARTBEAT_TOPIC).length,
      watchers: own.watchers(),
      watching: membership.list().filter(member => membership.watches(member.peerId)).map(member => member.peerId)
    },
    peers,
    counters: { gossip: peer.gossip.counters(), pauses: membership.pauses }
  }
}
