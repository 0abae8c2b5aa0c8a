// Boards the operator removed: operator-signed revocations of peer ids, gossiped (and re-gossiped, so a board that
// was away learns them), persisted in the data dir. A revoked peer gets no connection and no say: its gossip is
// dropped, its blocks never arrive (no connection), and the missions treat it as dead and gone (they fail over).
import { join } from 'node:path'
import { readFile, rename, writeFile } from 'node:fs/promises'
import { peerIdFromString } from '@libp2p/peer-id'
import { GrantError, validateGrant, type OperatorGrant, type OperatorKeys, type OperatorSigner } from '../consensus/authority.ts'
import { GossipDrop } from './gossip.ts'
import { z } from '../schema/schema.ts'
import { ApiError } from './api.ts'
import type { Peer } from './daemon.ts'

export const REVOCATIONS_TOPIC = 'tandem/revocations/1'
/** Every board re-gossips what it knows this often: one that was down or partitioned learns it within one period. */
const REPUBLISH_MS = 10_000
/** One revocation is ~300 bytes; a message carries at most this many. */
const MAX_PER_MESSAGE = 200

const revocationListSchema = z.array(z.unknown()).max(MAX_PER_MESSAGE)
const revokeRequestSchema = z.object({ peer: z.string().min(1), grant: z.unknown().optional() })

export interface RevocationsOptions {
  peer: Peer
  /** Read at each use: the operator keys may be reloaded (SIGHUP) while the peer runs. */
  keys: () => OperatorKeys
  signer: () => OperatorSigner | undefined
  /** Called once per newly learned revoked peer (also for those loaded at start). */
  onRevoked: (peerId: string) => void
  log: (line: string) => void
}

export class Revocations {
  readonly #options: RevocationsOptions
  readonly #grants = new Map<string, OperatorGrant>()
  readonly #path: string
  #timer: NodeJS.Timeout | undefined
  #unsubscribe: (() => void) | undefined
  #writing: Promise<void> = Promise.resolve()

  constructor (options: RevocationsOptions) {
    this.#options = options
    this.#path = join(options.peer.config.dataDir, 'revocations.json')
  }

  get revoked (): string[] { return [...this.#grants.keys()] }

  async start (): Promise<void> {
    const { peer } = this.#options
    const keys = this.#options.keys
    let stored: unknown = []
    try {
      stored = JSON.parse(await readFile(this.#path, 'utf8'))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`revocations in ${this.#path} are unreadable (${(err as Error).message})`)
    }
    for (const value of Array.isArray(stored) ? stored : []) {
      const grant = validateGrant(value)
      // A key dropped from the trusted set since takes its revocations with it.
      if (grant !== undefined && grant.op === 'revoke' && keys().allows(grant, { op: 'revoke', subject: grant.subject })) this.#apply(grant, false)
    }
    this.#unsubscribe = peer.gossip.subscribe<OperatorGrant[]>(REVOCATIONS_TOPIC, payload => {
      if (keys().open) throw new GossipDrop('unauthorized', 'an open swarm has no operator: nobody revokes boards')
      const list = revocationListSchema.safeParse(payload)
      if (!list.success) throw new GossipDrop('malformed', 'not a list of revocations')
      return list.data.map(value => {
        const grant = validateGrant(value)
        if (grant === undefined) throw new GossipDrop('malformed', 'not an operator grant')
        try { keys().check(grant, { op: 'revoke', subject: grant.subject }) } catch (err) {
          if (err instanceof GrantError) throw new GossipDrop('unauthorized', `${err.problem}: ${err.message}`)
          throw err
        }
        return grant
      })
    }, grants => { for (const grant of grants) this.#apply(grant, true) }, { maxBytes: 128 * 1024 })
    this.#timer = setInterval(() => { this.#publish() }, REPUBLISH_MS)
    this.#routes()
  }

  async stop (): Promise<void> {
    clearInterval(this.#timer)
    this.#unsubscribe?.()
    await this.#writing
  }

  #apply (grant: OperatorGrant, persist: boolean): void {
    const peerId = grant.subject
    if (this.#grants.has(peerId) || peerId === this.#options.peer.peerId) return
    this.#grants.set(peerId, grant)
    const { peer } = this.#options
    peer.refusedPeers.add(peerId)
    this.#options.log(`revocations: board ${peerId} revoked by the operator: its connections are closed and refused, its messages dropped`)
    try {
      void peer.node.libp2p.hangUp(peerIdFromString(peerId)).catch(() => {})
    } catch {}
    this.#options.onRevoked(peerId)
    if (persist) {
      this.#writing = this.#writing.then(async () => {
        const temp = `${this.#path}.tmp`
        await writeFile(temp, JSON.stringify([...this.#grants.values()]), { mode: 0o600 })
        await rename(temp, this.#path)
      }).catch(err => { this.#options.log(`revocations: cannot persist: ${(err as Error).message}`) })
      this.#publish()
    }
  }

  #publish (): void {
    if (this.#grants.size === 0) return
    const grants = [...this.#grants.values()].slice(-MAX_PER_MESSAGE)
    this.#options.peer.gossip.publish(REVOCATIONS_TOPIC, grants).catch(err => {
      this.#options.log(`revocations: publish failed: ${(err as Error).message}`)
    })
  }

  #routes (): void {
    const api = this.#options.peer.api
    api.route('GET', '/v1/revocations', () => ({ body: { revoked: this.revoked } }))
    api.route('POST', '/v1/revocations', request => {
      const parsed = revokeRequestSchema.safeParse(request.body)
      if (!parsed.success) throw new ApiError(400, 'body must be {"peer": "<peer id>", "grant"?: <operator grant>}')
      const body = parsed.data
      const peerId = body.peer
      try { peerIdFromString(peerId) } catch { throw new ApiError(400, `'${peerId}' is not a peer id`) }
      if (peerId === this.#options.peer.peerId) throw new ApiError(409, 'a board does not revoke itself: ask another board')
      if (this.#options.keys().open) throw new ApiError(403, 'an open swarm (--insecure-open-missions) has no operator: nobody revokes boards')
      let grant: OperatorGrant | undefined
      if (body.grant != null) {
        grant = validateGrant(body.grant)
        if (grant === undefined) throw new ApiError(400, 'grant is not an operator grant')
      } else if (this.#options.signer() != null) {
        grant = this.#options.signer()!.sign({ op: 'revoke', subject: peerId, deployId: null, spec: null, to: null, at: Date.now() })
      } else {
        throw new ApiError(403, 'revoking a board needs the operator\'s signature: this board holds no operator key (sign with the CLI\'s --operator-key FILE)')
      }
      try { this.#options.keys().check(grant, { op: 'revoke', subject: peerId }) } catch (err) {
        if (err instanceof GrantError) throw new ApiError(403, err.message)
        throw err
      }
      this.#apply(grant, true)
      return { body: { revoked: peerId } }
    })
  }
}
