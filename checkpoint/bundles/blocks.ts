// Verified block and node reads from a BundleBackend (the swarm unless offline), with the keys that open sealed ones.
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { equals } from 'uint8arrays/equals'
import type { BundleBackend } from '../backend.ts'
import type { BlockSource } from '../block-exchange.ts'
import { asChunkList, asImageManifest, asManifest, type CheckpointManifest, type FileEntry, type ImageManifest } from '../format.ts'
import { BlockCorruptError, BlockUnavailableError, BundleFormatError } from '../errors.ts'
import { StorageError } from '../storage-health.ts'
import { SealError, asEnvelope, isSealed, sealedKeyId, type ContentKey, type KeyEnvelope, type SealIdentity } from '../sealing.ts'

export interface BlockReadOptions { signal?: AbortSignal, offline?: boolean, providers?: string[] }

/** The clear root of a sealed checkpoint: the content key wrapped for the view, and the sealed manifest. */
export const SEALED_CHECKPOINT_FORMAT = 'tandem/sealed-checkpoint/1'
export interface SealedRoot { format: typeof SEALED_CHECKPOINT_FORMAT, keys: KeyEnvelope, manifest: CID }

export function asSealedRoot (v: unknown): SealedRoot | null {
  if (v == null || typeof v !== 'object' || (v as { format?: unknown }).format !== SEALED_CHECKPOINT_FORMAT) return null
  const o = v as Partial<SealedRoot>
  if (CID.asCID(o.manifest) == null) throw new BundleFormatError('sealed checkpoint root without a manifest link')
  return { format: SEALED_CHECKPOINT_FORMAT, keys: asEnvelope(o.keys), manifest: CID.asCID(o.manifest) as CID }
}

export async function verifies (cid: CID, bytes: Uint8Array): Promise<boolean> {
  if (cid.multihash.code !== sha256.code) return false
  return equals((await sha256.digest(bytes)).digest, cid.multihash.digest)
}

export interface BlocksOptions {
  backend: BundleBackend
  exchange?: BlockSource | undefined
  blockTimeoutMs: number
  identity: SealIdentity | null
}

export class Blocks {
  readonly backend: BundleBackend
  readonly exchange: BlockSource | undefined
  readonly blockTimeoutMs: number
  /**
   * Raw chunk CIDs this store wrote or fetched and has not deleted: spares a store lookup per 4 KiB page
   * on every checkpoint. (The store owns its blocks: nothing else may delete them, e.g. Helia's gc.)
   */
  readonly known = new Set<string>()
  /** Opens the envelopes of sealed checkpoints wrapped for this board (none: it reads only clear ones). */
  readonly identity: SealIdentity | null
  /** Content keys this store may open blocks with, by id (hex): made here, or unwrapped from an envelope. */
  readonly keyring = new Map<string, ContentKey>()
  /** Corrupt blocks found in this store (and deleted, to be fetched again) since it opened. */
  repairedBlocks = 0
  /** When this store last hashed each block it holds: a check, a verified fetch or a verified read (see holdsIntact). */
  readonly #hashedAt = new Map<string, number>()

  constructor (options: BlocksOptions) {
    this.backend = options.backend
    this.exchange = options.exchange
    this.blockTimeoutMs = options.blockTimeoutMs
    this.identity = options.identity
  }

  /** One block, verified against its CID; from the swarm unless `offline`. */
  async getBlock (cid: CID, options: BlockReadOptions = {}): Promise<Uint8Array> {
    options.signal?.throwIfAborted()
    if (cid.multihash.code !== sha256.code) throw new BundleFormatError(`${cid.toString()}: unsupported hash 0x${cid.multihash.code.toString(16)}`)
    if (options.offline !== true && this.exchange != null && !(await this.backend.has(cid))) {
      // Straight from the providers' stores first: bitswap's want bookkeeping is the slow path (see fetch).
      const bytes = (await this.exchange.fetchBlocks([cid], { signal: options.signal, providers: options.providers }).catch(() => null))?.get(cid.toString())
      if (bytes != null && await verifies(cid, bytes)) {
        await this.backend.putMany([{ cid, bytes }], { signal: options.signal })
        return bytes
      }
    }
    // A local read waits on no peer: it needs no timer (thousands of page chunks are read per restore).
    const timeout = options.offline === true ? undefined : AbortSignal.timeout(this.blockTimeoutMs)
    const signal = timeout == null ? options.signal : options.signal != null ? AbortSignal.any([options.signal, timeout]) : timeout
    let bytes: Uint8Array
    try {
      bytes = await this.backend.get(cid, { signal, offline: options.offline })
    } catch (err: any) {
      if (options.signal?.aborted === true) throw options.signal.reason ?? err
      if (err instanceof StorageError && err.problem === 'store corrupt') { this.distrustAll(); throw new BlockCorruptError(cid) }
      if (err instanceof StorageError) throw err
      if (timeout?.aborted === true) throw new BlockUnavailableError(cid, `no peer delivered it within ${this.blockTimeoutMs} ms`)
      if (options.offline === true) throw new BlockUnavailableError(cid, 'not in the local store')
      throw new BlockUnavailableError(cid, err?.message ?? String(err))
    }
    if (!(await verifies(cid, bytes))) {
      this.distrustAll()
      throw new BlockCorruptError(cid)
    }
    this.#hashedAt.set(cid.toString(), Date.now())
    return bytes
  }

