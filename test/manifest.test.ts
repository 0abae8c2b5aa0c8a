import t from 'tap'
import { readFileSync } from 'node:fs'
import {
  ManifestError, parseManifest, imageFor, normalizeImageRef, DEFAULT_CHECKPOINT_INTERVAL_MS, MAX_MANIFEST_BYTES, MAX_ENV_ENTRIES, MAX_COMMAND_ARGS
} from '../manifest/manifest.ts'

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

t.test('size limits: text and canonical JSON at most MAX_MANIFEST_BYTES, env and command entries counted', async t => {
  t.equal(MAX_MANIFEST_BYTES, 64 * 1024)
  const big = base + `env: { A: "${'x'.repeat(MAX_MANIFEST_BYTES)}" }\n`
  t.match(errorOf(big).message, new RegExp(`m.yaml: is ${big.length} bytes, more than the limit of ${MAX_MANIFEST_BYTES}`))
  // Under the text limit as YAML, over it as JSON (escapes double in JSON).
  const escaped = base + `env: { A: '${'"'.repeat(40_000)}' }\n`
  t.match(errorOf(escaped).message, /the mission spec is \d+ bytes as JSON, more than the limit of 65536/)
  const env = Array.from({ length: MAX_ENV_ENTRIES + 1 }, (_, i) => `  E${i}: v`).join('\n')
  const tooMany = errorOf(base + `env:\n${env}\n`)
  t.equal(tooMany.field, 'env')
  t.match(tooMany.message, /has 1025 entries, at most 1024/)
  const args = JSON.stringify(Array.from({ length: MAX_COMMAND_ARGS + 1 }, () => 'a'))
  t.match(errorOf(base + `command: ${args}\n`).message, /command: has 257 arguments, at most 256/)
  t.equal(parseManifest(base + `command: ${JSON.stringify(Array.from({ length: MAX_COMMAND_ARGS }, () => 'a'))}\n`).command?.length, MAX_COMMAND_ARGS)
})

t.test('duplicate keys are refused in YAML and JSON, nested too, and named', async t => {
  t.match(errorOf(base + 'env: { A: 1, B: 2, A: 3 }\n').message, /not valid YAML or JSON: .*duplicate key "A"/)
  t.match(errorOf('{"name": "v", "image": "x", "env": {"A": "1", "A": "2"}}').message, /duplicate key "A"/)
  t.match(errorOf('{"name": "v", "name": "w", "image": "x"}').message, /duplicate key "name"/)
  t.same(parseManifest('{"name": "v", "image": "x", "env": {"name": "1", "image": "2"}}').env, { name: '1', image: '2' }, 'the same key in two maps is fine')
  t.equal(parseManifest('{name: v, image: x}').name, 'v', 'a YAML flow mapping that is not JSON')
  // Found by the decoder fuzz: a collection as a key was stringified by the yaml package, with a process warning.
  t.match(errorOf(base + '? [sh, -c]\n: 1\n').message, /not valid YAML or JSON: a mapping key must be a plain value/)
})

t.test('parsing a 64 KiB worst case (thousands of keys, duplicate-key check) is fast', async t => {
  // Many short keys: the duplicate check must be linear (the yaml package's is quadratic: 0.45 MB / 40k keys took 71 s).
  const cases: Array<[string, string]> = []
  let yaml = base + 'env:\n'
  for (let i = 0; yaml.length < MAX_MANIFEST_BYTES - 16; i++) yaml += `  A${i.toString(36)}: 1\n`
  cases.push(['YAML block mapping', yaml])
  let flow = '{name: v, image: x, env: {'
  for (let i = 0; flow.length < MAX_MANIFEST_BYTES - 16; i++) flow += `A${i.toString(36)}: 1,`
  cases.push(['YAML flow mapping', flow + '}}'])
  const entries: string[] = []
  for (let i = 0; entries.join(',').length < MAX_MANIFEST_BYTES - 64; i++) entries.push(`"A${i.toString(36)}":"1"`)
  cases.push(['JSON', `{"name":"v","image":"x","env":{${entries.join(',')}}}`])
  // The largest accepted spec: every list and map at its limit, in flow style (two indicators per entry).
  const env = Array.from({ length: MAX_ENV_ENTRIES }, (_, i) => `E${i}: "${'v'.repeat(20)}"`).join(', ')
  const command = Array.from({ length: MAX_COMMAND_ARGS }, (_, i) => `a${i}`).join(', ')
  const boards = Array.from({ length: 64 }, (_, i) => `b${i}`).join(', ')
  const largest = `name: v\nimage: { x64: a, arm64: b, arm: c, ia32: d }\ncommand: [${command}]\nenv: {${env}}\nplacement: { boards: [${boards}], architectures: [x64, arm64, arm, ia32], minMemoryMb: 1 }\n`
  t.equal(Object.keys(parseManifest(largest).env).length, MAX_ENV_ENTRIES, 'the largest accepted manifest parses')
  cases.push(['largest accepted YAML', largest])
  t.match(errorOf(yaml).message, /YAML entries, more than a mission spec can have/)
  for (const [label, text] of cases) {
    t.ok(text.length <= MAX_MANIFEST_BYTES)
    const times: number[] = []
    for (let run = 0; run < 5; run++) {
      const started = performance.now()
      try { parseManifest(text) } catch (err) { if (!(err instanceof ManifestError)) throw err }
      times.push(performance.now() - started)
    }
    const best = Math.min(...times)
    // A bound that catches the quadratic case (71 s for 40k keys once) on a loaded host, not a timing target.
    t.ok(best < 1000, `${label}, ${text.length} bytes: ${best.toFixed(1)} ms (first run ${times[0]!.toFixed(1)} ms)`)
  }
})

t.test('normalizeImageRef: as Docker lists images', async t => {
  t.equal(normalizeImageRef('tandem/vehicle'), 'tandem/vehicle:latest')
  t.equal(normalizeImageRef('tandem/vehicle:1'), 'tandem/vehicle:1')
  t.equal(normalizeImageRef('busybox'), 'busybox:latest')
  t.equal(normalizeImageRef('docker.io/library/busybox:1.36'), 'busybox:1.36')
  t.equal(normalizeImageRef('docker.io/bars/x'), 'bars/x:latest')
  t.equal(normalizeImageRef('registry:5000/bars/x'), 'registry:5000/bars/x:latest')
  t.equal(normalizeImageRef('registry:5000/bars/x:2'), 'registry:5000/bars/x:2')
  const id = `sha256:${'a'.repeat(64)}`
  t.equal(normalizeImageRef(id), id)
  t.equal(normalizeImageRef(`bars/x@${id}`), `bars/x@${id}`)
})
