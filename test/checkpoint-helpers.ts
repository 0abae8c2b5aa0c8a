// Shared fixtures of the checkpoint tests: swarm nodes on loopback and the Docker/CRIU gate.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { existsSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { createSwarmNode, type SwarmNode } from '../peer/node.ts'
import { gateOn } from './helpers/requirements.ts'
import { until } from '../harness/observe.ts'

export interface Teardown { teardown: (fn: () => unknown) => void }

export async function tempDir (t: Teardown, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `tandem-${prefix}-`))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

/** A swarm node with its own blockstore, listening on loopback only, no discovery. */
export async function swarmNode (t: Teardown, dir: string, privateKey?: PrivateKey): Promise<SwarmNode> {
  const node = await createSwarmNode({
    privateKey: privateKey ?? await generateKeyPair('Ed25519'),
    dataDir: dir,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: [],
    mdns: false
  })
  t.teardown(async () => { await node.stop() })
  return node
}

/** Two boards' nodes, dialled to each other over loopback TCP. */
export async function connectedPair (t: Teardown, root: string): Promise<[SwarmNode, SwarmNode]> {
  const a = await swarmNode(t, join(root, 'node-a'))
  const b = await swarmNode(t, join(root, 'node-b'))
  const addr = a.libp2p.getMultiaddrs()[0]
  if (addr == null) throw new Error('node a has no listen address')
  await b.libp2p.dial(addr)
  return [a, b]
}

/**
 * Why Docker/CRIU tests cannot run here, or null when they can. Under CI=true the caller must fail on a
 * reason instead of skipping.
 */
export function dockerCriuMissing (): string | null {
  if (process.getuid?.() !== 0) return 'needs root (private dockerd per board)'
  if (!existsSync('/usr/sbin/dockerd')) return 'no /usr/sbin/dockerd (run scripts/provision.sh)'
  const criu = spawnSync('criu', ['--version'], { encoding: 'utf8', env: { ...process.env, PATH: `/usr/local/sbin:${process.env.PATH ?? ''}` } })
  const version = /Version:\s*(\d+)\.(\d+)/.exec(criu.stdout ?? '')
  if (version == null) return 'no criu on PATH (run scripts/provision.sh)'
  if (Number(version[1]) < 4 || (Number(version[1]) === 4 && Number(version[2]) < 1)) return `criu ${version[1]}.${version[2]} < 4.1`
  if (!existsSync('/var/lib/tandem/images/base-images.manifest')) return 'no base image cache (run scripts/provision.sh)'
  return null
}

/** Skip (outside CI) or fail (CI=true) a Docker/CRIU test file; returns true when it may run. */
export function gateDockerCriu (t: { fail: (msg: string) => void, comment: (msg: string) => void }): boolean {
  return gateOn(t, dockerCriuMissing())
}

export async function waitFor<T> (what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 20_000): Promise<T> {
  return await until(what, async () => (await probe()) ?? undefined, timeoutMs, undefined, 100)
}
