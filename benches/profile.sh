#!/usr/bin/env bash
# Profiles one s3dock case with perf (software cpu-clock event: this VM has no hardware counters).
#
#   benches/profile.sh CASE [CASE...]
#
# CASE: push-gzip-dir push-zstd-dir push-gzip-s3 push-zstd-s3 warm-s3 warm-dir
#       pull-gzip-s3 pull-gzip-s3-file pull-gzip-s3-decompress pull-zstd-s3
#
# Uses the inputs of benches/run.sh ($S3DOCK_BENCH_DIR/inputs, generated if missing) and starts its own
# s3s-fs for the s3 cases (state in $S3DOCK_BENCH_DIR/prof-servers; stopped by a trap).
# For each case it writes $S3DOCK_BENCH_DIR/prof/CASE.{data,flat.txt,threads.txt} and prints:
#   - wall time, and per thread the CPU seconds (samples x period) with the thread's top symbols
#   - a flat profile of s3dock (self time per symbol, all threads)
# CALLGRAPH=dwarf adds DWARF call graphs (big perf.data; `perf report -i FILE --children` to browse).
#
# Environment: S3DOCK_BENCH_DIR (default /tmp/s3dock-bench), S3DOCK_BIN (default: the binary run.sh built
# for S3DOCK_BENCH_REV in $S3DOCK_BENCH_DIR/target, else target/release/s3dock), FREQ (default 999 Hz).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
WORK="${S3DOCK_BENCH_DIR:-/tmp/s3dock-bench}"
VENV="${S3DOCK_VENV:-$HOME/.cache/s3dock/moto-venv}"
FREQ="${FREQ:-999}"
BIN="${S3DOCK_BIN:-}"
if [ -z "$BIN" ]; then
  if [ -x "$WORK/target/release/s3dock" ]; then BIN="$WORK/target/release/s3dock"; else BIN="$REPO/target/release/s3dock"; fi
fi
[ $# -ge 1 ] || { sed -n 2,18p "$0" >&2; exit 2; }
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 1; }

OUT="$WORK/prof"
STORE="$WORK/prof-store"
mkdir -p "$OUT"
"$VENV/bin/python" "$HERE/geninputs.py" "$WORK/inputs" >/dev/null
A="$WORK/inputs/big.tar"

