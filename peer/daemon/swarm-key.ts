// The pre-shared key of a private swarm (libp2p pnet): only boards holding the same key can connect.
import { readFile } from 'node:fs/promises'
import { ConfigError } from '../config.ts'

const SWARM_KEY_PATTERN = /^\/key\/swarm\/psk\/1\.0\.0\/\r?\n\/base16\/\r?\n[0-9a-fA-F]{64}\s*$/

/** Reads and checks a pre-shared swarm key file (libp2p pnet format). */
export async function readSwarmKey (path: string): Promise<Uint8Array> {
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (err) {
    throw new ConfigError(`cannot read swarm key ${path}: ${(err as Error).message}`)
  }
  if (!SWARM_KEY_PATTERN.test(bytes.toString('utf8'))) {
    throw new ConfigError(`swarm key ${path} is not a libp2p pre-shared key (expected '/key/swarm/psk/1.0.0/', '/base16/', 64 hex digits)`)
  }
  return new Uint8Array(bytes)
}
