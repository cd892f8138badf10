#!/usr/bin/env bash
# skopeo 1.18 and podman 5.4 (Debian 13 "trixie") for the interop tests, on this Debian 12 host.
#
#   scripts/trixie.sh setup          # debootstrap a minimal trixie root with skopeo and podman (cached)
#   scripts/trixie.sh run CMD ARGS   # run CMD inside it; stdin/stdout/exit status pass through
#
# They need glibc 2.38, so they run in a chroot: a private mount namespace with /proc, /dev,
# /sys, a fresh /run, and the host's /tmp bound at /tmp (so paths under /tmp mean the same file
# on both sides). The network namespace is the host's: 127.0.0.1 reaches the test servers.
# The root lives in $S3DOCK_TRIXIE (default ~/.cache/s3dock/trixie) and is kept between runs.
set -euo pipefail

ROOT="${S3DOCK_TRIXIE:-$HOME/.cache/s3dock/trixie}/root"
die() { printf 'trixie: ERROR: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot)"

setup() {
  [ -x "$ROOT/usr/bin/skopeo" ] && [ -x "$ROOT/usr/bin/podman" ] && return 0
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  local t0=$SECONDS tmp="$ROOT.tmp"
  rm -rf "$tmp" && mkdir -p "$(dirname "$ROOT")"
  debootstrap --variant=minbase --include=skopeo,podman trixie "$tmp" http://deb.debian.org/debian \
    >"$tmp.log" 2>&1 || { tail -n 20 "$tmp.log" >&2; die "debootstrap failed (log: $tmp.log)"; }
  rm -rf "$ROOT" && mv "$tmp" "$ROOT" && rm -f "$tmp.log"
  printf 'trixie: %s, %s in %ss\n' "$(run skopeo --version)" "$(run podman --version 2>/dev/null)" \
    "$((SECONDS - t0))" >&2
}

run() {
  [ -x "$ROOT/usr/bin/skopeo" ] || die "no trixie root at $ROOT: run scripts/trixie.sh setup"
  # The root is bind-mounted onto itself so it is a mount point (podman remounts / when it
  # applies layers).
  unshare -m --propagation private sh -c '
    r=$1; shift
    mount --bind "$r" "$r" && mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" &&
      mount --rbind /sys "$r/sys" && mount -t tmpfs tmpfs "$r/run" && mount --rbind /tmp "$r/tmp" &&
      exec chroot "$r" env PODMAN_IGNORE_CGROUPSV1_WARNING=1 "$@"' trixie "$ROOT" "$@"
}

case "${1:-}" in
  setup) setup ;;
  run) shift; [ $# -gt 0 ] || die "usage: $0 run CMD [ARGS...]"; run "$@" ;;
  *) die "usage: $0 setup | run CMD [ARGS...]" ;;
esac
