// Which images this board's Docker holds and which it is fetching from the swarm, as every heartbeat tells the
// others: placement only picks boards that have (or are fetching) a mission's image, and a deploy of an image no
// live board has is refused.
import type Docker from 'dockerode'
import { normalizeImageRef } from '../manifest/manifest.ts'

/** Image refs listed per heartbeat at most (a heartbeat must stay under the detector's maxHeartbeatBytes). */
const MAX_LISTED_REFS = 96
const MAX_LISTED_CHARS = 6000

export interface ImageFetchProgress { image: string, fetchedBytes: number, totalBytes: number }

/** A finished fetch of an image from the swarm (the newest few, for `tandem status`). */
export interface ImageFetchRecord extends ImageFetchProgress { at: number, ms: number, loaded: boolean, error: string | null }

const FETCH_HISTORY = 20

/** What a heartbeat carries (`extras.images`). */
export interface ImagesExtra {
  /** Whether this board's Docker answered its latest image listing (every 2 s). */
  docker: boolean
  present: string[]
  fetching: ImageFetchProgress[]
}

/** Reads `extras.images` of another peer's heartbeat; anything malformed counts as "no images known". */
export function imagesExtraOf (extras: Record<string, unknown> | undefined): ImagesExtra {
  const value = extras?.images as Partial<ImagesExtra> | undefined
  const present = Array.isArray(value?.present) ? value.present.filter((r): r is string => typeof r === 'string') : []
  const fetching = Array.isArray(value?.fetching)
    ? value.fetching.filter((f): f is ImageFetchProgress => f != null && typeof f.image === 'string' && Number.isFinite(f.fetchedBytes) && Number.isFinite(f.totalBytes))
    : []
  return { docker: value?.docker === true, present, fetching }
}

export class ImageInventory {
  readonly #docker: Docker
  readonly #log: (line: string) => void
  /** Normalized refs (repo:tag and sha256 ids) of every image in this board's Docker. */
  #present = new Set<string>()
  readonly #fetching = new Map<string, ImageFetchProgress & { startedAt: number }>()
  readonly #history: ImageFetchRecord[] = []
  #refreshing: Promise<void> | undefined
  #timer: NodeJS.Timeout | undefined
  #failedOnce = false
  #answering = false

  constructor (options: { docker: Docker, log: (line: string) => void }) {
    this.#docker = options.docker
    this.#log = options.log
  }

  async start (refreshMs = 2000): Promise<void> {
    await this.refresh()
    this.#timer = setInterval(() => { void this.refresh() }, refreshMs)
  }

  stop (): void { clearInterval(this.#timer) }

  /** Re-reads the image list from Docker (also right after a load or a build, so placement learns it at once). */
  async refresh (): Promise<void> {
    this.#refreshing ??= (async () => {
      try {
        const images = await this.#docker.listImages()
        const present = new Set<string>()
        for (const image of images) {
          present.add(image.Id)
          for (const tag of image.RepoTags ?? []) if (tag !== '<none>:<none>') present.add(normalizeImageRef(tag))
        }
        this.#present = present
        this.#failedOnce = false
        this.#answering = true
      } catch (err) {
        this.#answering = false
        if (!this.#failedOnce) this.#log(`images: cannot list Docker's images: ${(err as Error).message}`)
        this.#failedOnce = true
      } finally {
        this.#refreshing = undefined
      }
    })()
    await this.#refreshing
  }

  /** Whether Docker answered the latest listing: a board whose Docker does not answer runs nothing. */
  get answering (): boolean { return this.#answering }

  has (ref: string): boolean { return this.#present.has(normalizeImageRef(ref)) }

  /** Every image ref present here, normalized. */
  present (): string[] { return [...this.#present] }

  isFetching (ref: string): boolean { return this.#fetching.has(normalizeImageRef(ref)) }
  fetching (): ImageFetchProgress[] { return [...this.#fetching.values()].map(f => ({ image: f.image, fetchedBytes: f.fetchedBytes, totalBytes: f.totalBytes })) }

  beginFetch (ref: string, totalBytes = 0): void {
    const image = normalizeImageRef(ref)
    this.#fetching.set(image, { image, fetchedBytes: 0, totalBytes, startedAt: performance.now() })
  }

  progress (ref: string, fetchedBytes: number, totalBytes: number): void {
    const entry = this.#fetching.get(normalizeImageRef(ref))
    if (entry == null) return
    entry.fetchedBytes = fetchedBytes
    entry.totalBytes = totalBytes
  }

  /** The fetch is over: `result` gives what crossed the network (absent when it failed with `error`). */
  endFetch (ref: string, result: { loaded: boolean, fetchedBytes: number, totalBytes: number } | null, error: string | null = null): void {
    const image = normalizeImageRef(ref)
    const entry = this.#fetching.get(image)
    if (entry == null) return
    this.#fetching.delete(image)
    this.#history.push({
      image,
      fetchedBytes: result?.fetchedBytes ?? entry.fetchedBytes,
      totalBytes: result?.totalBytes ?? entry.totalBytes,
      loaded: result?.loaded ?? false,
      at: Date.now(),
      ms: Math.round(performance.now() - entry.startedAt),
      error
    })
    if (this.#history.length > FETCH_HISTORY) this.#history.splice(0, this.#history.length - FETCH_HISTORY)
  }

  /** `tandem status` section: what is being fetched and the newest finished fetches. */
  status (): { docker: boolean, fetching: ImageFetchProgress[], fetched: ImageFetchRecord[] } {
    return { docker: this.#answering, fetching: this.fetching(), fetched: this.#history.map(r => ({ ...r })) }
  }

  /**
   * The heartbeat's `extras.images`: the images missions use first (`wanted`), then others until the size bound;
   * a board with hundreds of images lists only some, so a deploy of a rare one may be refused by a peer that cannot
   * see it: deploy through a peer on that board.
   */
  extra (wanted: Iterable<string>): ImagesExtra {
    const listed: string[] = []
    let chars = 0
    const add = (ref: string): void => {
      if (listed.length >= MAX_LISTED_REFS || chars + ref.length > MAX_LISTED_CHARS || listed.includes(ref)) return
      listed.push(ref)
      chars += ref.length + 3
    }
    for (const ref of wanted) { const image = normalizeImageRef(ref); if (this.#present.has(image)) add(image) }
    for (const ref of this.#present) if (!ref.startsWith('sha256:')) add(ref)
    return { docker: this.#answering, present: listed, fetching: this.fetching() }
  }
}
