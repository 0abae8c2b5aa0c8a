// A BundleStore on a peer's swarm node: blocks in its Helia blockstore, batched transfer over its libp2p host.
import type { Helia } from '@helia/interface'
import type { Libp2p } from '@libp2p/interface'
import { HeliaBundleBackend } from './backend.ts'
import { BlockExchange } from './block-exchange.ts'
import { BundleStore, type BundleStoreOptions } from './bundle-store.ts'

export interface SwarmBundleStore {
  store: BundleStore
  exchange: BlockExchange
  /** Stops serving blocks to peers (the node itself is the caller's). */
  stop: () => Promise<void>
}

export async function openSwarmBundleStore (
  node: Pick<Helia, 'blockstore' | 'datastore'> & { libp2p: Libp2p<any> },
  options: Omit<BundleStoreOptions, 'backend' | 'exchange'> = {}
): Promise<SwarmBundleStore> {
  const backend = new HeliaBundleBackend({ helia: node })
  const exchange = new BlockExchange({ libp2p: node.libp2p, backend })
  await exchange.start()
  const store = new BundleStore({ ...options, backend, exchange })
  return { store, exchange, stop: async () => { await store.idle(); await exchange.stop() } }
}
