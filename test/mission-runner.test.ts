// One mission's runner (peer/missions/runner.ts) against fakes of its two ports: the order of its lanes (a fence
// never waits behind a checkpoint), staging beside fetching, and restores racing fetches. No Docker, no root; every
// step is released by the test, so each run takes the same path.
import { describe } from '../consensus/events.ts'
import t from 'tap'
import type { Readable } from 'node:stream'
import { NotARecipientError } from '../checkpoint/sealing.ts'
import type { CheckpointRef, LocalEvent, MissionSnapshot } from '../consensus/types.ts'
import type { MissionSpec } from '../manifest/manifest.ts'
import { MissionRunner, type RunnerContext } from '../peer/missions/runner.ts'
import type { ContainerSpec, ContainerState, HeldBundle, MissionCheckpoints, MissionRuntime, OwnContainer, RestoredCheckpoint, TakenCheckpoint, TakeRequest } from '../peer/missions/ports.ts'

const MISSION = 'rover'
const SPEC: MissionSpec = { name: MISSION, image: 'tandem/rover', env: {}, checkpointIntervalMs: 1000 }

/** A promise the test settles itself. */
class Gate<T = void> {
  readonly promise: Promise<T>
  resolve!: (value: T) => void
  reject!: (err: unknown) => void
  constructor () {
    this.promise = new Promise<T>((resolve, reject) => { this.resolve = resolve; this.reject = reject })
  }
}

/** Lets every queued task run until it waits on a gate. */
async function settle (): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve))
}

const ref = (seq: number): CheckpointRef => ({ cid: `cid-${seq}`, seq, epoch: 1, arch: 'x64', atMs: 0 })
const held = (seq: number): HeldBundle => ({ cid: `cid-${seq}`, mission: MISSION, epoch: 1, seq, fetchedBytes: 100, repairedBlocks: 0 })

class FakeRuntime implements MissionRuntime {
  readonly calls: string[]
  own: OwnContainer[] = []
  states = new Map<string, ContainerState | null>()
  #next = 0
  constructor (calls: string[]) { this.calls = calls }
  async startFresh (spec: ContainerSpec, epoch: number): Promise<string> { const id = `c${++this.#next}`; this.calls.push(`startFresh ${spec.image} e${epoch} -> ${id}`); return id }
  async stop (id: string): Promise<void> { this.calls.push(`stop ${id}`) }
  async listOwn (options: { mission?: string, all?: boolean }): Promise<OwnContainer[]> { this.calls.push(`listOwn ${options.mission ?? '*'}`); return this.own }
  async stateOf (id: string): Promise<ContainerState | null> { return this.states.get(id) ?? { running: true, exitReason: null } }
  async removeAllOwn (): Promise<void> { this.calls.push('removeAllOwn') }
  async tagImage (): Promise<void> {}
  async listImages (): Promise<[]> { return [] }
  async followLogs (): Promise<Readable> { throw new Error('not in this test') }
  async close (): Promise<void> {}
}

class FakeCheckpoints implements MissionCheckpoints {
  readonly calls: string[]
  readonly takes: Array<{ containerId: string, request: TakeRequest, gate: Gate<TakenCheckpoint> }> = []
  readonly fetches = new Map<string, Gate<HeldBundle>>()
  readonly stages: Array<{ cid: string, gate: Gate }> = []
  readonly restores: Array<{ source: HeldBundle | string, gate: Gate<RestoredCheckpoint> }> = []
  constructor (calls: string[]) { this.calls = calls }
  async take (containerId: string, request: TakeRequest): Promise<TakenCheckpoint> {
    const gate = new Gate<TakenCheckpoint>()
    this.takes.push({ containerId, request, gate })
    this.calls.push(`take ${containerId} #${request.seq}`)
    // As the real one: an abort ends the dump (its runc and CRIU killed) and the take fails.
    request.signal?.addEventListener('abort', () => { gate.reject(request.signal?.reason as Error) }, { once: true })
    return await gate.promise
  }

  async fetch (cid: string): Promise<HeldBundle> {
    this.calls.push(`fetch ${cid}`)
    const gate = new Gate<HeldBundle>()
    this.fetches.set(cid, gate)
    return await gate.promise
  }

