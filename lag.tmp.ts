import { startMissionSwarm } from './demo/mission-swarm.ts'
const ms = await startMissionSwarm(3)
try {
  for (let i = 0; i < 45; i++) {
    await new Promise(r => setTimeout(r, 1000))
    const s = await ms.anyStatus()
    const b = s?.backup != null ? await ms.status(ms.boardOf(s.backup)!) : undefined
    console.log(`t=${i}s seq ${s?.lastCheckpoint?.seq} repl ${s?.replicatedSeq} lagMs ${s?.replicationLagMs} period ${s?.checkpointPeriodMs} | backup held ${b?.heldSeq} events ${JSON.stringify(b?.events.slice(-2).map(e => e.text))}`)
  }
  console.log(ms.output.filter(l => /failed|missions:/.test(l)).slice(-30).join('\n'))
} finally { await ms.stop() }
