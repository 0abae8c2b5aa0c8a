import { hostDocker, probeDocker } from '../../checkpoint/docker-host.ts'
// Tests that need the real parts (root, Docker, CRIU, base images): outside CI they skip with a one-line reason;
// under CI=true a missing part fails the run.

/** Returns true when the test may run; otherwise fails (CI=true) or notes the skip. */
export function gateOn (t: { fail: (message: string) => void, comment: (message: string) => void }, missing: string | null | undefined): boolean {
  if (missing == null) return true
  if (process.env.CI === 'true') t.fail(`CI=true and ${missing}`)
  else t.comment(`skip: ${missing}`)
  return false
}

/** Why the host's Docker cannot run these tests (no root, no daemon, not experimental, no tandem/busybox), or undefined. */
export async function dockerMissing (): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'needs root'
  try {
    const docker = hostDocker()
    const probe = await probeDocker(docker)
    if (!probe.available) throw probe.error
    if (!probe.experimental) return 'the host Docker daemon is not in experimental mode (run scripts/provision.sh)'
    if ((await docker.listImages({ filters: JSON.stringify({ reference: ['tandem/busybox:latest'] }) })).length === 0) return 'tandem/busybox missing (run scripts/provision.sh)'
  } catch (err) {
    return `no Docker daemon on this host (${(err as Error).message})`
  }
  return undefined
}
