// The bundle store's lock: writes and fetches share it, a prune runs alone and never queues ahead of them.
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { StoreLock } from '../checkpoint/bundles/store-lock.ts'

t.test('shared holders run together; a prune skips while one holds the lock and runs once the store is idle', async t => {
  const lock = new StoreLock()
  const order: string[] = []
  let releaseWrite = (): void => {}
  const write = lock.shared(async () => { order.push('write'); await new Promise<void>(resolve => { releaseWrite = resolve }) })
  const fetch = lock.shared(async () => { order.push('fetch') })
  await fetch
  t.equal(await lock.exclusiveIfIdle(async () => 'pruned'), undefined, 'a background prune does not run beside a write')
  const waiting = lock.exclusive(async () => { order.push('prune') })
  await sleep(10)
  await lock.shared(async () => { order.push('second write') })
  t.same(order, ['write', 'fetch', 'second write'], 'a waiting prune holds up no new write')
  releaseWrite()
  await write
  await waiting
  t.same(order.at(-1), 'prune', 'the waiting prune runs once the store is idle')
  t.equal(await lock.exclusiveIfIdle(async () => 'pruned'), 'pruned', 'on an idle store a background prune runs at once')
})

t.test('nothing shares the lock with a running prune', async t => {
  const lock = new StoreLock()
  const order: string[] = []
  let releasePrune = (): void => {}
  const prune = lock.exclusive(async () => { order.push('prune'); await new Promise<void>(resolve => { releasePrune = resolve }) })
  await sleep(5)
  const write = lock.shared(async () => { order.push('write') })
  t.equal(await lock.exclusiveIfIdle(async () => 'again'), undefined, 'a second prune does not run beside the first')
  await sleep(10)
  t.same(order, ['prune'], 'the write waits for the prune')
  releasePrune()
  await Promise.all([prune, write])
  t.same(order, ['prune', 'write'])
})
