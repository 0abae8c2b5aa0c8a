// The missions API: list, show, deploy, remove, re-sign and move. Every change is an input to the local machine,
// which gossips it; the handlers wait until the mission's view shows the result.
import { randomBytes } from 'node:crypto'
import { newDeployId, specDigest } from '../../consensus/authority.ts'
import { MAX_MANIFEST_BYTES, ManifestError, parseManifest, type MissionSpec } from '../../manifest/manifest.ts'
import type { EnvSeal, LocalEvent } from '../../consensus/types.ts'
import { EnvCommitmentError } from '../../manifest/env-commitment.ts'
import { ApiError, type ControlApi } from '../api.ts'
import type { MissionOperator } from './operator.ts'
import type { MissionStatus, MoveResult } from './status.ts'

/** What the routes need of the missions service. */
export interface MissionRoutesHost {
  api: Pick<ControlApi, 'route'>
  peerId: string
  operator: MissionOperator
  list: () => MissionStatus[]
  local: (event: LocalEvent) => void
  /** The spec with its env values committed (the CLI's salts, else fresh ones) and sealed for the live boards. */
  commitEnv: (spec: MissionSpec, salts?: Record<string, string>) => { spec: MissionSpec, envSeal?: EnvSeal }
  /** Why peers would refuse a new mission of this spec (their mission budget), or null. */
  refusalOfNew: (spec: MissionSpec) => { reason: string, detail: string } | null
  /** Re-reads this board's images (one built a moment ago). */
  refreshImages: () => Promise<void>
  imageOnSomeLiveBoard: (spec: MissionSpec) => boolean
  isAlive: (peerId: string) => boolean
}

export function find (host: Pick<MissionRoutesHost, 'list'>, name: string): MissionStatus {
  const mission = host.list().find(m => m.name === name)
  if (mission == null) throw new ApiError(404, `no mission named '${name}'`)
  return mission
}

async function waitFor (host: MissionRoutesHost, name: string, done: (m: MissionStatus | undefined) => boolean, timeoutMs: number, signal: AbortSignal): Promise<MissionStatus | undefined> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const mission = host.list().find(m => m.name === name)
    if (done(mission) || Date.now() >= deadline || signal.aborted) return mission
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

/** When the source last ran the mission and when the target first ran it, from their replicated events. */
function moveMarks (m: MissionStatus | undefined, from: string | null, fromEpoch: number, to: string, toEpoch: number): { stopped: number, running: number } | null {
  const events = m?.events ?? []
  const stopped = events.findLast(e => e.board === from && e.mark?.kind === 'stopped' && e.mark.epoch >= fromEpoch && e.mark.epoch < toEpoch)
  const running = events.find(e => e.board === to && e.mark?.kind === 'running' && e.mark.epoch === toEpoch)
  return stopped != null && running != null ? { stopped: stopped.at, running: running.at } : null
}

function saltsOf (value: unknown): Record<string, string> | undefined {
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'object' || Array.isArray(value) || !Object.values(value).every(v => typeof v === 'string')) throw new ApiError(400, 'envSalts must map each env name to a salt')
  return value as Record<string, string>
}

