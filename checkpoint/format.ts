// The bundle DAG: dag-cbor nodes linking raw chunks. One checkpoint is one root CID.
//
//   CheckpointManifest ── trees.{criu,rootfs,data} ──> TreeNode ── parts ──> TreePart (entries)
//                                                                  file entry ── lists ──> ChunkList ──> raw chunks
//   ImageManifest ── layers[].cid ──> FileEntry (one layer tar, shared by every image that has the layer)
import { CID } from 'multiformats/cid'
import * as dagCbor from '@ipld/dag-cbor'
import * as raw from 'multiformats/codecs/raw'
import { BundleFormatError, UnsafeTreeError } from './errors.ts'

export const CHECKPOINT_FORMAT = 'tandem/checkpoint/1'
export const IMAGE_FORMAT = 'tandem/image/2'
export const DAG_CBOR_CODE = dagCbor.code
export const RAW_CODE = raw.code

export interface Ownership { uid: number, gid: number }

export interface FileEntry extends Ownership {
  kind: 'file'
  path: string
  mode: number
  size: number
  /** Content of files up to INLINE_LIMIT bytes, kept in the part node itself. */
  inline: Uint8Array | null
  chunkSize: number
  /** ChunkList nodes, in file order. */
  lists: CID[]
  /** Id of the content key the chunks are sealed with (see sealing.ts); absent: clear chunks. */
  sealedWith?: Uint8Array
}
export interface DirEntry extends Ownership { kind: 'dir', path: string, mode: number }
export interface SymlinkEntry extends Ownership { kind: 'symlink', path: string, target: string }
/** An overlayfs deletion of a file of the image (a 0/0 character device in the upper dir). */
export interface WhiteoutEntry { kind: 'whiteout', path: string }
export type TreeEntry = FileEntry | DirEntry | SymlinkEntry | WhiteoutEntry

export interface TreePart { entries: TreeEntry[] }
export interface TreeNode { parts: CID[], files: number, bytes: number }
export interface ChunkList { chunks: CID[] }

export interface ContainerSpecRecord {
  imageId: string
  imageTags: string[]
  /** Root of an ImageManifest in the swarm, when the image travels through IPFS. */
  imageCid: CID | null
  cmd: string[] | null
  entrypoint: string[] | null
  env: string[]
  workingDir: string
  user: string
  /** Container path of the mission's data directory (bind-mounted from the host). */
  dataPath: string | null
}

export interface CheckpointStats {
  /** CRIU stats-dump, microseconds. */
  freezingTimeUs: number
  frozenTimeUs: number
  memdumpTimeUs: number
  memwriteTimeUs: number
  pagesScanned: number
  pagesWritten: number
  /** Wall time of the Docker checkpoint call, ms. */
  dumpWallMs: number
  /** Wall time from start of take() to the stored root, ms. */
  totalWallMs: number
}

export interface CheckpointSizes {
  criuBytes: number
  rootfsBytes: number
  dataBytes: number
  totalBytes: number
  blocks: number
  /** Bytes of blocks this board's store did not hold before the checkpoint. */
  newBytes: number
  newBlocks: number
}

export interface CheckpointManifest {
  format: typeof CHECKPOINT_FORMAT
  mission: string
  epoch: number
  seq: number
  parent: CID | null
  createdAt: number
  arch: string
  criuVersion: string
  spec: ContainerSpecRecord
  stats: CheckpointStats
  sizes: CheckpointSizes
  trees: { criu: CID, rootfs: CID, data: CID }
}

/** One layer of an image: its tar, as `docker save` emits it (sha256 of the bytes = diffId). */
export interface ImageLayer {
  diffId: string
  /** A FileEntry node holding the layer tar. */
  cid: CID
  bytes: number
}

/** Docker's own entry for the image in a `docker save` manifest.json (paths inside the archive). */
export interface DockerManifestEntry {
  Config: string
  RepoTags: string[] | null
  Layers: string[]
}

export interface ImageManifest {
  format: typeof IMAGE_FORMAT
  imageId: string
  tags: string[]
  arch: string
  /** The image config JSON, byte for byte (its sha256 is the image id). */
  config: Uint8Array
  dockerManifest: DockerManifestEntry
  /** In RootFS order: layers[i] is stored at dockerManifest.Layers[i]. */
  layers: ImageLayer[]
  /** Bytes of all layer tars. */
  totalBytes: number
}

// Shape checks for nodes that arrive from other peers: a bad node becomes a BundleFormatError, never a crash.

function fail (what: string, cid: CID): never {
  throw new BundleFormatError(`${cid.toString()}: not a valid ${what}`)
}
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const isNat = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
const isStr = (v: unknown): v is string => typeof v === 'string'
const isCidArray = (v: unknown): v is CID[] => Array.isArray(v) && v.every(c => CID.asCID(c) != null)

