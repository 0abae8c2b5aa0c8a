#!/usr/bin/env bash
# Host setup for tandem: Docker Engine with checkpoints, CRIU >= 4.1, local base images.
# Idempotent; run as root on Debian/Ubuntu. See README "Host setup" and `--help`.
set -euo pipefail

PROVISION_RECIPE=1                      # bump when an image recipe changes
CRIU_MIN_VERSION=4.1
CRIU_PREFIX_ROOT=/opt/tandem/criu
CRIU_WRAPPER=/usr/local/sbin/criu
STATE_DIR=/var/lib/tandem
APT_PRIVATE_DIR=/var/cache/tandem/apt-trixie
IMAGE_CACHE_DIR="$STATE_DIR/images"
IMAGE_CACHE_TAR="$IMAGE_CACHE_DIR/base-images.tar"
IMAGE_CACHE_MANIFEST="$IMAGE_CACHE_DIR/base-images.manifest"
CHECKPOINT_STAMP="$STATE_DIR/checkpoint-verified"
DAEMON_JSON=/etc/docker/daemon.json
SYSTEM_DOCKER_SOCKET=/var/run/docker.sock
SYSTEM_DOCKER_PIDFILE=/var/run/docker.pid
SYSTEM_DOCKER_LOG=/var/log/tandem/dockerd.log
RUN_DIR=/run/tandem
CONTENT_LABEL=tandem.content
DAEMON_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_BINARY="$REPO_ROOT/node_modules/node/bin/node"
CHROMIUM_BINARY=/usr/bin/chromium

export PATH="$DAEMON_PATH:$PATH"
export DEBIAN_FRONTEND=noninteractive

