// What the consensus machine knows of a member board, from its heartbeat.
import type { PeerInfo } from '../../consensus/types.ts'
import { imagesExtraOf } from '../image-inventory.ts'
import type { Member } from '../membership.ts'
import { storageExtraOf } from './storage.ts'

export function peerInfoOf (member: Member): PeerInfo | undefined {
  const info = member.info
  if (info == null) return undefined
  const images = imagesExtraOf(info.extras)
  const storage = storageExtraOf(info.extras)
  return {
    peerId: member.peerId,
    state: member.state,
    arch: info.board.arch,
    board: info.board.name,
    memoryMb: info.board.memoryMb,
    canCheckpoint: info.capabilities.criu.checkOk === true && info.capabilities.docker.available === true,
    canRun: images.docker,
    canStore: storage.ok,
    ...(storage.ok ? {} : { storageProblem: storage.problem ?? 'failing' }),
    images: images.present,
    fetchingImages: images.fetching.map(f => f.image),
    // A refused redial proves the process exited; its watchdog (peer/watchdog.ts) killed its containers.
    gone: member.state === 'dead' && member.exitProven
  }
}

export function samePeerInfo (a: PeerInfo | undefined, b: PeerInfo): boolean {
  return a !== undefined && a.state === b.state && a.gone === b.gone && a.arch === b.arch && a.board === b.board &&
    a.memoryMb === b.memoryMb && a.canCheckpoint === b.canCheckpoint && a.canRun === b.canRun && a.canStore === b.canStore && a.storageProblem === b.storageProblem &&
    sameList(a.images, b.images) && sameList(a.fetchingImages, b.fetchingImages)
}

export function sameList (a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}
