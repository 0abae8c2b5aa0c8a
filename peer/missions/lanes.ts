// Serial work queues (p-queue, one task at a time). A task starts after the batch of actions that queued it, as the
// hand-rolled promise chains before them did: a fence queued behind it in the same batch finds it not yet started.
import PQueue from 'p-queue'

export type Lane = PQueue

export function newLane (): Lane {
  return new PQueue({ concurrency: 1 })
}

/** Queues `work` on the lane; its failure is reported to `onError` and does not stop the lane. */
export function enqueue (lane: Lane, work: () => Promise<void>, onError: (err: unknown) => void): void {
  lane.add(async () => {
    await Promise.resolve()
    await work()
  }).catch(onError)
}