usage () {
  cat <<EOF
usage: scripts/provision.sh [--check] [--load-into DOCKER_HOST]

Provisions this host for tandem (as root, Debian/Ubuntu), doing only what is missing:
  1. Docker Engine from the distribution's packages (docker.io), daemon config with
     "experimental": true (checkpoints), bridge/iptables off; starts the system dockerd
     if none runs (pid file $SYSTEM_DOCKER_PIDFILE, log $SYSTEM_DOCKER_LOG).
  2. CRIU >= $CRIU_MIN_VERSION passing 'criu check': the distribution's package when new enough,
     otherwise Debian 13's CRIU and its libraries (own libc) unpacked into $CRIU_PREFIX_ROOT,
     run by the wrapper $CRIU_WRAPPER; then a real checkpoint + restore of a busybox container.
  3. Local base images, built with no registry: tandem/busybox and tandem/node-base (labelled
     $CONTENT_LABEL=<hash>), saved once into $IMAGE_CACHE_TAR for the simulated boards.
  4. Chromium from the distribution's packages ($CHROMIUM_BINARY), for the dashboard's test in a
     headless browser (test/dashboard.test.ts).

  --check                 only report; exit 1 if anything is missing
  --load-into DOCKER_HOST load the base images into that daemon (e.g. unix:///run/tb/b1.sock)
                          unless it already has the current ones
EOF
}

# ---------- output ----------
started_at=$(date +%s%N)
step () { printf '==> %s\n' "$*"; }
ok () { printf '    ok: %s\n' "$*"; }
missing_count=0
missing () { printf '    MISSING: %s\n      fix: %s\n' "$1" "$2"; missing_count=$((missing_count + 1)); }
die () { printf 'provision: %s\n' "$*" >&2; exit 1; }
elapsed () { echo "$(( ($(date +%s%N) - started_at) / 1000000 )) ms"; }

# ---------- small helpers ----------
have_package () { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_updated=0
apt_install () {
  if [ "$apt_updated" = 0 ]; then
    step "apt-get update"
    apt-get update -q >/dev/null || die "apt-get update failed"
    apt_updated=1
  fi
  step "apt-get install $*"
  apt-get install -y -q --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}

docker_system () { docker -H "unix://$SYSTEM_DOCKER_SOCKET" "$@"; }

system_docker_reachable () { docker_system version --format '{{.Server.Version}}' >/dev/null 2>&1; }

system_docker_experimental () { [ "$(docker_system version --format '{{.Server.Experimental}}' 2>/dev/null)" = true ]; }

criu_version_of () { "$1" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n1; }

version_at_least () { [ -n "$1" ] && dpkg --compare-versions "$1" ge "$2"; }

# The criu a dockerd would run: the first one on that daemon's PATH.
criu_on_daemon_path () {
  local pid="$1" daemon_path dir
  daemon_path=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^PATH=//p')
  [ -n "$daemon_path" ] || daemon_path=$DAEMON_PATH
  IFS=: read -r -a dirs <<<"$daemon_path"
  for dir in "${dirs[@]}"; do
    if [ -x "$dir/criu" ]; then echo "$dir/criu"; return 0; fi
  done
  return 1
}

system_dockerd_pid () {
  local pid
  pid=$(cat "$SYSTEM_DOCKER_PIDFILE" 2>/dev/null || true)
  if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then echo "$pid"; return 0; fi
  return 1
}

image_content () { # HOST IMAGE
  docker -H "$1" image inspect --format "{{index .Config.Labels \"$CONTENT_LABEL\"}}" "$2" 2>/dev/null || true
}

# ---------- image recipes (content hashes) ----------
busybox_binary=/bin/busybox

busybox_hash () {
  if [ -n "${busybox_hash_memo:-}" ]; then echo "$busybox_hash_memo"; return 0; fi
  { echo "recipe $PROVISION_RECIPE busybox"; sha256sum "$busybox_binary"; } | sha256sum | cut -c1-32
}

node_libraries () { # absolute paths of the shared libraries node loads, loader included
  ldd "$NODE_BINARY" | awk '/=> \// { print $3 } /^\t\/[^ ]*ld-linux/ { print $1 }'
}

node_base_hash () {
  if [ -n "${node_base_hash_memo:-}" ]; then echo "$node_base_hash_memo"; return 0; fi
  { echo "recipe $PROVISION_RECIPE node-base"; sha256sum "$busybox_binary" "$NODE_BINARY";
    node_libraries | xargs -r readlink -f | xargs -r sha256sum; } | sha256sum | cut -c1-32
}

# ---------- checks ----------
check_all () {
  step "Checking host (report only)"
  [ "$(uname -s)" = Linux ] || missing "Linux" "tandem needs Linux (namespaces, cgroups, CRIU)"
  if [ -x /usr/sbin/dockerd ] || command -v dockerd >/dev/null 2>&1; then ok "dockerd installed"; else missing "Docker Engine (dockerd)" "run scripts/provision.sh as root"; fi
  if system_docker_reachable; then
    ok "system Docker reachable at unix://$SYSTEM_DOCKER_SOCKET"
    if system_docker_experimental; then ok "experimental mode on (checkpoints)"; else missing "experimental mode" "set \"experimental\": true in $DAEMON_JSON and restart dockerd"; fi
  else
    missing "system Docker daemon not reachable" "run scripts/provision.sh (starts dockerd)"
  fi
  local criu_path criu_version
  criu_path=$(command -v criu || true)
  criu_version=$([ -n "$criu_path" ] && criu_version_of "$criu_path" || true)
  if version_at_least "$criu_version" "$CRIU_MIN_VERSION"; then
    ok "CRIU $criu_version ($criu_path)"
    if criu check >/dev/null 2>&1; then ok "criu check"; else missing "'criu check' fails" "run 'criu check' to see why; scripts/provision.sh"; fi
  else
    missing "CRIU >= $CRIU_MIN_VERSION (found: ${criu_version:-none})" "run scripts/provision.sh"
  fi
  local pid daemon_criu
  if pid=$(system_dockerd_pid) && daemon_criu=$(criu_on_daemon_path "$pid"); then
    if version_at_least "$(criu_version_of "$daemon_criu")" "$CRIU_MIN_VERSION"; then ok "dockerd (pid $pid) finds $daemon_criu"; else missing "dockerd's PATH finds an old criu ($daemon_criu)" "restart dockerd with /usr/local/sbin first on its PATH"; fi
  fi
  if [ -f "$CHECKPOINT_STAMP" ]; then ok "checkpoint + restore verified ($(cat "$CHECKPOINT_STAMP"))"; else missing "checkpoint + restore not verified" "run scripts/provision.sh"; fi
  if [ -x "$busybox_binary" ] && [ -x "$NODE_BINARY" ] && system_docker_reachable; then
    busybox_hash_memo=$(busybox_hash); node_base_hash_memo=$(node_base_hash)
    local want have image
    for image in busybox node-base; do
      if [ "$image" = busybox ]; then want=$(busybox_hash); else want=$(node_base_hash); fi
      have=$(image_content "unix://$SYSTEM_DOCKER_SOCKET" "tandem/$image")
      if [ "$have" = "$want" ]; then ok "image tandem/$image current ($want)"; else missing "image tandem/$image $([ -n "$have" ] && echo "outdated ($have)" || echo absent)" "run scripts/provision.sh"; fi
    done
    if [ -f "$IMAGE_CACHE_TAR" ] && [ "$(cat "$IMAGE_CACHE_MANIFEST" 2>/dev/null)" = "$(image_manifest)" ]; then ok "image cache $IMAGE_CACHE_TAR"; else missing "image cache for simulated boards" "run scripts/provision.sh"; fi
  else
    [ -x "$NODE_BINARY" ] || missing "Node 24 binary $NODE_BINARY" "run 'npm ci' in $REPO_ROOT"
    missing "base images (cannot check without busybox-static, node_modules and Docker)" "run scripts/provision.sh"
  fi
  if [ -x "$CHROMIUM_BINARY" ]; then ok "chromium ($CHROMIUM_BINARY)"; else missing "chromium (headless browser for the dashboard test)" "run scripts/provision.sh (apt-get install chromium)"; fi
  if command -v zsh >/dev/null 2>&1; then ok "zsh ($(command -v zsh))"; else missing "zsh (for the zsh completion test)" "run scripts/provision.sh (apt-get install zsh)"; fi
  if [ "$missing_count" -gt 0 ]; then
    printf 'provision --check: %d thing(s) missing (%s)\n' "$missing_count" "$(elapsed)"
    exit 1
  fi
  printf 'provision --check: host is ready (%s)\n' "$(elapsed)"
}

image_manifest () {
  printf 'tandem/busybox:latest %s\ntandem/node-base:latest %s\n' "$(busybox_hash)" "$(node_base_hash)"
}

# ---------- 1. Docker Engine ----------
daemon_json_written=0
ensure_docker_engine () {
  step "Docker Engine"
  if [ -x /usr/sbin/dockerd ]; then
    ok "$(/usr/sbin/dockerd --version)"
  else
    apt_install docker.io
    [ -x /usr/sbin/dockerd ] || die "docker.io installed but /usr/sbin/dockerd is missing"
    ok "installed $(/usr/sbin/dockerd --version)"
  fi
  if [ ! -f "$DAEMON_JSON" ]; then
    mkdir -p "$(dirname "$DAEMON_JSON")"
    cat >"$DAEMON_JSON" <<'EOF'
{
  "experimental": true,
  "bridge": "none",
  "iptables": false,
  "ip-masq": false
}
EOF
    ok "wrote $DAEMON_JSON (experimental on, bridge and iptables off: containers use --network none)"
    daemon_json_written=1
  elif grep -Eq '"experimental"[[:space:]]*:[[:space:]]*true' "$DAEMON_JSON"; then
    ok "$DAEMON_JSON has experimental: true"
  else
    die "$DAEMON_JSON exists without \"experimental\": true; add it (checkpoints need it) and run again"
  fi
}

# After a machine restart (or a killed dockerd) its exec root still holds state and mounts of the dead
# daemon, and dockerd will not start on it: like a boot, clear it when nothing of that daemon runs.
clear_stale_exec_root () {
  local exec_root=/var/run/docker containerd_pid
  [ -d "$exec_root" ] || return 0
  containerd_pid=$(cat "$exec_root/containerd/containerd.pid" 2>/dev/null || true)
  if [ -n "$containerd_pid" ] && [ -d "/proc/$containerd_pid" ]; then
    die "dockerd is gone but its containerd (pid $containerd_pid) still runs; stop it, then run again"
  fi
  local mount_point
  awk -v root="$exec_root" '$5 == root || index($5, root "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r \
    | while read -r mount_point; do umount -l "$mount_point" 2>/dev/null || true; done
  rm -rf "$exec_root" "$SYSTEM_DOCKER_PIDFILE" "$SYSTEM_DOCKER_SOCKET"
  ok "cleared the stale exec root $exec_root of a dockerd that no longer runs"
}

start_system_dockerd () {
  step "System Docker daemon"
  if system_docker_reachable && [ "$daemon_json_written" = 1 ] && ! system_docker_experimental && [ -d /run/systemd/system ]; then
    step "systemctl restart docker (the package started it before $DAEMON_JSON existed)"
    systemctl restart docker || die "systemctl restart docker failed (see journalctl -u docker)"
  fi
  if system_docker_reachable; then
    system_docker_experimental || die "the running dockerd (unix://$SYSTEM_DOCKER_SOCKET) is not in experimental mode: set \"experimental\": true in $DAEMON_JSON and restart it"
    ok "running, experimental, $(docker_system version --format 'Engine {{.Server.Version}}')"
    return 0
  fi
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl restart docker || die "systemctl restart docker failed (see journalctl -u docker)"
  else
    local pid
    if pid=$(system_dockerd_pid); then die "dockerd (pid $pid) runs but does not answer on $SYSTEM_DOCKER_SOCKET; see $SYSTEM_DOCKER_LOG"; fi
    clear_stale_exec_root
    mkdir -p "$(dirname "$SYSTEM_DOCKER_LOG")"
    # No init system starts services here: start dockerd detached, with /usr/local/sbin (criu wrapper) first on PATH,
    # and with no descriptor of ours but 0-2: a lock of whoever ran this (flock(1) hands its fd down) must not live on
    # in the daemon (it did: a test's flock on fd 3 stayed held by dockerd and containerd, and every later run waited).
    (
      for fd in /proc/self/fd/*; do n=${fd##*/}; if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi; done 2>/dev/null
      PATH=$DAEMON_PATH exec setsid /usr/sbin/dockerd --config-file "$DAEMON_JSON" --pidfile "$SYSTEM_DOCKER_PIDFILE" \
        -H "unix://$SYSTEM_DOCKER_SOCKET" >>"$SYSTEM_DOCKER_LOG" 2>&1 </dev/null
    ) &
    disown || true
  fi
  local waited=0
  until system_docker_reachable; do
    sleep 0.2; waited=$((waited + 1))
    [ "$waited" -lt 150 ] || die "dockerd did not answer within 30 s; see $SYSTEM_DOCKER_LOG"
  done
  system_docker_experimental || die "dockerd started without experimental mode; check $DAEMON_JSON"
  ok "started dockerd (pid $(system_dockerd_pid || echo '?'), log $SYSTEM_DOCKER_LOG)"
}

# ---------- 2. CRIU ----------
# The mirror serving this Debian release, reused for Debian 13 (trixie).
debian_mirror () {
  local codename="$1" file
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    awk -v want="$codename" '
      /^[[:space:]]*$/ { if (uris != "" && hit) { print uris; exit } uris=""; hit=0; next }
      /^URIs:/ { uris=$2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) hit=1 }
      END { if (uris != "" && hit) print uris }' "$file"
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    sed -E 's/\[[^]]*\]//' "$file" | awk -v want="$codename" '$1 == "deb" && $3 == want { print $2 }'
  done
}

