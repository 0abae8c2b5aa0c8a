// Mission images through the swarm's store: the primary stores its image for boards that lack it, a backup or next
// candidate brings it into its Docker. One lane per image, beside the missions' lanes.
import type { Action, LocalEvent } from '../../consensus/types.ts'
import type { ImageInventory } from '../image-inventory.ts'
import type { MissionEventData } from '../../consensus/events.ts'
import type { PeerMetrics } from '../metrics.ts'
import type { MissionCheckpoints, MissionRuntime } from './ports.ts'
import { enqueue, newLane, type Lane } from './lanes.ts'

type StoreImage = Extract<Action, { type: 'storeImage' }>
type FetchImage = Extract<Action, { type: 'fetchImage' }>

export interface ImageTransfersOptions {
  peerId: string
  runtime: MissionRuntime | undefined
  checkpoints: MissionCheckpoints | undefined
  images: Pick<ImageInventory, 'isFetching' | 'beginFetch' | 'progress' | 'endFetch' | 'refresh' | 'has'> | undefined
  signal: AbortSignal
  stopped: () => boolean
  local: (event: LocalEvent) => void
  record: (mission: string, event: MissionEventData) => void
  storageFailed: (err: unknown, mission: string) => void
  metrics: Pick<PeerMetrics, 'imageFetched'>
  /** What this board holds changed: the machine must learn it. */
  onImagesChanged: () => void
  /** The machine may place on this board now. */
  tick: () => void
  log: (line: string) => void
}

export class ImageTransfers {
  readonly #options: ImageTransfersOptions
  readonly #lanes = new Map<string, Lane>()

  constructor (options: ImageTransfersOptions) { this.#options = options }

  apply (action: StoreImage | FetchImage): void {
    if (action.type === 'storeImage') {
      this.#queue(`store ${action.image}`, async () => { await this.#store(action) })
      return
    }
    const images = this.#options.images
    if (images?.isFetching(action.image) === true) return
    images?.beginFetch(action.image)
    this.#options.onImagesChanged()
    this.#queue(`fetch ${action.image}`, async () => { await this.#fetch(action) })
  }

  async idle (): Promise<void> {
    await Promise.allSettled([...this.#lanes.values()].map(async lane => { await lane.onIdle() }))
  }

  #queue (key: string, work: () => Promise<void>): void {
    let lane = this.#lanes.get(key)
    if (lane == null) {
      lane = newLane()
      this.#lanes.set(key, lane)
    }
    enqueue(lane, work, err => { this.#options.log(`missions: ${key}: ${(err as Error).stack ?? String(err)}`) })
  }

  async #store (action: StoreImage): Promise<void> {
    const { checkpoints, local, record } = this.#options
    if (checkpoints == null) { local({ type: 'imageStoreFailed', mission: action.mission, epoch: action.epoch, error: 'no Docker on this board' }); return }
    try {
      const stored = await checkpoints.storeImage(action.image, this.#options.signal)
      record(action.mission, { kind: 'imageShared', image: action.image, totalBytes: stored.totalBytes, newBytes: stored.newBytes, ms: stored.ms })
      local({ type: 'imageStored', mission: action.mission, epoch: action.epoch, cid: stored.cid })
    } catch (err) {
      if (this.#options.stopped()) return
      this.#options.storageFailed(err, action.mission)
      record(action.mission, { kind: 'imageShareFailed', image: action.image, error: (err as Error).message })
      local({ type: 'imageStoreFailed', mission: action.mission, epoch: action.epoch, error: (err as Error).message })
    }
  }

  async #fetch (action: FetchImage): Promise<void> {
    const { checkpoints, images, local, record } = this.#options
    try {
      if (checkpoints == null || images == null) throw new Error('no Docker on this board')
      const result = await checkpoints.fetchImage(action.cid, {
        signal: this.#options.signal,
        providers: action.providers.filter(p => p !== this.#options.peerId),
        onProgress: (fetchedBytes, totalBytes) => { images.progress(action.image, fetchedBytes, totalBytes) }
      })
      await images.refresh()
      // The image may be here under another name only (one image id shared under several tags): name it as asked.
      if (!images.has(action.image)) {
        await this.#options.runtime?.tagImage(result.imageId, action.image)
        await images.refresh()
      }
      if (!images.has(action.image)) throw new Error(`image ${action.image} is still not in this board's Docker after loading ${result.imageId}`)
      if (result.loaded) {
        record(action.mission, { kind: 'imageLoaded', image: action.image, ms: result.ms, fetchedBytes: result.fetchedBytes, totalBytes: result.totalBytes, reusedLayers: result.reusedLayers })
      }
      this.#options.metrics.imageFetched(action.mission, result.fetchedBytes)
      images.endFetch(action.image, result)
      this.#options.onImagesChanged()
      this.#options.tick()
    } catch (err) {
      images?.endFetch(action.image, null, (err as Error).message)
      this.#options.onImagesChanged()
      if (this.#options.stopped()) return
      this.#options.storageFailed(err, action.mission)
      record(action.mission, { kind: 'imageLoadFailed', image: action.image, error: (err as Error).message })
      local({ type: 'imageFetchFailed', mission: action.mission, cid: action.cid, error: (err as Error).message })
    }
  }
}
