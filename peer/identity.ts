// What a peer keeps in its data dir: its private key (its identity), its lock, its API token.
import { chmod, lstat, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'

export class DataDirLockedError extends Error {}

/** Loads the peer's private key from the data dir, creating it on first start. */
export async function loadOrCreateIdentity (dataDir: string): Promise<PrivateKey> {
  const path = join(dataDir, 'identity.key')
  let bytes: Uint8Array | undefined
  try {
    bytes = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  if (bytes != null) {
    try {
      return privateKeyFromProtobuf(bytes)
    } catch (err) {
      throw new Error(`identity key ${path} is corrupt: ${(err as Error).message}`)
    }
  }
  const key = await generateKeyPair('Ed25519')
  await writeFile(path, privateKeyToProtobuf(key), { mode: 0o600, flag: 'wx' })
  return key
}

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** An exclusive lock on a data dir held by this process (lock file with our PID). */
export class DataDirLock {
  readonly path: string
  #held = false

  constructor (dataDir: string) { this.path = join(dataDir, 'peer.lock') }

  /** Takes the lock; a lock left by a dead process is taken over, a live holder makes this throw. */
  async acquire (): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const handle = await open(this.path, 'wx', 0o600)
        await handle.writeFile(`${process.pid}\n`)
        await handle.close()
        this.#held = true
        return
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      const holder = Number.parseInt(await readFile(this.path, 'utf8').catch(() => ''), 10)
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) {
        throw new DataDirLockedError(`data dir is in use by another tandem peer (pid ${holder}, lock ${this.path})`)
      }
      await rm(this.path, { force: true })
    }
    throw new DataDirLockedError(`could not take the lock ${this.path}`)
  }

  async release (): Promise<void> {
    if (!this.#held) return
    this.#held = false
    const holder = Number.parseInt(await readFile(this.path, 'utf8').catch(() => ''), 10)
    if (holder === process.pid) await rm(this.path, { force: true })
  }
}

/**
 * Creates the data dir readable by its owner only (0700: its level databases, identity key and API token are then
 * out of other local users' reach whatever modes they have). An existing dir with a wider mode is narrowed, not
 * refused: a wider mode is a provisioning or umask accident the peer can fix safely itself, and refusing would keep
 * a board down after an upgrade without undoing what was exposed. The returned line says what was fixed, for the log.
 */
export async function ensureDataDir (dataDir: string): Promise<string | null> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const st = await lstat(dataDir)
  if (!st.isDirectory()) throw new Error(`data dir ${dataDir} is not a directory`)
  const mode = st.mode & 0o7777
  if ((mode & 0o077) === 0) return null
  await chmod(dataDir, mode & 0o700)
  return `data dir ${dataDir} had mode ${mode.toString(8).padStart(4, '0')}: narrowed to ${(mode & 0o700).toString(8).padStart(4, '0')} (other local users could read its identity key and databases until now)`
}

export { loadOrCreateApiToken, newApiToken, readApiToken, writeApiToken } from './api-token.ts'
