// Refuses trees a container could not have produced (see checkTreeEntries), and counts the refusals by reason.
import type { CID } from 'multiformats/cid'
import type { TreeEntry } from '../format.ts'
import { UnsafeTreeError, type UnsafeTreeReason } from '../errors.ts'
import { checkTreeEntries, type SetIdEntry, type TreeRole } from '../tree-safety.ts'

export class TreeGuard {
  /** Refusals of unsafe trees (fetch and materialize), by reason, since the store opened. */
  readonly refused = new Map<UnsafeTreeReason, number>()

  /** Throws an UnsafeTreeError for an unsafe tree; set-id entries pass only through `allowSetId`. */
  async check (role: TreeRole, entries: Iterable<TreeEntry>, treeCid: CID, allowSetId?: (entries: SetIdEntry[]) => Promise<void>): Promise<void> {
    const setId = checkTreeEntries(role, entries, `${role} tree ${treeCid.toString()}`)
    if (setId.length === 0) return
    if (allowSetId == null) {
      const first = setId[0] as SetIdEntry
      throw new UnsafeTreeError('set-id bit', first.path, `${role} tree ${treeCid.toString()}: ${first.path} has mode ${first.mode.toString(8)} and no image to compare with`)
    }
    await allowSetId(setId)
  }

  /** Counts `err` when it is a refusal, and returns it. */
  counted (err: unknown): unknown {
    if (err instanceof UnsafeTreeError) this.refused.set(err.reason, (this.refused.get(err.reason) ?? 0) + 1)
    return err
  }
}