export function asManifest (v: unknown, cid: CID): CheckpointManifest {
  if (!isObj(v) || v.format !== CHECKPOINT_FORMAT) fail('checkpoint manifest', cid)
  const t = v.trees
  if (!isStr(v.mission) || !isNat(v.epoch) || !isNat(v.seq) || !isStr(v.arch) ||
    !(v.parent === null || CID.asCID(v.parent) != null) || !isObj(v.spec) || !isObj(v.sizes) || !isObj(v.stats) ||
    !isObj(t) || CID.asCID(t.criu) == null || CID.asCID(t.rootfs) == null || CID.asCID(t.data) == null) {
    fail('checkpoint manifest', cid)
  }
  const s = v.spec
  if (!isStr(s.imageId) || !(s.imageCid === null || CID.asCID(s.imageCid) != null) || !Array.isArray(s.env)) {
    fail('checkpoint manifest (container spec)', cid)
  }
  if (!isNat(v.sizes.totalBytes) || !isNat(v.sizes.blocks)) fail('checkpoint manifest (sizes)', cid)
  return v as unknown as CheckpointManifest
}

const DIFF_ID = /^sha256:[0-9a-f]{64}$/

export function asImageManifest (v: unknown, cid: CID): ImageManifest {
  if (!isObj(v) || v.format !== IMAGE_FORMAT || !isStr(v.imageId) || !isStr(v.arch) || !isNat(v.totalBytes) ||
    !(v.config instanceof Uint8Array) || !Array.isArray(v.tags) || !Array.isArray(v.layers)) fail('image manifest', cid)
  const d = v.dockerManifest
  const archivePath = (p: unknown): boolean => isStr(p) && isSafeRelativePath(p) && Buffer.byteLength(p) <= 100
  if (!isObj(d) || !archivePath(d.Config) || !Array.isArray(d.Layers) || !d.Layers.every(archivePath) ||
    d.Layers.length !== v.layers.length || new Set(d.Layers).size !== d.Layers.length) fail('image manifest (docker manifest entry)', cid)
  for (const l of v.layers) {
    if (!isObj(l) || !isStr(l.diffId) || !DIFF_ID.test(l.diffId) || CID.asCID(l.cid) == null || !isNat(l.bytes)) fail('image manifest (layer)', cid)
  }
  return v as unknown as ImageManifest
}

/** The node of one stored layer tar. */
export function asLayerFile (v: unknown, cid: CID): FileEntry {
  checkEntry(v, cid)
  if ((v as TreeEntry).kind !== 'file') fail('layer file', cid)
  return v as FileEntry
}

export function asTreeNode (v: unknown, cid: CID): TreeNode {
  if (!isObj(v) || !isCidArray(v.parts) || !isNat(v.files) || !isNat(v.bytes)) fail('tree node', cid)
  return v as unknown as TreeNode
}

export function asTreePart (v: unknown, cid: CID): TreePart {
  if (!isObj(v) || !Array.isArray(v.entries)) fail('tree part', cid)
  for (const e of v.entries) checkEntry(e, cid)
  return v as unknown as TreePart
}

export function asChunkList (v: unknown, cid: CID): ChunkList {
  if (!isObj(v) || !isCidArray(v.chunks)) fail('chunk list', cid)
  return v as unknown as ChunkList
}

function checkEntry (e: unknown, cid: CID): void {
  if (!isObj(e) || !isStr(e.path)) fail('tree entry (path)', cid)
  if (!isSafeRelativePath(e.path)) throw new UnsafeTreeError('path escapes', e.path, `${cid.toString()}: tree entry path ${JSON.stringify(e.path)}`)
  if (e.kind !== 'whiteout' && (!isNat(e.uid) || !isNat(e.gid))) fail('tree entry (owner)', cid)
  switch (e.kind) {
    case 'file':
      if (!isNat(e.mode) || !isNat(e.size) || !isNat(e.chunkSize) || !isCidArray(e.lists) ||
        !(e.inline === null || e.inline instanceof Uint8Array)) fail('file entry', cid)
      if (e.inline !== null && (e.inline as Uint8Array).byteLength !== e.size) fail('file entry (inline size)', cid)
      if (e.sealedWith !== undefined && !(e.sealedWith instanceof Uint8Array && e.sealedWith.byteLength === 8)) fail('file entry (sealedWith)', cid)
      return
    case 'dir': if (!isNat(e.mode)) fail('dir entry', cid); return
    case 'symlink': if (!isStr(e.target)) fail('symlink entry', cid); return
    case 'whiteout': return
    default: fail('tree entry (kind)', cid)
  }
}

/** Paths inside a bundle are relative, normalized and never climb out of the tree they belong to. */
export function isSafeRelativePath (p: string): boolean {
  if (p === '' || p.startsWith('/') || p.includes('\0')) return false
  return p.split('/').every(seg => seg !== '' && seg !== '.' && seg !== '..')
}