  async stage (bundle: HeldBundle): Promise<void> {
    const gate = new Gate()
    this.stages.push({ cid: bundle.cid, gate })
    this.calls.push(`stage ${bundle.cid}`)
    await gate.promise
  }

  async unstage (mission: string): Promise<void> { this.calls.push(`unstage ${mission}`) }
  async restore (source: HeldBundle | string): Promise<RestoredCheckpoint> {
    const gate = new Gate<RestoredCheckpoint>()
    this.restores.push({ source, gate })
    this.calls.push(`restore ${typeof source === 'string' ? `cid ${source}` : `held ${source.cid}`}`)
    return await gate.promise
  }

  async startWithData (_spec: ContainerSpec, epoch: number, bundle: HeldBundle): Promise<string> { this.calls.push(`startWithData e${epoch} ${bundle.cid}`); return 'c-data' }
  async prune (mission: string): Promise<void> { this.calls.push(`prune ${mission}`) }
  async storeImage (): Promise<never> { throw new Error('not in this test') }
  async fetchImage (): Promise<never> { throw new Error('not in this test') }
  async probe (): Promise<void> {}
}

const taken = (seq: number): TakenCheckpoint => ({ cid: `cid-${seq}`, pausedMs: 5, storeMs: 7, frozenTimeUs: 0, phases: { prepareMs: 1, pausedMs: 5, afterPauseMs: 1, storeMs: 7 }, newBytes: 10, totalBytes: 20 })
const restored = (containerId: string): RestoredCheckpoint => ({ containerId, ms: 50, imageLoaded: false, staged: true, stagedRejected: null, repairedBlocks: 0, phases: { createMs: 10, filesMs: 10, criuMs: 30 } })

function setup (options: { keepCheckpoints?: number, checkpointDeadlineMs?: number } = {}): { runner: MissionRunner, calls: string[], runtime: FakeRuntime, checkpoints: FakeCheckpoints, inputs: LocalEvent[], events: string[], faults: unknown[] } {
  const calls: string[] = []
  const inputs: LocalEvent[] = []
  const events: string[] = []
  const faults: unknown[] = []
  const runtime = new FakeRuntime(calls)
  const checkpoints = new FakeCheckpoints(calls)
  const view = { name: MISSION, spec: SPEC, view: ['self', 'b', 'c'], primary: 'b', held: null } as unknown as MissionSnapshot
  const ctx: RunnerContext = {
    mission: MISSION,
    peerId: 'self',
    runtime,
    checkpoints,
    signal: new AbortController().signal,
    keepCheckpoints: options.keepCheckpoints ?? 3,
    deadlines: { checkpointMs: options.checkpointDeadlineMs ?? 10_000, startMs: 30_000 },
    snapshot: () => view,
    env: spec => spec.env,
    local: event => { inputs.push(event); calls.push(`input ${event.type}`) },
    record: event => { events.push(describe(event)) },
    storageFailed: err => { faults.push(err) },
    metrics: { checkpointTaken: () => {}, restored: () => {}, checkpointFetched: () => {} },
    log: () => {}
  }
  return { runner: new MissionRunner(ctx), calls, runtime, checkpoints, inputs, events, faults }
}

async function running (s: ReturnType<typeof setup>): Promise<void> {
  s.runner.apply({ type: 'startFresh', mission: MISSION, epoch: 1, spec: SPEC, image: 'tandem/rover', dataFrom: null })
  await settle()
  s.calls.length = 0
  s.inputs.length = 0
  s.events.length = 0
}

t.test('a fence kills the container at once, while a checkpoint runs; its sweep comes after that checkpoint', async t => {
  const s = setup()
  await running(s)
  t.same(s.runner.container, { id: 'c1', epoch: 1 })
  s.runner.apply({ type: 'checkpoint', mission: MISSION, epoch: 1, seq: 1, stop: false, parent: null, view: ['self', 'b', 'c'], intervalMs: 1000 })
  await settle()
  t.same(s.calls, ['take c1 #1'], 'the checkpoint runs')
  s.runner.apply({ type: 'stopContainer', mission: MISSION, reason: { kind: 'fenced', epoch: 2 } })
  await settle()
  t.same(s.calls, ['take c1 #1', 'stop c1'], 'the fence did not wait for the checkpoint')
  t.equal(s.runner.container, undefined)
  t.match(s.events.at(-1), /container of epoch 1 stopped: fenced by epoch 2/)
  s.checkpoints.takes[0]?.gate.reject(new Error('container c1 is gone'))
  await settle()
  t.same(s.calls, ['take c1 #1', 'stop c1', 'input checkpointFailed', `listOwn ${MISSION}`], 'the sweep ran once the checkpoint ended')
  t.match(s.inputs[0], { type: 'checkpointFailed', seq: 1, error: 'container c1 is gone' })
})

