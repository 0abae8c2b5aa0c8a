// Mission images shared through the bundle store, one DAG per layer: stored once per image id from the primary's
// Docker, and loaded into a board's Docker with only the layers it lacks.
import { Readable } from 'node:stream'
import type { CID } from 'multiformats/cid'
import type { BundleStore, ImageFetchProgress } from './bundle-store.ts'
import type { ContainerRuntime } from './runtime.ts'
import type { ImageManifest } from './format.ts'
import { CheckpointError, ImageMissingError } from './errors.ts'

export interface ShareImageResult {
  /** Root of the image's per-layer manifest (what a checkpoint's `spec.imageCid` points to). */
  cid: CID
  imageId: string
  /** Bytes of all the image's layer tars. */
  totalBytes: number
  /** Bytes this board's store did not hold before (layers shared with images stored earlier cost nothing). */
  newBytes: number
  ms: number
}

export interface EnsureImageOptions {
  signal?: AbortSignal
  /** Peers to ask first for the layers (default: every connected peer). */
  providers?: string[]
  /** Layer bytes fetched so far, of those that must come. */
  onProgress?: (progress: ImageFetchProgress) => void
  /** The image id, when the caller knows it (a checkpoint's spec does): a board that has it then reads nothing. */
  imageId?: string
}

export interface EnsureImageResult {
  /** Whether the image was loaded into Docker (false: Docker had it). */
  loaded: boolean
  imageId: string
  /** Bytes that crossed the network. */
  fetchedBytes: number
  /** Layer bytes that had to come (missing from Docker and from this board's store). */
  totalBytes: number
  /** Leading layers Docker already held through other images: neither fetched nor loaded. */
  reusedLayers: number
  ms: number
}

export interface ImageSharingComponents {
  runtime: Pick<ContainerRuntime, 'imageInfo' | 'saveImage' | 'loadImage' | 'tagImage' | 'layerChains'>
  store: Pick<BundleStore, 'imageCid' | 'getImageManifest' | 'putImage' | 'backend' | 'getBlock' | 'fetchImageLayers' | 'imageArchive' | 'recordImageLayers'>
}

export class ImageSharing {
  readonly #runtime: ImageSharingComponents['runtime']
  readonly #store: ImageSharingComponents['store']
  /** Per image id: its upload, kept once finished (an image is stored once). */
  readonly #uploads = new Map<string, Promise<ShareImageResult>>()
  /** Per image CID: the load in flight, and everyone who wants its progress. */
  readonly #loads = new Map<string, { done: Promise<EnsureImageResult>, listeners: Set<(p: ImageFetchProgress) => void> }>()
  /** Aborts image loads in flight on stop (a caller's signal only ends its own wait). */
  readonly #lifetime = new AbortController()

  constructor (components: ImageSharingComponents) {
    this.#runtime = components.runtime
    this.#store = components.store
  }

