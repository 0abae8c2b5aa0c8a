// Alone since start: say once why that may be (peer/lonely.ts).
import type { SwarmNode } from '../node.ts'
import type { Membership } from '../membership.ts'
import type { PeerConfig } from '../config.ts'
import type { LogLine } from '../logger.ts'
import { LONELY_AFTER_MS, lonelyReport, tcpReachable } from '../lonely.ts'

export interface LonelyWarningOptions {
  libp2p: SwarmNode['libp2p']
  membership: Membership
  config: Pick<PeerConfig, 'swarmKeyFile' | 'bootstrap' | 'mdns'>
  /** The last error of each bootstrap address's dial (peer/daemon/connections.ts), read when the warning is due. */
  bootstrapErrors: Record<string, string>
  addrs: () => string[]
  running: () => boolean
  startedAt: number
  log: LogLine
}

/** Warns once, after TANDEM_LONELY_AFTER_MS (LONELY_AFTER_MS), if no member was heard by then; returns the cancel. */
export function warnWhenLonely (options: LonelyWarningOptions): () => void {
  const { libp2p, membership, config, bootstrapErrors } = options
  let connectionsOpened = 0
  const onOpen = (): void => { connectionsOpened++ }
  libp2p.addEventListener('connection:open', onOpen)
  const lonelyAfterMs = Number(process.env.TANDEM_LONELY_AFTER_MS ?? LONELY_AFTER_MS)
  const warn = async (): Promise<void> => {
    if (membership.list().length > 0 || !options.running()) return
    // A dial that timed out: a port that answers TCP means the handshake hung (another swarm key), not a dead host.
    const reachable: Record<string, boolean> = {}
    for (const addr of Object.keys(bootstrapErrors)) {
      const ok = await tcpReachable(addr)
      if (ok != null) reachable[addr] = ok
    }
    if (membership.list().length > 0 || !options.running()) return
    options.log(lonelyReport({
      tcpReachable: reachable,
      swarmKeyFile: config.swarmKeyFile ?? null,
      bootstrap: config.bootstrap,
      bootstrapErrors,
      mdns: config.mdns,
      listen: options.addrs(),
      connectionsOpened,
      aloneForMs: Date.now() - options.startedAt
    }), { level: 'warn' })
  }
  const lonelyTimer = setTimeout(() => { void warn() }, lonelyAfterMs)
  lonelyTimer.unref()
  return () => { clearTimeout(lonelyTimer); libp2p.removeEventListener('connection:open', onOpen) }
}
