#!/usr/bin/env bash
# The README's test command (`npm test`): provisions the host when it lacks Docker/CRIU/base images,
# type-checks, then runs every tap test. Under CI=true a host that cannot be provisioned fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && [ "$(uname -s)" = Linux ]; then
  if ! bash scripts/provision.sh --check >/dev/null 2>&1; then
    echo "test: host lacks Docker, CRIU or base images: provisioning (scripts/provision.sh)"
    if ! bash scripts/provision.sh; then
      if [ "${CI:-}" = true ]; then echo "test: provisioning failed under CI=true" >&2; exit 1; fi
      echo "test: provisioning failed; tests that need Docker/CRIU will skip (outside CI only)" >&2
    fi
  fi
elif [ "${CI:-}" = true ]; then
  echo "test: CI=true needs root on Linux to provision Docker and CRIU" >&2
  exit 1
fi

echo "test: type-checking (tsc --noEmit)"
npx tsc --noEmit

# tap compiles its plugin list at install time; rebuild it from package.json (TypeScript plugin off: Node strips types).
npx tap build >/dev/null

mapfile -t files < <(find test -name '*.test.ts' | sort)
if [ "${#files[@]}" -eq 0 ]; then echo "test: no test files found" >&2; exit 1; fi
exec npx tap "$@" "${files[@]}"