  /** A block that arrived and matched its CID, now in the store. */
  noteFetched (cid: CID): void {
    const key = cid.toString()
    this.known.add(key)
    this.#hashedAt.set(key, Date.now())
  }

  /**
   * One corrupt block found means the disk may have flipped others: no block counts as recently hashed any more, so
   * the next fetch reads and hashes everything it holds before its ack (and re-fetches every bad one at once, not one
   * per failed staging).
   */
  distrustAll (): void {
    this.#hashedAt.clear()
  }

  /** Blocks deleted from the store (collected or corrupt): neither known nor hashed any more. */
  forget (cids: Iterable<CID>): void {
    for (const cid of cids) {
      const key = cid.toString()
      this.known.delete(key)
      this.#hashedAt.delete(key)
    }
  }

  /**
   * Whether this store holds the block intact: read and hashed. A block whose bytes do not match its CID (or that
   * the store reports corrupt) is deleted, so that it is fetched again. With `hashedWithinMs`, a block this store
   * hashed that recently counts as intact without being read again.
   */
  async holdsIntact (cid: CID, options: { hashedWithinMs?: number } = {}): Promise<boolean> {
    const hashedAt = this.#hashedAt.get(cid.toString())
    if (options.hashedWithinMs != null && hashedAt != null && Date.now() - hashedAt < options.hashedWithinMs) return true
    let intact: boolean
    try {
      // One read, no `has` first: a missing block throws NotFoundError.
      intact = await verifies(cid, await this.backend.get(cid, { offline: true }))
    } catch (err) {
      if ((err as Error).name === 'NotFoundError') return false
      if (!(err instanceof StorageError && err.problem === 'store corrupt')) throw err
      intact = false
    }
    if (!intact) {
      this.repairedBlocks++
      this.distrustAll()
      this.forget([cid])
      await this.backend.deleteMany([cid])
    } else {
      this.#hashedAt.set(cid.toString(), Date.now())
    }
    return intact
  }

  /** holdsIntact for a batch: one read of the store for all the blocks not hashed within `hashedWithinMs`. */
  async holdIntactMany (cids: CID[], options: { hashedWithinMs?: number } = {}): Promise<boolean[]> {
    const now = Date.now()
    const intact: boolean[] = cids.map(cid => {
      const hashedAt = this.#hashedAt.get(cid.toString())
      return options.hashedWithinMs != null && hashedAt != null && now - hashedAt < options.hashedWithinMs
    })
    const toRead = cids.map((cid, i) => ({ cid, i })).filter(({ i }) => !intact[i])
    if (toRead.length === 0) return intact
    let read: Array<Uint8Array | undefined> | null = null
    if (this.backend.getManyLocal != null) {
      try {
        read = await this.backend.getManyLocal(toRead.map(r => r.cid))
      } catch (err) {
        // A corrupt table fails the whole batch: each block is read alone to find which.
        if (!(err instanceof StorageError && err.problem === 'store corrupt')) throw err
      }
    }
    if (read == null) {
      for (const { cid, i } of toRead) intact[i] = await this.holdsIntact(cid, options)
      return intact
    }
    const corrupt: CID[] = []
    for (const [j, { cid, i }] of toRead.entries()) {
      const bytes = read[j]
      if (bytes == null) continue
      if (await verifies(cid, bytes)) intact[i] = true
      else corrupt.push(cid)
    }
    if (corrupt.length > 0) {
      this.repairedBlocks += corrupt.length
      this.distrustAll()
      this.forget(corrupt)
      await this.backend.deleteMany(corrupt)
    }
    // Marked after any distrust: these were just hashed.
    for (const { cid, i } of toRead) if (intact[i] === true) this.#hashedAt.set(cid.toString(), now)
    return intact
  }

