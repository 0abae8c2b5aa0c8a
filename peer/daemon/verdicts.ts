// Verdicts: what we find dead ourselves is told to everyone; what others find is applied here unless we
// heard from the target since (a replayed or refuted verdict is dropped as `replayed`); a verdict against
// this peer in its current incarnation is refuted with a new one.
import type { Gossip } from '../gossip.ts'
import { GossipDrop } from '../gossip.ts'
import { VERDICT_TOPIC, validateVerdict, type VerdictMessage } from '../heartbeat.ts'
import type { Membership } from '../membership.ts'
import type { LogLine } from '../logger.ts'
import type { HeartbeatGossip } from './heartbeats.ts'

/** Wires verdicts between the gossip and the member table; returns the cleanups, in the order they were set up. */
export function gossipVerdicts (options: { selfId: string, gossip: Gossip, membership: Membership, heartbeats: HeartbeatGossip, log: LogLine }): Array<() => void> {
  const { selfId, gossip, membership, heartbeats, log } = options
  return [
    gossip.subscribe<VerdictMessage>(VERDICT_TOPIC, (payload, sender) => {
      const verdict = validateVerdict(payload, sender)
      const judged = membership.judgeVerdict(verdict, sender)
      if (judged === 'stale') throw new GossipDrop('replayed', `verdict on ${verdict.target} incarnation ${verdict.incarnation} seq ${verdict.seq} is older than what we heard`)
      if (judged === 'stranger') throw new GossipDrop('stranger', `verdict from ${sender}, not a live member`)
      return verdict
    }, (verdict, sender) => { membership.verdict(verdict, sender) }, { maxBytes: 1024 }),
    membership.onVerdict(verdict => {
      gossip.publish(VERDICT_TOPIC, { v: 1, from: selfId, ...verdict } satisfies VerdictMessage).catch(err => {
        log(`verdict: publish failed: ${(err as Error).message}`, { level: 'warn' })
      })
    }),
    membership.onAccused(verdict => {
      if (verdict.incarnation < heartbeats.incarnation) return
      log(`membership: ${verdict.from} found this peer dead (${verdict.reason}); refuting with a new incarnation`, { level: 'warn', member: verdict.from })
      heartbeats.refute()
    })
  ]
}
