// The missions' container runtime port (peer/missions/ports.ts) over one board's Docker (ContainerRuntime).
import type { Readable } from 'node:stream'
import type { ContainerSpec, ContainerState, ImageListing, MissionRuntime, OwnContainer } from '../peer/missions/ports.ts'
import type Docker from 'dockerode'
import { ContainerRuntime, LABEL_EPOCH, LABEL_MISSION, LABEL_PEER } from './runtime.ts'

/** The longest removing every container of the peer at its stop may take. */
const REMOVE_ALL_TIMEOUT_MS = 5000

export interface DockerMissionRuntimeOptions {
  dockerHost: string
  /** dockerd's `--exec-root` (see ContainerRuntimeOptions). */
  execRoot?: string
  /** Host directory for mission data dirs and checkpoint scratch space. */
  stateDir: string
  /** The peer whose containers these are (their `tandem.peer` label). */
  peerId: string
}

export class DockerMissionRuntime implements MissionRuntime {
  /** The Docker runtime underneath, which the checkpoints adapter shares. */
  readonly containers: ContainerRuntime
  readonly #peerId: string

  constructor (containers: ContainerRuntime, peerId: string) {
    this.containers = containers
    this.#peerId = peerId
  }

  /** Connects to Docker; throws when it does not answer or cannot checkpoint (then the board hosts no missions). */
  static async open (options: DockerMissionRuntimeOptions): Promise<DockerMissionRuntime> {
    const containers = new ContainerRuntime({ dockerHost: options.dockerHost, execRoot: options.execRoot, stateDir: options.stateDir })
    await containers.start()
    return new DockerMissionRuntime(containers, options.peerId)
  }

  async startFresh (spec: ContainerSpec, epoch: number, options: { signal?: AbortSignal }): Promise<string> {
    return await this.containers.startFresh(spec, { mission: spec.mission, peerId: this.#peerId, epoch }, options)
  }

  async stop (containerId: string): Promise<void> { await this.containers.stop(containerId) }

  async listOwn (options: { mission?: string, all?: boolean }): Promise<OwnContainer[]> {
    const mission = options.mission != null ? `${LABEL_MISSION}=${options.mission}` : LABEL_MISSION
    const list = await this.containers.docker.listContainers({ all: options.all === true, filters: { label: [mission, `${LABEL_PEER}=${this.#peerId}`] } })
    return list.map(c => ({ id: c.Id, mission: c.Labels[LABEL_MISSION] ?? '?', epoch: Number(c.Labels[LABEL_EPOCH] ?? 0), running: c.State === 'running' }))
  }

  async stateOf (containerId: string): Promise<ContainerState | null> {
    try {
      const state = (await this.containers.inspect(containerId)).State
      if (state.Running === true) return { running: true, exitReason: null }
      return { running: false, exitReason: `the process exited with code ${state.ExitCode}${state.OOMKilled ? ' (out of memory)' : ''}${state.Error !== '' ? `: ${state.Error}` : ''}` }
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404) return null
      return { running: false, exitReason: 'the container is gone' }
    }
  }

  async removeAllOwn (): Promise<void> { await removeContainersOf(this.containers.docker, this.#peerId) }

  async tagImage (imageId: string, ref: string): Promise<void> { await this.containers.tagImage(imageId, ref) }

  async listImages (): Promise<ImageListing[]> {
    return (await this.containers.docker.listImages()).map(i => ({ id: i.Id, tags: i.RepoTags ?? [] }))
  }

  async followLogs (containerId: string): Promise<Readable> {
    return await this.containers.docker.getContainer(containerId).logs({ follow: true, stdout: true, stderr: true, timestamps: true }) as unknown as Readable
  }

  async close (): Promise<void> { await this.containers.close() }
}

/** Kills and removes every running container labelled with the peer id; gives up after `timeoutMs`. */
async function removeContainersOf (docker: Docker, peerId: string, timeoutMs = REMOVE_ALL_TIMEOUT_MS): Promise<number> {
  const signal = AbortSignal.timeout(timeoutMs)
  const list = await docker.listContainers({ filters: { label: [`${LABEL_PEER}=${peerId}`] }, abortSignal: signal } as object)
  await Promise.allSettled(list.map(async c => { await docker.getContainer(c.Id).remove({ force: true, abortSignal: signal } as object) }))
  return list.length
}