export S3DOCK_TEST_DIR="$WORK/prof-servers"
servers=0
cleanup() {
  local rc=$?
  [ $servers = 1 ] && "$REPO/scripts/s3-servers.sh" stop >/dev/null 2>&1 || true
  rm -rf "$STORE" "$WORK/prof-servers" "$OUT/pulled.tar"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_s3() {
  if [ $servers = 0 ]; then
    "$REPO/scripts/s3-servers.sh" start >&2
    servers=1
    # shellcheck disable=SC1091
    . "$S3DOCK_TEST_DIR/servers.env"
  fi
}

s3d() { "$BIN" "$@"; }

record() { # NAME CMD
  local name=$1 cmd=$2 cg=()
  [ "${CALLGRAPH:-}" = dwarf ] && cg=(--call-graph dwarf,32768)
  local t0 t1
  t0=$(date +%s.%N)
  perf record -q -e cpu-clock -F "$FREQ" "${cg[@]}" -o "$OUT/$name.data" -- bash -o pipefail -c "$cmd" >/dev/null 2>"$OUT/$name.stderr"
  t1=$(date +%s.%N)
  local wall
  wall=$(echo "$t1 - $t0" | bc)
  # per thread (pid:comm), and per thread its top symbols; CPU seconds = samples / FREQ
  perf report -i "$OUT/$name.data" --no-children -n --sort pid,sym --stdio 2>/dev/null >"$OUT/$name.raw.txt" || true
  "$VENV/bin/python" - "$OUT/$name.raw.txt" "$FREQ" >"$OUT/$name.threads.txt" <<'PY'
import re, sys, collections
path, freq = sys.argv[1], float(sys.argv[2])
txt = open(path).read()
rows = []
for line in txt.splitlines():
    mm = re.match(r"\s+([\d.]+)%\s+(\d+)\s+(\d+):(\S+)\s+\[(.)\]\s+(.*\S)", line)
    if mm:
        rows.append((int(mm.group(2)), mm.group(3), mm.group(4), mm.group(5), mm.group(6)))
total = sum(r[0] for r in rows) or 1
threads = collections.defaultdict(list)
flat = collections.Counter()
for n, tid, comm, kind, sym in rows:
    pct = 100 * n / total
    threads[(tid, comm)].append((pct, ("[k] " if kind == "k" else "") + sym))
    if comm not in ("cat", "bash", "perf"):
        flat[("[k] " if kind == "k" else "") + sym] += pct
cpu = lambda pct: pct / 100 * total / freq
print(f"total samples {total:.0f} = {total / freq:.2f} CPU s")
for (tid, comm), syms in sorted(threads.items(), key=lambda kv: -sum(p for p, _ in kv[1])):
    tot = sum(p for p, _ in syms)
    if tot < 1:
        continue
    top = ", ".join(f"{s} {p:.1f}%" for p, s in sorted(syms, reverse=True)[:4])
    print(f"  {tid}:{comm:<16} {tot:5.1f}% {cpu(tot):5.2f}s  {top}")
print("flat (all s3dock threads, self):")
for sym, pct in flat.most_common(22):
    print(f"  {pct:5.1f}% {cpu(pct):5.2f}s  {sym}")
PY
  echo "== $name: wall ${wall}s (perf overhead included)"
  cat "$OUT/$name.threads.txt"
  echo
}

for c in "$@"; do
  rm -rf "$STORE"
  case "$c" in
    push-gzip-dir | push-zstd-dir)
      comp=${c#push-}; comp=${comp%-dir}
      record "$c" "cat '$A' | '$BIN' --store '$STORE' -q push bench/big:1 --compression $comp" ;;
    push-gzip-s3 | push-zstd-s3)
      need_s3
      comp=${c#push-}; comp=${comp%-s3}
      record "$c" "cat '$A' | '$BIN' --store s3://$S3DOCK_TEST_BUCKET/p/$c --endpoint $S3DOCK_TEST_S3S -q push bench/big:1 --compression $comp" ;;
    warm-s3)
      need_s3
      cat "$A" | s3d --store "s3://$S3DOCK_TEST_BUCKET/p/warm" --endpoint "$S3DOCK_TEST_S3S" -q push bench/big:1
      record "$c" "cat '$A' | '$BIN' --store s3://$S3DOCK_TEST_BUCKET/p/warm --endpoint $S3DOCK_TEST_S3S -q push bench/big:1" ;;
    warm-dir)
      cat "$A" | s3d --store "$STORE" -q push bench/big:1
      record "$c" "cat '$A' | '$BIN' --store '$STORE' -q push bench/big:1" ;;
    pull-gzip-s3 | pull-gzip-s3-file | pull-gzip-s3-decompress | pull-zstd-s3)
      need_s3
      comp=gzip; [ "$c" = pull-zstd-s3 ] && comp=zstd
      st="s3://$S3DOCK_TEST_BUCKET/p/pull-$comp"
      s3d --store "$st" --endpoint "$S3DOCK_TEST_S3S" -q tags bench/big 2>/dev/null | grep -qx 1 \
        || { cat "$A" | s3d --store "$st" --endpoint "$S3DOCK_TEST_S3S" -q push bench/big:1 --compression $comp; }
      extra=""
      [ "$c" = pull-gzip-s3-decompress ] && extra="--decompress"
      if [ "$c" = pull-gzip-s3-file ]; then
        record "$c" "'$BIN' --store $st --endpoint $S3DOCK_TEST_S3S -q pull bench/big:1 -o '$OUT/pulled.tar'"
        rm -f "$OUT/pulled.tar"
      else
        record "$c" "'$BIN' --store $st --endpoint $S3DOCK_TEST_S3S -q pull bench/big:1 $extra >/dev/null"
      fi ;;
    *) echo "unknown case $c" >&2; exit 2 ;;
  esac
done
