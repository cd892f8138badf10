#!/usr/bin/env bash
# Docker Engine 26 beside the machine's own engine, for the interop tests (issue: current engines).
#
#   scripts/docker26.sh fetch                  # trixie's docker.io, docker-cli, containerd via apt (cached)
#   scripts/docker26.sh start classic|containerd
#   scripts/docker26.sh stop [classic|containerd]   # both when no store is named
#   scripts/docker26.sh env classic|containerd      # prints DOCKER_HOST=... for that daemon
#
# Each daemon runs with its own containerd, sockets and data root under $S3DOCK_TEST_DIR/d26-STORE,
# inside a network namespace of its own (s3dock-d26-STORE): a dockerd started with `--bridge none`
# in the host's namespace deletes the host's docker0 bridge (../shared/docs/test-servers.md).
# `classic` is the graph-driver store (vfs); `containerd` is the containerd image store
# (features.containerd-snapshotter, native snapshotter: this sandbox has no kernel overlayfs).
# Packages come from Debian 13 (trixie) through apt's own tools into $S3DOCK_DOCKER26 (default
# ~/.cache/s3dock/docker26), kept between runs. The machine's runc runs the containers.
set -euo pipefail

log() { printf 'docker26: %s\n' "$*" >&2; }
die() { printf 'docker26: ERROR: %s\n' "$*" >&2; exit 1; }

CACHE="${S3DOCK_DOCKER26:-$HOME/.cache/s3dock/docker26}"
TEST_DIR="${S3DOCK_TEST_DIR:-/tmp/s3dock-test}"
ROOT="$CACHE/root"
PACKAGES=(docker.io docker-cli containerd)
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, dockerd)"

fetch() {
  if [ -x "$ROOT/usr/sbin/dockerd" ] && [ -x "$ROOT/usr/bin/docker" ] && [ -x "$ROOT/usr/bin/containerd" ]; then
    return 0
  fi
  local t0=$SECONDS apt="$CACHE/apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main\n' \
    >"$apt/sources.list"
  local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=-
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Dir::State::status=/dev/null
    -o APT::Sandbox::User=root -q)
  apt-get "${opts[@]}" update >"$apt/update.log" 2>&1 || { tail -n 20 "$apt/update.log" >&2; die "apt-get update (trixie) failed"; }
  (cd "$apt/debs" && rm -f ./*.deb && apt-get "${opts[@]}" download "${PACKAGES[@]}" >"$apt/download.log" 2>&1) \
    || { tail -n 20 "$apt/download.log" >&2; die "apt-get download failed"; }
  rm -rf "$ROOT.tmp" && mkdir -p "$ROOT.tmp"
  for f in "$apt/debs"/*.deb; do dpkg-deb -x "$f" "$ROOT.tmp"; done
  rm -rf "$ROOT" && mv "$ROOT.tmp" "$ROOT"
  log "fetched $("$ROOT/usr/sbin/dockerd" --version) in $((SECONDS - t0))s"
}

check_store() {
  case "${1:-}" in classic | containerd) ;; *) die "store must be classic or containerd, not '${1:-}'" ;; esac
}

start() {
  local store=$1 ns="s3dock-d26-$1" dir="$TEST_DIR/d26-$1"
  check_store "$store"
  fetch
  stop_one "$store"
  mkdir -p "$dir"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  local path="$ROOT/usr/bin:$ROOT/usr/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
  cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
EOF
  if [ "$store" = containerd ]; then
    printf '{"features":{"containerd-snapshotter":true},"storage-driver":"native"}\n' >"$dir/daemon.json"
  else
    printf '{"storage-driver":"vfs"}\n' >"$dir/daemon.json"
  fi
  nsenter --net="/run/netns/$ns" env PATH="$path" \
    setsid "$ROOT/usr/bin/containerd" --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
  echo $! >"$dir/containerd.pid"
  for _ in $(seq 100); do [ -S "$dir/containerd.sock" ] && break; sleep 0.1; done
  [ -S "$dir/containerd.sock" ] || { tail -n 20 "$dir/containerd.log" >&2; die "containerd ($store) did not start"; }
  nsenter --net="/run/netns/$ns" env PATH="$path" \
    setsid "$ROOT/usr/sbin/dockerd" --config-file "$dir/daemon.json" \
    --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
    -H "unix://$dir/docker.sock" --containerd "$dir/containerd.sock" \
    --bridge none --iptables=false --ip6tables=false --userland-proxy=false \
    >"$dir/dockerd.log" 2>&1 &
  for _ in $(seq 300); do
    DOCKER_HOST="unix://$dir/docker.sock" "$ROOT/usr/bin/docker" version >/dev/null 2>&1 && break
    sleep 0.1
  done
  DOCKER_HOST="unix://$dir/docker.sock" "$ROOT/usr/bin/docker" version >/dev/null 2>&1 \
    || { tail -n 30 "$dir/dockerd.log" >&2; stop_one "$store"; die "dockerd ($store) did not start"; }
  env_of "$store" >"$dir/env"
  log "started Docker $("$ROOT/usr/bin/docker" -H "unix://$dir/docker.sock" version -f '{{.Server.Version}}') ($store store) at unix://$dir/docker.sock"
}

env_of() {
  local dir="$TEST_DIR/d26-$1"
  printf 'DOCKER_HOST=unix://%s/docker.sock\nS3DOCK_DOCKER26_CLI=%s\n' "$dir" "$ROOT/usr/bin/docker"
}

kill_pidfile() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop_one() {
  local store=$1 ns="s3dock-d26-$1" dir="$TEST_DIR/d26-$1"
  # Containers first (their shims outlive dockerd), then dockerd, then containerd.
  if [ -S "$dir/docker.sock" ]; then
    local ids
    ids=$(DOCKER_HOST="unix://$dir/docker.sock" "$ROOT/usr/bin/docker" ps -aq 2>/dev/null || true)
    [ -z "$ids" ] || DOCKER_HOST="unix://$dir/docker.sock" "$ROOT/usr/bin/docker" rm -f $ids >/dev/null 2>&1 || true
  fi
  kill_pidfile "$dir/dockerd.pid"
  kill_pidfile "$dir/containerd.pid"
  pkill -f "containerd-shim-runc-v2 .*$dir" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  # vfs/native data roots hold whole image copies: don't leave them behind.
  if [ -d "$dir" ]; then
    grep -q " $dir/" /proc/mounts && awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l
    rm -rf "$dir"
  fi
}

case "${1:-}" in
  fetch) fetch ;;
  start) start "${2:-}" ;;
  stop)
    if [ -n "${2:-}" ]; then check_store "$2"; stop_one "$2"; else stop_one classic; stop_one containerd; fi ;;
  env) check_store "${2:-}"; env_of "$2" ;;
  *) die "usage: $0 fetch | start classic|containerd | stop [classic|containerd] | env classic|containerd" ;;
esac