install_private_criu () {
  local codename mirror arch apt_opts packages version prefix staging loader
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  mirror=$(debian_mirror "$codename" | head -n1)
  [ -n "$mirror" ] || die "cannot find the Debian mirror of '$codename' in /etc/apt/sources.list*; add one or install CRIU >= $CRIU_MIN_VERSION yourself"
  arch=$(dpkg --print-architecture)
  step "CRIU from Debian 13 (trixie) into a private prefix (system libc untouched), mirror $mirror"
  mkdir -p "$APT_PRIVATE_DIR"/{lists/partial,archives/partial}
  chown -R _apt "$APT_PRIVATE_DIR" 2>/dev/null || true
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg arch=$arch] $mirror trixie main" >"$APT_PRIVATE_DIR/sources.list"
  apt_opts=(-o "Dir::Etc::sourcelist=$APT_PRIVATE_DIR/sources.list" -o Dir::Etc::sourceparts=-
            -o "Dir::State::Lists=$APT_PRIVATE_DIR/lists" -o "Dir::Cache=$APT_PRIVATE_DIR"
            -o "Dir::Cache::archives=$APT_PRIVATE_DIR/archives" -o "APT::Architecture=$arch")
  apt-get "${apt_opts[@]}" update -q >/dev/null || die "apt-get update of the trixie list failed"
  version=$(apt-cache "${apt_opts[@]}" show criu 2>/dev/null | sed -n 's/^Version: *//p' | sort -V | tail -n1)
  version_at_least "$version" "$CRIU_MIN_VERSION" || die "trixie offers criu '${version:-none}', need >= $CRIU_MIN_VERSION"
  # criu plus every library it needs, libc included (Depends only: no python, no iproute2)
  mapfile -t packages < <(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests \
      --no-conflicts --no-breaks --no-replaces --no-enhances criu | grep -v '^ ' | grep -v '^<' | sort -u)
  [ "${#packages[@]}" -gt 1 ] || die "could not resolve criu's dependencies from trixie"
  (cd "$APT_PRIVATE_DIR/archives" && apt-get "${apt_opts[@]}" download "${packages[@]}" >/dev/null) \
    || die "apt-get download of ${packages[*]} failed"
  prefix="$CRIU_PREFIX_ROOT/$version"
  staging="$prefix.partial"
  rm -rf "$staging"; mkdir -p "$staging"
  local package deb
  for package in "${packages[@]}"; do
    deb=$(ls -t "$APT_PRIVATE_DIR/archives/${package}_"*"_$arch.deb" "$APT_PRIVATE_DIR/archives/${package}_"*"_all.deb" 2>/dev/null | head -n1 || true)
    [ -n "$deb" ] || die "downloaded package $package not found in $APT_PRIVATE_DIR/archives"
    dpkg-deb -x "$deb" "$staging"
  done
  loader=$(cd "$staging" && find usr/lib lib lib64 -maxdepth 2 -name 'ld-linux*.so.*' 2>/dev/null | head -n1 || true)
  [ -n "$loader" ] && [ -x "$staging/usr/sbin/criu" ] || die "unpacked CRIU is incomplete (no loader or no usr/sbin/criu)"
  rm -rf "$prefix"; mv "$staging" "$prefix"
  printf '%s\n' "${packages[@]}" >"$prefix/PACKAGES"
  ln -sfn "$version" "$CRIU_PREFIX_ROOT/current"
  write_criu_wrapper
  ok "CRIU $version in $prefix (${#packages[@]} packages), wrapper $CRIU_WRAPPER"
}