  /** Aborts the loads in flight and waits for them to settle. */
  async stop (): Promise<void> {
    this.#lifetime.abort(new CheckpointError('checkpointer stopped'))
    await Promise.allSettled([...this.#loads.values()].map(async l => await l.done))
  }

  /**
   * The image's CID once it is stored; until then starts storing it in the background and returns null, so the
   * mission's first checkpoints are not held up by a `docker save` of the whole image.
   */
  async sharedOrStartSharing (imageId: string): Promise<CID | null> {
    const known = await this.#store.imageCid(imageId)
    if (known != null) return known
    this.share(imageId, this.#lifetime.signal).catch(() => {})
    return null
  }

  /**
   * Stores an image in the bundle store, one DAG per layer, and returns its per-layer manifest's CID. Once per image
   * id: concurrent calls share one upload, a finished one is remembered (also across restarts, by the store).
   */
  async share (imageRef: string, signal?: AbortSignal): Promise<ShareImageResult> {
    const info = await this.#runtime.imageInfo(imageRef)
    if (info == null) throw new ImageMissingError(`image ${imageRef} is not on this board`)
    let pending = this.#uploads.get(info.id)
    if (pending == null) {
      pending = (async () => {
        const started = performance.now()
        const known = await this.#store.imageCid(info.id)
        if (known != null) {
          const manifest = await this.#store.getImageManifest(known, { offline: true })
          return { cid: known, imageId: info.id, totalBytes: manifest.totalBytes, newBytes: 0, ms: performance.now() - started }
        }
        const save = await this.#runtime.saveImage(info.id, signal)
        const stored = await this.#store.putImage(save, { imageId: info.id, tags: info.tags, arch: info.arch }, signal)
        return { cid: stored.cid, imageId: info.id, totalBytes: stored.manifest.totalBytes, newBytes: stored.newBytes, ms: performance.now() - started }
      })()
      this.#uploads.set(info.id, pending)
      pending.catch(() => this.#uploads.delete(info.id))
    }
    return await pending
  }

  /**
   * Makes the image whose manifest is `imageCid` present in this board's Docker: nothing when it is there; otherwise
   * only the layers Docker lacks (after the longest chain of leading layers some local image already has) are
   * fetched, blocks this store holds are not, and the needed layers are streamed from the store into `docker load`.
   * Concurrent calls for one image share one load.
   */
  async ensure (imageCid: CID, options: EnsureImageOptions = {}): Promise<EnsureImageResult> {
    const started = performance.now()
    if (options.imageId != null && await this.#runtime.imageInfo(options.imageId) != null) {
      return { loaded: false, imageId: options.imageId, fetchedBytes: 0, totalBytes: 0, reusedLayers: 0, ms: performance.now() - started }
    }
    const key = imageCid.toString()
    let load = this.#loads.get(key)
    if (load == null) {
      const listeners = new Set<(p: ImageFetchProgress) => void>()
      const done = this.#load(imageCid, options.providers, p => { for (const l of listeners) l(p) })
      load = { done, listeners }
      this.#loads.set(key, load)
      done.finally(() => this.#loads.delete(key)).catch(() => {})
    }
    const { onProgress } = options
    if (onProgress != null) load.listeners.add(onProgress)
    try {
      const result = await untilAborted(load.done, options.signal)
      if (options.imageId != null && result.imageId !== options.imageId) {
        throw new ImageMissingError(`image ${key} holds ${result.imageId}, not ${options.imageId}`)
      }
      return result
    } finally {
      if (onProgress != null) load.listeners.delete(onProgress)
    }
  }

  async #load (imageCid: CID, providers: string[] | undefined, onProgress: (p: ImageFetchProgress) => void): Promise<EnsureImageResult> {
    const started = performance.now()
    const signal = this.#lifetime.signal
    const manifestWasLocal = await this.#store.backend.has(imageCid)
    const manifest: ImageManifest = await this.#store.getImageManifest(imageCid, { signal, providers })
    const manifestBytes = manifestWasLocal ? 0 : (await this.#store.getBlock(imageCid, { signal, offline: true })).byteLength
    const present = await this.#runtime.imageInfo(manifest.imageId)
    if (present != null) {
      // The same image under another name (e.g. a tag removed and the image id kept by another tag): name it again.
      for (const tag of manifest.tags) if (!present.tags.includes(tag)) await this.#runtime.tagImage(manifest.imageId, tag)
      return { loaded: false, imageId: manifest.imageId, fetchedBytes: manifestBytes, totalBytes: 0, reusedLayers: 0, ms: performance.now() - started }
    }
    const diffIds = manifest.layers.map(l => l.diffId)
    const reusedLayers = Math.max(0, ...(await this.#runtime.layerChains()).map(chain => commonPrefixLength(chain, diffIds)))
    const needed = manifest.layers.slice(reusedLayers)
    const fetched = await this.#store.fetchImageLayers(imageCid, manifest, needed, { signal, providers, onProgress })
    try {
      await this.#runtime.loadImage(Readable.from(this.#store.imageArchive(manifest, reusedLayers, { signal })), signal)
    } catch (err) {
      throw new CheckpointError(`docker load of image ${manifest.imageId} (${needed.length} of ${manifest.layers.length} layers from ${imageCid.toString()}) failed: ${(err as Error).message}`)
    }
    if (await this.#runtime.imageInfo(manifest.imageId) == null) throw new ImageMissingError(`docker load of ${imageCid.toString()} did not produce image ${manifest.imageId}`)
    await this.#store.recordImageLayers(imageCid, manifest, needed)
    return {
      loaded: true,
      imageId: manifest.imageId,
      fetchedBytes: manifestBytes + fetched.networkBytes,
      totalBytes: fetched.totalBytes,
      reusedLayers,
      ms: performance.now() - started
    }
  }
}

function commonPrefixLength (a: string[], b: string[]): number {
  let n = 0
  while (n < a.length && n < b.length && a[n] === b[n]) n++
  return n
}

/** `work`, or the signal's reason once it aborts (the work itself goes on). */
async function untilAborted<T> (work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal == null) return await work
  signal.throwIfAborted()
  let onAbort = (): void => {}
  const aborted = new Promise<never>((_resolve, reject) => { onAbort = () => { reject(signal.reason) }; signal.addEventListener('abort', onAbort, { once: true }) })
  try { return await Promise.race([work, aborted]) } finally { signal.removeEventListener('abort', onAbort) }
}
