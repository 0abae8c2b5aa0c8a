// The flags every command that talks to a running peer shares: --api, --data-dir (for the token), --json, -o.
import { UsageError } from './command.ts'
import { ApiClient } from '../api-client.ts'
import { ConfigError, DEFAULT_API_HOST, DEFAULT_API_PORT, parseApiAddress, type ApiAddress } from '../config.ts'

export const API_FLAGS = {
  api: { type: 'string' },
  'data-dir': { type: 'string' },
  json: { type: 'boolean' },
  output: { type: 'string', short: 'o' }
} as const

export const API_FLAGS_USAGE = `  --api HOST:PORT   the peer's control API (default $TANDEM_API, else ${DEFAULT_API_HOST}:${DEFAULT_API_PORT})
  --data-dir DIR    the peer's data dir, to read its API token (default $TANDEM_DATA_DIR, else $TANDEM_API_TOKEN)
  -o FORMAT         table (default), wide (full peer ids), json or yaml
  --json            print JSON (the same as -o json)`

/** A client for the peer named by --api (else $TANDEM_API), with the token from --data-dir (else $TANDEM_DATA_DIR) or TANDEM_API_TOKEN. */
export async function connectFromFlags (values: { api?: string, 'data-dir'?: string }, env: NodeJS.ProcessEnv = process.env): Promise<ApiClient> {
  const api = values.api ?? nonEmpty(env.TANDEM_API)
  const dataDir = values['data-dir'] ?? nonEmpty(env.TANDEM_DATA_DIR)
  let address: ApiAddress
  try {
    address = api != null ? parseApiAddress(api) : { host: DEFAULT_API_HOST, port: DEFAULT_API_PORT }
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(`${values.api != null ? '--api' : 'TANDEM_API'}: ${err.message}`)
    throw err
  }
  try {
    return await ApiClient.connect(address, { dataDir, env })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}

function nonEmpty (value: string | undefined): string | undefined { return value == null || value === '' ? undefined : value }