# The wrapper on PATH runs the private CRIU through the prefix's own loader and libraries.
write_criu_wrapper () {
  local prefix="$CRIU_PREFIX_ROOT/current" loader multiarch version text
  loader=$(cd "$prefix" && find usr/lib lib lib64 -maxdepth 2 -name 'ld-linux*.so.*' 2>/dev/null | head -n1 || true)
  [ -n "$loader" ] || die "no loader in $prefix"
  multiarch=$(basename "$(dirname "$loader")")
  version=$(basename "$(readlink -f "$prefix")")
  text="#!/bin/sh
# Written by tandem's scripts/provision.sh: CRIU $version from Debian 13, run with its own libc.
prefix=$prefix
exec \"\$prefix/$loader\" --library-path \"\$prefix/usr/lib/$multiarch:\$prefix/lib/$multiarch\" --argv0 criu \"\$prefix/usr/sbin/criu\" \"\$@\""
  [ "$(cat "$CRIU_WRAPPER" 2>/dev/null)" = "$text" ] && return 0
  mkdir -p "$(dirname "$CRIU_WRAPPER")"
  printf '%s\n' "$text" >"$CRIU_WRAPPER.tmp"
  chmod 755 "$CRIU_WRAPPER.tmp"; mv "$CRIU_WRAPPER.tmp" "$CRIU_WRAPPER"
  ok "wrote $CRIU_WRAPPER ($version)"
}

