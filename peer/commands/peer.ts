// `tandem peer start`: runs a peer in the foreground until SIGINT/SIGTERM.
import { resolve } from 'node:path'
import { readFileSync } from 'node:fs'
import { OperatorSigner, parsePublicKeys } from '../../consensus/authority.ts'
import { UsageError, type Command } from './command.ts'
import { parseFlags } from './args.ts'
import { Peer } from '../daemon.ts'
import { MissionService } from '../missions.ts'
import {
  ConfigError, DEFAULT_API_HOST, DEFAULT_API_PORT, DEFAULT_LISTEN, defaultDockerHost, failureDetectorFromEnv,
  formatApiAddress, parseApiAddress, type OperatorConfig, type PeerConfig
} from '../config.ts'
import { multiaddr } from '@multiformats/multiaddr'
import { boardNames, findBoard } from '../../boards/profiles.ts'
import { DEFAULT_DOCKER_EXEC_ROOT } from '../../checkpoint/runtime.ts'
import { API_FLAGS, API_FLAGS_USAGE, connectFromFlags } from './api-flags.ts'
import { loadOperatorSigner } from './operator-key.ts'

const USAGE = `usage: tandem peer start --data-dir DIR [--listen MULTIADDR]... [--bootstrap MULTIADDR]...
                         [--api HOST:PORT] [--swarm-key FILE] [--board NAME] [--no-mdns] [--docker-host URL]
                         [--docker-exec-root DIR] (--operator-pub FILE... | --operator-key FILE | --insecure-open-missions)

  --data-dir DIR        identity, lock, API token and block store of this peer (created if missing)
  --listen MULTIADDR    address to listen on, repeatable (default ${DEFAULT_LISTEN.join(' ')})
  --bootstrap MULTIADDR peer to join through (with /p2p/<id>), repeatable
  --api HOST:PORT       control API address (default ${DEFAULT_API_HOST}:${DEFAULT_API_PORT}; port 0 = any free port)
  --swarm-key FILE      pre-shared key of a private swarm (see 'tandem swarm-key generate')
  --board NAME          board profile instead of detecting the host: ${boardNames().join(', ')}
  --no-mdns             do not discover peers by mDNS on the local network
  --docker-host URL     Docker Engine of this board (default $DOCKER_HOST, else unix:///var/run/docker.sock)
  --docker-exec-root DIR  that daemon's --exec-root (default /run/docker): checkpoints call its runc directly
  --operator-pub FILE   operator public key(s) this board trusts (see 'tandem operator-key create'), repeatable:
                        only missions, removals, moves and revocations they signed are accepted
  --operator-key FILE   the operator private key, held by this board: its control API signs requests (its public
                        part is trusted too); boards without it still run missions, they cannot create them
  --insecure-open-missions  development only: no operator key, anyone holding the swarm key may deploy

Failure detector timings can be overridden by environment, e.g. TANDEM_FD_SUSPECT_AFTER_MS=800.

       tandem peer revoke PEER_ID [--operator-key FILE] [--api HOST:PORT] [--data-dir DIR] [--json]

  removes a board from the swarm for good: every board refuses its connections and messages, its missions fail
  over. Signed with --operator-key FILE, or by the peer named by --api if it holds the operator key.
${API_FLAGS_USAGE}`

function checkMultiaddr (flag: string, value: string): string {
  try {
    multiaddr(value)
    return value
  } catch (err) {
    throw new UsageError(`${flag}: '${value}' is not a multiaddr (${(err as Error).message})`)
  }
}

/** Builds a PeerConfig from `peer start` flags; bad flags throw UsageError. */
export function peerConfigFromArgs (argv: string[], env: NodeJS.ProcessEnv = process.env): PeerConfig {
  const { values, positionals } = parseFlags(argv, {
    'data-dir': { type: 'string' },
    listen: { type: 'string', multiple: true },
    bootstrap: { type: 'string', multiple: true },
    api: { type: 'string' },
    'swarm-key': { type: 'string' },
    board: { type: 'string' },
    'no-mdns': { type: 'boolean' },
    'docker-host': { type: 'string' },
    'docker-exec-root': { type: 'string' },
    'operator-pub': { type: 'string', multiple: true },
    'operator-key': { type: 'string' },
    'insecure-open-missions': { type: 'boolean' }
  }, true)
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0] as string}'`)
  const dataDir = values['data-dir']
  if (dataDir == null || dataDir === '') throw new UsageError('--data-dir is required')
  if (values.board != null && findBoard(values.board) == null) {
    throw new UsageError(`--board: unknown board '${values.board}' (known: ${boardNames().join(', ')})`)
  }
  const dockerHost = values['docker-host'] ?? defaultDockerHost(env)
  if (!/^(unix|tcp|http):\/\//.test(dockerHost)) throw new UsageError(`--docker-host: '${dockerHost}' must start with unix://, tcp:// or http://`)
  try {
    const config: PeerConfig = {
      dataDir: resolve(dataDir),
      listen: (values.listen ?? DEFAULT_LISTEN).map(addr => checkMultiaddr('--listen', addr)),
      bootstrap: (values.bootstrap ?? []).map(addr => {
        checkMultiaddr('--bootstrap', addr)
        if (!addr.includes('/p2p/')) throw new UsageError(`--bootstrap: '${addr}' needs the peer id (/p2p/<id>)`)
        return addr
      }),
      api: values.api != null ? parseApiAddress(values.api) : { host: DEFAULT_API_HOST, port: DEFAULT_API_PORT },
      swarmKeyFile: values['swarm-key'] != null ? resolve(values['swarm-key']) : undefined,
      board: values.board,
      mdns: values['no-mdns'] !== true,
      dockerHost,
      dockerExecRoot: resolve(values['docker-exec-root'] ?? DEFAULT_DOCKER_EXEC_ROOT),
      failureDetector: failureDetectorFromEnv(env)
    }
    config.operator = operatorConfigFrom(values['operator-pub'] ?? [], values['operator-key'], values['insecure-open-missions'] === true)
    return config
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message)
    throw err
  }
}

