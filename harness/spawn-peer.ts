// Spawns `tandem peer start` as a child process for tests, the bench and the demo, and cleans it up.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createOperatorKeyPair, formatPublicKey } from '../consensus/authority.ts'
import { homedir, tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ApiClient } from '../peer/api-client.ts'
import { readApiToken } from '../peer/api-token.ts'
import { onOwnerExit } from './exit-hooks.ts'
import type { PeerStatus } from '../peer/daemon.ts'

export const CLI_PATH = join(dirname(fileURLToPath(import.meta.url)), '..', 'peer', 'cli.ts')

/** The memory settings bin/tandem gives a peer (see there for the figures), so spawned peers weigh what installed ones do. */
const PEER_PROCESS_ENV = { MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2', NODE_OPTIONS: `--max-semi-space-size=4${process.env.NODE_OPTIONS != null && process.env.NODE_OPTIONS !== '' ? ` ${process.env.NODE_OPTIONS}` : ''}` }

/** The compile cache bin/tandem gives a peer (see there), so spawned peers start and weigh what installed ones do. */
let compileCache: string | undefined
function compileCacheDir (): string {
  if (compileCache != null) return compileCache
  const dir = process.env.NODE_COMPILE_CACHE ?? (process.getuid?.() === 0 ? '/var/cache/tandem/node-compile-cache' : join(homedir(), '.cache', 'tandem', 'node-compile-cache'))
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  compileCache = dir
  return dir
}

export interface SpawnPeerOptions {
  /** Data dir; a fresh temp dir when absent. */
  dataDir?: string
  /** Remove the data dir on stop (default: only when it was made here). Kept while another live peer uses it. */
  removeDataDir?: boolean
  /** Default: one loopback TCP port chosen by the OS. */
  listen?: string[]
  bootstrap?: string[]
  swarmKey?: string
  /** Control API HOST:PORT; default 127.0.0.1:0 (any free port). */
  api?: string
  board?: string
  /** mDNS discovery; default false (tests stay on loopback). */
  mdns?: boolean
  dockerHost?: string
  /** The Docker daemon's --exec-root (its runc state), when not /run/docker. */
  dockerExecRoot?: string
  env?: NodeJS.ProcessEnv
  /** How long to wait for the ready line (default 30 s). */
  readyTimeoutMs?: number
  /** Receives every output line of the peer (stdout and stderr). */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void
  /**
   * Runs the peer inside this network namespace (a path such as /run/netns/NAME), through `nsenter --net=`, which
   * execs the peer in place: `pid` and signals reach the peer process itself, and its watchdog is its child as usual.
   */
  netns?: string
  /** `--log-format` of the peer (default text); the ready line is read in either. */
  logFormat?: 'text' | 'json'
  /**
   * The operator private key file the peer holds (`--operator-key`: its API signs deploys, removes, moves). Default:
   * one key shared by every peer this process spawns (testOperatorKey()), unless operatorPub or openMissions is
   * given; null: none.
   */
  operatorKey?: string | null
  /** Operator public key files the peer trusts (`--operator-pub`). */
  operatorPub?: string[]
  /** `--insecure-open-missions`. */
  openMissions?: boolean
}

let testKey: { privateFile: string, publicFile: string } | undefined

/**
 * An operator key pair for the peers this process spawns (tests, bench, demo), made once, in a temp dir removed when
 * the process exits: every board holds it, so any board's API deploys, as with one operator at the keyboard.
 */
export function testOperatorKey (): { privateFile: string, publicFile: string } {
  if (testKey != null) return testKey
  const dir = mkdtempSync(join(tmpdir(), 'tandem-operator-'))
  const { privatePem, publicKey } = createOperatorKeyPair()
  const privateFile = join(dir, 'operator.key')
  writeFileSync(privateFile, privatePem, { mode: 0o600 })
  writeFileSync(`${privateFile}.pub`, formatPublicKey(publicKey, 'test operator'))
  testKey = { privateFile, publicFile: `${privateFile}.pub` }
  onOwnerExit(() => { rmSync(dir, { recursive: true, force: true }) })
  return testKey
}

export interface PeerHandle {
  pid: number
  peerId: string
  addrs: string[]
  apiAddress: string
  token: string
  dataDir: string
  client: ApiClient
  /** Output lines so far (stdout and stderr interleaved), for diagnosing a failed test. */
  output: string[]
  status (options?: { signal?: AbortSignal }): Promise<PeerStatus>
  kill (signal?: NodeJS.Signals): void
  /** SIGTERM, wait for exit (SIGKILL after a grace period), remove the temp data dir if we made it. */
  stop (): Promise<void>
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>
}

/** Every peer process spawned and not yet stopped: tests call `stopAllPeers` in a teardown. */
const live = new Set<PeerHandle>()
let exitHandlersInstalled = false

/** If the owner dies before its teardown (a signal, a test timeout), its peers die too: no peer is left behind. */
function installExitHandlers (): void {
  if (exitHandlersInstalled) return
  exitHandlersInstalled = true
  onOwnerExit(() => { for (const handle of live) handle.kill('SIGKILL') })
}

export async function stopAllPeers (): Promise<void> {
  await Promise.all([...live].map(async handle => await handle.stop()))
}

function flagsOf (options: SpawnPeerOptions, dataDir: string): string[] {
  const args = ['peer', 'start', '--data-dir', dataDir, '--api', options.api ?? '127.0.0.1:0']
  for (const addr of options.listen ?? ['/ip4/127.0.0.1/tcp/0']) args.push('--listen', addr)
  for (const addr of options.bootstrap ?? []) args.push('--bootstrap', addr)
  if (options.swarmKey != null) args.push('--swarm-key', options.swarmKey)
  if (options.board != null) args.push('--board', options.board)
  if (options.mdns !== true) args.push('--no-mdns')
  if (options.dockerHost != null) args.push('--docker-host', options.dockerHost)
  if (options.dockerExecRoot != null) args.push('--docker-exec-root', options.dockerExecRoot)
  for (const file of options.operatorPub ?? []) args.push('--operator-pub', file)
  const operatorKey = options.operatorKey !== undefined ? options.operatorKey
    : (options.operatorPub == null && options.openMissions !== true ? testOperatorKey().privateFile : null)
  if (operatorKey != null) args.push('--operator-key', operatorKey)
  if (options.openMissions === true) args.push('--insecure-open-missions')
  if (options.logFormat != null) args.push('--log-format', options.logFormat)
  return args
}

export class SpawnError extends Error {}

export async function spawnPeer (options: SpawnPeerOptions = {}): Promise<PeerHandle> {
  const ownDataDir = options.removeDataDir ?? options.dataDir == null
  const dataDir = options.dataDir ?? await mkdtemp(join(tmpdir(), 'tandem-peer-'))
  const command = [process.execPath, CLI_PATH, ...flagsOf(options, dataDir)]
  if (options.netns != null) command.unshift('nsenter', `--net=${options.netns}`)
  const child: ChildProcess = spawn(command[0] as string, command.slice(1), {
    env: { NODE_COMPILE_CACHE: compileCacheDir(), ...process.env, ...PEER_PROCESS_ENV, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const output: string[] = []
  const exited = new Promise<number | string>(resolve => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'))
  })
  let onReady: (line: string) => void = () => {}
  const ready = new Promise<string>((resolve, reject) => {
    onReady = resolve
    void exited.then(code => reject(new SpawnError(`peer exited (${code}) before it was ready:\n${output.join('\n')}`)))
    setTimeout(() => reject(new SpawnError(`peer not ready after ${options.readyTimeoutMs ?? 30_000} ms:\n${output.join('\n')}`)), options.readyTimeoutMs ?? 30_000).unref()
  })
  const watch = (stream: NodeJS.ReadableStream, name: 'stdout' | 'stderr'): void => {
    let buffered = ''
    stream.setEncoding('utf8')
    stream.on('data', (chunk: string) => {
      buffered += chunk
      let newline: number
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline)
        buffered = buffered.slice(newline + 1)
        output.push(line)
        if (output.length > 2000) output.splice(0, output.length - 2000)
        options.onLine?.(line, name)
        if (name === 'stdout' && line.startsWith('ready ')) onReady(line.slice(6))
        else if (name === 'stdout' && options.logFormat === 'json' && line.includes('"msg":"ready"')) onReady(line)
      }
    })
  }
  watch(child.stdout as NodeJS.ReadableStream, 'stdout')
  watch(child.stderr as NodeJS.ReadableStream, 'stderr')

  let stopping: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode == null && child.signalCode == null) {
        child.kill('SIGCONT')
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), 16_000)
        await exited
        clearTimeout(timer)
      }
      live.delete(handle)
      const shared = [...live].some(other => other.dataDir === dataDir)
      if (ownDataDir && !shared) await rm(dataDir, { recursive: true, force: true })
    })()
    await stopping
  }
  const handle: PeerHandle = {
    pid: child.pid ?? -1,
    peerId: '',
    addrs: [],
    apiAddress: '',
    token: '',
    dataDir,
    client: undefined as unknown as ApiClient,
    output,
    status: async (statusOptions) => await handle.client.status(statusOptions),
    kill: (signal = 'SIGKILL') => { if (child.exitCode == null && child.signalCode == null) child.kill(signal) },
    stop,
    exited
  }
  live.add(handle)
  installExitHandlers()
  try {
    const info = JSON.parse(await ready) as { peerId: string, addrs: string[], api: string }
    handle.peerId = info.peerId
    handle.addrs = info.addrs
    handle.apiAddress = info.api
    handle.token = await readApiToken(dataDir)
    handle.client = new ApiClient(info.api, handle.token)
  } catch (err) {
    await stop()
    throw err
  }
  return handle
}

