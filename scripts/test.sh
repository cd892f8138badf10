#!/usr/bin/env bash
# Run the whole s3dock test suite against real local peers.
#
#   scripts/test.sh                          # everything, then 60 s of fuzzing per target
#   scripts/test.sh some_filter              # extra args go to `cargo test`
#   scripts/test.sh --test interop -- --nocapture
#
# Arguments before a `--` go to cargo, arguments after it go to the test harness
# (like `cargo test` itself); `--test-threads=2` is added unless you pass your own.
# Installs missing peers (scripts/setup.sh), starts s3s-fs + moto (scripts/s3-servers.sh),
# always stops them on exit (also on failure or Ctrl-C) along with any registry started
# through scripts/registry.sh, and exits with cargo's status.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export S3DOCK_TEST_DIR="${S3DOCK_TEST_DIR:-/tmp/s3dock-test}"

# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  bash scripts/registry.sh stop || true
  bash scripts/docker26.sh stop || true
  bash scripts/s3-servers.sh stop || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

bash scripts/setup.sh
bash scripts/trixie.sh setup   # skopeo 1.18 + podman 5.4 in a cached trixie root (tests/engines.rs)
bash scripts/s3-servers.sh start
# shellcheck disable=SC1091
. "$S3DOCK_TEST_DIR/servers.env"
# Docker Engine 26, classic and containerd image stores, beside the machine's engine (tests/engines.rs).
for store in classic containerd; do
  bash scripts/docker26.sh start "$store"
  host=$(bash scripts/docker26.sh env "$store" | sed -n 's/^DOCKER_HOST=//p')
  export "S3DOCK_DOCKER26_${store^^}=$host"
done
S3DOCK_DOCKER26_CLI=$(bash scripts/docker26.sh env classic | sed -n 's/^S3DOCK_DOCKER26_CLI=//p')
export S3DOCK_DOCKER26_CLI
export S3DOCK_REQUIRE_PEERS=1

cargo_args=()
harness_args=()
seen_dashdash=0
for a in "$@"; do
  if [ $seen_dashdash -eq 0 ] && [ "$a" = "--" ]; then
    seen_dashdash=1
  elif [ $seen_dashdash -eq 0 ]; then
    cargo_args+=("$a")
  else
    harness_args+=("$a")
  fi
done
threads=(--test-threads=2)
for a in "${harness_args[@]}"; do
  case "$a" in --test-threads | --test-threads=*) threads=() ;; esac
done

cargo build --release
rc=0
cargo test --release "${cargo_args[@]}" -- "${threads[@]}" "${harness_args[@]}" || rc=$?

# The full suite (no arguments) ends with a bounded fuzz run of the archive reader and the
# parsers: scripts/fuzz.sh, S3DOCK_FUZZ_SECONDS per target (default 60; 0 skips it).
fuzz_secs=${S3DOCK_FUZZ_SECONDS:-60}
if [ $# -eq 0 ] && [ "$fuzz_secs" != 0 ]; then
  bash scripts/fuzz.sh "$fuzz_secs" || { r=$?; [ $rc -ne 0 ] || rc=$r; }
fi
exit $rc