ensure_criu () {
  step "CRIU >= $CRIU_MIN_VERSION"
  if [ -d "$CRIU_PREFIX_ROOT/current" ]; then write_criu_wrapper; fi
  local criu_path version
  criu_path=$(command -v criu || true)
  version=$([ -n "$criu_path" ] && criu_version_of "$criu_path" || true)
  if ! version_at_least "$version" "$CRIU_MIN_VERSION"; then
    local candidate
    candidate=$(apt-cache policy criu 2>/dev/null | sed -n 's/^ *Candidate: *//p')
    if version_at_least "$candidate" "$CRIU_MIN_VERSION"; then
      apt_install criu
    elif [ "$(. /etc/os-release && echo "$ID")" = debian ]; then
      install_private_criu
    else
      die "this distribution offers criu '${candidate:-none}' (need >= $CRIU_MIN_VERSION, kernel $(uname -r)): build CRIU $CRIU_MIN_VERSION from source and put it on PATH as 'criu', then run again"
    fi
    hash -r
    criu_path=$(command -v criu || true)
    version=$(criu_version_of "$criu_path")
    version_at_least "$version" "$CRIU_MIN_VERSION" || die "criu on PATH ($criu_path) is still '$version'"
  fi
  local report
  report=$(criu check 2>&1) || die "'criu check' fails with CRIU $version: $report"
  ok "CRIU $version ($criu_path): criu check passes"
}

