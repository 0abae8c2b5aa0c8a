// `tandem peer start`: runs a peer in the foreground until SIGINT/SIGTERM.
import { flushCompileCache } from 'node:module'
import { resolve } from 'node:path'
import { readFileSync } from 'node:fs'
import { OperatorSigner, parsePublicKeys } from '../../consensus/authority.ts'
import { UsageError, type Command } from './command.ts'
import { parseFlags } from './args.ts'
import { Peer } from '../daemon.ts'
import { PeerMissions } from '../missions/index.ts'
import {
  ConfigError, consensusConfigFor, DEFAULT_API_HOST, DEFAULT_API_PORT, DEFAULT_LISTEN, defaultDockerHost, failureDetectorFromEnv,
  apiTokenPath, formatApiAddress, parseApiAddress, type OperatorConfig, type PeerConfig
} from '../config.ts'
import { multiaddr } from '@multiformats/multiaddr'
import { boardNames, findBoard } from '../../boards/profiles.ts'
import { DEFAULT_DOCKER_EXEC_ROOT } from '../../checkpoint/runtime.ts'
import { loadOperatorSigner } from './operator-key.ts'
import { LOG_FORMAT_ENV, LOG_FORMATS, logFormatFromEnv, openLogger, type LogFormat, type PeerLogger } from '../logger.ts'
import { printable } from './terminal.ts'
import { API_FLAGS, API_FLAGS_USAGE, connectFromFlags } from './api-flags.ts'
import { DataDirLock, newApiToken, writeApiToken } from '../identity.ts'

