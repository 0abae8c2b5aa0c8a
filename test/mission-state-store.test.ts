// The missions' persisted decisions (peer/missions/state-store.ts): written and read back, and a layout this version
// does not know refused with the way out.
import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Level } from 'level'
import { MissionStateStore } from '../peer/missions/state-store.ts'
import type { PersistedState } from '../consensus/types.ts'

t.test('decisions are read back; an unknown version is refused', async t => {
  const dataDir = await mkdtemp(join(tmpdir(), 'tandem-state-'))
  t.teardown(async () => { await rm(dataDir, { recursive: true, force: true }) })
  const failures: unknown[] = []
  const store = new MissionStateStore({ dataDir, onWriteFailed: err => { failures.push(err) } })
  await store.open()
  t.equal(await store.load(), undefined, 'nothing persisted yet')
  const state = { version: 1, missions: {} } as unknown as PersistedState
  await store.persist(state)
  await store.settled()
  t.same(await store.load(), state)
  await store.probe()
  await store.close()

  const db = new Level<string, string>(join(dataDir, 'missions'), { valueEncoding: 'utf8' })
  await db.put('consensus-state', JSON.stringify({ version: 2, missions: {} }))
  await db.close()
  const again = new MissionStateStore({ dataDir, onWriteFailed: () => {} })
  await again.open()
  await t.rejects(again.load(), /persisted mission state in .*missions is unreadable \(unknown version 2\); move it aside/)
  await again.close()
  t.same(failures, [])
})
