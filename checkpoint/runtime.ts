// Mission containers on one board's Docker daemon (dockerode): labelled, no network, never pulled.
import type { ContainerSpec } from '../manifest/container-spec.ts'
import type Docker from 'dockerode'
import { mkdir, readdir, rm } from 'node:fs/promises'
import { MIRRORS_DIR } from './mirror.ts'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import { CheckpointError, ImageMissingError } from './errors.ts'
import { assertMissionName } from './bundle-store.ts'
import { dockerFromHost, probeDocker } from './docker-host.ts'
import dockerDefaultSeccomp from './seccomp-docker-20.10.24.json' with { type: 'json' }

export const LABEL_MISSION = 'tandem.mission'
import { LABEL_PEER } from './engine-api.ts'
export { LABEL_PEER }
export const LABEL_EPOCH = 'tandem.epoch'
export const LABEL_DATA_PATH = 'tandem.data-path'

/** A Docker seccomp profile (the JSON that `--security-opt seccomp=` takes). */
export interface SeccompProfile {
  defaultAction: string
  archMap?: unknown[]
  syscalls: SeccompRule[]
}
export interface SeccompRule {
  names: string[]
  action: string
  errnoRet?: number
  args?: unknown[]
  comment?: string
  includes?: object
  excludes?: object
}

export const IO_URING_SYSCALLS = ['io_uring_setup', 'io_uring_enter', 'io_uring_register']
const ENOSYS = 38

/**
 * Missions run under Docker's default seccomp profile minus io_uring, nothing else changed. CRIU cannot dump
 * io_uring instances, and Node >= 22 (libuv >= 1.45) opens one in every event loop: refused with ENOSYS, libuv falls
 * back to epoll. The base is the profile built into the Engine that scripts/provision.sh installs (Debian 12's
 * docker.io 20.10.24), vendored byte for byte from moby/moby tag v20.10.24 (commit 5d6db842238e),
 * profiles/seccomp/default.json (Apache-2.0): without a profile of ours, Docker would apply that one and allow io_uring.
 */
export function missionSeccompProfile (base: SeccompProfile = dockerDefaultSeccomp as SeccompProfile): SeccompProfile {
  const syscalls = base.syscalls
    .map(rule => ({ ...rule, names: rule.names.filter(name => !IO_URING_SYSCALLS.includes(name)) }))
    .filter(rule => rule.names.length > 0)
  syscalls.push({
    names: IO_URING_SYSCALLS,
    action: 'SCMP_ACT_ERRNO',
    errnoRet: ENOSYS,
    args: [],
    comment: 'tandem: CRIU cannot checkpoint io_uring; ENOSYS makes libuv use epoll',
    includes: {},
    excludes: {}
  })
  return { ...base, syscalls }
}

const MISSION_SECCOMP_PROFILE = JSON.stringify(missionSeccompProfile())

export type { ContainerSpec }

export interface MissionLabels { mission: string, peerId: string, epoch: number }

export interface MissionContainer {
  id: string
  name: string
  state: string
  running: boolean
  labels: MissionLabels
}

export interface ImageInfo { id: string, tags: string[], arch: string }

export interface DaemonInfo {
  /** Docker's data root (DockerRootDir): checkpoints to restore are copied under it. */
  rootDir: string
  /** GOARCH-style: amd64, arm64, arm. */
  arch: string
  storageDriver: string
  experimental: boolean
  serverVersion: string
}

export interface ContainerRuntimeOptions {
  /** `unix:///path/docker.sock` (a board's own daemon) or `tcp://127.0.0.1:port`. */
  dockerHost: string
  /** Host directory for mission data dirs and checkpoint scratch space (same host as the daemon). */
  stateDir: string
  /**
   * dockerd's `--exec-root` (default /run/docker). runc keeps its container state under `<execRoot>/runtime-runc/moby`;
   * checkpoints call runc there directly when they can, which skips Docker copying every image file twice.
   */
  execRoot?: string
}

export const DEFAULT_DOCKER_EXEC_ROOT = '/run/docker'

export { dockerFromHost } from './docker-host.ts'

/** Docker reports uname -m; bundles and images carry GOARCH names. */
export function normalizeArch (arch: string): string {
  switch (arch) {
    case 'x86_64': case 'amd64': case 'x64': return 'amd64'
    case 'aarch64': case 'arm64': return 'arm64'
    case 'armv7l': case 'armv6l': case 'armhf': case 'arm': return 'arm'
    default: return arch
  }
}

