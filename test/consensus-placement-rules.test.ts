// consensus/placement.ts, table by table: which boards the placement allows, and why a mission is blocked.
import t from 'tap'
import { blockedReason, holdsImage, placementOk, type BoardFacts } from '../consensus/placement.ts'
import type { MissionSpec } from '../manifest/manifest.ts'

const SPEC: MissionSpec = { name: 'vehicle', image: { arm64: 'tandem/vehicle:arm64', x64: 'tandem/vehicle:x64' }, env: {}, checkpointIntervalMs: 500 }

function board (peerId: string, facts: Partial<BoardFacts> = {}): BoardFacts {
  return { peerId, arch: 'arm64', board: 'rpi4', memoryMb: 1024, canRun: true, canCheckpoint: true, images: ['tandem/vehicle:arm64'], fetchingImages: [], ...facts }
}

t.test('placementOk', async t => {
  const cases: Array<[string, MissionSpec, BoardFacts | undefined, boolean]> = [
    ['no placement, an image for its arch', SPEC, board('a'), true],
    ['unknown board', SPEC, undefined, false],
    ['no image for its arch', { ...SPEC, image: { x64: 'v:x64' } }, board('a'), false],
    ['architectures excludes it', { ...SPEC, placement: { architectures: ['x64'] } }, board('a'), false],
    ['boards lists it', { ...SPEC, placement: { boards: ['rpi4'] } }, board('a'), true],
    ['boards excludes it', { ...SPEC, placement: { boards: ['jetson'] } }, board('a'), false],
    ['too little memory', { ...SPEC, placement: { minMemoryMb: 2048 } }, board('a'), false],
    ['enough memory', { ...SPEC, placement: { minMemoryMb: 1024 } }, board('a'), true],
    ['without Docker or the image: still allowed (static facts only)', SPEC, board('a', { canRun: false, images: [] }), true]
  ]
  for (const [name, spec, info, expected] of cases) t.equal(placementOk(spec, info), expected, name)
})

t.test('holdsImage: the normalized ref of its arch', async t => {
  t.ok(holdsImage({ ...SPEC, image: 'tandem/vehicle' }, board('a', { images: ['tandem/vehicle:latest'] })))
  t.notOk(holdsImage(SPEC, board('a', { images: ['tandem/vehicle:x64'] })))
})

t.test('blockedReason: the first requirement no live board meets', async t => {
  const cases: Array<[string, MissionSpec, BoardFacts[], ReturnType<typeof blockedReason>]> = [
    ['one board can run it', SPEC, [board('a'), board('b', { canRun: false })], null],
    ['no image for any live arch', { ...SPEC, image: { x64: 'v:x64' } }, [board('a'), board('b', { arch: 'arm' })],
      { requirement: 'imageMap', reason: 'image has no entry for the live boards\' architectures [arm, arm64]' }],
    ['placement.architectures', { ...SPEC, placement: { architectures: ['x64'] } }, [board('a')],
      { requirement: 'architectures', reason: 'no board matches placement.architectures [x64]' }],
    ['placement.boards', { ...SPEC, placement: { boards: ['jetson'] } }, [board('a')], { requirement: 'boards', reason: 'no board matches placement.boards [jetson]' }],
    ['placement.minMemoryMb', { ...SPEC, placement: { minMemoryMb: 4096 } }, [board('a')], { requirement: 'memory', reason: 'no board matches placement.minMemoryMb 4096' }],
    ['no Docker', SPEC, [board('a', { canRun: false })], { requirement: 'docker', reason: 'no live board has Docker' }],
    ['no image', SPEC, [board('a', { images: [] })], { requirement: 'image', reason: 'image tandem/vehicle:arm64 is on no live board' }],
    ['no image, one fetching it', SPEC, [board('12D3KooWabcdefghij', { images: [], fetchingImages: ['tandem/vehicle:arm64'] })],
      { requirement: 'image', reason: 'image tandem/vehicle:arm64 is on no live board (being fetched by efghij)' }],
    ['requirements apply in turn: the board with Docker lacks the image', SPEC, [board('a', { canRun: false }), board('b', { images: [] })],
      { requirement: 'image', reason: 'image tandem/vehicle:arm64 is on no live board' }]
  ]
  for (const [name, spec, boards, expected] of cases) t.same(blockedReason(spec, boards), expected, name)
})
