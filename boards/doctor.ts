// What this host has and lacks to run missions with checkpoints: Docker, experimental mode, CRIU, base images, disk.
import { execFile } from 'node:child_process'
import { statfs } from 'node:fs/promises'
import type Docker from 'dockerode'
import { dockerFromHost } from '../checkpoint/runtime.ts'
import { BASE_IMAGE_CACHE_MANIFEST, CONTENT_LABEL, readBaseImageManifest, type BaseImage } from './base-images.ts'

export const DEFAULT_DOCKER_HOST = 'unix:///var/run/docker.sock'
export const CRIU_MIN_VERSION = '4.1'
const BASE_IMAGE_REFS = ['tandem/busybox:latest', 'tandem/node-base:latest']
const PROVISION = 'run scripts/provision.sh as root'

export type CheckStatus = 'ok' | 'warn' | 'fail'

export interface DoctorCheck {
  id: 'docker' | 'experimental' | 'criu-version' | 'criu-check' | 'base-images' | 'disk'
  status: CheckStatus
  /** What was found, one line. */
  detail: string
  /** How to fix it; absent when status is ok. */
  fix?: string
}

export interface DoctorReport {
  /** True when no check failed (warnings allowed). */
  ok: boolean
  dockerHost: string
  checks: DoctorCheck[]
}

export interface DoctorOptions {
  dockerHost?: string
  /** The criu command to run (default: `criu` on PATH, as runc finds it). */
  criuCommand?: string
  /** Where the base image manifest is (default: the provision cache). */
  manifestPath?: string
  /** Free disk under this fails the disk check; default 1 GiB (warn under 4 GiB). */
  minFreeBytes?: number
  /** Per-probe time limit; default 10 s. */
  timeoutMs?: number
  signal?: AbortSignal
}

export async function runDoctor (options: DoctorOptions = {}): Promise<DoctorReport> {
  const dockerHost = options.dockerHost ?? process.env.DOCKER_HOST ?? DEFAULT_DOCKER_HOST
  const timeoutMs = options.timeoutMs ?? 10_000
  const checks: DoctorCheck[] = []
  const daemon = await probeDocker(dockerHost, timeoutMs, options.signal)
  checks.push(daemon.check)
  if (daemon.docker != null && daemon.experimental != null) {
    checks.push(daemon.experimental
      ? { id: 'experimental', status: 'ok', detail: 'experimental mode on: docker checkpoint works' }
      : { id: 'experimental', status: 'fail', detail: 'experimental mode off: docker checkpoint is refused', fix: 'set "experimental": true in the daemon config (/etc/docker/daemon.json) and restart dockerd, or ' + PROVISION })
  } else {
    checks.push({ id: 'experimental', status: 'fail', detail: 'unknown: Docker not reachable', fix: PROVISION })
  }
  checks.push(...await probeCriu(options.criuCommand ?? 'criu', timeoutMs, options.signal))
  checks.push(await probeBaseImages(daemon.docker, dockerHost, options.manifestPath ?? BASE_IMAGE_CACHE_MANIFEST, timeoutMs))
  checks.push(await probeDisk(daemon.rootDir ?? '/', options.minFreeBytes ?? 1024 ** 3))
  return { ok: checks.every(check => check.status !== 'fail'), dockerHost, checks }
}

interface DockerProbe { check: DoctorCheck, docker?: Docker, experimental?: boolean, rootDir?: string }

async function probeDocker (dockerHost: string, timeoutMs: number, signal?: AbortSignal): Promise<DockerProbe> {
  let docker: Docker
  try {
    docker = dockerFromHost(dockerHost)
  } catch (err) {
    return { check: { id: 'docker', status: 'fail', detail: (err as Error).message, fix: 'pass --docker-host unix:///path/docker.sock' } }
  }
  try {
    const [version, info] = await Promise.all([
      withTimeout(docker.version() as Promise<{ Version: string, ApiVersion: string, Experimental?: boolean | string }>, timeoutMs, signal),
      withTimeout(docker.info() as Promise<{ DockerRootDir?: string, ExperimentalBuild?: boolean }>, timeoutMs, signal)
    ])
    const experimental = version.Experimental === true || String(version.Experimental) === 'true' || info.ExperimentalBuild === true
    return {
      check: { id: 'docker', status: 'ok', detail: `Docker Engine ${version.Version} (API ${version.ApiVersion}) at ${dockerHost}` },
      docker,
      experimental,
      ...(info.DockerRootDir != null ? { rootDir: info.DockerRootDir } : {})
    }
  } catch (err) {
    return { check: { id: 'docker', status: 'fail', detail: `no Docker daemon answers at ${dockerHost}: ${(err as Error).message}`, fix: dockerHost === DEFAULT_DOCKER_HOST ? PROVISION + ' (installs docker.io and starts dockerd)' : `start that daemon, or ${PROVISION}` } }
  }
}

