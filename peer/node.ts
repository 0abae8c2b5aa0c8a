// The swarm node: one libp2p host serving gossip (gossipsub) and block exchange (Helia + bitswap).
import type { HeliaWithLibp2p } from '@helia/libp2p'
import { heliaWithLibp2p } from './helia-node.ts'
import { withBitswap } from '@helia/bitswap'
import { tcp } from '@libp2p/tcp'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { bootstrap } from '@libp2p/bootstrap'
import { mdns } from '@libp2p/mdns'
import { gossipsub } from '@libp2p/gossipsub'
import { preSharedKeyFreeingCiphers } from './pnet-cipher-fix.ts'
import { LevelBlockstore } from 'blockstore-level'
import { LevelDatastore } from 'datastore-level'
import type { PrivateKey } from '@libp2p/interface'
import type { GossipSub } from '@libp2p/gossipsub'
import type { Identify } from '@libp2p/identify'
import type { Ping as PingService } from '@libp2p/ping'
import { join } from 'node:path'

export interface SwarmNodeServices {
  pubsub: GossipSub
  identify: Identify
  ping: PingService
  [key: string]: unknown
}

export type SwarmNode = HeliaWithLibp2p<SwarmNodeServices>

export interface SwarmNodeOptions {
  privateKey: PrivateKey
  dataDir: string
  listen: string[]
  bootstrap: string[]
  /** Pre-shared key (libp2p private network); without it the swarm is open. */
  swarmKey?: Uint8Array
  mdns: boolean
  /** Heartbeat interval of gossipsub's own mesh maintenance, in ms. */
  gossipHeartbeatMs?: number
  /** Peers no connection is made with, either way (boards the operator revoked); read live. */
  refusePeer?: (peerId: string) => boolean
}

/** gossipsub's fast message id: the signer and sequence number, as the StrictSign message id has it. */
export function fastMessageId (message: { from?: Uint8Array, seqno?: Uint8Array }): string {
  if (message.from == null || message.seqno == null) return ''
  return `${Buffer.from(message.from).toString('base64')}/${Buffer.from(message.seqno).toString('base64')}`
}

export async function createSwarmNode (options: SwarmNodeOptions): Promise<SwarmNode> {
  const blockstore = new LevelBlockstore(join(options.dataDir, 'blocks'))
  const datastore = new LevelDatastore(join(options.dataDir, 'datastore'))
  await blockstore.open()
  await datastore.open()

  const peerDiscovery: any[] = []
  if (options.bootstrap.length > 0) peerDiscovery.push(bootstrap({ list: options.bootstrap, timeout: 0 }))
  if (options.mdns) peerDiscovery.push(mdns({ interval: 1000 }))

  const helia = withBitswap(heliaWithLibp2p({ blockstore, datastore }, {
    privateKey: options.privateKey,
    addresses: { listen: options.listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: {
      denyDialPeer: peerId => options.refusePeer?.(peerId.toString()) === true,
      denyInboundEncryptedConnection: peerId => options.refusePeer?.(peerId.toString()) === true,
      denyOutboundEncryptedConnection: peerId => options.refusePeer?.(peerId.toString()) === true
    },
    connectionProtector: options.swarmKey != null ? preSharedKeyFreeingCiphers({ psk: options.swarmKey }) : undefined,
    peerDiscovery,
    // libp2p's connection monitor pings every connection every 10 s over a new stream (a protocol negotiation
    // and a peer-store write on both ends each time): 20 peers pay ~8 of those per second each. The failure
    // detector (peer/membership.ts) already watches every peer, with its own beats and probes.
    connectionMonitor: { enabled: false },
    connectionManager: {
      // Boards of one swarm dial each other at once after a restart; the default (5/s per host) resets them.
      inboundConnectionThreshold: 100,
      maxIncomingPendingConnections: 100,
      // gossipsub opens its outbound streams one at a time: a peer that froze mid-negotiation (SIGSTOP, power
      // cut) would hold up gossip with every other new peer for the default 10 s.
      outboundStreamProtocolNegotiationTimeout: 3000,
      inboundStreamProtocolNegotiationTimeout: 3000
    },
    services: {
      // A board busy restoring a container (or 20 peers starting on one host) can take seconds to answer;
      // an identify that times out leaves the connection without gossip.
      identify: identify({ timeout: 20_000 }),
      ping: ping(),
      pubsub: gossipsub({
        emitSelf: false,
        allowPublishToZeroTopicPeers: true,
        heartbeatInterval: options.gossipHeartbeatMs ?? 700,
        globalSignaturePolicy: 'StrictSign',
        // A copy of a message already accepted (same signer and sequence number) is dropped before its
        // signature is checked again: Ed25519 verification is most of gossip's CPU cost. A forged copy with a
        // seen (from, seqno) is dropped too (it was never delivered); only a message whose signature checked
        // out enters this cache.
        fastMsgIdFn: fastMessageId,
        // Mesh peers are tagged in the peer store on every GRAFT and PRUNE (a datastore write each); the tags
        // only guide the connection manager's pruning, which a swarm of a few dozen boards never reaches.
        tagMeshPeers: false,
        // IDONTWANT (a control message to every mesh peer for every message received) pays only for large
        // relayed messages; heartbeats (~0.5 KB, mostly not relayed) would each trigger six of them.
        idontwantMinDataSize: 16 * 1024,
        // gossipsub scores down more than 10 peers sharing one IP (sybil defence) and stops talking to them;
        // simulated boards all live on loopback. Real boards each have their own address, so keep it for those.
        scoreParams: { IPColocationFactorWhitelist: new Set(['127.0.0.1', '::1']) }
      })
    }
  })) as unknown as SwarmNode
  await helia.start()
  return helia
}