/** The operator keys from the flags, read and checked now: a bad or missing key file exits 2 before the peer starts. */
function operatorConfigFrom (publicFiles: string[], privateFile: string | undefined, open: boolean): OperatorConfig {
  const read = (flag: string, file: string): string => {
    try { return readFileSync(file, 'utf8') } catch (err) { throw new UsageError(`${flag}: cannot read ${file}: ${(err as Error).message}`) }
  }
  const publicKeys = publicFiles.flatMap(file => {
    try { return parsePublicKeys(read('--operator-pub', file)) } catch (err) {
      if (err instanceof UsageError) throw err
      throw new UsageError(`--operator-pub: ${file}: ${(err as Error).message}`)
    }
  })
  if (privateFile != null) {
    try { publicKeys.push(new OperatorSigner(read('--operator-key', privateFile)).publicKey) } catch (err) {
      if (err instanceof UsageError) throw err
      throw new UsageError(`--operator-key: ${privateFile}: ${(err as Error).message}`)
    }
  }
  if (open && publicKeys.length > 0) throw new UsageError('--insecure-open-missions contradicts --operator-pub/--operator-key')
  if (!open && publicKeys.length === 0) {
    throw new UsageError('no operator key: pass --operator-pub FILE (the public key of \'tandem operator-key create\') or --operator-key FILE; ' +
      'only for development, --insecure-open-missions lets anyone holding the swarm key deploy')
  }
  return { publicKeys: [...new Set(publicKeys)], ...(privateFile != null ? { privateKeyFile: resolve(privateFile) } : {}), open }
}

async function runPeer (argv: string[]): Promise<number> {
  const config = peerConfigFromArgs(argv)
  const peer = new Peer(config)
  try {
    await peer.start()
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message)
    throw err
  }
  const missions = new MissionService({ peer })
  try {
    await missions.start()
  } catch (err) {
    await peer.stop()
    throw err
  }
  const api = formatApiAddress(peer.api.address)
  console.log(`tandem peer ${peer.peerId} (board ${peer.board.name}, ${peer.board.arch})`)
  for (const addr of peer.addrs()) console.log(`listening ${addr}`)
  console.log(`api http://${api} (token in ${config.dataDir}/api-token)`)
  console.log(`ready ${JSON.stringify({ peerId: peer.peerId, addrs: peer.addrs(), api, pid: process.pid })}`)

  // SIGHUP re-reads the operator key files (systemd: ExecReload=/bin/kill -HUP $MAINPID): a key rotation needs no restart.
  const onReload = (): void => {
    let operator: OperatorConfig | undefined
    try {
      operator = peerConfigFromArgs(argv).operator
    } catch (err) {
      console.error(`SIGHUP: operator keys not reloaded: ${(err as Error).message}`)
      return
    }
    if (operator != null) missions.reloadOperator(operator).catch(err => { console.error(`SIGHUP: operator keys not reloaded: ${(err as Error).message}`) })
  }
  process.on('SIGHUP', onReload)
  await new Promise<void>(resolve => {
    const onSignal = (signal: NodeJS.Signals): void => {
      console.log(`received ${signal}, stopping`)
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      resolve()
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })
  // A clean stop hands the missions this peer runs to their backups first (up to 8 s), then stops.
  const forced = setTimeout(() => {
    console.error('peer: shutdown took longer than 15 s, exiting')
    process.exit(1)
  }, 15_000)
  forced.unref()
  await missions.stop()
  await peer.stop()
  console.log('stopped')
  // libp2p may leave sockets or timers behind; the peer is stopped, so leave now.
  setTimeout(() => process.exit(0), 50).unref()
  return 0
}

async function revokePeer (argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...API_FLAGS, 'operator-key': { type: 'string' } }, true)
  const [peerId, extra] = positionals
  if (peerId == null || extra != null) throw new UsageError(`revoke needs one PEER_ID\n${USAGE}`)
  const signer = values['operator-key'] != null ? await loadOperatorSigner(values['operator-key']) : undefined
  const grant = signer?.sign({ op: 'revoke', subject: peerId, deployId: null, spec: null, to: null, at: Date.now() })
  const client = await connectFromFlags(values)
  const result = await client.request<{ revoked: string }>('POST', '/v1/revocations', { peer: peerId, ...(grant == null ? {} : { grant }) })
  console.log(values.json === true ? JSON.stringify(result) : `revoked ${result.revoked}: every board refuses it from now on`)
  return 0
}

export const command: Command = {
  async run (argv) {
    const [sub, ...rest] = argv
    if (sub === '--help' || sub === '-h' || rest.includes('--help')) {
      console.log(USAGE)
      return 0
    }
    if (sub === 'revoke') return await revokePeer(rest)
    if (sub !== 'start') throw new UsageError(sub == null ? `missing subcommand\n${USAGE}` : `unknown subcommand '${sub}'\n${USAGE}`)
    return await runPeer(rest)
  }
}
