// Who owns the state a simulated board or network leaves on the host (a directory with an `owner` file holding
// `pid starttime`): a run that died without cleaning up is found by its owner's absence, never by a process name.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

/** `pid starttime` of a process: survives PID reuse. */
export function processIdentity (pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return `${pid} ${fields[19]}`
  } catch {
    return undefined
  }
}

export function readOrEmpty (path: string): string {
  try { return readFileSync(path, 'utf8') } catch { return '' }
}

/**
 * The entries of `root` whose owner process is gone. An entry without an owner yet is being created right now by
 * someone else, and one whose owner lives belongs to another run: both are left alone.
 */
export function orphanedEntries (root: string): string[] {
  let entries: string[]
  try { entries = readdirSync(root) } catch { return [] }
  return entries.filter(entry => {
    const owner = readOrEmpty(join(root, entry, 'owner')).trim()
    return owner !== '' && processIdentity(Number(owner.split(' ')[0])) !== owner
  })
}
