// What this host has and lacks to run missions with checkpoints: Docker, experimental mode, CRIU, base images, disk.
import { statfs } from 'node:fs/promises'
import type Docker from 'dockerode'
import { CRIU_MIN_VERSION, DEFAULT_DOCKER_HOST, dockerFromHost, probeCriu, probeDocker, versionAtLeast, withTimeout } from '../checkpoint/docker-host.ts'
import { BASE_IMAGE_CACHE_MANIFEST, CONTENT_LABEL, readBaseImageManifest, type BaseImage } from './base-images.ts'

export { CRIU_MIN_VERSION, DEFAULT_DOCKER_HOST, versionAtLeast } from '../checkpoint/docker-host.ts'
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
  const daemon = await dockerCheck(dockerHost, timeoutMs, options.signal)
  checks.push(daemon.check)
  if (daemon.docker != null && daemon.experimental != null) {
    checks.push(daemon.experimental
      ? { id: 'experimental', status: 'ok', detail: 'experimental mode on: docker checkpoint works' }
      : { id: 'experimental', status: 'fail', detail: 'experimental mode off: docker checkpoint is refused', fix: 'set "experimental": true in the daemon config (/etc/docker/daemon.json) and restart dockerd, or ' + PROVISION })
  } else {
    checks.push({ id: 'experimental', status: 'fail', detail: 'unknown: Docker not reachable', fix: PROVISION })
  }
  checks.push(...await criuChecks(options.criuCommand ?? 'criu', timeoutMs, options.signal))
  checks.push(await probeBaseImages(daemon.docker, dockerHost, options.manifestPath ?? BASE_IMAGE_CACHE_MANIFEST, timeoutMs))
  checks.push(await probeDisk(daemon.rootDir ?? '/', options.minFreeBytes ?? 1024 ** 3))
  return { ok: checks.every(check => check.status !== 'fail'), dockerHost, checks }
}

interface DockerCheck { check: DoctorCheck, docker?: Docker, experimental?: boolean, rootDir?: string }

async function dockerCheck (dockerHost: string, timeoutMs: number, signal?: AbortSignal): Promise<DockerCheck> {
  let docker: Docker
  try {
    docker = dockerFromHost(dockerHost)
  } catch (err) {
    return { check: { id: 'docker', status: 'fail', detail: (err as Error).message, fix: 'pass --docker-host unix:///path/docker.sock' } }
  }
  const probe = await probeDocker(docker, { timeoutMs, signal })
  if (!probe.available) {
    return { check: { id: 'docker', status: 'fail', detail: `no Docker daemon answers at ${dockerHost}: ${probe.error.message}`, fix: dockerHost === DEFAULT_DOCKER_HOST ? PROVISION + ' (installs docker.io and starts dockerd)' : `start that daemon, or ${PROVISION}` } }
  }
  return {
    check: { id: 'docker', status: 'ok', detail: `Docker Engine ${probe.version.Version} (API ${probe.version.ApiVersion}) at ${dockerHost}` },
    docker,
    experimental: probe.experimental,
    ...(probe.info.DockerRootDir != null ? { rootDir: probe.info.DockerRootDir } : {})
  }
}

async function criuChecks (criu: string, timeoutMs: number, signal?: AbortSignal): Promise<DoctorCheck[]> {
  // 'criu check' needs root: not run otherwise.
  const asRoot = process.getuid?.() === 0
  const probe = await probeCriu({ command: criu, timeoutMs, signal, check: asRoot })
  const version = probe.version
  if (version == null) {
    const why = probe.versionError ?? 'no version printed'
    return [
      { id: 'criu-version', status: 'fail', detail: `no working '${criu}' on PATH (${why})`, fix: PROVISION + ` (CRIU >= ${CRIU_MIN_VERSION} from Debian 13 into /opt/tandem/criu)` },
      { id: 'criu-check', status: 'fail', detail: 'not run: no CRIU', fix: PROVISION }
    ]
  }
  const checks: DoctorCheck[] = [versionAtLeast(version, CRIU_MIN_VERSION)
    ? { id: 'criu-version', status: 'ok', detail: `CRIU ${version}` }
    : { id: 'criu-version', status: 'fail', detail: `CRIU ${version} is older than ${CRIU_MIN_VERSION} (kernels >= 6.13 need 4.1)`, fix: PROVISION }]
  const check = probe.check
  if (!asRoot || check == null) {
    checks.push({ id: 'criu-check', status: 'warn', detail: "'criu check' needs root: not run", fix: 'run tandem doctor as root' })
    return checks
  }
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
      const info = await withTimeout(docker.getImage(image.ref).inspect(), { timeoutMs })
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

function formatBytes (bytes: number): string {
  return bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : `${Math.round(bytes / 1024 ** 2)} MiB`
}

function lastLine (text: string): string {
  return text.trim().split('\n').at(-1) ?? ''
}