export class ContainerRuntime {
  readonly docker: Docker
  readonly dockerHost: string
  readonly stateDir: string
  /** runc's state root of this daemon's containers. */
  readonly runcRoot: string
  private daemon: DaemonInfo | null = null

  constructor (options: ContainerRuntimeOptions) {
    this.dockerHost = options.dockerHost
    this.stateDir = options.stateDir
    this.runcRoot = join(options.execRoot ?? DEFAULT_DOCKER_EXEC_ROOT, 'runtime-runc', 'moby')
    this.docker = dockerFromHost(options.dockerHost)
  }

  /** Connects to the daemon and checks it can checkpoint (experimental mode, overlay2). */
  async start (): Promise<DaemonInfo> {
    const probe = await probeDocker(this.docker)
    if (!probe.available) throw probe.error
    const { info } = probe
    this.daemon = {
      rootDir: info.DockerRootDir,
      arch: normalizeArch(info.Architecture),
      storageDriver: info.Driver,
      experimental: probe.experimental,
      serverVersion: info.ServerVersion
    }
    if (!this.daemon.experimental) throw new CheckpointError(`Docker at ${this.dockerHost} is not in experimental mode: checkpoints need "experimental": true`)
    if (this.daemon.storageDriver !== 'overlay2') throw new CheckpointError(`Docker at ${this.dockerHost} uses storage driver ${this.daemon.storageDriver}; tandem needs overlay2 to capture rootfs changes`)
    await mkdir(this.stateDir, { recursive: true })
    return this.daemon
  }

  /** Lifecycle end (containers keep running: they belong to the daemon). */
  async close (): Promise<void> { this.daemon = null }

  get info (): DaemonInfo {
    if (this.daemon == null) throw new CheckpointError('ContainerRuntime not started: call start() first')
    return this.daemon
  }

  /** The image if present on this board, else null. Never triggers a pull. */
  async imageInfo (ref: string): Promise<ImageInfo | null> {
    try {
      const i = await this.docker.getImage(ref).inspect()
      return { id: i.Id, tags: i.RepoTags ?? [], arch: normalizeArch(i.Architecture) }
    } catch (err: any) {
      if (err?.statusCode === 404) return null
      throw err
    }
  }

  /** Gives an image present on this board another name (`repo:tag`). */
  async tagImage (imageId: string, ref: string): Promise<void> {
    const at = ref.lastIndexOf(':')
    const slash = ref.lastIndexOf('/')
    const [repo, tag] = at > slash ? [ref.slice(0, at), ref.slice(at + 1)] : [ref, 'latest']
    await this.docker.getImage(imageId).tag({ repo, tag })
  }

  /** The layer diffIds (RootFS order) of every image on this board: Docker holds each prefix of each as a layer chain. */
  async layerChains (): Promise<string[][]> {
    const images = await this.docker.listImages({ all: true })
    const chains = await Promise.all(images.map(async i => {
      try { return (await this.docker.getImage(i.Id).inspect()).RootFS?.Layers ?? [] } catch { return [] }
    }))
    return chains.filter(c => c.length > 0)
  }

  async saveImage (imageId: string, signal?: AbortSignal): Promise<Readable> {
    const stream = await this.docker.getImage(imageId).get() as unknown as Readable
    signal?.addEventListener('abort', () => stream.destroy(signal.reason), { once: true })
    return stream
  }

  async loadImage (archive: NodeJS.ReadableStream, signal?: AbortSignal): Promise<void> {
    const res = await this.docker.loadImage(archive, { quiet: true, abortSignal: signal } as any) as unknown as Readable
    let out = ''
    for await (const chunk of res) out += chunk.toString()
    const error = out.split('\n').filter(l => l.trim() !== '').map(l => { try { return JSON.parse(l) } catch { return {} } }).find(m => m.error != null)
    if (error != null) throw new CheckpointError(`docker load failed: ${String(error.error)}`)
  }

  /** Host directory bind-mounted as the data dir of the container named `name`. */
  dataDirFor (containerName: string): string {
    return join(this.stateDir, 'containers', containerName, 'data')
  }

  /** Creates and starts a mission container from scratch (no checkpoint). */
  async startFresh (spec: ContainerSpec, labels: MissionLabels, options: { signal?: AbortSignal } = {}): Promise<string> {
    const id = await this.create(spec, labels, options)
    await this.docker.getContainer(id).start({ abortSignal: options.signal } as any)
    return id
  }

