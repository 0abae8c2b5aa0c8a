// The bundle DAG: dag-cbor nodes linking raw chunks. One checkpoint is one root CID.
//
//   CheckpointManifest ── trees.{criu,rootfs,data} ──> TreeNode ── parts ──> TreePart (entries)
//                                                                  file entry ── lists ──> ChunkList ──> raw chunks
//   ImageManifest ── layers[].cid ──> FileEntry (one layer tar, shared by every image that has the layer)
import { CID } from 'multiformats/cid'
import { BundleFormatError, UnsafeTreeError } from './errors.ts'
import { describeIssue, natural, plainObject, z } from '../schema/schema.ts'

export const CHECKPOINT_FORMAT = 'tandem/checkpoint/1'
export const IMAGE_FORMAT = 'tandem/image/2'

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

// Shape checks for nodes that arrive from other peers: a bad node becomes a BundleFormatError, never a crash. The
// checks cover what the reader relies on and pass the node through as it is (the types above are the writer's: nodes
// of older versions lack some of their fields).

const cid = z.custom<CID>(value => CID.asCID(value) != null, { error: 'must be a CID' })
const cids = z.array(cid, { error: 'must be a list of CIDs' })
const bytes = z.instanceof(Uint8Array, { error: 'must be bytes' })

const manifestSchema = z.object({
  format: z.literal(CHECKPOINT_FORMAT),
  mission: z.string(),
  epoch: natural,
  seq: natural,
  arch: z.string(),
  parent: cid.nullable(),
  spec: z.object({ imageId: z.string(), imageCid: cid.nullable(), env: z.array(z.unknown()) }),
  stats: plainObject,
  sizes: z.object({ totalBytes: natural, blocks: natural }),
  trees: z.object({ criu: cid, rootfs: cid, data: cid })
})

const DIFF_ID = /^sha256:[0-9a-f]{64}$/
const archivePath = z.string().refine(p => isSafeRelativePath(p) && Buffer.byteLength(p) <= 100, { error: 'must be a safe relative path of at most 100 bytes' })

const imageManifestSchema = z.object({
  format: z.literal(IMAGE_FORMAT),
  imageId: z.string(),
  arch: z.string(),
  totalBytes: natural,
  config: bytes,
  tags: z.array(z.unknown()),
  dockerManifest: z.object({
    Config: archivePath,
    Layers: z.array(archivePath).refine(layers => new Set(layers).size === layers.length, { error: 'must not repeat a layer' })
  }),
  layers: z.array(z.object({ diffId: z.string().regex(DIFF_ID), cid, bytes: natural }))
}).refine(m => m.dockerManifest.Layers.length === m.layers.length, { error: 'dockerManifest.Layers and layers differ in length' })

const treeNodeSchema = z.object({ parts: cids, files: natural, bytes: natural })
const chunkListSchema = z.object({ chunks: cids })
const treePartSchema = z.object({ entries: z.array(z.unknown()) })

const owner = { uid: natural, gid: natural }
const entrySchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('file'), ...owner, mode: natural, size: natural, chunkSize: natural, lists: cids, inline: bytes.nullable(),
    sealedWith: bytes.refine(b => b.byteLength === 8, { error: 'must be 8 bytes' }).optional()
  }).refine(e => e.inline === null || e.inline.byteLength === e.size, { error: 'inline bytes differ from size', path: ['inline'] }),
  z.object({ kind: z.literal('dir'), ...owner, mode: natural }),
  z.object({ kind: z.literal('symlink'), ...owner, target: z.string() }),
  z.object({ kind: z.literal('whiteout') })
], { error: 'must be a file, dir, symlink or whiteout entry' })

/** The node itself, once `schema` accepts it. */
function check<T> (schema: z.ZodType, value: unknown, what: string, node: CID): T {
  const result = schema.safeParse(value)
  if (!result.success) throw new BundleFormatError(`${node.toString()}: not a valid ${what} (${describeIssue(result.error)})`)
  return value as T
}

export function asManifest (v: unknown, cid: CID): CheckpointManifest {
  return check(manifestSchema, v, 'checkpoint manifest', cid)
}

export function asImageManifest (v: unknown, cid: CID): ImageManifest {
  return check(imageManifestSchema, v, 'image manifest', cid)
}

/** The node of one stored layer tar. */
export function asLayerFile (v: unknown, cid: CID): FileEntry {
  checkEntry(v, cid)
  if ((v as TreeEntry).kind !== 'file') throw new BundleFormatError(`${cid.toString()}: not a valid layer file`)
  return v as FileEntry
}

export function asTreeNode (v: unknown, cid: CID): TreeNode {
  return check(treeNodeSchema, v, 'tree node', cid)
}

export function asTreePart (v: unknown, cid: CID): TreePart {
  const part = check<TreePart>(treePartSchema, v, 'tree part', cid)
  for (const e of part.entries) checkEntry(e, cid)
  return part
}

export function asChunkList (v: unknown, cid: CID): ChunkList {
  return check(chunkListSchema, v, 'chunk list', cid)
}

const entryPathSchema = z.object({ path: z.string() })

function checkEntry (e: unknown, cid: CID): void {
  const { path } = check<{ path: string }>(entryPathSchema, e, 'tree entry', cid)
  if (!isSafeRelativePath(path)) throw new UnsafeTreeError('path escapes', path, `${cid.toString()}: tree entry path ${JSON.stringify(path)}`)
  check(entrySchema, e, 'tree entry', cid)
}

/** Paths inside a bundle are relative, normalized and never climb out of the tree they belong to. */
export function isSafeRelativePath (p: string): boolean {
  if (p === '' || p.startsWith('/') || p.includes('\0')) return false
  return p.split('/').every(seg => seg !== '' && seg !== '.' && seg !== '..')
}
