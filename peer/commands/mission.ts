// `tandem mission validate|deploy|ls|show|rm|resign|move`: manage missions through any peer's control API.
import { readFile, stat } from 'node:fs/promises'
import { UsageError, type Command } from './command.ts'
import { parseFlags } from './args.ts'
import type { ApiClient } from '../api-client.ts'
import { API_FLAGS, API_FLAGS_USAGE, connectFromFlags } from './api-flags.ts'
import type { MissionStatus, MoveResult } from '../missions/index.ts'
import { MAX_MANIFEST_BYTES, ManifestError, parseManifest } from '../../manifest/manifest.ts'
import { newDeployId, specDigest, type OperatorSigner } from '../../consensus/authority.ts'
import { commitEnv, newSalts } from '../../manifest/env-commitment.ts'
import { randomBytes } from 'node:crypto'
import { loadOperatorSigner } from './operator-key.ts'
import { outputFormatOf, render } from './output.ts'
import { shortPeerId } from '../../consensus/peer-id.ts'
import { printable, table } from './terminal.ts'
import { resolvePeerId } from './peer-ids.ts'
import { manifestProblems } from './manifest-check.ts'
import { LOGS_USAGE, runMissionLogs } from './mission-logs.ts'

const USAGE = `usage: tandem mission <subcommand> [--api HOST:PORT] [--data-dir DIR] [-o table|wide|json|yaml] [--json] [--operator-key FILE]

  validate FILE          check a manifest offline (no peer needed) and list every problem; exit 1 if any
  deploy FILE            deploy the mission described by a YAML or JSON manifest
  ls                     list the missions the swarm runs
  show NAME              one mission: placement, epoch, checkpoints, replication, recent events
  rm NAME                stop and remove a mission everywhere
  logs NAME [-f]         the mission's output across failovers and moves, from every board ('logs --help')
  move NAME --to PEER    planned migration: checkpoint, restore on PEER (full id, unique prefix or suffix, or the
                         short form the tables print), stop the source; prints the downtime
  resign NAME            re-sign the deployment with the operator key given (a key rotation; nothing restarts)

${API_FLAGS_USAGE}
  --operator-key FILE  sign deploy, rm and move with this operator private key (else the peer must hold one)`

/** The primary's bound on the backup's state age, and whether it keeps the mission's interval. */
function staleness (m: MissionStatus): string {
  const bound = m.protection.stalenessBoundMs
  if (bound == null) return ''
  return m.protection.withinInterval === true
    ? `; the backup's state is at most ${bound} ms old`
    : `; NOT within the interval: the backup's state may be ${bound} ms old (interval ${m.spec.checkpointIntervalMs} ms): the board is too slow for it`
}

function megabytes (bytes: number): string { return (bytes / 1e6).toFixed(1) }

export function formatMissions (missions: MissionStatus[], wide = false): string {
  if (missions.length === 0) return '(no missions)'
  const rows = [['MISSION', 'STATE', 'PROTECTED', 'EPOCH', 'PRIMARY', 'BACKUP', 'CHECKPOINT', 'AGE', 'REPLICATED']]
  for (const m of missions) {
    rows.push([
      m.name, m.state, m.protected ? (m.protection.withinInterval === false ? 'degraded' : 'yes') : 'no', String(m.epoch), shortPeerId(m.primary, { wide }), shortPeerId(m.backup, { wide }),
      m.lastCheckpoint == null ? '-' : `#${m.lastCheckpoint.seq}`,
      m.lastCheckpoint == null ? '-' : `${m.lastCheckpoint.ageMs} ms`,
      m.replicatedSeq == null ? '-' : `#${m.replicatedSeq}`
    ])
  }
  return table(rows)
}

