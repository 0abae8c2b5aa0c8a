// The host's Docker daemon and CRIU, for the whole code base: one dockerode factory, one Docker probe, one CRIU probe.
import { execFile } from 'node:child_process'
import Docker from 'dockerode'
import { CheckpointError } from './errors.ts'

export const DEFAULT_DOCKER_HOST = 'unix:///var/run/docker.sock'
export const CRIU_MIN_VERSION = '4.1'

export interface DockerClientOptions {
  /** Per-request time limit of the client (none by default: image loads and log streams run long). */
  timeoutMs?: number
}

/** A dockerode client for `unix:///path/docker.sock` or a loopback `tcp://127.0.0.1:port` (default port 2375). */
export function dockerFromHost (dockerHost: string, options: DockerClientOptions = {}): Docker {
  const url = new URL(dockerHost)
  const timeout = options.timeoutMs != null ? { timeout: options.timeoutMs } : {}
  if (url.protocol === 'unix:') return new Docker({ socketPath: decodeURIComponent(url.pathname), ...timeout })
  if (url.protocol === 'tcp:' || url.protocol === 'http:') {
    if (!/^(127\.|localhost$|\[::1\]$)/.test(url.hostname)) throw new CheckpointError(`dockerHost ${dockerHost}: only loopback daemons are allowed`)
    return new Docker({ host: url.hostname, port: Number(url.port || 2375), protocol: 'http', ...timeout })
  }
  throw new CheckpointError(`unsupported dockerHost ${dockerHost}: use unix:///path or tcp://127.0.0.1:port`)
}

/** The Docker host of a daemon's socket, for dockerFromHost. */
export function unixDockerHost (socketPath: string): string {
  return `unix://${socketPath.split('/').map(encodeURIComponent).join('/')}`
}

/** This host's own daemon: $DOCKER_HOST, else the default socket. */
export function hostDocker (options: DockerClientOptions = {}): Docker {
  return dockerFromHost(process.env.DOCKER_HOST ?? DEFAULT_DOCKER_HOST, options)
}

/** What `docker version` and `docker info` report, in the fields tandem reads. */
export interface DockerVersion { Version: string, ApiVersion: string, Experimental?: boolean | string }
export interface DockerInfo {
  DockerRootDir: string
  Architecture: string
  Driver: string
  ServerVersion: string
  ExperimentalBuild?: boolean
}

export type DockerProbe =
  | { available: true, version: DockerVersion, info: DockerInfo, experimental: boolean }
  | { available: false, error: Error }

export interface ProbeOptions {
  /** Time limit of each call; none by default. */
  timeoutMs?: number
  signal?: AbortSignal
}

/** Asks the daemon for its version and info; `experimental` says whether `docker checkpoint` works there. */
export async function probeDocker (docker: Docker, options: ProbeOptions = {}): Promise<DockerProbe> {
  try {
    const [version, info] = await Promise.all([
      withTimeout(docker.version() as Promise<DockerVersion>, options),
      withTimeout(docker.info() as Promise<DockerInfo>, options)
    ])
    const experimental = version.Experimental === true || String(version.Experimental) === 'true' || info.ExperimentalBuild === true
    return { available: true, version, info, experimental }
  } catch (err) {
    return { available: false, error: err instanceof Error ? err : new Error(String(err)) }
  }
}

export interface CriuProbe {
  /** From `criu --version`; null when it did not run or printed none. */
  version: string | null
  /** Why `criu --version` failed, when it did. */
  versionError: string | null
  /** The command is not on PATH. */
  missing: boolean
  /** `criu check`, when asked for and the command ran; null otherwise. */
  check: CommandOutcome | null
}

export interface CriuProbeOptions extends ProbeOptions {
  /** The criu command (default `criu` on PATH, as runc finds it). */
  command?: string
  /** Also run `criu check` (it needs root and can take a second on a small board). */
  check?: boolean
}

export async function probeCriu (options: CriuProbeOptions = {}): Promise<CriuProbe> {
  const command = options.command ?? 'criu'
  const versionRun = await runCommand(command, ['--version'], options)
  const version = /Version:\s*(\S+)/.exec(versionRun.stdout)?.[1] ?? null
  const missing = versionRun.errorCode === 'ENOENT'
  const ran = versionRun.exitCode != null
  const check = options.check === true && ran ? await runCommand(command, ['check'], options) : null
  return { version, versionError: versionRun.error, missing, check }
}

export function versionAtLeast (version: string, minimum: string): boolean {
  const parts = (text: string): number[] => text.split(/[.-]/).map(part => Number.parseInt(part, 10)).map(n => Number.isNaN(n) ? 0 : n)
  const have = parts(version)
  const want = parts(minimum)
  for (let i = 0; i < want.length; i++) {
    const h = have[i] ?? 0
    const w = want[i] ?? 0
    if (h !== w) return h > w
  }
  return true
}

export interface CommandOutcome {
  stdout: string
  stderr: string
  /** The exit code; null when the command did not run to an exit (not found, killed by the time limit). */
  exitCode: number | null
  /** Null when the command exited 0. */
  error: string | null
  errorCode: string | null
}

function runCommand (command: string, args: string[], options: ProbeOptions): Promise<CommandOutcome> {
  return new Promise(resolve => {
    execFile(command, args, { ...(options.timeoutMs != null ? { timeout: options.timeoutMs } : {}), ...(options.signal != null ? { signal: options.signal } : {}) }, (err, stdout, stderr) => {
      const code = (err as NodeJS.ErrnoException | null)?.code
      resolve({
        stdout,
        stderr,
        exitCode: err == null ? 0 : typeof code === 'number' ? code : null,
        error: err?.message ?? null,
        errorCode: typeof code === 'string' ? code : null
      })
    })
  })
}

export async function withTimeout<T> (promise: Promise<T>, options: ProbeOptions): Promise<T> {
  const { timeoutMs, signal } = options
  if (timeoutMs == null && signal == null) return await promise
  return await new Promise<T>((resolve, reject) => {
    const timer = timeoutMs != null ? setTimeout(() => { reject(new Error(`no answer within ${timeoutMs} ms`)) }, timeoutMs) : undefined
    const onAbort = (): void => { reject(new Error('aborted')) }
    signal?.addEventListener('abort', onAbort, { once: true })
    promise.then(resolve, reject).finally(() => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    })
  })
}
