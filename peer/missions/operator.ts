// The operator keys this board trusts, and the operator key it holds (if any) to sign its API's requests.
import { readFile } from 'node:fs/promises'
import { GrantError, OperatorKeys, OperatorSigner, validateGrant, type OperatorGrant } from '../../consensus/authority.ts'
import { ApiError } from '../api.ts'
import type { OperatorConfig } from '../config.ts'

export type GrantFields = Omit<OperatorGrant, 'v' | 'key' | 'sig'>
export type GrantExpectation = Parameters<OperatorKeys['check']>[1]

export class MissionOperator {
  #keys: OperatorKeys
  #signer: OperatorSigner | undefined

  constructor (keys: OperatorKeys, signer: OperatorSigner | undefined) {
    this.#keys = keys
    this.#signer = signer
  }

  static async load (operator: OperatorConfig | undefined): Promise<MissionOperator> {
    const keys = new OperatorKeys(operator?.publicKeys ?? [], { open: operator?.open === true })
    const signer = operator?.privateKeyFile != null ? new OperatorSigner(await readFile(operator.privateKeyFile, 'utf8')) : undefined
    return new MissionOperator(keys, signer)
  }

  get keys (): OperatorKeys { return this.#keys }
  get signer (): OperatorSigner | undefined { return this.#signer }
  get open (): boolean { return this.#keys.open }

  /**
   * New operator keys while running (SIGHUP after the key files changed: a rotation without restarting the boards).
   * An open swarm stays open and an enforcing one enforcing: that change needs a restart.
   */
  async reload (operator: OperatorConfig): Promise<void> {
    if (operator.open !== this.#keys.open) throw new Error('switching between an open swarm and operator keys needs a restart')
    const signer = operator.privateKeyFile != null ? new OperatorSigner(await readFile(operator.privateKeyFile, 'utf8')) : undefined
    this.#keys = new OperatorKeys(operator.publicKeys, { open: operator.open })
    this.#signer = signer
  }

  /**
   * The operator grant of an API request: the one the client signed (`tendered`, checked against the request), or
   * one this board signs with the operator key it holds; none in an open swarm. 403 without either.
   */
  grantFor (tendered: unknown, fields: (at: number) => GrantFields, expected: GrantExpectation): OperatorGrant | undefined {
    if (tendered != null) {
      const grant = validateGrant(tendered)
      if (grant === undefined) throw new ApiError(400, 'grant is not an operator grant')
      try { this.#keys.check(grant, expected) } catch (err) {
        if (err instanceof GrantError) throw new ApiError(403, err.message)
        throw err
      }
      if (expected.op === 'deploy' && grant.deployId == null) throw new ApiError(400, 'a deploy grant names the deployment (deployId)')
      return grant
    }
    if (this.#keys.open) return undefined
    if (this.#signer == null) {
      throw new ApiError(403, `${expected.op} needs the operator's signature: this board holds no operator key (sign with the CLI's --operator-key FILE)`)
    }
    return this.#signer.sign(fields(Date.now()))
  }
}
