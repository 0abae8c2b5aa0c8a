// The missions' checkpoints port (peer/missions/ports.ts) over the Checkpointer and its bundle store.
import { CID } from 'multiformats/cid'
import type { BundleStore } from './bundle-store.ts'
import { Checkpointer, type LocalBundle } from './checkpointer.ts'
import type { ContainerRuntime } from './runtime.ts'
import type { ContainerSpec, FetchedImage, HeldBundle, MissionCheckpoints, RestoredCheckpoint, StoredImage, TakenCheckpoint, TakeRequest } from '../peer/missions/ports.ts'

const PROBE_RECORD = '/tandem/storage-probe'

export class StoreMissionCheckpoints implements MissionCheckpoints {
  readonly #runtime: ContainerRuntime
  readonly #checkpointer: Checkpointer
  readonly #peerId: string
  /** The fetched bundles behind the held ones handed out. */
  readonly #local = new WeakMap<HeldBundle, LocalBundle>()

  constructor (runtime: ContainerRuntime, checkpointer: Checkpointer, peerId: string) {
    this.#runtime = runtime
    this.#checkpointer = checkpointer
    this.#peerId = peerId
  }

  /** `peerId`: the peer whose containers these are (their `tandem.peer` label). */
  static async open (options: { runtime: ContainerRuntime, store: BundleStore, peerId: string }): Promise<StoreMissionCheckpoints> {
    const checkpointer = new Checkpointer({ runtime: options.runtime, store: options.store })
    await checkpointer.start()
    return new StoreMissionCheckpoints(options.runtime, checkpointer, options.peerId)
  }

  get #store (): BundleStore { return this.#checkpointer.store }

  async take (containerId: string, request: TakeRequest): Promise<TakenCheckpoint> {
    const { parent, ...rest } = request
    const result = await this.#checkpointer.take(containerId, { ...rest, parent: parent != null ? CID.parse(parent) : null })
    return {
      cid: result.cid.toString(),
      pausedMs: result.stats.pausedMs,
      storeMs: result.stats.storeMs,
      frozenTimeUs: result.stats.frozenTimeUs,
      phases: result.stats.phases,
      newBytes: result.manifest.sizes.newBytes,
      totalBytes: result.manifest.sizes.totalBytes
    }
  }

  async fetch (cid: string, options: { signal?: AbortSignal, providers?: string[] }): Promise<HeldBundle> {
    const local = await this.#checkpointer.fetch(CID.parse(cid), options)
    const held: HeldBundle = {
      cid: local.cid.toString(),
      mission: local.manifest.mission,
      epoch: local.manifest.epoch,
      seq: local.manifest.seq,
      fetchedBytes: local.fetch.fetchedBytes,
      repairedBlocks: local.fetch.repairedBlocks
    }
    this.#local.set(held, local)
    return held
  }

  async stage (bundle: HeldBundle, options: { signal?: AbortSignal }): Promise<void> {
    await this.#checkpointer.stage(this.#localOf(bundle), options)
  }

  async unstage (mission: string): Promise<void> { await this.#checkpointer.unstage(mission) }

  async restore (source: HeldBundle | string, options: { peerId: string, epoch: number, signal?: AbortSignal }): Promise<RestoredCheckpoint> {
    const from = typeof source === 'string' ? CID.parse(source) : (this.#local.get(source) ?? CID.parse(source.cid))
    return await this.#checkpointer.restore(from, options)
  }

  async startWithData (spec: ContainerSpec, epoch: number, bundle: HeldBundle, options: { signal?: AbortSignal }): Promise<string> {
    const runtime = this.#runtime
    const id = await runtime.create(spec, { mission: spec.mission, peerId: this.#peerId, epoch }, options)
    if (spec.dataPath != null) {
      const name = (await runtime.inspect(id)).Name.replace(/^\//, '')
      await this.#store.materializeTree(this.#localOf(bundle).manifest.trees.data, runtime.dataDirFor(name), options)
    }
    await runtime.docker.getContainer(id).start()
    return id
  }

  async prune (mission: string): Promise<void> { await this.#store.prune(mission, 0) }

  async storeImage (image: string, signal?: AbortSignal): Promise<StoredImage> {
    const stored = await this.#checkpointer.shareImage(image, signal)
    return { cid: stored.cid.toString(), totalBytes: stored.totalBytes, newBytes: stored.newBytes, ms: stored.ms }
  }

  async fetchImage (cid: string, options: { signal?: AbortSignal, providers?: string[], onProgress?: (fetchedBytes: number, totalBytes: number) => void }): Promise<FetchedImage> {
    const { onProgress, ...rest } = options
    return await this.#checkpointer.ensureImage(CID.parse(cid), { ...rest, onProgress: p => { onProgress?.(p.fetchedBytes, p.totalBytes) } })
  }

  async probe (): Promise<void> {
    await this.#store.backend.writeRecord(PROBE_RECORD, new Uint8Array([1]))
    await this.#store.backend.deleteRecord(PROBE_RECORD)
  }

  #localOf (bundle: HeldBundle): LocalBundle {
    const local = this.#local.get(bundle)
    if (local == null) throw new Error(`checkpoint ${bundle.cid} was not fetched through this store`)
    return local
  }
}
