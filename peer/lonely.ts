import { connect } from 'node:net'

// A peer alone since it started says once, after LONELY_AFTER_MS, why that may be: what it has to find others with
// (swarm key, bootstrap addresses and how their dials failed, mDNS) and the likely causes those facts point to.

export const LONELY_AFTER_MS = 30_000

export interface LonelyFacts {
  swarmKeyFile: string | null
  bootstrap: string[]
  /** The last error of each bootstrap address's dial (none: no dial failed). */
  bootstrapErrors: Record<string, string>
  mdns: boolean
  /** Whether a plain TCP connection to each failed bootstrap address opened (a port that answers, unlike a dead host). */
  tcpReachable?: Record<string, boolean>
  listen: string[]
  /** Connections opened since start that closed again (e.g. a peer that dialled in and was dropped). */
  connectionsOpened: number
  aloneForMs: number
}

const WRONG_KEY = /handshake|decrypt|invalid|unexpected end|stream reset|ECONNRESET|encrypt|nonce|unexpected eof|reset|closed/i
const REFUSED = /ECONNREFUSED|refused/i
const TIMEOUT = /timed? ?out|abort|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/i

/** The single log line: the facts, then the causes they point to. */
export function lonelyReport (f: LonelyFacts): string {
  const seconds = Math.round(f.aloneForMs / 1000)
  const bootstrap = f.bootstrap.length === 0
    ? 'none'
    : f.bootstrap.map(addr => `${addr} (${f.bootstrapErrors[addr] != null ? `dial failed: ${f.bootstrapErrors[addr]}` : 'no dial failed'})`).join(', ')
  const facts = [
    `swarm key ${f.swarmKeyFile ?? 'none (an open swarm)'}`,
    `bootstrap ${bootstrap}`,
    `mDNS ${f.mdns ? 'on' : 'off'}`,
    `listening on ${f.listen.length === 0 ? 'nothing' : f.listen.join(', ')}`,
    `${f.connectionsOpened} connection${f.connectionsOpened === 1 ? '' : 's'} opened since start`
  ]
  const causes: string[] = []
  if (f.bootstrap.length === 0 && !f.mdns) causes.push('no bootstrap and mDNS off: nothing to find peers with (give --bootstrap /ip4/.../tcp/.../p2p/ID, or drop --no-mdns)')
  else if (f.bootstrap.length === 0) causes.push('no bootstrap: only mDNS, which finds peers on the same LAN segment (multicast, not across routers or VPNs); give --bootstrap for others')
  const errors = Object.entries(f.bootstrapErrors)
  for (const [addr, error] of errors) {
    if (REFUSED.test(error)) causes.push(`nothing listens at ${addr}: is its peer running, on that port?`)
    else if (TIMEOUT.test(error) && f.tcpReachable?.[addr] !== true) causes.push(`${addr} does not answer: wrong address, a firewall, or that board is off`)
    else if (WRONG_KEY.test(error) || (TIMEOUT.test(error) && f.tcpReachable?.[addr] === true)) {
      causes.push(f.swarmKeyFile != null
        ? `${addr} accepted the connection and it failed in the handshake${TIMEOUT.test(error) ? ' (the TCP port answers; the handshake never completed)' : ''}: most likely a different swarm key there (compare the key files; every board needs the same one)`
        : `${addr} accepted the connection and it failed in the handshake: that swarm probably uses a swarm key, and this peer has none (--swarm-key)`)
    }
  }
  if (f.swarmKeyFile == null && errors.length === 0) causes.push('no swarm key: boards started with --swarm-key cannot connect to this one, nor this one to them')
  if (f.swarmKeyFile != null && errors.length === 0 && f.bootstrap.length > 0) causes.push('the bootstrap dials did not fail, yet no peer stayed: the peers there may hold a different swarm key')
  if (f.swarmKeyFile != null && f.mdns && f.bootstrap.length === 0) causes.push('peers found by mDNS with a different swarm key cannot connect: check that every board holds the same key file')
  return `swarm: no other peer seen for ${seconds} s. Facts: ${facts.join('; ')}. Possible causes: ${causes.length === 0 ? 'none of the usual (no key / wrong key / no bootstrap / mDNS off) fits: check the network between the boards' : causes.join('; ')}`
}

/** Opens and closes a plain TCP connection to a multiaddr's /ip4|ip6/.../tcp/PORT; undefined when it has none. */
export async function tcpReachable (addr: string, timeoutMs = 2000): Promise<boolean | undefined> {
  const match = /^\/ip[46]\/([^/]+)\/tcp\/(\d+)/.exec(addr)
  if (match == null) return undefined
  return await new Promise(resolve => {
    const socket = connect({ host: match[1] as string, port: Number(match[2]) })
    const done = (ok: boolean): void => { socket.destroy(); resolve(ok) }
    socket.setTimeout(timeoutMs, () => { done(false) })
    socket.once('connect', () => { done(true) })
    socket.once('error', () => { done(false) })
  })
}