/** Starts a peer again on the same data dir (same identity); the new handle removes the dir when stopped. */
export async function respawnPeer (previous: PeerHandle, options: SpawnPeerOptions): Promise<PeerHandle> {
  return await spawnPeer({ removeDataDir: true, ...options, dataDir: previous.dataDir })
}

/** Polls `check` until it returns true or the time runs out (then throws with the last status). */
export async function waitFor (what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000, intervalMs = 50): Promise<number> {
  const started = performance.now()
  let lastError: unknown
  while (performance.now() - started < timeoutMs) {
    try {
      if (await check()) return performance.now() - started
    } catch (err) {
      lastError = err
    }
    await new Promise(resolve => setTimeout(resolve, intervalMs))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError != null ? ` (last error: ${(lastError as Error).message})` : ''}`)
}

function randomPeer (handles: PeerHandle[], fallback: PeerHandle): PeerHandle {
  return handles[Math.floor(Math.random() * handles.length)] ?? fallback
}

/**
 * Starts `count` peers on loopback: the first one, then the others in batches of `concurrency` (default 4;
 * starting 20 Node processes at once on a small host starves them all), each bootstrapping to the first
 * and to one other running peer.
 */
export async function spawnSwarm (count: number, options: SpawnPeerOptions & { concurrency?: number } = {}): Promise<PeerHandle[]> {
  if (count < 1) throw new RangeError('a swarm needs at least one peer')
  const { concurrency = 4, ...peerOptions } = options
  const handles = [await spawnPeer(peerOptions)]
  const first = handles[0] as PeerHandle
  try {
    while (handles.length < count) {
      const batch = Math.min(concurrency, count - handles.length)
      const started = await Promise.allSettled(Array.from({ length: batch }, async () =>
        await spawnPeer({ ...peerOptions, bootstrap: [...(peerOptions.bootstrap ?? []), ...first.addrs, ...randomPeer(handles, first).addrs] })))
      for (const result of started) if (result.status === 'fulfilled') handles.push(result.value)
      const failed = started.find(result => result.status === 'rejected')
      if (failed != null) throw (failed as PromiseRejectedResult).reason
    }
  } catch (err) {
    await Promise.all(handles.map(async handle => await handle.stop()))
    throw err
  }
  return handles
}

/** The state `observer` currently gives `target` (undefined if it does not know it). */
export async function stateSeenBy (observer: PeerHandle, target: string): Promise<string | undefined> {
  const status = await observer.status({ signal: AbortSignal.timeout(5000) })
  return status.peers.find(peer => peer.peerId === target)?.state
}

/** True when every peer sees every other peer in `state`. */
export async function allSee (peers: PeerHandle[], state: string): Promise<boolean> {
  const statuses = await Promise.all(peers.map(async peer => await peer.status({ signal: AbortSignal.timeout(5000) })))
  return statuses.every((status, i) => peers.every((other, j) => i === j ||
    status.peers.some(entry => entry.peerId === other.peerId && entry.state === state)))
}