  async getNode (cid: CID, options: BlockReadOptions = {}): Promise<unknown> {
    if (cid.code !== dagCbor.code) throw new BundleFormatError(`${cid.toString()}: expected a dag-cbor node`)
    return this.decodeNode(cid, await this.getBlock(cid, options))
  }

  /** A node's value; a sealed node is opened with the keyring's key (a SealError without it). */
  decodeNode (cid: CID, bytes: Uint8Array): unknown {
    const plain = isSealed(bytes) ? this.keyOf(sealedKeyId(bytes), cid).open(bytes) : bytes
    try { return dagCbor.decode(plain) } catch (err: any) { throw new BundleFormatError(`${cid.toString()}: undecodable dag-cbor (${err.message})`) }
  }

  keyOf (id: string, cid?: CID): ContentKey {
    const key = this.keyring.get(id)
    if (key == null) throw new SealError(`${cid?.toString() ?? 'block'} is sealed with key ${id}, which this board does not hold (it was not among the checkpoint's recipients)`)
    return key
  }

  /** Opens a sealed checkpoint root's envelope with this board's identity and keeps its key. */
  openEnvelope (envelope: KeyEnvelope): ContentKey {
    const id = Buffer.from(envelope.key).toString('hex')
    const held = this.keyring.get(id)
    if (held != null) return held
    if (this.identity == null) throw new SealError(`checkpoint of ${envelope.mission} is sealed and this store has no identity to open it`)
    const key = this.identity.open(envelope)
    this.keyring.set(key.idHex, key)
    return key
  }

  /** A chunk's plaintext: opened when its file was sealed. */
  openChunk (entry: FileEntry, bytes: Uint8Array): Uint8Array {
    if (entry.sealedWith == null) return bytes
    const id = Buffer.from(entry.sealedWith).toString('hex')
    if (!isSealed(bytes) || sealedKeyId(bytes) !== id) throw new SealError(`${entry.path}: a chunk is not sealed with the file's key ${id}`)
    return this.keyOf(id).open(bytes)
  }

  /** The manifest of a checkpoint; a sealed one is opened (NotARecipientError when this board is not a recipient). */
  async getManifest (cid: CID, options: BlockReadOptions = {}): Promise<CheckpointManifest> {
    const node = await this.getNode(cid, options)
    const sealed = asSealedRoot(node)
    if (sealed == null) return asManifest(node, cid)
    this.openEnvelope(sealed.keys)
    const manifest = asManifest(await this.getNode(sealed.manifest, options), sealed.manifest)
    if (manifest.mission !== sealed.keys.mission) throw new BundleFormatError(`${cid.toString()}: envelope of ${sealed.keys.mission} around a manifest of ${manifest.mission}`)
    return manifest
  }

  /** The key envelope of a sealed checkpoint (who may read it), or null for a clear one. */
  async envelopeOf (cid: CID, options: BlockReadOptions = {}): Promise<KeyEnvelope | null> {
    return asSealedRoot(await this.getNode(cid, options))?.keys ?? null
  }

  async getImageManifest (cid: CID, options: BlockReadOptions = {}): Promise<ImageManifest> {
    return asImageManifest(await this.getNode(cid, options), cid)
  }

  /** Verified content of a file entry, chunk by chunk, from the local store. */
  async * readFile (entry: FileEntry, options: { signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
    if (entry.inline !== null) { yield entry.inline; return }
    let size = 0
    for (const l of entry.lists) {
      const list = asChunkList(await this.getNode(l, { ...options, offline: true }), l)
      // Read ahead a few chunks: level reads are cheap but sequential awaits are not.
      for (let i = 0; i < list.chunks.length; i += 64) {
        const blocks = await Promise.all(list.chunks.slice(i, i + 64).map(async c => this.openChunk(entry, await this.getBlock(c, { ...options, offline: true }))))
        for (const b of blocks) { size += b.byteLength; yield b }
      }
    }
    if (size !== entry.size) throw new BundleFormatError(`${entry.path}: content is ${size} bytes, manifest says ${entry.size}`)
  }
}
