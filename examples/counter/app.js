// Reference mission for tandem's checkpoint tests: a counter whose state lives in memory.
// Each tick it prints the counter and mirrors it to the data dir (atomic rename). It never reads the
// mirror back: a restored container that continues counting proves its memory travelled.
// Env: TICK_MS (default 100), DATA_DIR (default /data), ROOTFS_LOG (a rootfs file kept open and
// appended to each tick), BALLAST_MB (live random memory), BALLAST_TOUCH_PCT (share of its pages
// rewritten each tick, default 0.1).
const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')

const tickMs = Number(process.env.TICK_MS || 100)
const dataDir = process.env.DATA_DIR || '/data'
const bootId = crypto.randomBytes(4).toString('hex')
let counter = 0

let log = null
if (process.env.ROOTFS_LOG) {
  fs.mkdirSync(path.dirname(process.env.ROOTFS_LOG), { recursive: true })
  log = fs.openSync(process.env.ROOTFS_LOG, 'a')
}

// Random, so it neither compresses nor deduplicates: the worst case for a checkpoint transfer.
const ballastPages = Math.floor(Number(process.env.BALLAST_MB || 0) * 256)
const touchPct = Number(process.env.BALLAST_TOUCH_PCT || 0.1)
const ballast = Buffer.alloc(ballastPages * 4096)
crypto.randomFillSync(ballast)

setInterval(() => {
  counter++
  // Rewrite a few pages each tick, like a working set that drifts.
  for (let i = 0; i < Math.ceil(ballastPages * touchPct / 100); i++) {
    const p = Math.floor(Math.random() * ballastPages)
    ballast.writeUInt32LE(counter, p * 4096)
  }
  const line = `counter ${counter} boot ${bootId}\n`
  process.stdout.write(line)
  if (log !== null) fs.writeSync(log, line)
  if (fs.existsSync(dataDir)) {
    const tmp = path.join(dataDir, '.counter.json.tmp')
    fs.writeFileSync(tmp, JSON.stringify({ counter, bootId }))
    fs.renameSync(tmp, path.join(dataDir, 'counter.json'))
  }
}, tickMs)