export function formatMission (m: MissionStatus, wide = false): string {
  const lines = [
    `mission     ${m.name}`,
    `state       ${m.state}${m.reason == null ? '' : ` (${m.reason})`}`,
    `protected   ${m.protected ? 'yes' : 'no'}${m.protection.reason == null ? '' : `: ${m.protection.reason}`}${staleness(m)}`,
    `epoch       ${m.epoch}`,
    `primary     ${m.primary ?? '-'}`,
    `backup      ${m.backup ?? '-'}`,
    `view        ${m.view.length === 0 ? '-' : m.view.join(', ')}`,
    `image       ${typeof m.spec.image === 'string' ? m.spec.image : Object.entries(m.spec.image).map(([arch, image]) => `${arch}=${image}`).join(', ')}`,
    `interval    ${m.spec.checkpointIntervalMs} ms (at most this much work lost)${m.checkpointPeriodMs == null ? '' : `; checkpoints every ${Math.round(m.checkpointPeriodMs)} ms`}`,
    `checkpoint  ${m.lastCheckpoint == null ? 'none yet' : `#${m.lastCheckpoint.seq} ${m.lastCheckpoint.cid} (${m.lastCheckpoint.ageMs} ms ago)`}`,
    `replicated  ${m.replicatedSeq == null ? 'nothing yet' : `#${m.replicatedSeq}`}${m.replicationLagMs == null ? '' : ` (${m.replicationLagMs} ms from start to the backup's ack)`}`
  ]
  // Older peers' status has no `env`: their spec's values are clear.
  const env = Object.entries(m.env ?? m.spec.env)
  if (env.length > 0) lines.push(`env         ${env.map(([k, v]) => `${k}=${v ?? '(sealed for the view)'}`).join(' ')}`)
  if (m.restarts > 0 || m.lastFailure != null) {
    const failure = m.lastFailure
    lines.push(`restarts    ${m.restarts}${failure == null ? '' : `; last failure on ${shortPeerId(failure.board, { wide })} at ${new Date(failure.at).toISOString()}: ${failure.reason}`}`)
  }
  for (const f of m.imageFetches) {
    const percent = f.totalBytes > 0 ? ` (${Math.floor(100 * f.fetchedBytes / f.totalBytes)} %)` : ''
    lines.push(`image fetch ${shortPeerId(f.board, { wide })}: ${f.image} ${megabytes(f.fetchedBytes)} of ${megabytes(f.totalBytes)} MB${percent}`)
  }
  if (m.events.length > 0) {
    lines.push('', 'events:')
    for (const event of m.events.slice(-15)) lines.push(`  ${new Date(event.at).toISOString()}  ${shortPeerId(event.board, { wide })}  ${event.text}`)
  }
  return lines.join('\n')
}

async function readManifest (file: string): Promise<string> {
  try {
    const size = (await stat(file)).size
    if (size > MAX_MANIFEST_BYTES) throw new UsageError(`${printable(file)} is ${size} bytes; a manifest may be at most ${MAX_MANIFEST_BYTES} bytes (64 KiB)`)
    return await readFile(file, 'utf8')
  } catch (err) {
    if (err instanceof UsageError) throw err
    throw new UsageError(`cannot read ${printable(file)}: ${(err as Error).message}`)
  }
}

function oneName (positionals: string[], what: string): string {
  const [name, extra] = positionals
  if (name == null) throw new UsageError(`missing ${what}\n${USAGE}`)
  if (extra != null) throw new UsageError(`unexpected argument '${printable(extra)}'`)
  return name
}