t.test('a dump that hangs is aborted at the machine\'s checkpoint deadline: the lane runs on', async t => {
  const s = setup({ checkpointDeadlineMs: 50 })
  await running(s)
  s.runner.apply({ type: 'checkpoint', mission: MISSION, epoch: 1, seq: 1, stop: false, parent: null, view: ['self', 'b', 'c'], intervalMs: 1000 })
  s.runner.apply({ type: 'checkpoint', mission: MISSION, epoch: 1, seq: 2, stop: false, parent: null, view: ['self', 'b', 'c'], intervalMs: 1000 })
  await settle()
  t.same(s.calls, ['take c1 #1'], 'the second checkpoint waits behind the first in the lane')
  await new Promise(resolve => setTimeout(resolve, 120))
  t.match(s.inputs[0], { type: 'checkpointFailed', seq: 1 }, 'the hung dump failed at its deadline')
  t.ok(s.calls.includes('stop c1'), 'the container, in an unknown state after its CRIU was killed, is stopped')
  t.match(s.inputs[1], { type: 'containerExited', epoch: 1, reason: /checkpoint #1 did not end within/ }, 'and reported exited: the mission goes on from its last checkpoint')
  t.match(s.inputs[2], { type: 'checkpointFailed', seq: 2, noContainer: true }, 'the work queued behind it ran and found no container')
})

t.test('a fence in the same batch as a checkpoint finds it unstarted: the checkpoint has no container', async t => {
  const s = setup()
  await running(s)
  s.runner.apply({ type: 'checkpoint', mission: MISSION, epoch: 1, seq: 1, stop: false, parent: null, view: ['self', 'b', 'c'], intervalMs: 1000 })
  s.runner.apply({ type: 'stopContainer', mission: MISSION, reason: { kind: 'fenced', epoch: 2 } })
  await settle()
  t.equal(s.checkpoints.takes.length, 0, 'no dump of a fenced container')
  t.same(s.calls, ['stop c1', 'input checkpointFailed', `listOwn ${MISSION}`])
  t.match(s.inputs[0], { type: 'checkpointFailed', noContainer: true })
})

t.test('the sweep stops what work queued before the fence started meanwhile', async t => {
  const s = setup()
  s.runner.apply({ type: 'restore', mission: MISSION, epoch: 2, spec: SPEC, checkpoint: ref(4) })
  await settle()
  s.runner.apply({ type: 'stopContainer', mission: MISSION, reason: { kind: 'fenced', epoch: 2 } })
  await settle()
  t.same(s.calls, ['restore cid cid-4'], 'nothing runs yet to be stopped')
  s.runtime.own = [{ id: 'c-restored', mission: MISSION, epoch: 2, running: true }]
  s.checkpoints.restores[0]?.gate.resolve(restored('c-restored'))
  await settle()
  t.same(s.calls, ['restore cid cid-4', 'input containerStarted', 'stop c-restored', `listOwn ${MISSION}`, 'stop c-restored'], 'the restored container is stopped by the fence')
  t.equal(s.runner.container, undefined)
})

t.test('a final checkpoint untracks the container before stopping it: the exit watcher reports no crash', async t => {
  const s = setup()
  await running(s)
  s.runner.apply({ type: 'checkpoint', mission: MISSION, epoch: 1, seq: 3, stop: true, parent: null, view: ['self', 'b', 'c'], intervalMs: 1000 })
  await settle()
  s.checkpoints.takes[0]?.gate.resolve(taken(3))
  await settle()
  t.same(s.calls, ['take c1 #3', 'stop c1', 'input checkpointTaken'])
  t.equal(s.runner.container, undefined)
  t.match(s.runner.lastTake, { seq: 3, pausedMs: 5, storeMs: 7, newBytes: 10, totalBytes: 20 })
  t.same(s.checkpoints.takes[0]?.request.sealFor, ['self', 'b', 'c'], 'sealed for the view')
  s.runtime.states.set('c1', { running: false, exitReason: 'the container is gone' })
  await s.runner.checkExit()
  t.notOk(s.inputs.some(i => i.type === 'containerExited'))
})

t.test('an exited container is reported once, with its reason', async t => {
  const s = setup()
  await running(s)
  s.runtime.states.set('c1', null)
  await s.runner.checkExit()
  t.same(s.inputs, [], 'a runtime that does not answer reports nothing')
  s.runtime.states.set('c1', { running: false, exitReason: 'the process exited with code 3' })
  await s.runner.checkExit()
  await s.runner.checkExit()
  t.same(s.inputs, [{ type: 'containerExited', mission: MISSION, epoch: 1, reason: 'the process exited with code 3' }])
})

t.test('a fetch acks without waiting for staging, and only the newest fetched checkpoint is staged', async t => {
  const s = setup()
  s.runner.apply({ type: 'fetchCheckpoint', mission: MISSION, checkpoint: ref(1), providers: ['b'] })
  s.runner.apply({ type: 'fetchCheckpoint', mission: MISSION, checkpoint: ref(2), providers: ['b'] })
  await settle()
  t.same(s.calls, ['fetch cid-2'], 'a queued fetch of an older checkpoint is skipped')
  s.checkpoints.fetches.get('cid-2')?.resolve(held(2))
  await settle()
  t.same(s.calls, ['fetch cid-2', 'input checkpointFetched', 'stage cid-2'])
  for (const seq of [3, 4]) {
    s.runner.apply({ type: 'fetchCheckpoint', mission: MISSION, checkpoint: ref(seq), providers: ['b'] })
    await settle()
    s.checkpoints.fetches.get(`cid-${seq}`)?.resolve(held(seq))
    await settle()
  }
  t.same(s.inputs.map(i => i.type === 'checkpointFetched' ? i.checkpoint.seq : i.type), [2, 3, 4], 'both acked while #2 is still staging')
  t.same(s.checkpoints.stages.map(x => x.cid), ['cid-2'])
  s.checkpoints.stages[0]?.gate.resolve()
  await settle()
  t.same(s.checkpoints.stages.map(x => x.cid), ['cid-2', 'cid-4'], '#3 was no longer the newest when its turn came')
})

t.test('a staging that fails removes the half-written files and reports the fault', async t => {
  const s = setup()
  s.runner.apply({ type: 'fetchCheckpoint', mission: MISSION, checkpoint: ref(1), providers: ['b'] })
  await settle()
  s.checkpoints.fetches.get('cid-1')?.resolve(held(1))
  await settle()
  const fault = Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })
  s.checkpoints.stages[0]?.gate.reject(fault)
  await settle()
  t.same(s.calls.slice(-1), [`unstage ${MISSION}`])
  t.same(s.faults, [fault])
})

