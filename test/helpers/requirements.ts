// Tests that need the real parts (root, Docker, CRIU, base images): outside CI they skip with a one-line reason;
// under CI=true a missing part fails the run.

/** Returns true when the test may run; otherwise fails (CI=true) or notes the skip. */
export function gateOn (t: { fail: (message: string) => void, comment: (message: string) => void }, missing: string | null | undefined): boolean {
  if (missing == null) return true
  if (process.env.CI === 'true') t.fail(`CI=true and ${missing}`)
  else t.comment(`skip: ${missing}`)
  return false
}
