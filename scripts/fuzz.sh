#!/usr/bin/env bash
# Bounded cargo-fuzz run of every fuzz target (fuzz/fuzz_targets/):
#
#   scripts/fuzz.sh              # 60 s per target
#   scripts/fuzz.sh 600          # 10 min per target
#   scripts/fuzz.sh 300 archive  # one target
#
# Installs cargo-fuzz if missing. Uses `cargo +nightly` when a nightly toolchain
# works, else the stable one with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs a few nightly
# flags; with `-s none` nothing else nightly-only is used). Before fuzzing it builds
# the seed corpus from fixtures/ (fuzz/make_seeds.py) and replays every input in
# fuzz/regressions/<target>/. Exits non-zero if a target crashes, times out or runs
# out of memory, after printing where the input is (fuzz/artifacts/<target>/) and a
# minimized copy of it.
#
# Environment:
#   FUZZ_SANITIZER  none (default: safe Rust, fastest) or address
#   FUZZ_RSS_MB     memory limit per target process, MiB (default 2048)
#   FUZZ_TIMEOUT    seconds one input may take (default 30)
#   FUZZ_TOOLCHAIN  nightly | stable (default: nightly if it works)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

secs=${1:-60}
shift || true
targets=("$@")
sanitizer=${FUZZ_SANITIZER:-none}
rss_mb=${FUZZ_RSS_MB:-2048}
timeout=${FUZZ_TIMEOUT:-30}

log() { echo "fuzz: $*" >&2; }
now() { date +%s; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  t=$(now)
  cargo install cargo-fuzz --locked
  log "cargo-fuzz installed in $(($(now) - t)) s"
fi

cargo=(cargo)
case "${FUZZ_TOOLCHAIN:-auto}" in
  nightly) cargo=(cargo +nightly) ;;
  stable) export RUSTC_BOOTSTRAP=1 ;;
  *)
    if cargo +nightly --version >/dev/null 2>&1 && rustc +nightly --version >/dev/null 2>&1; then
      cargo=(cargo +nightly)
    else
      export RUSTC_BOOTSTRAP=1
    fi
    ;;
esac
log "toolchain: $("${cargo[@]}" --version)${RUSTC_BOOTSTRAP:+ (RUSTC_BOOTSTRAP=1)}, sanitizer $sanitizer"

if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <("${cargo[@]}" fuzz list)
fi

t=$(now)
"${cargo[@]}" fuzz build -s "$sanitizer"
log "built the fuzz targets in $(($(now) - t)) s"
bin=fuzz/target/x86_64-unknown-linux-gnu/release

# Seeds: regenerated from the fixtures every run (nothing binary is committed).
rm -rf fuzz/seeds
if command -v python3 >/dev/null 2>&1; then
  # The `store` seeds are stores the real binary pushed.
  if [ -z "${S3DOCK_BIN:-}" ] && [ ! -x target/release/s3dock ]; then
    cargo build --release --bin s3dock >&2
  fi
  python3 fuzz/make_seeds.py fuzz/seeds >&2
  # The archive target also starts from the layouts rendered as real archives.
  S3DOCK_FUZZ_RENDER=fuzz/seeds/archive "$bin/archive_layout" -runs=0 fuzz/seeds/archive_layout \
    >/dev/null 2>&1
else
  log "python3 not found: fuzzing without the seed corpus"
fi

max_len() {
  case "$1" in
    documents) echo 16384 ;;
    *) echo 131072 ;;
  esac
}

failed=()
for target in "${targets[@]}"; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus" "fuzz/seeds/$target" "fuzz/artifacts/$target"
  # Every input that once failed must keep passing.
  if [ -d "fuzz/regressions/$target" ]; then
    if ! "$bin/$target" -runs=0 -rss_limit_mb="$rss_mb" -timeout="$timeout" \
      -artifact_prefix="fuzz/artifacts/$target/regression-" "fuzz/regressions/$target" >"fuzz/artifacts/$target/regressions.log" 2>&1; then
      tail -n 40 "fuzz/artifacts/$target/regressions.log" >&2
      log "$target: an input in fuzz/regressions/$target fails again (log: fuzz/artifacts/$target/regressions.log)"
      failed+=("$target")
      continue
    fi
  fi
  log "$target: fuzzing for $secs s (corpus $corpus)"
  out=fuzz/artifacts/$target/run.log
  rc=0
  "${cargo[@]}" fuzz run -s "$sanitizer" "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$secs" -rss_limit_mb="$rss_mb" -malloc_limit_mb="$rss_mb" \
    -timeout="$timeout" -max_len="$(max_len "$target")" -print_final_stats=1 \
    >"$out" 2>&1 || rc=$?
  grep -E '^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$out" >&2 || true
  grep -E '^#[0-9]+' "$out" | tail -n 1 >&2 || true
  if [ $rc -ne 0 ]; then
    failed+=("$target")
    tail -n 60 "$out" >&2
    artifact=$(ls -t "fuzz/artifacts/$target"/{crash,timeout,oom,leak,slow-unit}-* 2>/dev/null | head -n 1 || true)
    if [ -n "$artifact" ]; then
      log "$target FAILED (exit $rc): input saved at $artifact"
      min="$artifact.min"
      if "${cargo[@]}" fuzz tmin -s "$sanitizer" "$target" "$artifact" -- \
        -max_total_time=120 -exact_artifact_path="$min" >"fuzz/artifacts/$target/tmin.log" 2>&1 \
        && [ -s "$min" ]; then
        log "$target: minimized input at $min ($(wc -c <"$min") bytes)"
      fi
      log "reproduce: ${cargo[*]} fuzz run -s $sanitizer $target $artifact"
      log "then fix it, and add the input to fuzz/regressions/$target/ (and a test in tests/)"
    else
      log "$target FAILED (exit $rc) without an artifact: see $out"
    fi
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "all targets ran ${secs} s without a failure"