export const command: Command = {
  async run (argv) {
    const [sub, ...rest] = argv
    if (sub == null || sub === '--help' || sub === '-h') { console.log(USAGE); return sub == null ? 2 : 0 }
    if (sub === 'logs') {
      if (rest.includes('--help') || rest.includes('-h')) { console.log(LOGS_USAGE); return 0 }
      return await runMissionLogs(rest)
    }
    if (rest.includes('--help') || rest.includes('-h')) { console.log(USAGE); return 0 }
    const { values, positionals } = parseFlags(rest, { ...API_FLAGS, to: { type: 'string' }, 'operator-key': { type: 'string' } }, true)
    if (values.to != null && sub !== 'move') throw new UsageError('--to only goes with \'move\'')
    const signer: OperatorSigner | undefined = values['operator-key'] != null ? await loadOperatorSigner(values['operator-key']) : undefined
    const connect = async (): Promise<ApiClient> => await connectFromFlags(values)
    const format = outputFormatOf(values)
    const print = async (value: unknown, human: (wide: boolean) => string): Promise<void> => { console.log(await render(format, value, human)) }

    switch (sub) {
      case 'validate': {
        const file = oneName(positionals, 'manifest FILE')
        const text = await readManifest(file)
        const problems = manifestProblems(text, file)
        await print({ file, valid: problems.length === 0, problems }, () => problems.length === 0
          ? `${file}: valid`
          : [`${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}`, ...problems.map(p => `  ${p.field === '' ? '(manifest)' : p.field}: ${p.problem}`)].join('\n'))
        return problems.length === 0 ? 0 : 1
      }
      case 'deploy': {
        const file = oneName(positionals, 'manifest FILE')
        const text = await readManifest(file)
        const client = await connect()
        let grant
        let envSalts: Record<string, string> | undefined
        if (signer != null) {
          let spec
          try { spec = parseManifest(text, file) } catch (err) {
            if (err instanceof ManifestError) throw new UsageError(err.message)
            throw err
          }
          const at = Date.now()
          // The grant signs the env values' salted digests, never the values: the salts go to the board (over its
          // loopback API) so that it commits to the same digests and seals salts and values for the view.
          envSalts = newSalts(spec.env)
          const committed = commitEnv(spec, envSalts).spec
          grant = signer.sign({ op: 'deploy', subject: spec.name, deployId: newDeployId(signer.publicKey, at, randomBytes(4).toString('hex')), spec: specDigest(committed), to: null, at })
        }
        const mission = await client.request<MissionStatus>('POST', '/v1/missions', { manifest: text, filename: file, ...(grant == null ? {} : { grant, envSalts }) })
        await print(mission, () => `deployed ${mission.name}: epoch ${mission.epoch}, primary ${mission.primary ?? '(electing)'}, backup ${mission.backup ?? '(none yet)'}`)
        return 0
      }
      case 'ls': {
        if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0] as string}'`)
        const missions = await (await connect()).request<MissionStatus[]>('GET', '/v1/missions')
        await print(missions, wide => formatMissions(missions, wide))
        return 0
      }
      case 'show': {
        const name = oneName(positionals, 'mission NAME')
        const mission = await (await connect()).request<MissionStatus>('GET', `/v1/missions/${encodeURIComponent(name)}`)
        await print(mission, wide => formatMission(mission, wide))
        return 0
      }
      case 'rm': {
        const name = oneName(positionals, 'mission NAME')
        const client = await connect()
        let body
        if (signer != null) {
          const { deployId } = await client.request<MissionStatus>('GET', `/v1/missions/${encodeURIComponent(name)}`)
          body = { grant: signer.sign({ op: 'remove', subject: name, deployId, spec: null, to: null, at: Date.now() }) }
        }
        const result = await client.request<{ removed: string }>('DELETE', `/v1/missions/${encodeURIComponent(name)}`, body)
        await print(result, () => `removed ${result.removed}`)
        return 0
      }
      case 'resign': {
        const name = oneName(positionals, 'mission NAME')
        const client = await connect()
        let body
        if (signer != null) {
          const { deployId, spec } = await client.request<MissionStatus>('GET', `/v1/missions/${encodeURIComponent(name)}`)
          body = { grant: signer.sign({ op: 'deploy', subject: name, deployId, spec: specDigest(spec), to: null, at: Date.now() }) }
        }
        const result = await client.request<{ mission: string, key: string }>('POST', `/v1/missions/${encodeURIComponent(name)}/grant`, body)
        await print(result, () => `${result.mission} re-signed by operator key ${result.key}`)
        return 0
      }
      case 'move': {
        const name = oneName(positionals, 'mission NAME')
        if (values.to == null || values.to === '') throw new UsageError('move needs --to PEER_ID')
        const client = await connect()
        const status = await client.status()
        const to = resolvePeerId(values.to, [status.self.peerId, ...status.peers.map(p => p.peerId)])
        let grant
        if (signer != null) {
          const { deployId } = await client.request<MissionStatus>('GET', `/v1/missions/${encodeURIComponent(name)}`)
          grant = signer.sign({ op: 'move', subject: name, deployId, spec: null, to, at: Date.now() })
        }
        const result = await client.request<MoveResult>('POST', `/v1/missions/${encodeURIComponent(name)}/move`, { to, ...(grant == null ? {} : { grant }) }, { timeoutMs: 120_000 })
        await print(result, () => `moved ${name} to ${result.to} at epoch ${result.epoch}: downtime ${result.downtimeMs} ms (checkpoint #${result.seq}${result.measuredFrom === 'request' ? '; the boards did not report their stop and start, so this is the whole request' : ''})`)
        return 0
      }
      default:
        throw new UsageError(`unknown subcommand '${printable(sub)}'\n${USAGE}`)
    }
  }
}