const USAGE = `usage: tandem peer start --data-dir DIR [--listen MULTIADDR]... [--bootstrap MULTIADDR]...
                         [--api HOST:PORT] [--swarm-key FILE] [--board NAME] [--no-mdns] [--docker-host URL]
                         [--docker-exec-root DIR] [--log-format text|json] [--rotate-token]
                         (--operator-pub FILE... | --operator-key FILE | --insecure-open-missions)
       tandem peer rotate-token [--api HOST:PORT] [--data-dir DIR]
       tandem peer revoke PEER_ID [--operator-key FILE] [--api HOST:PORT] [--data-dir DIR] [--json]

  --data-dir DIR        identity, lock, API token and block store of this peer (created if missing; default $TANDEM_DATA_DIR)
  --listen MULTIADDR    address to listen on, repeatable (default ${DEFAULT_LISTEN.join(' ')})
  --bootstrap MULTIADDR peer to join through (with /p2p/<id>), repeatable
  --api HOST:PORT       control API address (default $TANDEM_API, else ${DEFAULT_API_HOST}:${DEFAULT_API_PORT}; port 0 = any free port)
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
  --log-format FORMAT   text (default, or $TANDEM_LOG_FORMAT) or json: one JSON object per line (time, level, msg, peer, ...)
  --rotate-token        a new API token (the data dir's api-token otherwise stays the same across restarts)

'revoke' removes a board from the swarm for good: every board refuses its connections and messages, its missions
fail over. Signed with --operator-key FILE, or by the peer named by --api if it holds the operator key.
'rotate-token' gives a running peer a new API token now (written to its data dir's api-token, 0600); with no
peer running on --data-dir, it writes a new token there for the next start.
Failure detector timings can be overridden by environment, e.g. TANDEM_FD_SUSPECT_AFTER_MS=800.
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
  const dataDir = values['data-dir'] ?? env.TANDEM_DATA_DIR
  if (dataDir == null || dataDir === '') throw new UsageError('--data-dir is required (or set TANDEM_DATA_DIR)')
  if (values.board != null && findBoard(values.board) == null) {
    throw new UsageError(`--board: unknown board '${values.board}' (known: ${boardNames().join(', ')})`)
  }
  const dockerHost = values['docker-host'] ?? defaultDockerHost(env)
  if (!/^(unix|tcp|http):\/\//.test(dockerHost)) throw new UsageError(`--docker-host: '${dockerHost}' must start with unix://, tcp:// or http://`)
  try {
    const failureDetector = failureDetectorFromEnv(env)
    const config: PeerConfig = {
      dataDir: resolve(dataDir),
      listen: (values.listen ?? DEFAULT_LISTEN).map(addr => checkMultiaddr('--listen', addr)),
      bootstrap: (values.bootstrap ?? []).map(addr => {
        checkMultiaddr('--bootstrap', addr)
        if (!addr.includes('/p2p/')) throw new UsageError(`--bootstrap: '${addr}' needs the peer id (/p2p/<id>)`)
        return addr
      }),
      api: (values.api ?? env.TANDEM_API) != null && (values.api ?? env.TANDEM_API) !== ''
        ? parseApiAddress((values.api ?? env.TANDEM_API) as string)
        : { host: DEFAULT_API_HOST, port: DEFAULT_API_PORT },
      swarmKeyFile: values['swarm-key'] != null ? resolve(values['swarm-key']) : undefined,
      board: values.board,
      mdns: values['no-mdns'] !== true,
      dockerHost,
      dockerExecRoot: resolve(values['docker-exec-root'] ?? DEFAULT_DOCKER_EXEC_ROOT),
      failureDetector,
      consensus: consensusConfigFor(failureDetector)
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

/**
 * Takes the flags of the process rather than the peer out of `peer start`'s (they are no part of PeerConfig):
 * `--log-format text|json` (default $TANDEM_LOG_FORMAT, else text) and `--rotate-token`.
 */
export function processFlagsFromArgs (argv: string[], env: NodeJS.ProcessEnv = process.env): { format: LogFormat, rotateToken: boolean, rest: string[] } {
  const rest: string[] = []
  let format: string = logFormatFromEnv(env)
  let rotateToken = false
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string
    if (arg === '--rotate-token') {
      rotateToken = true
    } else if (arg === '--log-format') {
      const value = argv[++i]
      if (value == null) throw new UsageError('--log-format needs a value: text or json')
      format = value
    } else if (arg.startsWith('--log-format=')) {
      format = arg.slice('--log-format='.length)
    } else {
      rest.push(arg)
    }
  }
  if (!(LOG_FORMATS as readonly string[]).includes(format)) throw new UsageError(`--log-format: '${printable(format)}' is not one of ${LOG_FORMATS.join(', ')}`)
  return { format: format as LogFormat, rotateToken, rest }
}

/** In json, what Node itself would print (warnings, a crash's stack) goes through the logger too: one object a line. */
function captureProcessOutput (logger: PeerLogger): void {
  // Node's own printer is the default 'warning' listener.
  process.removeAllListeners('warning')
  process.on('warning', warning => { logger.log(`node: ${warning.name}: ${warning.message}`, { level: 'warn' }) })
  process.on('uncaughtException', err => {
    logger.log(`peer: uncaught exception: ${err.stack ?? String(err)}`, { level: 'error' })
    process.exit(1)
  })
}

async function runPeer (argv: string[]): Promise<number> {
  const { format, rotateToken, rest } = processFlagsFromArgs(argv)
  const config = peerConfigFromArgs(rest)
  // The watchdog (a child process) logs in the same format.
  process.env[LOG_FORMAT_ENV] = format
  const logger = await openLogger(format)
  if (format === 'json') captureProcessOutput(logger)
  const peer = new Peer(config, { log: logger.log, rotateApiToken: rotateToken, onIdentity: peerId => { logger.bind({ peer: peerId }) } })
  try {
    await peer.start()
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message)
    if (format === 'json') { logger.log(`peer: cannot start: ${(err as Error).message}`, { level: 'error' }); return 1 }
    throw err
  }
  const missions = new PeerMissions({ peer, consensus: config.consensus, log: logger.log })
  try {
    await missions.start()
  } catch (err) {
    await peer.stop()
    if (format === 'json') { logger.log(`missions: cannot start: ${(err as Error).message}`, { level: 'error' }); return 1 }
    throw err
  }
  const api = formatApiAddress(peer.api.address)
  const ready = { peerId: peer.peerId, addrs: peer.addrs(), api, pid: process.pid }
  // Every module is loaded by now: write the compile cache at once (bin/tandem enables it), not only at a clean
  // exit, which a power cut never gives. The next start on this board then skips type stripping (see bin/tandem).
  flushCompileCache()
  logger.say(`tandem peer ${peer.peerId} (board ${peer.board.name}, ${peer.board.arch})`, { board: peer.board.name, arch: peer.board.arch })
  for (const addr of peer.addrs()) logger.say(`listening ${addr}`, { addr })
  logger.say(`api http://${api} (token in ${config.dataDir}/api-token)`, { api })
  // The line scripts wait for: `ready {json}` in text, an object with msg "ready" and the same fields in json.
  if (format === 'json') logger.say('ready', ready)
  else logger.say(`ready ${JSON.stringify(ready)}`)

  // SIGHUP re-reads the operator key files (systemd: ExecReload=/bin/kill -HUP $MAINPID): a key rotation needs no restart.
  const onReload = (): void => {
    let operator: OperatorConfig | undefined
    try {
      operator = peerConfigFromArgs(rest).operator
    } catch (err) {
      logger.log(`SIGHUP: operator keys not reloaded: ${(err as Error).message}`, { level: 'error' })
      return
    }
    if (operator != null) missions.reloadOperator(operator).catch(err => { logger.log(`SIGHUP: operator keys not reloaded: ${(err as Error).message}`, { level: 'error' }) })
  }
  process.on('SIGHUP', onReload)
  await new Promise<void>(resolve => {
    const onSignal = (signal: NodeJS.Signals): void => {
      logger.say(`received ${signal}, stopping`, { signal })
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      resolve()
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })
  // A clean stop hands the missions this peer runs to their backups first (up to 8 s), then stops.
  const forced = setTimeout(() => {
    logger.log('peer: shutdown took longer than 15 s, exiting', { level: 'error' })
    process.exit(1)
  }, 15_000)
  forced.unref()
  await missions.stop()
  await peer.stop()
  logger.say('stopped')
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

/** `peer rotate-token`: through the running peer's API, else (no peer holds the data dir) in the data dir itself. */
async function rotateToken (argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, API_FLAGS, true)
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${printable(positionals[0] as string)}'`)
  const dataDir = values['data-dir'] ?? process.env.TANDEM_DATA_DIR
  const lock = dataDir != null && dataDir !== '' ? new DataDirLock(resolve(dataDir)) : undefined
  let offline = false
  if (lock != null) {
    try {
      await lock.acquire()
      offline = true
    } catch {
      // A peer holds the data dir: ask it.
    }
  }
  if (offline && lock != null && dataDir != null) {
    try {
      await writeApiToken(resolve(dataDir), newApiToken())
    } finally {
      await lock.release()
    }
    console.log(`no peer runs on ${dataDir}: new token written to ${apiTokenPath(resolve(dataDir))} for its next start`)
    return 0
  }
  const client = await connectFromFlags(values)
  const result = await client.request<{ path: string }>('POST', '/v1/api-token/rotate')
  console.log(`token rotated: the new one is in ${result.path}; the old one no longer works`)
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
    if (sub === 'rotate-token') return await rotateToken(rest)
    if (sub !== 'start') throw new UsageError(sub == null ? `missing subcommand\n${USAGE}` : `unknown subcommand '${printable(sub)}'\n${USAGE}`)
    return await runPeer(rest)
  }
}
