// The flags every command that talks to a running peer shares: --api, --data-dir (for the token), --json.
import { UsageError } from './command.ts'
import { ApiClient } from '../api-client.ts'
import { ConfigError, DEFAULT_API_HOST, DEFAULT_API_PORT, parseApiAddress, type ApiAddress } from '../config.ts'

export const API_FLAGS = {
  api: { type: 'string' },
  'data-dir': { type: 'string' },
  json: { type: 'boolean' }
} as const

export const API_FLAGS_USAGE = `  --api HOST:PORT   the peer's control API (default ${DEFAULT_API_HOST}:${DEFAULT_API_PORT})
  --data-dir DIR    the peer's data dir, to read its API token (else $TANDEM_API_TOKEN)
  --json            print JSON`

/** A client for the peer named by --api, with the token from --data-dir or TANDEM_API_TOKEN; bad input is a UsageError. */
export async function connectFromFlags (values: { api?: string, 'data-dir'?: string }): Promise<ApiClient> {
  let address: ApiAddress
  try {
    address = values.api != null ? parseApiAddress(values.api) : { host: DEFAULT_API_HOST, port: DEFAULT_API_PORT }
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message)
    throw err
  }
  try {
    return await ApiClient.connect(address, { dataDir: values['data-dir'] })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}
