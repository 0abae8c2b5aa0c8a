// `tandem ui`: prints the URL of the peer's web dashboard (peer/dashboard.ts), with the API token in it.
import { UsageError, type Command } from './command.ts'
import { parseFlags } from './args.ts'
import { API_FLAGS, API_FLAGS_USAGE, connectFromFlags } from './api-flags.ts'
import { printable } from './terminal.ts'
import { formatApiAddress } from '../config.ts'
import type { ApiClient } from '../api-client.ts'

const USAGE = `usage: tandem ui [--api HOST:PORT] [--data-dir DIR] [--json]

Prints the URL of the peer's web dashboard: http://HOST:PORT/ui/?token=TOKEN, the token read from the peer's data
dir. Open it in a browser that reaches the control API (it listens on loopback: a browser on the same machine, or
through an SSH tunnel, e.g. ssh -L 7461:127.0.0.1:7461 BOARD). The page keeps the token for its tab and takes it
out of the address bar. It shows the swarm's boards, the missions, a timeline of checkpoints and failovers, and the
events as they come. Every file is served by the peer: it works offline.

${API_FLAGS_USAGE.split('\n').filter(line => !line.includes('-o FORMAT')).join('\n')}`

/** The dashboard's URL for a client's peer and token. */
export function dashboardUrl (client: ApiClient): string {
  return `http://${formatApiAddress(client.address)}/ui/?token=${encodeURIComponent(client.token)}`
}

export const command: Command = {
  async run (argv) {
    if (argv.includes('--help') || argv.includes('-h')) { console.log(USAGE); return 0 }
    const { values, positionals } = parseFlags(argv, API_FLAGS, true)
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${printable(positionals[0] as string)}'`)
    const client = await connectFromFlags(values)
    const url = dashboardUrl(client)
    // The URL is printed either way (the peer may be starting); a warning says when it does not answer now.
    let reachable = true
    try {
      await client.request('GET', '/v1/dashboard', undefined, { timeoutMs: 3000 })
    } catch (err) {
      reachable = false
      process.stderr.write(`tandem ui: warning: ${printable((err as Error).message)}\n`)
    }
    if (values.json === true || values.output === 'json') process.stdout.write(`${JSON.stringify({ url, reachable })}\n`)
    else process.stdout.write(`${url}\n`)
    return 0
  }
}
