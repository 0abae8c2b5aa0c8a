// What the store keeps: records of retained checkpoints (the last `keep` per mission, and the pinned ones), of
// images and of layers; collection deletes the blocks nothing retained links to.
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import type { CheckpointManifest, ImageLayer, ImageManifest } from '../format.ts'
import { CheckpointError } from '../errors.ts'
import { asSealedRoot, type Blocks } from './blocks.ts'
import type { StoreLock } from './store-lock.ts'

const CHECKPOINT_PREFIX = '/tandem/checkpoints'
const IMAGE_PREFIX = '/tandem/images'
const LAYER_PREFIX = '/tandem/layers'

const MISSION_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/
export function assertMissionName (mission: string): void {
  if (!MISSION_NAME.test(mission)) throw new CheckpointError(`invalid mission name ${JSON.stringify(mission)}: use letters, digits, '.', '_' or '-'`)
}

export interface RetainedCheckpoint { mission: string, epoch: number, seq: number, cid: CID }

export interface PruneResult { pruned: RetainedCheckpoint[], deletedBlocks: number }

export interface RetentionComponents {
  blocks: Blocks
  lock: StoreLock
  /** Checkpoints (root CIDs) collection must keep however old. */
  pinned: () => Iterable<string>
}

export class Retention {
  readonly #blocks: Blocks
  readonly #lock: StoreLock
  readonly #pinned: () => Iterable<string>
  /** Link sets of complete retained DAGs, by root CID (see linksOf). */
  readonly #linkSets = new Map<string, Set<string>>()
  #collecting: Promise<void> = Promise.resolve()

  constructor (components: RetentionComponents) {
    this.#blocks = components.blocks
    this.#lock = components.lock
    this.#pinned = components.pinned
  }

  async record (cid: CID, manifest: CheckpointManifest): Promise<void> {
    assertMissionName(manifest.mission)
    await this.#blocks.backend.writeRecord(checkpointKey(manifest.mission, manifest.epoch, manifest.seq), cid.bytes)
  }

  /** Retained checkpoints of a mission, oldest first (by epoch, then sequence number). */
  async checkpoints (mission: string): Promise<RetainedCheckpoint[]> {
    assertMissionName(mission)
    const out: RetainedCheckpoint[] = []
    for await (const { key, value } of this.#blocks.backend.listRecords(`${CHECKPOINT_PREFIX}/${mission}/`)) {
      const m = /\/(\d+)-(\d+)$/.exec(key)
      if (m?.[1] == null || m[2] == null) continue
      out.push({ mission, epoch: Number(m[1]), seq: Number(m[2]), cid: CID.decode(value) })
    }
    return out.sort((a, b) => a.epoch - b.epoch || a.seq - b.seq)
  }

  /** Collects a mission's checkpoints beyond the last `keep` in the background; `idle()` waits for it. */
  collectInBackground (mission: string, keep: number): void {
    // A failed collection loses nothing: the surplus stays until the next one.
    this.#collecting = this.#collecting.then(async () => { await this.prune(mission, keep, { wait: false }) }).catch(() => {})
  }