ensure_daemon_finds_criu () {
  local pid daemon_criu
  pid=$(system_dockerd_pid) || { ok "dockerd's pid unknown (not started by this script): its PATH is not checked"; return 0; }
  daemon_criu=$(criu_on_daemon_path "$pid") || die "dockerd (pid $pid) finds no criu on its PATH: restart it with /usr/local/sbin on PATH"
  version_at_least "$(criu_version_of "$daemon_criu")" "$CRIU_MIN_VERSION" \
    || die "dockerd (pid $pid) would run $daemon_criu (too old): restart dockerd with /usr/local/sbin first on its PATH"
  ok "dockerd (pid $pid) finds $daemon_criu on its PATH"
}

# ---------- 3. base images ----------
import_rootfs () { # ROOTFS_DIR IMAGE HASH CMD_JSON
  local rootfs="$1" image="$2" hash="$3" cmd="$4"
  tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -cf - . | docker_system import \
    --change "LABEL $CONTENT_LABEL=$hash" \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin' \
    --change "CMD $cmd" - "$image" >/dev/null || die "docker import of $image failed"
}

busybox_rootfs () { # DIR: busybox, its applets as symlinks, the usual directories
  local dir="$1" applet
  mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root,var/tmp}
  chmod 1777 "$dir/tmp" "$dir/var/tmp"
  cp "$busybox_binary" "$dir/bin/busybox"
  for applet in $("$busybox_binary" --list); do
    [ -e "$dir/bin/$applet" ] || ln -s busybox "$dir/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
}

