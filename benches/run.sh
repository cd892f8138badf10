#!/usr/bin/env bash
# s3dock benchmark suite (issue 4): s3dock push/pull against named baselines, in one run.
#
#   benches/run.sh                 # default cases, 3 runs each (~15-20 min on 2 cores)
#   benches/run.sh --runs 2        # fewer runs
#   benches/run.sh --scale         # also the 6 GiB-layer image (needs ~20 GiB more disk, +10 min)
#   benches/run.sh --only 'push.s3.gzip|base.pigz'   # only cases whose name matches (regex)
#   benches/run.sh --no-baselines  # s3dock cases only
#   benches/run.sh --keep-stores   # keep the pushed stores (S3 data is removed with the servers anyway)
#
# What it does:
#   1. scripts/setup.sh (idempotent: installs the peers only if missing); GNU time via apt if
#      /usr/bin/time is missing; cargo build --release.
#   2. Starts its own s3s-fs + moto (scripts/s3-servers.sh) with state under $WORK/servers, so it
#      never touches the test suite's servers in /tmp/s3dock-test; registry:2 instances are started
#      and stopped per case (scripts/registry.sh). A trap stops all of them on exit.
#   3. Generates the inputs once under $WORK/inputs (reused by later runs): a ~1.46 GB docker-save
#      archive (Docker >= 25 form) with a 1.19 GB layer of real files from /usr/share + /usr/lib and
#      a 256 MiB random layer, a second image sharing the file layer, and a small image.
#   4. Runs the cases (benches/bench.py), prints a table and writes benches/results/latest.json and
#      benches/results/latest.md (with the machine), including the issue's target ratios, met or missed.
#   5. Removes what it stored (S3 data, dir stores, pulled files); keeps the inputs.
#
# Environment:
#   S3DOCK_BENCH_DIR  work dir (default /tmp/s3dock-bench)
#   S3DOCK_VENV       venv with boto3 / awscli / moto (default ~/.cache/s3dock/moto-venv)
#   SKIP_SETUP=1      do not call scripts/setup.sh
#   SKIP_BUILD=1      use target/release/s3dock as it is (default: cargo build --release of the working tree)
#   S3DOCK_BENCH_REV  build and measure this git revision instead (exported to $WORK/src-REV, own target dir),
#                     e.g. S3DOCK_BENCH_REV=HEAD when src/ has uncommitted work in progress
#   S3DOCK_BENCH_BIN  measure this prebuilt binary
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
WORK="${S3DOCK_BENCH_DIR:-/tmp/s3dock-bench}"
export S3DOCK_VENV="${S3DOCK_VENV:-$HOME/.cache/s3dock/moto-venv}"

log() { printf 'bench: %s\n' "$*" >&2; }

if [ "${SKIP_SETUP:-0}" != 1 ]; then
  "$REPO/scripts/setup.sh"
fi
if [ ! -x /usr/bin/time ]; then
  log "installing GNU time (for peak RSS)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends time >/dev/null \
    || { "${SUDO[@]}" apt-get update -q >/dev/null && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends time >/dev/null; }
fi
mkdir -p "$WORK"
# The binary under test is copied to $WORK/bin, so a rebuild of target/ during the run cannot swap it.
mkdir -p "$WORK/bin"
if [ -n "${S3DOCK_BENCH_BIN:-}" ]; then
  cp "$S3DOCK_BENCH_BIN" "$WORK/bin/s3dock"
  echo "binary $S3DOCK_BENCH_BIN" >"$WORK/bin/source"
elif [ -n "${S3DOCK_BENCH_REV:-}" ]; then
  rev=$(git -C "$REPO" rev-parse --short "$S3DOCK_BENCH_REV")
  src="$WORK/src-$rev"
  if [ ! -f "$src/Cargo.toml" ]; then
    rm -rf "$src" && mkdir -p "$src"
    git -C "$REPO" archive "$rev" | tar -x -C "$src"
  fi
  log "cargo build --release of $rev (in $src, target $WORK/target)"
  (cd "$src" && CARGO_TARGET_DIR="$WORK/target" cargo build --release --quiet --bin s3dock)
  cp "$WORK/target/release/s3dock" "$WORK/bin/s3dock"
  echo "git $rev (clean export)" >"$WORK/bin/source"
else
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    (cd "$REPO" && cargo build --release --quiet --bin s3dock)
  fi
  cp "$REPO/target/release/s3dock" "$WORK/bin/s3dock"
  desc=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)
  echo "working tree $desc" >"$WORK/bin/source"
fi
export S3DOCK_TEST_DIR="$WORK/servers"

cleanup() {
  local rc=$?
  "$REPO/scripts/registry.sh" stop >/dev/null 2>&1 || true
  "$REPO/scripts/s3-servers.sh" stop >/dev/null 2>&1 || true
  # bench.py removes its link namespace itself; this covers a kill -9 of it (the veth pair and
  # both qdiscs go with the namespace)
  ip netns del s3dbench >/dev/null 2>&1 || true
  ip link del s3db-h >/dev/null 2>&1 || true
  rm -rf "$WORK/servers" "$WORK/stores" "$WORK/out" "$WORK/tmp" "$WORK"/registry-fs-r* "$WORK/bin"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$REPO/scripts/s3-servers.sh" start
# shellcheck disable=SC1091
. "$S3DOCK_TEST_DIR/servers.env"
unset AWS_CA_BUNDLE AWS_PROFILE || true

"$S3DOCK_VENV/bin/python" "$HERE/bench.py" --work "$WORK" --s3dock "$WORK/bin/s3dock" --s3dock-source "$(cat "$WORK/bin/source")" "$@"
log "done (results: latest.md and latest.json in --results, default $HERE/results)"