  async idle (): Promise<void> { await this.#collecting }

  /** Drops all but the newest `keep` checkpoints of a mission and deletes blocks nothing retained links to. */
  async prune (mission: string, keep: number, options: { wait?: boolean } = {}): Promise<PruneResult> {
    const nothing = { pruned: [], deletedBlocks: 0 }
    if ((await this.checkpoints(mission)).length <= keep) return nothing
    const collect = async (): Promise<PruneResult> => await this.#collect(mission, keep)
    return (options.wait === false ? await this.#lock.exclusiveIfIdle(collect) : await this.#lock.exclusive(collect)) ?? nothing
  }

  async #collect (mission: string, keep: number): Promise<PruneResult> {
    const backend = this.#blocks.backend
    const all = await this.checkpoints(mission)
    const pinned = new Set(this.#pinned())
    const pruned = all.slice(0, Math.max(0, all.length - keep)).filter(p => !pinned.has(p.cid.toString()))
    if (pruned.length === 0) return { pruned, deletedBlocks: 0 }
    for (const p of pruned) await backend.deleteRecord(checkpointKey(mission, p.epoch, p.seq))
    const liveRoots: CID[] = []
    for (const prefix of [CHECKPOINT_PREFIX, IMAGE_PREFIX, LAYER_PREFIX]) {
      for await (const { value } of backend.listRecords(`${prefix}/`)) liveRoots.push(CID.decode(value))
    }
    const live = await Promise.all(liveRoots.map(async root => await this.#linksOf(root)))
    const dead = new Set<string>()
    for (const p of pruned) {
      for (const c of await this.#linksOf(p.cid)) dead.add(c)
      this.#linkSets.delete(p.cid.toString())
    }
    const doomed = [...dead].filter(c => !live.some(links => links.has(c))).map(c => CID.parse(c))
    this.#blocks.forget(doomed)
    await backend.deleteMany(doomed)
    return { pruned, deletedBlocks: doomed.length }
  }

  /**
   * The blocks a retained DAG links to. A DAG found complete is immutable, so its set is kept for the next prune
   * (a mission image alone is ~35k blocks: walking it on every checkpoint would cost ~0.1-0.5 s).
   */
  async #linksOf (root: CID): Promise<Set<string>> {
    const key = root.toString()
    const kept = this.#linkSets.get(key)
    if (kept != null) return kept
    const links = new Set<string>()
    if (await this.#collectLinks(root, links)) this.#linkSets.set(key, links)
    return links
  }

  /**
   * Every block a DAG links to that is present locally, not following `parent` (history is not retained) nor a
   * checkpoint's `imageCid` (images are retained by their own records). Returns whether no linked node was missing.
   */
  async #collectLinks (root: CID, into: Set<string>): Promise<boolean> {
    let complete = true
    const stack = [root]
    while (stack.length > 0) {
      const cid = stack.pop() as CID
      const key = cid.toString()
      if (into.has(key)) continue
      if (cid.code !== dagCbor.code) { into.add(key); continue }
      let node: unknown
      try { node = this.#blocks.decodeNode(cid, await this.#blocks.backend.get(cid, { offline: true })) } catch { complete = false; continue }
      try { const sealed = asSealedRoot(node); if (sealed != null) this.#blocks.openEnvelope(sealed.keys) } catch {}
      into.add(key)
      forEachLink(node, c => stack.push(c))
    }
    return complete
  }

  /** Records a stored image and its layers (by diffId). */
  async recordImage (cid: CID, imageId: string, layers: Map<string, CID>): Promise<void> {
    for (const [diffId, layerCid] of layers) await this.#blocks.backend.writeRecord(layerKey(diffId), layerCid.bytes)
    await this.#blocks.backend.writeRecord(imageKey(imageId), cid.bytes)
  }

  /** The CID under which this store holds an image with all its layers, if it does. */
  async imageCid (imageId: string): Promise<CID | null> {
    const rec = await this.#blocks.backend.readRecord(imageKey(imageId))
    if (rec == null) return null
    const cid = CID.decode(rec)
    try {
      // A record of an older image format (one archive) does not count: the image is stored again per layer.
      await this.#blocks.getImageManifest(cid, { offline: true })
      return cid
    } catch { return null }
  }

  /** Whether this store holds the whole tar of a layer. */
  async hasLayer (diffId: string): Promise<boolean> {
    return (await this.#blocks.backend.readRecord(layerKey(diffId))) != null
  }

  /**
   * Remembers fetched layers under their diffIds, and the image once all its layers are here. Only after Docker
   * loaded them: Docker checks each layer's diffId, this store does not hash whole layers.
   */
  async recordImageLayers (imageCid: CID, manifest: ImageManifest, layers: ImageLayer[]): Promise<void> {
    for (const layer of layers) await this.#blocks.backend.writeRecord(layerKey(layer.diffId), layer.cid.bytes)
    const all = await Promise.all(manifest.layers.map(async l => await this.hasLayer(l.diffId)))
    if (all.every(Boolean)) await this.#blocks.backend.writeRecord(imageKey(manifest.imageId), imageCid.bytes)
  }
}

function forEachLink (value: unknown, visit: (cid: CID) => void): void {
  const cid = CID.asCID(value)
  if (cid != null) { visit(cid); return }
  if (value instanceof Uint8Array || value === null || typeof value !== 'object') return
  if (Array.isArray(value)) { for (const v of value) forEachLink(v, visit); return }
  for (const [k, v] of Object.entries(value)) if (k !== 'parent' && k !== 'imageCid') forEachLink(v, visit)
}

function padded (n: number): string { return n.toString().padStart(12, '0') }

function checkpointKey (mission: string, epoch: number, seq: number): string {
  return `${CHECKPOINT_PREFIX}/${mission}/${padded(epoch)}-${padded(seq)}`
}

function layerKey (diffId: string): string {
  return `${LAYER_PREFIX}/${diffId.replace(/^sha256:/, '').replace(/[^A-Za-z0-9]/g, '_')}`
}

function imageKey (imageId: string): string {
  return `${IMAGE_PREFIX}/${imageId.replace(/^sha256:/, '').replace(/[^A-Za-z0-9]/g, '_')}`
}