  /** Creates (not starts) a mission container; its data dir exists, empty unless filled before start. */
  async create (spec: ContainerSpec, labels: MissionLabels, options: { signal?: AbortSignal } = {}): Promise<string> {
    assertMissionName(spec.mission)
    if (spec.mission !== labels.mission) throw new CheckpointError(`spec is for mission ${spec.mission}, labels for ${labels.mission}`)
    if (!Number.isSafeInteger(labels.epoch) || labels.epoch < 0) throw new CheckpointError(`epoch must be a non-negative integer, got ${String(labels.epoch)}`)
    const image = await this.imageInfo(spec.image)
    if (image == null) throw new ImageMissingError(`image ${spec.image} is not on this board (Docker at ${this.dockerHost}); tandem never pulls`)
    const name = `tandem-${spec.mission}-e${labels.epoch}-${randomBytes(3).toString('hex')}`
    const dataPath = spec.dataPath === undefined ? '/data' : spec.dataPath
    const mounts: Docker.MountSettings[] = []
    if (dataPath != null) {
      const hostDir = this.dataDirFor(name)
      await mkdir(hostDir, { recursive: true })
      mounts.push({ Type: 'bind', Source: hostDir, Target: dataPath })
    }
    const container = await this.docker.createContainer({
      name,
      Image: image.id,
      Cmd: spec.cmd,
      Entrypoint: spec.entrypoint,
      Env: spec.env,
      WorkingDir: spec.workingDir,
      User: spec.user,
      Labels: {
        [LABEL_MISSION]: labels.mission,
        [LABEL_PEER]: labels.peerId,
        [LABEL_EPOCH]: String(labels.epoch),
        ...(dataPath != null ? { [LABEL_DATA_PATH]: dataPath } : {})
      },
      NetworkDisabled: true,
      HostConfig: {
        NetworkMode: 'none',
        SecurityOpt: [`seccomp=${MISSION_SECCOMP_PROFILE}`],
        Mounts: mounts,
        Memory: spec.memoryBytes,
        RestartPolicy: { Name: 'no' }
      },
      abortSignal: options.signal
    } as Docker.ContainerCreateOptions)
    return container.id
  }

  /** Stops and removes a mission container and its host data dir. */
  async stop (containerId: string, options: { timeoutSec?: number, keepData?: boolean } = {}): Promise<void> {
    const c = this.docker.getContainer(containerId)
    let name: string | null = null
    try {
      name = (await c.inspect()).Name.replace(/^\//, '')
      await c.remove({ force: true, v: true })
    } catch (err: any) {
      if (err?.statusCode !== 404) throw err
    }
    if (name != null && options.keepData !== true) await rm(join(this.stateDir, 'containers', name), { recursive: true, force: true })
    // The checkpoint mirrors of its rootfs changes and data dir (checkpoint/mirror.ts), of any checkpointer.
    const mirrors = join(this.stateDir, MIRRORS_DIR)
    for (const entry of await readdir(mirrors).catch(() => [] as string[])) {
      if (entry.startsWith(`${containerId}-`)) await rm(join(mirrors, entry), { recursive: true, force: true })
    }
  }

  /** Containers of a mission on this board (any state), newest epoch first. */
  async listMission (mission: string): Promise<MissionContainer[]> {
    assertMissionName(mission)
    const list = await this.docker.listContainers({ all: true, filters: { label: [`${LABEL_MISSION}=${mission}`] } })
    return list.map(c => ({
      id: c.Id,
      name: (c.Names[0] ?? '').replace(/^\//, ''),
      state: c.State,
      running: c.State === 'running',
      labels: { mission, peerId: c.Labels[LABEL_PEER] ?? '', epoch: Number(c.Labels[LABEL_EPOCH] ?? 0) }
    })).sort((a, b) => b.labels.epoch - a.labels.epoch)
  }

  async inspect (containerId: string): Promise<Docker.ContainerInspectInfo> {
    return await this.docker.getContainer(containerId).inspect()
  }

  /** Output of the container so far (stdout and stderr, demultiplexed). */
  async logs (containerId: string): Promise<string> {
    const buf = await this.docker.getContainer(containerId).logs({ stdout: true, stderr: true, follow: false }) as unknown as Buffer
    return demuxLogs(buf)
  }
}

/** Docker multiplexes non-TTY logs in frames: [stream, 0, 0, 0, size (u32 BE)] + payload. */
export function demuxLogs (buf: Buffer): string {
  let out = ''
  let offset = 0
  while (offset + 8 <= buf.length) {
    const size = buf.readUInt32BE(offset + 4)
    out += buf.subarray(offset + 8, offset + 8 + size).toString()
    offset += 8 + size
  }
  return out
}
