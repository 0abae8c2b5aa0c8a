// A private network for simulated boards: one network namespace per board, a veth pair per board on one bridge in
// the root namespace, addresses from 10.213.<n>.0/24 (n picked so it collides neither with a host route nor with
// another run). The bridge has .1, so the test process reaches every board; board i has .(i + 2). Links are cut with
// iptables DROP rules inside the namespaces (a real cut: no reset, no refusal), and healed by removing them.
//
// Everything made here is recorded under /run/tandem-netns/<n>/ with the owner's `pid starttime`: a network whose
// owner died without cleaning up (SIGKILL, a crash) is removed by the next run (its processes killed, namespaces,
// veths and bridge deleted); exit hooks remove it on a normal exit or a signal.
import { orphanedEntries, processIdentity } from './ownership.ts'
import { execFile, spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { onOwnerExit } from './exit-hooks.ts'

const STATE_ROOT = '/run/tandem-netns'
const PREFIX = '10.213'
const CHAIN = 'TANDEM-CUT'
const NETNS_DIR = '/run/netns'

export class NetnsError extends Error {
  override name = 'NetnsError'
}

/** One board's place in the network. */
export interface NetnsHost {
  /** Index in the network (board i+1 of the swarm). */
  readonly index: number
  /** Network namespace name (`ip netns`), unique on this host while the network exists. */
  readonly ns: string
  /** Path of the namespace's handle, for `nsenter --net=`. */
  readonly nsPath: string
  /** The board's IPv4 address inside its namespace. */
  readonly address: string
  /** The veth end in the root namespace (attached to the bridge). */
  readonly hostVeth: string
}

function ipSync (args: string[]): { ok: boolean, out: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8' })
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}` }
}

/** PIDs of every process in a namespace (`ip netns pids`). */
function pidsIn (ns: string): number[] {
  const r = ipSync(['netns', 'pids', ns])
  if (!r.ok) return []
  return r.out.split(/\s+/).filter(s => /^\d+$/.test(s)).map(Number)
}

/**
 * Kills every process of the namespaces, deletes the veths (at once: a namespace's own go with it only later, from a
 * kernel work queue), the namespaces and the bridge. Synchronous: exit hooks use it. Returns what could not be
 * deleted: the caller keeps the record of a network with leftovers, so the next run's reaper tries again (deleting the
 * record first once left namespaces behind that no run owned).
 */
function destroySync (namespaces: string[], veths: string[], bridge: string): string[] {
  for (let attempt = 0; attempt < 2; attempt++) {
    // Killed twice: a process may fork while the first round runs.
    for (const ns of namespaces) for (const pid of pidsIn(ns)) { try { process.kill(pid, 'SIGKILL') } catch {} }
    for (const veth of veths) {
      if (ipSync(['link', 'show', 'dev', veth]).ok) ipSync(['link', 'del', 'dev', veth])
    }
    for (const ns of namespaces) {
      if (existsSync(join(NETNS_DIR, ns))) ipSync(['netns', 'del', ns])
    }
    if (ipSync(['link', 'show', 'dev', bridge]).ok) ipSync(['link', 'del', 'dev', bridge])
    const left = [
      ...namespaces.filter(ns => existsSync(join(NETNS_DIR, ns))),
      ...(ipSync(['link', 'show', 'dev', bridge]).ok ? [bridge] : [])
    ]
    if (left.length === 0) return []
    if (attempt === 1) return left
    spawnSync('sleep', ['0.2'])
  }
  return []
}

interface StateFile { bridge: string, namespaces: string[], veths: string[] }

function readState (dir: string): StateFile {
  try { return JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as StateFile } catch { return { bridge: '', namespaces: [], veths: [] } }
}

/** Removes the networks of runs whose owner died without cleaning up; networks of live processes are left alone. */
export function reapOrphanNetworks (): number {
  let reaped = 0
  for (const entry of orphanedEntries(STATE_ROOT)) {
    const dir = join(STATE_ROOT, entry)
    const state = readState(dir)
    const left = destroySync(state.namespaces ?? [], state.veths ?? [], state.bridge !== '' ? state.bridge : `tnd${entry}br`)
    if (left.length > 0) {
      process.emitWarning(`tandem netns: could not delete ${left.join(', ')} of an orphaned network; its record stays in ${dir}`)
      continue
    }
    rmSync(dir, { recursive: true, force: true })
    reaped++
  }
  return reaped
}

/** Third octets of IPv4 routes and addresses on this host that overlap 10.213.0.0/16 (whole /16 or larger: all). */
function usedSubnets (): Set<number> | 'all' {
  const used = new Set<number>()
  const routes = ipSync(['-4', 'route', 'show', 'table', 'all'])
  const addrs = ipSync(['-4', '-o', 'addr', 'show'])
  for (const text of [routes.out, addrs.out]) {
    for (const m of text.matchAll(/(\d+)\.(\d+)\.(\d+)\.(\d+)(?:\/(\d+))?/g)) {
      const [a, b, c] = [Number(m[1]), Number(m[2]), Number(m[3])]
      const bits = m[5] != null ? Number(m[5]) : 32
      if (bits === 0) continue // the default route
      const value = ((a << 24) | (b << 16) | (c << 8)) >>> 0
      const ours = (10 << 24 | 213 << 16) >>> 0
      const mask = bits >= 32 ? 0xffffffff : (~((1 << (32 - bits)) - 1)) >>> 0
      if (bits <= 16) {
        if (((value & mask) >>> 0) === ((ours & mask) >>> 0)) return 'all'
      } else if (a === 10 && b === 213) {
        const span = bits >= 24 ? 1 : 1 << (24 - bits)
        const from = c & ~(span - 1)
        for (let k = from; k < from + span; k++) used.add(k)
      }
    }
  }
  return used
}

export interface CreateSwarmNetworkOptions {
  /** Number of boards (at most 250). */
  count: number
}

let exitHookInstalled = false
const liveNetworks = new Set<SwarmNetwork>()

export class SwarmNetwork {
  /** n of 10.213.n.0/24. */
  readonly subnet: number
  readonly bridge: string
  readonly bridgeAddress: string
  readonly hosts: NetnsHost[]
  readonly #stateDir: string
  /** Per namespace, the addresses it must not reach. */
  readonly #blocked = new Map<string, Set<string>>()
  #destroyed = false

  private constructor (subnet: number, hosts: NetnsHost[]) {
    this.subnet = subnet
    this.bridge = `tnd${subnet}br`
    this.bridgeAddress = `${PREFIX}.${subnet}.1`
    this.hosts = hosts
    this.#stateDir = join(STATE_ROOT, String(subnet))
    for (const host of hosts) this.#blocked.set(host.ns, new Set())
  }

  /**
   * Makes the bridge and one namespace per board. Needs root, iproute2 and iptables. The subnet is claimed by an
   * atomic mkdir under /run/tandem-netns, so two runs side by side never pick the same one.
   */
  static async create (options: CreateSwarmNetworkOptions): Promise<SwarmNetwork> {
    if (process.getuid?.() !== 0) throw new NetnsError('network namespaces need root')
    if (options.count < 1 || options.count > 250) throw new NetnsError(`count ${options.count}: 1..250 boards`)
    reapOrphanNetworks()
    mkdirSync(STATE_ROOT, { recursive: true })
    const owner = processIdentity(process.pid)
    if (owner == null) throw new NetnsError('cannot read this process\'s identity from /proc')
    const used = usedSubnets()
    if (used === 'all') throw new NetnsError(`a host route or address covers ${PREFIX}.0.0/16: no private subnet free`)
    const start = Math.floor(Math.random() * 250) + 2
    let subnet: number | undefined
    for (let k = 0; k < 254 && subnet == null; k++) {
      const n = ((start + k) % 254) + 1
      if (used.has(n)) continue
      if (ipSync(['link', 'show', 'dev', `tnd${n}br`]).ok) continue
      try {
        mkdirSync(join(STATE_ROOT, String(n)))
      } catch {
        continue
      }
      subnet = n
      // The owner first: a claim without one is left alone by the reaper (it is being made).
      writeFileSync(join(STATE_ROOT, String(n), 'owner'), `${owner}\n`)
    }
    if (subnet == null) throw new NetnsError(`no free subnet in ${PREFIX}.0.0/16`)
    const tag = `tnd${subnet}`
    const hosts: NetnsHost[] = Array.from({ length: options.count }, (_, index) => ({
      index,
      ns: `tandem-${subnet}-b${index + 1}`,
      nsPath: join(NETNS_DIR, `tandem-${subnet}-b${index + 1}`),
      address: `${PREFIX}.${subnet}.${index + 2}`,
      hostVeth: `${tag}h${index + 1}`
    }))
    const network = new SwarmNetwork(subnet, hosts)
    writeFileSync(join(network.#stateDir, 'state.json'), JSON.stringify({ bridge: network.bridge, namespaces: hosts.map(h => h.ns), veths: hosts.map(h => h.hostVeth) }))
    liveNetworks.add(network)
    if (!exitHookInstalled) {
      exitHookInstalled = true
      onOwnerExit(() => { for (const n of liveNetworks) n.destroySync() })
    }
    try {
      const lines = [
        `link add ${network.bridge} type bridge`,
        `addr add ${network.bridgeAddress}/24 dev ${network.bridge}`,
        `link set ${network.bridge} up`
      ]
      for (const host of hosts) {
        lines.push(
          `netns add ${host.ns}`,
          `link add ${host.hostVeth} type veth peer name ${tag}p${host.index + 1} netns ${host.ns}`,
          `link set ${host.hostVeth} master ${network.bridge} up`
        )
      }
      await ipBatch([], lines)
      for (const host of hosts) {
        await ipBatch(['-n', host.ns], [
          'link set lo up',
          `addr add ${host.address}/24 dev ${tag}p${host.index + 1}`,
          `link set ${tag}p${host.index + 1} up`
        ])
      }
      for (const host of hosts) {
        await iptablesRestore(host, [`:${CHAIN} - [0:0]`, `-A INPUT -j ${CHAIN}`, `-A OUTPUT -j ${CHAIN}`])
      }
    } catch (err) {
      network.destroySync()
      throw err
    }
    return network
  }

  host (index: number): NetnsHost {
    const host = this.hosts[index]
    if (host == null) throw new NetnsError(`no board ${index} in this network`)
    return host
  }

  /** a and b stop reaching each other (both directions, packets dropped); other links stay as they are. */
  async cut (a: NetnsHost, b: NetnsHost): Promise<void> {
    if (a === b) return
    this.#set(a).add(b.address)
    this.#set(b).add(a.address)
    await Promise.all([this.#apply(a), this.#apply(b)])
  }

  /** Restores one link cut before. */
  async join (a: NetnsHost, b: NetnsHost): Promise<void> {
    this.#set(a).delete(b.address)
    this.#set(b).delete(a.address)
    await Promise.all([this.#apply(a), this.#apply(b)])
  }

  /** Hosts in different groups cannot reach each other; within a group, and hosts in no group, links are as before. */
  async partition (groups: NetnsHost[][]): Promise<void> {
    const changed = new Set<NetnsHost>()
    for (let i = 0; i < groups.length; i++) {
      for (let j = i + 1; j < groups.length; j++) {
        for (const a of groups[i] as NetnsHost[]) {
          for (const b of groups[j] as NetnsHost[]) {
            if (a === b) continue
            this.#set(a).add(b.address)
            this.#set(b).add(a.address)
            changed.add(a).add(b)
          }
        }
      }
    }
    await Promise.all([...changed].map(async host => { await this.#apply(host) }))
  }

  /** Every link works again. */
  async heal (): Promise<void> {
    for (const set of this.#blocked.values()) set.clear()
    await Promise.all(this.hosts.map(async host => { await this.#apply(host) }))
  }

  /** The links cut now, as `a-b` address pairs (for reports). */
  cutLinks (): string[] {
    const pairs = new Set<string>()
    for (const host of this.hosts) {
      for (const other of this.#set(host)) pairs.add([host.address, other].sort().join('-'))
    }
    return [...pairs]
  }

  /** Kills what still runs in the namespaces, deletes them, the veths and the bridge. Idempotent. */
  destroySync (): void {
    if (this.#destroyed) return
    this.#destroyed = true
    liveNetworks.delete(this)
    const left = destroySync(this.hosts.map(h => h.ns), this.hosts.map(h => h.hostVeth), this.bridge)
    if (left.length > 0) {
      process.emitWarning(`tandem netns: could not delete ${left.join(', ')}; the record stays in ${this.#stateDir} for the next run to reap`)
      return
    }
    rmSync(this.#stateDir, { recursive: true, force: true })
  }

  async destroy (): Promise<void> { this.destroySync() }

  #set (host: NetnsHost): Set<string> {
    const set = this.#blocked.get(host.ns)
    if (set == null) throw new NetnsError(`${host.ns} is not in this network`)
    return set
  }

  async #apply (host: NetnsHost): Promise<void> {
    if (this.#destroyed) return
    // Declaring the chain in a --noflush restore flushes it: the new rule set replaces the old one in one commit.
    await iptablesRestore(host, [`:${CHAIN} - [0:0]`, ...[...this.#set(host)].sort().map(address => `-A ${CHAIN} -s ${address}/32 -j DROP`),
      ...[...this.#set(host)].sort().map(address => `-A ${CHAIN} -d ${address}/32 -j DROP`)])
  }
}

async function ipBatch (prefix: string[], lines: string[]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = execFile('ip', [...prefix, '-batch', '-'], (err, _stdout, stderr) => {
      if (err != null) reject(new NetnsError(`ip -batch failed: ${stderr || err.message}\n${lines.join('\n')}`))
      else resolve()
    })
    child.stdin?.end(`${lines.join('\n')}\n`)
  })
}

async function iptablesRestore (host: NetnsHost, rules: string[]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = execFile('nsenter', [`--net=${host.nsPath}`, 'iptables-restore', '--noflush'], (err, _stdout, stderr) => {
      if (err != null) reject(new NetnsError(`iptables-restore in ${host.ns} failed: ${stderr || err.message}`))
      else resolve()
    })
    child.stdin?.end(`*filter\n${rules.join('\n')}\nCOMMIT\n`)
  })
}

/** The command prefix that runs a program inside a namespace, as the program itself (nsenter execs: same PID). */
export function inNamespace (host: NetnsHost): string[] {
  return ['nsenter', `--net=${host.nsPath}`]
}
