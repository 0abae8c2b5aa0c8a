// Holding a container frozen from inside CRIU's dump, and reading where CRIU's frozen time went.
//
// runc gives CRIU a fixed set of options over its RPC socket; the CRIU it runs (`criu swrk`) also reads the
// configuration file named by CRIU_CONFIG_FILE in its environment, which runc passes on. Only the `runc
// checkpoint` that tandem spawns gets it: nothing else on the board (restores, Docker's own checkpoints) changes.
// The file sets two options:
//
// - `network-lock skip`. CRIU's default (iptables) lock adds a DROP chain in the container's network namespace
//   before dumping and removes it after: two `iptables-restore` runs to lock and five process runs to unlock
//   (`iptables-restore` for IPv4 and IPv6 twice, `sh -c iptables -C`), all while the container is frozen. That is
//   the ~85 ms after the network-unlock notification. The lock exists so that no packet reaches a TCP connection
//   whose state is being dumped. Mission containers run with `NetworkMode none`: their network namespace holds
//   only `lo`, every process in it is frozen while CRIU dumps, and CRIU refuses to dump an established TCP
//   connection anyway (runc does not pass --tcp-established). Nothing can send, so the lock guards nothing here;
//   skipping it changes no namespace, mount, capability, seccomp or cgroup setting of the container.
// - `action-script <dir>/hook.sh`. CRIU runs it (as well as notifying runc) at each action; at `post-dump` (all
//   images written and flushed, tasks still frozen) it creates `<dir>/frozen` and waits for a line on the FIFO
//   `<dir>/resume`. Tandem copies the rootfs changes and data dir meanwhile, then writes the line; CRIU unfreezes.
//   So the mission is frozen only from CRIU's freeze to its thaw, instead of from a `docker pause` before runc
//   even starts to a `docker unpause` after. Tandem holds the FIFOs open read-write: if tandem dies, the script
//   reads end-of-file and CRIU goes on. CRIU thaws a container it froze; one that tandem froze at pre-dump (see
//   prepareCriuHook) stays frozen until thawed, as a `docker pause`d one did before.
import { open, mkdir, readFile, writeFile, stat, type FileHandle } from 'node:fs/promises'
import { watch, writeSync, type FSWatcher } from 'node:fs'
import { execFile } from 'node:child_process'
import { join } from 'node:path'

export interface CriuHook {
  /**
   * When this process froze the container's cgroup (v1 freezer) from CRIU's pre-dump hook, performance.now() of the
   * freeze; null when CRIU froze it (then CRIU thaws it too).
   */
  readonly selfFrozenAt: number | null
  /** Thaws what this process froze (after runc exited, or on any failure); idempotent. */
  thaw: () => Promise<void>
  /** Environment for `runc checkpoint` (CRIU_CONFIG_FILE added). */
  env: NodeJS.ProcessEnv
  /** Resolves once CRIU ran the post-dump hook: images written, container still frozen. */
  frozen: Promise<void>
  /** Lets CRIU go on (unfreeze); idempotent. */
  release: () => void
  close: () => Promise<void>
}

