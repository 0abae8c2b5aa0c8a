// Helia over a libp2p host built by tandem, without loading Helia's default libp2p stack.
//
// Why not `createHeliaLight` from 'helia' and `withLibp2pLight` from '@helia/libp2p': both packages' entry points
// import @helia/libp2p's libp2p-defaults (WebRTC with its native library, WebSockets, the DHT, AutoTLS, UPnP, circuit
// relay, delegated HTTP routing) as soon as they load, although tandem uses none of it. Measured with
// `node --expose-gc`, RSS after importing peer/node.ts: 181 MB with those entry points, 117 MB with this module
// (`npm run bench:footprint` measures a whole idle peer). So the Helia class and @helia/libp2p's router are loaded
// from their own files (pinned by package-lock.json), and the libp2p mixin below does what withLibp2pLight does,
// less its copying of providers found by non-libp2p routers into the peer store (tandem has no other router).
import { createLibp2p, type Libp2pOptions } from 'libp2p'
import type { Helia } from '@helia/interface'
import type { HeliaInit } from 'helia'
import type { HeliaWithLibp2p } from '@helia/libp2p'
import type { Libp2p, ServiceMap } from '@libp2p/interface'

interface HeliaModule { Helia: new (init: HeliaInit & { name: string, version: string }) => Helia & HeliaInternals }
interface HeliaInternals {
  addMixin: (mixin: { name: string, start?: (helia: never) => Promise<void>, stop?: (helia: never) => Promise<void> }) => void
  hasRouter: (name: string) => boolean
  addRouter: (router: unknown) => void
  info: { name: string, version: string }
}

const { Helia: HeliaClass } = await import(new URL('./helia.js', import.meta.resolve('helia')).href) as HeliaModule
const { version: heliaVersion } = await import(new URL('./version.js', import.meta.resolve('helia')).href) as { version: string }
const { libp2pRouting } = await import(new URL('./routing.js', import.meta.resolve('@helia/libp2p')).href) as { libp2pRouting: (libp2p: Libp2p) => unknown }

/** A Helia node whose `libp2p` is created from `libp2pOptions` when the node starts (before the mixins added later). */
export function heliaWithLibp2p<T extends ServiceMap> (init: Pick<HeliaInit, 'blockstore' | 'datastore'>, libp2pOptions: Libp2pOptions<T>): HeliaWithLibp2p<T> {
  const helia = new HeliaClass({ ...init, name: 'helia', version: heliaVersion })
  let libp2p: Libp2p<T> | undefined
  Object.defineProperty(helia, 'libp2p', {
    configurable: true,
    enumerable: true,
    get () {
      if (libp2p == null) throw new Error('the Helia node has not been started')
      return libp2p
    }
  })
  helia.addMixin({
    name: 'libp2p',
    start: async () => {
      libp2p ??= await createLibp2p({ ...libp2pOptions, datastore: libp2pOptions.datastore ?? helia.datastore, nodeInfo: { name: helia.info.name, version: helia.info.version, ...libp2pOptions.nodeInfo } })
      if (!helia.hasRouter('libp2p-router')) helia.addRouter(libp2pRouting(libp2p))
      await libp2p.start()
    },
    stop: async () => { await libp2p?.stop() }
  })
  return helia as unknown as HeliaWithLibp2p<T>
}