ensure_base_images () {
  step "Base images (local, no registry)"
  if [ ! -x "$busybox_binary" ] || ! have_package busybox-static; then apt_install busybox-static; fi
  [ -x "$NODE_BINARY" ] || die "no Node binary at $NODE_BINARY: run 'npm ci' in $REPO_ROOT first"
  busybox_hash_memo=$(busybox_hash); node_base_hash_memo=$(node_base_hash)
  local want have work
  want=$(busybox_hash)
  have=$(image_content "unix://$SYSTEM_DOCKER_SOCKET" tandem/busybox)
  if [ "$have" = "$want" ]; then
    ok "tandem/busybox current ($want)"
  else
    work=$(mktemp -d)
    busybox_rootfs "$work/rootfs"
    import_rootfs "$work/rootfs" tandem/busybox:latest "$want" '["sh"]'
    rm -rf "$work"
    ok "built tandem/busybox ($want)"
  fi
  want=$(node_base_hash)
  have=$(image_content "unix://$SYSTEM_DOCKER_SOCKET" tandem/node-base)
  if [ "$have" = "$want" ]; then
    ok "tandem/node-base current ($want)"
  else
    work=$(mktemp -d)
    busybox_rootfs "$work/rootfs"
    mkdir -p "$work/rootfs/usr/local/bin" "$work/rootfs/app"
    cp "$NODE_BINARY" "$work/rootfs/usr/local/bin/node"
    local library
    for library in $(node_libraries); do
      mkdir -p "$work/rootfs$(dirname "$library")"
      cp -L "$library" "$work/rootfs$library"
    done
    import_rootfs "$work/rootfs" tandem/node-base:latest "$want" '["node"]'
    rm -rf "$work"
    docker_system run --rm --pull never --network none tandem/node-base:latest node -e 'process.exit(0)' >/dev/null \
      || die "tandem/node-base does not run 'node'"
    ok "built tandem/node-base ($want, $("$NODE_BINARY" --version))"
  fi
  local manifest
  manifest=$(image_manifest)
  if [ -f "$IMAGE_CACHE_TAR" ] && [ "$(cat "$IMAGE_CACHE_MANIFEST" 2>/dev/null)" = "$manifest" ]; then
    ok "image cache current: $IMAGE_CACHE_TAR"
  else
    mkdir -p "$IMAGE_CACHE_DIR"
    docker_system save -o "$IMAGE_CACHE_TAR.tmp" tandem/busybox:latest tandem/node-base:latest || die "docker save failed"
    mv "$IMAGE_CACHE_TAR.tmp" "$IMAGE_CACHE_TAR"
    printf '%s\n' "$manifest" >"$IMAGE_CACHE_MANIFEST"
    ok "saved $IMAGE_CACHE_TAR ($(du -h "$IMAGE_CACHE_TAR" | cut -f1)) for the simulated boards"
  fi
}

# ---------- 4. a real checkpoint + restore ----------
# One checkpoint + restore of a busybox counter. Prints the counters; returns 2 for containerd's transient
# "content ... already exists" on the checkpoint upload (moby#42900: seen on a freshly booted host, gone on the
# next attempt), 1 for any other failure.
checkpoint_restore_once () {
  local name="tandem-provision-check-$$-$1" output before running count
  docker_system rm -f "$name" >/dev/null 2>&1 || true
  docker_system run -d --pull never --network none --name "$name" tandem/busybox:latest \
    sh -c 'i=0; while true; do i=$((i+1)); echo $i >/tmp/count; sleep 0.1; done' >/dev/null \
    || { echo "cannot start a busybox container"; return 1; }
  sleep 0.5
  before=$(docker_system exec "$name" cat /tmp/count 2>/dev/null || echo 0)
  if ! output=$(docker_system checkpoint create "$name" c1 2>&1); then
    docker_system rm -f "$name" >/dev/null 2>&1 || true
    echo "docker checkpoint create failed: $output"; return 1
  fi
  if ! output=$(docker_system start --checkpoint c1 "$name" 2>&1); then
    docker_system rm -f "$name" >/dev/null 2>&1 || true
    echo "restore (docker start --checkpoint) failed: $output"
    case "$output" in *"failed to upload checkpoint to containerd"*"already exists"*) return 2 ;; esac
    return 1
  fi
  sleep 0.3
  running=$(docker_system inspect -f '{{.State.Running}}' "$name" 2>/dev/null || echo false)
  count=$(docker_system exec "$name" cat /tmp/count 2>/dev/null || echo 0)
  docker_system rm -f "$name" >/dev/null 2>&1 || true
  [ "$running" = true ] && [ "${count:-0}" -ge "${before:-1}" ] \
    || { echo "restored container did not carry on (running=$running, counter $before before the checkpoint, $count after restore)"; return 1; }
  echo "checkpointed at counter $before, restored and counting on ($count)"
}

