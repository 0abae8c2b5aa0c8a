// The status object served at GET /v1/status: fixed core fields plus sections added by other parts.
export type StatusProvider = () => unknown | Promise<unknown>

export class StatusRegistry {
  readonly #sections = new Map<string, StatusProvider>()
  readonly #reserved: Set<string>

  constructor (reserved: string[]) { this.#reserved = new Set(reserved) }

  /** Adds a top-level field (e.g. `missions`) computed on every status request. */
  extend (name: string, provider: StatusProvider): void {
    if (this.#reserved.has(name) || this.#sections.has(name)) throw new Error(`status field '${name}' is already taken`)
    this.#sections.set(name, provider)
  }

  /** One section alone (undefined when none has that name), e.g. `missions` for the dashboard's sampler. */
  async section (name: string): Promise<unknown> {
    const provider = this.#sections.get(name)
    return provider == null ? undefined : await provider()
  }

  async collect (): Promise<Record<string, unknown>> {
    const result: Record<string, unknown> = {}
    for (const [name, provider] of this.#sections) {
      try {
        result[name] = await provider()
      } catch (err) {
        result[name] = { error: (err as Error).message }
      }
    }
    return result
  }
}
