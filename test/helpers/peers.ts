// Peer processes for tap tests: everything spawned through here is stopped in the test's teardown.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawnPeer, spawnSwarm, respawnPeer, type PeerHandle, type SpawnPeerOptions } from '../../harness/spawn-peer.ts'
import { generateSwarmKey } from '../../peer/commands/swarm-key.ts'
import { writeFile } from 'node:fs/promises'

export interface Teardown { teardown (fn: () => void | Promise<void>): void }

export async function peerFor (t: Teardown, options: SpawnPeerOptions = {}): Promise<PeerHandle> {
  const handle = await spawnPeer(options)
  t.teardown(async () => { await handle.stop() })
  return handle
}

export async function swarmFor (t: Teardown, count: number, options: SpawnPeerOptions = {}): Promise<PeerHandle[]> {
  const handles = await spawnSwarm(count, options)
  t.teardown(async () => { await Promise.all(handles.map(async handle => await handle.stop())) })
  return handles
}

export async function respawnFor (t: Teardown, previous: PeerHandle, options: SpawnPeerOptions = {}): Promise<PeerHandle> {
  const handle = await respawnPeer(previous, options)
  t.teardown(async () => { await handle.stop() })
  return handle
}

/** A temp dir removed in teardown. */
export async function tempDirFor (t: Teardown, prefix = 'tandem-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

/** A fresh swarm key file in a temp dir (so test swarms never meet anything else). */
export async function swarmKeyFor (t: Teardown): Promise<string> {
  const path = join(await tempDirFor(t, 'tandem-key-'), 'swarm.key')
  await writeFile(path, generateSwarmKey(), { mode: 0o600 })
  return path
}
