// Shared fixtures of the checkpoint tests: swarm nodes on loopback and the Docker/CRIU gate.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createSwarmNode, type SwarmNode } from '../peer/node.ts'

export interface Teardown { teardown: (fn: () => unknown) => void }

export async function tempDir (t: Teardown, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `tandem-${prefix}-`))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

/** A swarm node with its own blockstore, listening on loopback only, no discovery. */
export async function swarmNode (t: Teardown, dir: string): Promise<SwarmNode> {
  const node = await createSwarmNode({
    privateKey: await generateKeyPair('Ed25519'),
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
