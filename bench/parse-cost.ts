// Parse cost of the two hot-path validators (a heartbeat, a consensus announce): median of 10k runs, microseconds.
import { validateHeartbeat, type Heartbeat } from '../peer/heartbeat.ts'
import { validateMessage } from '../consensus/messages.ts'
import type { ConsensusMessage } from '../consensus/types.ts'

const peerId = '12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo'
const heartbeat: Heartbeat = {
  v: 1, peerId, incarnation: Date.now(), seq: 42, sentAt: Date.now(),
  addrs: ['/ip4/192.168.1.20/tcp/4011', '/ip4/127.0.0.1/tcp/4011'],
  board: { name: 'raspberry-pi-4', arch: 'arm64', cores: 4, memoryMb: 3906 },
  capabilities: { criu: { version: '3.17.1', checkOk: true }, docker: { available: true, version: '20.10.24' } },
  load: { loadPerCore: 0.12, lagMs: 3, rssMb: 96, healthScore: 0 },
  extras: { missions: [{ mission: 'vehicle', role: 'primary', epoch: 4 }], images: ['vehicle:latest'] }
}
const announce: ConsensusMessage = {
  type: 'announce',
  claim: { votedEpoch: 4, open: false },
  record: {
    mission: 'vehicle', deployId: `${peerId}-1764600000000`, epoch: 4, primary: peerId, backup: '12D3KooWBackupBackupBackupBackupBackupBackupBackupBa',
    spec: { name: 'vehicle', image: 'tandem/vehicle:1', env: { SPEED: '3' }, checkpointIntervalMs: 1000, command: ['node', 'vehicle.js'], data: '/data' },
    view: [peerId, '12D3KooWBackupBackupBackupBackupBackupBackupBackupBa', '12D3KooWThirdThirdThirdThirdThirdThirdThirdThirdThir'],
    released: false, handoffTo: null,
    checkpoint: { cid: 'bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy', seq: 120, epoch: 4, arch: 'arm64', atMs: Date.now() },
    replicatedSeq: 119, removed: false, started: true, imageCid: null, imageArch: null, restarts: 0, lastFailure: null
  }
}

function median (run: () => unknown, n = 10_000): number {
  for (let i = 0; i < 1000; i++) run()
  const times = new Float64Array(n)
  for (let i = 0; i < n; i++) {
    const start = performance.now()
    run()
    times[i] = performance.now() - start
  }
  times.sort()
  return (times[n >> 1] as number) * 1000
}

const heartbeatText = JSON.stringify(heartbeat)
const announceText = JSON.stringify(announce)
console.log(`heartbeat: ${median(() => validateHeartbeat(JSON.parse(heartbeatText), peerId)).toFixed(2)} us (JSON.parse + validate)`)
console.log(`heartbeat: ${median(() => validateHeartbeat(heartbeat, peerId)).toFixed(2)} us (validate only)`)
console.log(`announce:  ${median(() => validateMessage(JSON.parse(announceText))).toFixed(2)} us (JSON.parse + validate)`)
console.log(`announce:  ${median(() => validateMessage(announce)).toFixed(2)} us (validate only)`)
