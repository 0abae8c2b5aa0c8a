// The control API's token in the data dir (`api-token`, 0600). Apart from identity.ts so that the CLI, which only
// reads it, does not load libp2p's crypto (~100 ms of every command's start-up).
import { chmod, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { apiTokenPath } from './config.ts'

const TOKEN_PATTERN = /^[0-9a-f]{48}$/

/** A new random API token (24 bytes, hex). */
export function newApiToken (): string { return randomBytes(24).toString('hex') }

/**
 * The data dir's API token: the one a previous start wrote (so scripts and scrape configs keep working across
 * restarts), or a new one when there is none, it is not a token this code wrote, or `rotate` asks for one.
 */
export async function loadOrCreateApiToken (dataDir: string, options: { rotate?: boolean } = {}): Promise<string> {
  if (options.rotate !== true) {
    const path = apiTokenPath(dataDir)
    const existing = await readFile(path, 'utf8').then(text => text.trim(), () => undefined)
    if (existing != null && TOKEN_PATTERN.test(existing)) {
      // Owner-only, whatever happened to the file's mode since.
      await chmod(path, 0o600)
      return existing
    }
  }
  const token = newApiToken()
  await writeApiToken(dataDir, token)
  return token
}

/** Writes the API token (readable by the owner only). */
export async function writeApiToken (dataDir: string, token: string): Promise<void> {
  // Written aside and renamed: a reader sees the old token or the new one, never an empty file.
  const path = apiTokenPath(dataDir)
  const next = `${path}.${process.pid}.new`
  await rm(next, { force: true })
  await writeFile(next, `${token}\n`, { mode: 0o600, flag: 'wx' })
  await rename(next, path)
}

export async function readApiToken (dataDir: string): Promise<string> {
  return (await readFile(apiTokenPath(dataDir), 'utf8')).trim()
}