t.test('restores racing fetches', async t => {
  t.test('a restore while the fetch of its checkpoint is in flight restores from the store, pinned until it ends', async t => {
    const s = setup()
    s.runner.apply({ type: 'fetchCheckpoint', mission: MISSION, checkpoint: ref(5), providers: ['b'] })
    await settle()
    s.runner.apply({ type: 'restore', mission: MISSION, epoch: 2, spec: SPEC, checkpoint: ref(5) })
    await settle()
    t.same(s.calls, ['fetch cid-5', 'restore cid cid-5'], 'the restore did not wait for the fetch lane')
    t.same([...s.runner.restoring], ['cid-5'], 'pinned while restoring')
    s.checkpoints.fetches.get('cid-5')?.resolve(held(5))
    await settle()
    s.checkpoints.restores[0]?.gate.resolve(restored('c-r'))
    await settle()
    t.same([...s.runner.restoring], [])
    t.same(s.runner.container, { id: 'c-r', epoch: 2 })
    t.same(s.inputs.map(i => i.type), ['checkpointFetched', 'containerStarted'])
  })

  t.test('a restore after the fetch uses the held bundle', async t => {
    const s = setup()
    s.runner.apply({ type: 'fetchCheckpoint', mission: MISSION, checkpoint: ref(6), providers: ['b'] })
    await settle()
    s.checkpoints.fetches.get('cid-6')?.resolve(held(6))
    await settle()
    s.runner.apply({ type: 'restore', mission: MISSION, epoch: 2, spec: SPEC, checkpoint: ref(6) })
    await settle()
    t.same(s.calls.filter(c => c.startsWith('restore')), ['restore held cid-6'])
  })

  t.test('a failed restore is reported and unpins its checkpoint', async t => {
    const s = setup()
    s.runner.apply({ type: 'restore', mission: MISSION, epoch: 2, spec: SPEC, checkpoint: ref(7) })
    await settle()
    s.checkpoints.restores[0]?.gate.reject(new Error('criu restore failed\ndetails'))
    await settle()
    t.same([...s.runner.restoring], [])
    t.match(s.inputs, [{ type: 'restoreFailed', epoch: 2 }])
    t.match(s.events, [/restore of checkpoint #7 refused: criu restore failed$/])
  })

  t.test('a checkpoint held already is acked without a fetch; one sealed before this board joined is neither acked nor failed', async t => {
    const s = setup()
    s.runner.apply({ type: 'fetchCheckpoint', mission: MISSION, checkpoint: ref(8), providers: ['b'] })
    await settle()
    s.checkpoints.fetches.get('cid-8')?.resolve(held(8))
    await settle()
    s.runner.apply({ type: 'fetchCheckpoint', mission: MISSION, checkpoint: ref(8), providers: ['b'] })
    await settle()
    t.equal(s.calls.filter(c => c === 'fetch cid-8').length, 1)
    t.same(s.inputs.map(i => i.type), ['checkpointFetched', 'checkpointFetched'])
    s.runner.apply({ type: 'fetchCheckpoint', mission: MISSION, checkpoint: ref(9), providers: ['b'] })
    await settle()
    s.checkpoints.fetches.get('cid-9')?.reject(new NotARecipientError('not sealed for this board'))
    await settle()
    t.equal(s.inputs.length, 2, 'no fetchFailed: the next checkpoint, sealed for it, replaces it')
  })

  t.test('a fresh start with the data of a held checkpoint uses it; a forget drops the held checkpoints', async t => {
    const s = setup({ keepCheckpoints: 1 })
    for (const seq of [1, 2]) {
      s.runner.apply({ type: 'fetchCheckpoint', mission: MISSION, checkpoint: ref(seq), providers: ['b'] })
      await settle()
      s.checkpoints.fetches.get(`cid-${seq}`)?.resolve(held(seq))
      await settle()
    }
    s.runner.apply({ type: 'restore', mission: MISSION, epoch: 3, spec: SPEC, checkpoint: ref(1) })
    await settle()
    t.same(s.calls.filter(c => c.startsWith('restore')), ['restore cid cid-1'], 'only the newest is held (keepCheckpoints 1)')
    s.checkpoints.restores[0]?.gate.reject(new Error('no'))
    await settle()
    s.runner.apply({ type: 'startFresh', mission: MISSION, epoch: 3, spec: SPEC, image: 'tandem/rover', dataFrom: ref(2) })
    await settle()
    t.ok(s.calls.includes('startWithData e3 cid-2'))
    t.match(s.events.at(-1), /with the data of checkpoint #2 under epoch 3/)
    s.runner.apply({ type: 'forget', mission: MISSION })
    await settle()
    t.same(s.calls.slice(-2), [`unstage ${MISSION}`, `prune ${MISSION}`])
    s.runner.apply({ type: 'restore', mission: MISSION, epoch: 4, spec: SPEC, checkpoint: ref(2) })
    await settle()
    t.equal(s.calls.at(-1), 'restore cid cid-2', 'forgotten: restored from the store')
  })
})

t.test('idle waits for the work queued in every lane when it is called', async t => {
  const s = setup()
  await running(s)
  s.runner.apply({ type: 'checkpoint', mission: MISSION, epoch: 1, seq: 1, stop: false, parent: null, view: ['self', 'b', 'c'], intervalMs: 1000 })
  s.runner.apply({ type: 'fetchCheckpoint', mission: MISSION, checkpoint: ref(1), providers: ['b'] })
  await settle()
  let idle = false
  void s.runner.idle().then(() => { idle = true })
  s.checkpoints.takes[0]?.gate.resolve(taken(1))
  await settle()
  t.notOk(idle, 'the fetch runs still')
  s.checkpoints.fetches.get('cid-1')?.resolve(held(1))
  await settle()
  t.ok(idle)
})