verify_checkpoint_restore () {
  step "Checkpoint + restore smoke test"
  local stamp
  stamp="criu $(criu_version_of "$(command -v criu)"), engine $(docker_system version --format '{{.Server.Version}}')"
  if [ "$(cat "$CHECKPOINT_STAMP" 2>/dev/null)" = "$stamp" ]; then ok "already verified ($stamp)"; return 0; fi
  local attempt result rc
  for attempt in 1 2 3; do
    rc=0; result=$(checkpoint_restore_once "$attempt") || rc=$?
    [ "$rc" = 2 ] || break
    echo "    attempt $attempt: $result (containerd's transient upload collision, moby#42900): trying again"
    sleep 1
  done
  [ "$rc" = 0 ] || die "$result"
  mkdir -p "$STATE_DIR"
  echo "$stamp" >"$CHECKPOINT_STAMP"
  ok "busybox container $result: $stamp"
}

# ---------- load into a board's daemon ----------
load_into () {
  local host="$1"
  [ -f "$IMAGE_CACHE_TAR" ] || die "no image cache at $IMAGE_CACHE_TAR: run scripts/provision.sh first"
  local image hash stale=0
  while read -r image hash; do
    [ "$(image_content "$host" "$image")" = "$hash" ] || stale=1
  done <"$IMAGE_CACHE_MANIFEST"
  if [ "$stale" = 0 ]; then ok "$host already has the current base images"; return 0; fi
  docker -H "$host" load -q -i "$IMAGE_CACHE_TAR" >/dev/null || die "docker load into $host failed"
  ok "loaded base images into $host ($(elapsed))"
}

# ---------- 4. Chromium ----------
# Its version without "built on ...": a second run's output names nothing it did (test/provision.test.ts).
chromium_version () { "$CHROMIUM_BINARY" --version 2>/dev/null | sed 's/ built on.*//' || true; }
ensure_chromium () {
  step "Chromium (headless browser for the dashboard test)"
  if [ -x "$CHROMIUM_BINARY" ]; then ok "$(chromium_version) ($CHROMIUM_BINARY)"; return 0; fi
  apt_install chromium
  [ -x "$CHROMIUM_BINARY" ] || die "chromium installed but $CHROMIUM_BINARY is missing"
  ok "installed $(chromium_version) ($CHROMIUM_BINARY)"
}

# ---------- 5. zsh ----------
# The shell completion test runs `tandem completion zsh` in zsh (test/ops-completion.test.ts).
ensure_zsh () {
  step "zsh (for the zsh completion test)"
  if command -v zsh >/dev/null 2>&1; then ok "zsh ($(command -v zsh))"; return 0; fi
  apt_install zsh
  command -v zsh >/dev/null 2>&1 || die "zsh installed but not on the PATH"
  ok "installed zsh ($(command -v zsh))"
}

# ---------- main ----------
mode=provision
load_host=
while [ $# -gt 0 ]; do
  case "$1" in
    --check) mode=check ;;
    --load-into) [ $# -ge 2 ] || die "--load-into needs a DOCKER_HOST"; mode=load; load_host="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done

if [ "$mode" = check ]; then check_all; exit 0; fi
[ "$(uname -s)" = Linux ] || die "tandem needs Linux; on other systems run it in a Linux VM"
[ "$(id -u)" = 0 ] || die "run as root (sudo bash scripts/provision.sh): it installs packages and starts dockerd"
if [ "$mode" = load ]; then load_into "$load_host"; exit 0; fi
command -v apt-get >/dev/null 2>&1 || die "no apt-get: on non-Debian/Ubuntu hosts install Docker Engine (experimental: true), CRIU >= $CRIU_MIN_VERSION and busybox-static yourself, then run this script again for the images"

mkdir -p "$RUN_DIR"
exec 9>"$RUN_DIR/provision.flock"
flock 9 || die "cannot lock $RUN_DIR/provision.flock"

ensure_docker_engine
ensure_criu
start_system_dockerd
ensure_daemon_finds_criu
ensure_base_images
verify_checkpoint_restore
ensure_chromium
ensure_zsh
printf 'provision: host is ready (%s)\n' "$(elapsed)"
