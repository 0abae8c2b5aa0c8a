// What the missions part needs of this board's containers and checkpoints, and nothing more. The adapters over
// Docker, CRIU and the bundle store are in checkpoint/ (mission-runtime.ts, mission-checkpoints.ts); the unit tests
// use fakes.
import type { Readable } from 'node:stream'
import type { ContainerSpec } from '../../manifest/container-spec.ts'

export type { ContainerSpec }

/** A mission container of this peer, as its labels name it. */
export interface OwnContainer { id: string, mission: string, epoch: number, running: boolean }

/** Whether a container runs; `exitReason` says why not (null while it runs). */
export interface ContainerState { running: boolean, exitReason: string | null }

export interface ImageListing { id: string, tags: string[] }

/** This board's mission containers (labelled with this peer's id), and its images. */
export interface MissionRuntime {
  startFresh: (spec: ContainerSpec, epoch: number, options: { signal?: AbortSignal }) => Promise<string>
  /** Kills and removes the container and its data dir (a container already gone is no error). */
  stop: (containerId: string) => Promise<void>
  /** This peer's containers (of one mission when named); `all`: stopped ones too. */
  listOwn: (options: { mission?: string, all?: boolean }) => Promise<OwnContainer[]>
  /** The container's state; null when the runtime could not tell (not answering). A removed container has exited. */
  stateOf: (containerId: string) => Promise<ContainerState | null>
  /** Removes every running container of this peer at once, whatever it runs (no container outlives its peer). */
  removeAllOwn: () => Promise<void>
  /** Gives an image present on this board another name. */
  tagImage: (imageId: string, ref: string) => Promise<void>
  listImages: () => Promise<ImageListing[]>
  /** The container's stdout and stderr, followed (Docker's multiplexed stream with timestamps). */
  followLogs: (containerId: string) => Promise<Readable>
  close: () => Promise<void>
}

/** A checkpoint this board fetched and verified (its blocks are in the store), ready to stage or restore. */
export interface HeldBundle {
  readonly cid: string
  readonly mission: string
  readonly epoch: number
  readonly seq: number
  /** Bytes that crossed the network, and blocks held here that were corrupt and fetched again. */
  readonly fetchedBytes: number
  readonly repairedBlocks: number
}

export interface TakeRequest {
  mission: string
  epoch: number
  seq: number
  /** The previous checkpoint of the mission, recorded in the new one. */
  parent: string | null
  /** Peer ids the checkpoint is sealed for. */
  sealFor: string[]
  signal?: AbortSignal
}

export interface TakenCheckpoint {
  cid: string
  pausedMs: number
  storeMs: number
  frozenTimeUs: number
  /** Where the wall time went, ms (prepareMs: before the pause). */
  phases: { prepareMs: number, pausedMs: number, afterPauseMs: number, storeMs: number }
  newBytes: number
  totalBytes: number
}

export interface RestoredCheckpoint {
  containerId: string
  ms: number
  imageLoaded: boolean
  staged: boolean
  stagedRejected: string | null
  repairedBlocks: number
  phases: { createMs: number, filesMs: number, criuMs: number }
}

export interface StoredImage { cid: string, totalBytes: number, newBytes: number, ms: number }

export interface FetchedImage { loaded: boolean, imageId: string, fetchedBytes: number, totalBytes: number, reusedLayers: number, ms: number }

/** Checkpoints of this board's missions: CRIU dumps, sealed bundles in the swarm's store, restores. */
export interface MissionCheckpoints {
  take: (containerId: string, request: TakeRequest) => Promise<TakenCheckpoint>
  fetch: (cid: string, options: { signal?: AbortSignal, providers?: string[] }) => Promise<HeldBundle>
  /** Writes the bundle's files where a restore only moves them into place. */
  stage: (bundle: HeldBundle, options: { signal?: AbortSignal }) => Promise<void>
  unstage: (mission: string) => Promise<void>
  /** Restores a held bundle, or the checkpoint of that CID from the store (fetched from the swarm if needed). */
  restore: (source: HeldBundle | string, options: { peerId: string, epoch: number, signal?: AbortSignal }) => Promise<RestoredCheckpoint>
  /** Cold start from the image with the checkpoint's data dir (no CRIU): the cross-architecture path. */
  startWithData: (spec: ContainerSpec, epoch: number, bundle: HeldBundle, options: { signal?: AbortSignal }) => Promise<string>
  /** Drops every checkpoint of the mission from the store. */
  prune: (mission: string) => Promise<void>
  storeImage: (image: string, signal?: AbortSignal) => Promise<StoredImage>
  fetchImage: (cid: string, options: { signal?: AbortSignal, providers?: string[], onProgress?: (fetchedBytes: number, totalBytes: number) => void }) => Promise<FetchedImage>
  /** A record written to the store and deleted (fails while the storage does). */
  probe: () => Promise<void>
}