async function probeCriu (criu: string, timeoutMs: number, signal?: AbortSignal): Promise<DoctorCheck[]> {
  const versionRun = await run(criu, ['--version'], timeoutMs, signal)
  const version = /Version:\s*(\S+)/.exec(versionRun.stdout)?.[1]
  if (version == null) {
    const why = versionRun.error ?? 'no version printed'
    return [
      { id: 'criu-version', status: 'fail', detail: `no working '${criu}' on PATH (${why})`, fix: PROVISION + ` (CRIU >= ${CRIU_MIN_VERSION} from Debian 13 into /opt/tandem/criu)` },
      { id: 'criu-check', status: 'fail', detail: 'not run: no CRIU', fix: PROVISION }
    ]
  }
  const checks: DoctorCheck[] = [versionAtLeast(version, CRIU_MIN_VERSION)
    ? { id: 'criu-version', status: 'ok', detail: `CRIU ${version}` }
    : { id: 'criu-version', status: 'fail', detail: `CRIU ${version} is older than ${CRIU_MIN_VERSION} (kernels >= 6.13 need 4.1)`, fix: PROVISION }]
  if (process.getuid?.() !== 0) {
    checks.push({ id: 'criu-check', status: 'warn', detail: "'criu check' needs root: not run", fix: 'run tandem doctor as root' })
    return checks
  }
  const check = await run(criu, ['check'], timeoutMs, signal)
  checks.push(check.error == null
    ? { id: 'criu-check', status: 'ok', detail: "'criu check' passes" }
    : { id: 'criu-check', status: 'fail', detail: `'criu check' fails: ${lastLine(check.stderr || check.stdout || check.error)}`, fix: `run 'criu check' to see why; ${PROVISION}` })
  return checks
}

async function probeBaseImages (docker: Docker | undefined, dockerHost: string, manifestPath: string, timeoutMs: number): Promise<DoctorCheck> {
  if (docker == null) return { id: 'base-images', status: 'fail', detail: 'unknown: Docker not reachable', fix: PROVISION }
  let expected: BaseImage[] | undefined
  try { expected = await readBaseImageManifest(manifestPath) } catch {}
  const wanted = expected ?? BASE_IMAGE_REFS.map(ref => ({ ref, contentHash: '' }))
  const absent: string[] = []
  const outdated: string[] = []
  for (const image of wanted) {
    try {
      const info = await withTimeout(docker.getImage(image.ref).inspect(), timeoutMs)
      if (image.contentHash !== '' && info.Config?.Labels?.[CONTENT_LABEL] !== image.contentHash) outdated.push(image.ref)
    } catch {
      absent.push(image.ref)
    }
  }
  const loadFix = dockerHost === DEFAULT_DOCKER_HOST ? PROVISION : `scripts/provision.sh --load-into ${dockerHost} (or loadBaseImages() from harness/simulated-docker.ts)`
  if (absent.length > 0) return { id: 'base-images', status: 'fail', detail: `missing: ${absent.join(', ')}`, fix: loadFix }
  if (outdated.length > 0) return { id: 'base-images', status: 'warn', detail: `older than the provision cache: ${outdated.join(', ')}`, fix: loadFix }
  return { id: 'base-images', status: 'ok', detail: `${wanted.map(image => image.ref).join(', ')} present${expected == null ? ' (no provision manifest to compare)' : ' and current'}` }
}

async function probeDisk (path: string, minFreeBytes: number): Promise<DoctorCheck> {
  try {
    const stats = await statfs(path)
    const free = stats.bavail * stats.bsize
    const detail = `${formatBytes(free)} free under ${path}`
    if (free < minFreeBytes) return { id: 'disk', status: 'fail', detail, fix: `free disk space: images and checkpoints need at least ${formatBytes(minFreeBytes)}` }
    if (free < minFreeBytes * 4) return { id: 'disk', status: 'warn', detail, fix: 'checkpoints of large containers may not fit: free some space' }
    return { id: 'disk', status: 'ok', detail }
  } catch (err) {
    return { id: 'disk', status: 'warn', detail: `cannot read free space of ${path} (${(err as Error).message}); Docker may be remote`, fix: 'check the daemon host\'s disk by hand' }
  }
}

export function formatDoctorReport (report: DoctorReport): string {
  const mark: Record<CheckStatus, string> = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' }
  const lines = report.checks.flatMap(check => [
    `${mark[check.status]}  ${check.id.padEnd(12)}  ${check.detail}`,
    ...(check.fix != null ? [`${' '.repeat(20)}fix: ${check.fix}`] : [])
  ])
  lines.push('', report.ok ? 'tandem doctor: this host can run missions with checkpoints' : 'tandem doctor: something is missing (see FAIL above)')
  return lines.join('\n')
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

function formatBytes (bytes: number): string {
  return bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : `${Math.round(bytes / 1024 ** 2)} MiB`
}

function lastLine (text: string): string {
  return text.trim().split('\n').at(-1) ?? ''
}

interface RunResult { stdout: string, stderr: string, error?: string }

function run (command: string, args: string[], timeoutMs: number, signal?: AbortSignal): Promise<RunResult> {
  return new Promise(resolve => {
    execFile(command, args, { timeout: timeoutMs, ...(signal != null ? { signal } : {}) }, (err, stdout, stderr) => {
      resolve({ stdout, stderr, ...(err != null ? { error: err.message } : {}) })
    })
  })
}

function withTimeout<T> (promise: Promise<T>, timeoutMs: number, signal?: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`no answer within ${timeoutMs} ms`)) }, timeoutMs)
    const onAbort = (): void => { reject(new Error('aborted')) }
    signal?.addEventListener('abort', onAbort, { once: true })
    promise.then(resolve, reject).finally(() => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    })
  })
}