export function serveMissionRoutes (host: MissionRoutesHost): void {
  const { api, operator } = host
  api.route('GET', '/v1/missions', () => ({ body: host.list() }))
  api.route('GET', '/v1/missions/:name', request => ({ body: find(host, request.params.name as string) }))
  api.route('POST', '/v1/missions', async request => {
    const body = request.body as { manifest?: unknown, filename?: unknown } | undefined
    if (body == null || typeof body.manifest !== 'string') throw new ApiError(400, 'body must be {"manifest": "<YAML or JSON text>"}')
    const size = Buffer.byteLength(body.manifest)
    if (size > MAX_MANIFEST_BYTES) throw new ApiError(413, `manifest is ${size} bytes; at most ${MAX_MANIFEST_BYTES} bytes (64 KiB) are accepted`)
    let spec: MissionSpec
    let envSeal: EnvSeal | undefined
    try {
      const clear = parseManifest(body.manifest, typeof body.filename === 'string' ? body.filename : undefined)
      // Only digests of the env values are gossiped and signed; the values travel sealed for the view.
      ;({ spec, envSeal } = host.commitEnv(clear, saltsOf((body as { envSalts?: unknown }).envSalts)))
    } catch (err) {
      if (err instanceof ManifestError || err instanceof EnvCommitmentError) throw new ApiError(400, err.message)
      throw err
    }
    const existing = host.list().find(m => m.name === spec.name)
    if (existing != null) throw new ApiError(409, `mission '${spec.name}' already runs (epoch ${existing.epoch}); remove it first`)
    const grant = operator.grantFor((body as { grant?: unknown }).grant, at => ({
      op: 'deploy', subject: spec.name, deployId: newDeployId(operator.signer!.publicKey, at, randomBytes(4).toString('hex')), spec: specDigest(spec), to: null, at
    }), { op: 'deploy', subject: spec.name, spec })
    const over = host.refusalOfNew(spec)
    if (over != null) throw new ApiError(507, `${over.reason}: ${over.detail} (peers would refuse its announces)`)
    // tandem never pulls from a registry (Kubernetes' ErrImageNeverPull): some live board must hold the image.
    // This board's list is read afresh (an image built a moment ago); others' come with their next heartbeat.
    await host.refreshImages()
    if (!host.imageOnSomeLiveBoard(spec)) {
      const wanted = typeof spec.image === 'string' ? spec.image : Object.entries(spec.image).map(([arch, image]) => `${image} (${arch})`).join(', ')
      throw new ApiError(422, `image ${wanted} is on no live board: build or load it on one board (docker build / docker load), tandem never pulls`)
    }
    host.local({ type: 'deploy', spec, ...(grant === undefined ? {} : { grant, deployId: grant.deployId as string }), ...(envSeal === undefined ? {} : { envSeal }) })
    const mission = await waitFor(host, spec.name, m => m?.primary != null, 5000, request.signal)
    return { status: 201, body: mission ?? find(host, spec.name) }
  })
  api.route('DELETE', '/v1/missions/:name', request => {
    const name = request.params.name as string
    const { deployId } = find(host, name)
    const grant = operator.grantFor((request.body as { grant?: unknown } | undefined)?.grant,
      at => ({ op: 'remove', subject: name, deployId, spec: null, to: null, at }), { op: 'remove', subject: name, deployId })
    host.local({ type: 'remove', mission: name, ...(grant === undefined ? {} : { grant }) })
    return { body: { removed: name } }
  })
  // A key rotation: the deployment re-signed by the new operator key (same deployment, same spec), so the old key
  // can then be dropped without redeploying.
  api.route('POST', '/v1/missions/:name/grant', request => {
    const name = request.params.name as string
    const { deployId, spec } = find(host, name)
    if (operator.open) throw new ApiError(409, 'an open swarm (--insecure-open-missions) signs nothing')
    const grant = operator.grantFor((request.body as { grant?: unknown } | undefined)?.grant,
      at => ({ op: 'deploy', subject: name, deployId, spec: specDigest(spec), to: null, at }), { op: 'deploy', subject: name, deployId, spec })!
    host.local({ type: 'regrant', mission: name, grant })
    return { body: { mission: name, deployId, key: grant.key } }
  })
  api.route('POST', '/v1/missions/:name/move', async request => {
    const name = request.params.name as string
    const to = (request.body as { to?: unknown } | undefined)?.to
    if (typeof to !== 'string' || to === '') throw new ApiError(400, 'body must be {"to": "<peer id>"}')
    const before = find(host, name)
    if (before.primary === to) throw new ApiError(409, `mission '${name}' already runs on ${to}`)
    const grant = operator.grantFor((request.body as { grant?: unknown }).grant,
      at => ({ op: 'move', subject: name, deployId: before.deployId, spec: null, to, at }), { op: 'move', subject: name, deployId: before.deployId, to })
    const signed = grant === undefined ? {} : { grant }
    if (to !== host.peerId && !host.isAlive(to)) throw new ApiError(409, `peer ${to} is not alive in this swarm`)
    const started = Date.now()
    host.local({ type: 'move', mission: name, to, ...signed })
    let finalSeq = before.lastCheckpoint?.seq ?? null
    let requestedAt = started
    const after = await waitFor(host, name, m => {
      if (m != null && m.epoch === before.epoch) finalSeq = m.lastCheckpoint?.seq ?? null
      const refused = m?.events.find(e => e.at >= started && e.event.kind === 'moveRefused')
      if (refused != null) throw new ApiError(409, refused.text)
      // The request reaches the primary by gossip: repeat it until the mission moves (a repeat is harmless).
      if (m != null && m.epoch === before.epoch && Date.now() - requestedAt >= 1000) {
        requestedAt = Date.now()
        host.local({ type: 'move', mission: name, to, ...signed })
      }
      return m != null && m.primary === to && m.state === 'running'
    }, 60_000, request.signal)
    if (after == null || after.primary !== to || after.state !== 'running') {
      throw new ApiError(504, `move of '${name}' to ${to} did not complete within 60 s (state ${after?.state ?? 'unknown'}, primary ${after?.primary ?? 'none'}); see 'tandem mission show ${name}'`)
    }
    // Downtime as the mission saw it: from the source's last moment running (the final checkpoint's pause) to the
    // restored container running, as both boards reported it. Without both reports, the whole wait: never less.
    const marks = await waitFor(host, name, m => moveMarks(m, before.primary, before.epoch, to, after.epoch) != null, 3000, request.signal)
    const window = moveMarks(marks, before.primary, before.epoch, to, after.epoch)
    const now = Date.now()
    const downtimeMs = window != null && window.running >= window.stopped ? window.running - window.stopped : now - started
    const result: MoveResult = { mission: name, to, epoch: after.epoch, seq: finalSeq, downtimeMs, totalMs: now - started, measuredFrom: window != null ? 'board reports' : 'request' }
    return { body: result }
  })
}