const shellQuote = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`

/** How long the freeze from the pre-dump hook may take before CRIU is left to freeze the container itself. */
const SELF_FREEZE_TIMEOUT_MS = 2000

/**
 * Writes the configuration file, the script and the FIFOs under `scratch/criu-hook`.
 *
 * `freezerState` (the container's cgroup v1 `freezer.state`): CRIU freezes a cgroup by writing FROZEN and, when the
 * kernel has not finished at once (cgroup v1 freezes asynchronously: FREEZING first), checks again only after
 * 100 ms: most checkpoints lost ~100 ms there. At CRIU's pre-dump action (just before it freezes) this process
 * freezes the cgroup itself, checking every millisecond; CRIU then finds it FROZEN, dumps, and leaves it frozen
 * (it restores the freezer state it found), and this process thaws it as soon as runc is done (or on any error).
 */
export async function prepareCriuHook (scratch: string, freezerState: string | null = null): Promise<CriuHook> {
  const dir = join(scratch, 'criu-hook')
  await mkdir(dir, { mode: 0o700 })
  const script = join(dir, 'hook.sh')
  const conf = join(dir, 'criu.conf')
  const fifo = join(dir, 'resume')
  const frozenFlag = join(dir, 'frozen')
  const preFifo = join(dir, 'resume-pre')
  const preFlag = join(dir, 'pre-dump')
  await writeFile(script, [
    '#!/bin/sh',
    '# tandem: at pre-dump, waits while tandem freezes the container; at post-dump, keeps it frozen after CRIU',
    '# wrote its images, until the rootfs and data dir are copied.',
    'case "$CRTOOLS_SCRIPT_ACTION" in',
    `  pre-dump) ${freezerState != null ? `: > ${shellQuote(preFlag)}; read -r _ < ${shellQuote(preFifo)} || true` : ':'} ;;`,
    `  post-dump) : > ${shellQuote(frozenFlag)}; read -r _ < ${shellQuote(fifo)} || true ;;`,
    'esac',
    'exit 0',
    ''
  ].join('\n'), { mode: 0o700 })
  await writeFile(conf, `network-lock skip\naction-script ${script}\n`, { mode: 0o600 })
  await new Promise<void>((resolve, reject) => {
    execFile('mkfifo', ['-m', '0600', fifo, preFifo], err => { err != null ? reject(err) : resolve() })
  })
  // Read-write: opening does not block, and the script's read ends (EOF) if this process dies.
  const handle: FileHandle = await open(fifo, 'r+')
  const preHandle: FileHandle = await open(preFifo, 'r+')
  let markFrozen: () => void = () => {}
  const frozen = new Promise<void>(resolve => { markFrozen = resolve })
  let selfFrozenAt: number | null = null
  let preDone = false
  const onPreDump = async (): Promise<void> => {
    if (preDone) return
    preDone = true
    try {
      if (freezerState != null) {
        const at = performance.now()
        await writeFile(freezerState, 'FROZEN')
        selfFrozenAt = at
        for (;;) {
          if ((await readFile(freezerState, 'utf8')).trim() === 'FROZEN') break
          if (performance.now() - at > SELF_FREEZE_TIMEOUT_MS) {
            // Let CRIU freeze (and thaw) it the way it does without us.
            await writeFile(freezerState, 'THAWED')
            selfFrozenAt = null
            break
          }
          await new Promise(resolve => setTimeout(resolve, 1))
        }
      }
    } catch {
      selfFrozenAt = null
    } finally {
      try { writeSync(preHandle.fd, '\n') } catch {}
    }
  }
  let watcher: FSWatcher | null = watch(dir, (_event, name) => {
    if (name === 'frozen') markFrozen()
    if (name === 'pre-dump') onPreDump().catch(() => {})
  })
  // In case a flag appeared before the watch took effect.
  stat(frozenFlag).then(() => markFrozen(), () => {})
  stat(preFlag).then(async () => { await onPreDump() }, () => {})
  let released = false
  let thawed = false
  return {
    env: { ...process.env, CRIU_CONFIG_FILE: conf },
    frozen,
    get selfFrozenAt () { return selfFrozenAt },
    release: () => {
      if (released) return
      released = true
      try { writeSync(handle.fd, '\n') } catch {}
    },
    thaw: async () => {
      if (thawed || selfFrozenAt == null || freezerState == null) return
      thawed = true
      await writeFile(freezerState, 'THAWED')
    },
    close: async () => {
      watcher?.close()
      watcher = null
      try { writeSync(preHandle.fd, '\n') } catch {}
      await handle.close().catch(() => {})
      await preHandle.close().catch(() => {})
    }
  }
}

/** CRIU's frozen time split by phase, from dump.log timestamps, ms. */
export interface CriuPhases {
  /** Freeze to the end of the tasks' dump (parasite, memory mappings, page copy, files). */
  tasksMs: number
  /** Mount namespace (tmpfs mounts are archived with tar + gzip, Docker's masked paths among them). */
  mountsMs: number
  /** Other namespaces: UTS, IPC, net (links, routes, iptables rules, each an `ip`/`iptables-save` run). */
  namespacesMs: number
  /** Cgroups, inventory and flushing the images, up to the post-dump action. */
  imagesMs: number
  /** From the post-dump action to the network unlock (with the hook: tandem's copy of rootfs and data dir). */
  postDumpMs: number
  /** From the network unlock to the tasks' unfreeze (the iptables lock's removal, unless skipped). */
  unlockMs: number
  /** Freeze to unfreeze. */
  frozenMs: number
}

/** Reads the phases from a CRIU dump.log (lines start with `(seconds.micros)`); null when markers are missing. */
export function criuPhasesFromLog (log: string): CriuPhases | null {
  const lines = log.split('\n')
  const at = (re: RegExp, last = false): number | null => {
    const line = last ? lines.findLast(l => re.test(l)) : lines.find(l => re.test(l))
    const m = /^\((\d+)\.(\d+)\)/.exec(line ?? '')
    return m?.[1] != null && m[2] != null ? Number(m[1]) * 1000 + Number(m[2].padEnd(6, '0').slice(0, 6)) / 1000 : null
  }
  const freeze = at(/freezing cgroup|Seized task/)
  const mounts = at(/mnt: Dumping mountpoints/)
  const pstree = at(/Dumping pstree/)
  const ns = at(/Namespaces dump complete/)
  const postDump = at(/Running post-dump scripts/)
  const unlock = at(/net: Unlock network/)
  const thaw = at(/Unfreezing tasks|Unseizing/, true)
  if (freeze == null || mounts == null || pstree == null || ns == null || postDump == null || unlock == null || thaw == null) return null
  const r = (x: number): number => Math.round(x * 10) / 10
  return {
    tasksMs: r(mounts - freeze),
    mountsMs: r(pstree - mounts),
    namespacesMs: r(ns - pstree),
    imagesMs: r(postDump - ns),
    postDumpMs: r(unlock - postDump),
    unlockMs: r(thaw - unlock),
    frozenMs: r(thaw - freeze)
  }
}
