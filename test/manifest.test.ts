import t from 'tap'
import { readFileSync } from 'node:fs'
import { ManifestError, parseManifest, imageFor, DEFAULT_CHECKPOINT_INTERVAL_MS } from '../consensus/manifest.ts'

function errorOf (text: string): ManifestError {
  try {
    parseManifest(text, 'm.yaml')
  } catch (err) {
    if (err instanceof ManifestError) return err
    throw err
  }
  throw new Error(`no error for: ${text}`)
}

const base = 'name: vehicle\nimage: tandem/vehicle\n'

t.test('a full YAML manifest', async t => {
  const spec = parseManifest(`
name: vehicle-controller
image: { x64: tandem/vehicle:amd64, arm64: tandem/vehicle:arm64 }
command: [node, /app/controller.js]
env: { DATA_DIR: /data, HZ: 50, DEBUG: false }
data: /data
checkpointIntervalMs: 500
placement: { architectures: [arm64], boards: [rpi4, rpi5], minMemoryMb: 512 }
`)
  t.same(spec, {
    name: 'vehicle-controller',
    image: { x64: 'tandem/vehicle:amd64', arm64: 'tandem/vehicle:arm64' },
    command: ['node', '/app/controller.js'],
    env: { DATA_DIR: '/data', HZ: '50', DEBUG: 'false' },
    data: '/data',
    checkpointIntervalMs: 500,
    placement: { architectures: ['arm64'], boards: ['rpi4', 'rpi5'], minMemoryMb: 512 }
  })
  t.equal(imageFor(spec, 'arm64'), 'tandem/vehicle:arm64')
  t.equal(imageFor(spec, 'arm'), undefined)
})

t.test('JSON and defaults', async t => {
  const spec = parseManifest(JSON.stringify({ name: 'counter', image: 'busybox:1.36' }), 'm.json')
  t.same(spec, { name: 'counter', image: 'busybox:1.36', env: {}, checkpointIntervalMs: DEFAULT_CHECKPOINT_INTERVAL_MS })
  t.equal(imageFor(spec, 'ia32'), 'busybox:1.36')
})

t.test('the example manifest parses', async t => {
  const spec = parseManifest(readFileSync(new URL('../examples/vehicle/mission.yaml', import.meta.url), 'utf8'))
  t.equal(spec.name, 'vehicle-controller')
  t.equal(spec.data, '/data')
})

t.test('every field error names its field', async t => {
  const cases: Array<[string, string, RegExp?]> = [
    ['image: x\n', 'name', /required/],
    ['name: Vehicle_1\nimage: x\n', 'name'],
    ['name: -bad\nimage: x\n', 'name'],
    [`name: ${'a'.repeat(64)}\nimage: x\n`, 'name'],
    ['name: v\n', 'image', /required/],
    ['name: v\nimage: "Not An Image"\n', 'image'],
    ['name: v\nimage: 42\n', 'image'],
    ['name: v\nimage: {}\n', 'image'],
    ['name: v\nimage: { riscv64: x }\n', 'image.riscv64', /unknown architecture/],
    ['name: v\nimage: { arm64: 7 }\n', 'image.arm64'],
    [base + 'command: node app.js\n', 'command'],
    [base + 'command: []\n', 'command'],
    [base + 'command: [node, 3]\n', 'command[1]'],
    [base + 'env: [A]\n', 'env'],
    [base + 'env: { "1A": x }\n', 'env.1A'],
    [base + 'env: { A: [1] }\n', 'env.A'],
    [base + 'data: data\n', 'data'],
    [base + 'data: /a/../b\n', 'data'],
    [base + 'data: /\n', 'data'],
    [base + 'checkpointIntervalMs: 5\n', 'checkpointIntervalMs', /between/],
    [base + 'checkpointIntervalMs: 99999999\n', 'checkpointIntervalMs'],
    [base + 'checkpointIntervalMs: 1.5\n', 'checkpointIntervalMs'],
    [base + 'checkpointIntervalMs: "1000"\n', 'checkpointIntervalMs'],
    [base + 'placement: arm64\n', 'placement'],
    [base + 'placement: { architectures: [] }\n', 'placement.architectures'],
    [base + 'placement: { architectures: [sparc] }\n', 'placement.architectures[0]'],
    [base + 'placement: { boards: [""] }\n', 'placement.boards[0]'],
    [base + 'placement: { minMemoryMb: 0 }\n', 'placement.minMemoryMb'],
    [base + 'placement: { zone: a }\n', 'placement.zone', /unknown field/],
    ['name: v\nimage: { arm64: x }\nplacement: { architectures: [x64] }\n', 'placement.architectures', /no x64 entry/],
    [base + 'replicas: 3\n', 'replicas', /unknown field/]
  ]
  for (const [text, field, message] of cases) {
    const err = errorOf(text)
    t.equal(err.field, field, `${JSON.stringify(text)} -> ${err.message}`)
    t.match(err.message, `m.yaml: ${field}: `)
    if (message !== undefined) t.match(err.message, message)
  }
})

t.test('not a manifest at all', async t => {
  t.equal(errorOf('name: [unclosed\n').field, '')
  t.match(errorOf('name: [unclosed\n').message, /not valid YAML/)
  t.match(errorOf('- a\n- b\n').message, /must be a mapping/)
  t.match(errorOf('').message, /must be a mapping/)
  t.match(errorOf('name: a\nname: b\nimage: x\n').message, /not valid YAML/)
})
