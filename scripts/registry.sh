#!/usr/bin/env bash
# Start/stop Debian's docker-registry (distribution 2.8) on 127.0.0.1 for interop tests.
#
#   scripts/registry.sh start fs DIR                      # filesystem driver, rootdirectory DIR
#   scripts/registry.sh start s3 ENDPOINT BUCKET ROOTDIR  # S3 driver, e.g. http://127.0.0.1:PORT s3dock-test /registry
#   scripts/registry.sh stop [ADDR|PORT]                  # stop one instance, or all started from this test dir
#
# `start` prints exactly one line on stdout:  REGISTRY=127.0.0.1:PORT
# Several instances may run at once; each has its config in $S3DOCK_TEST_DIR/registry/PORT/,
# its PID in $S3DOCK_TEST_DIR/registry/PORT.pid and its log in $S3DOCK_TEST_DIR/logs/registry-PORT.log.
#
# Environment:
#   S3DOCK_TEST_DIR        default /tmp/s3dock-test
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION   S3 credentials for the s3 driver
#                          (default: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / us-east-1 from servers.env)
#   S3DOCK_START_TIMEOUT   seconds to wait for /v2/ to answer 200 (default 30)
#
# Notes: the S3 driver is run with AWS_CA_BUNDLE unset (aws-sdk-go v1 crashes at start with it
# set), blob redirects to S3 disabled (the registry serves blob bytes itself), upload purging
# disabled, and deletes enabled.
set -euo pipefail

TEST_DIR="${S3DOCK_TEST_DIR:-/tmp/s3dock-test}"
REG_DIR="$TEST_DIR/registry"
TIMEOUT="${S3DOCK_START_TIMEOUT:-30}"

log() { printf 'registry: %s\n' "$*" >&2; }
die() { printf 'registry: ERROR: %s\n' "$*" >&2; exit 1; }
usage() {
  die "usage: $0 start fs DIR | start s3 ENDPOINT BUCKET ROOTDIR | stop [ADDR|PORT]"
}

find_registry() {
  local b
  for b in docker-registry /usr/bin/docker-registry registry; do
    if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
  done
  die "docker-registry not found (run scripts/setup.sh)"
}

free_port() {
  local py
  py=$(command -v python3) || die "python3 not found"
  "$py" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# yaml_str VALUE: a double-quoted YAML scalar
yaml_str() {
  local v=$1
  v=${v//\\/\\\\}
  v=${v//\"/\\\"}
  printf '"%s"' "$v"
}

pid_matches() { # PID PATTERN
  local cmd
  [ -r "/proc/$1/cmdline" ] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ "$cmd" == *"$2"* ]]
}

alive() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# spawn LOGFILE CMD...: background, stdin /dev/null, output to LOGFILE, other inherited fds closed
# (so `$(scripts/registry.sh start ...)` returns at once). Sets pid.
spawn() {
  local logf=$1
  shift
  (
    for fd in "/proc/$BASHPID/fd/"*; do
      fd=${fd##*/}
      [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-"
    done
    exec "$@" </dev/null >"$logf" 2>&1
  ) &
  pid=$!
}

stop_port() {
  local port=$1 pidf="$REG_DIR/$1.pid" pid pat i
  [ -f "$pidf" ] || return 0
  read -r pid pat <"$pidf" || true
  if [ -n "${pid:-}" ] && pid_matches "$pid" "$pat"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      pid_matches "$pid" "$pat" || break
      sleep 0.1
    done
    if pid_matches "$pid" "$pat"; then
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
    log "stopped registry 127.0.0.1:$port (pid $pid)"
  fi
  rm -f "$pidf"
  rm -rf "${REG_DIR:?}/$port"
}

write_config() { # PORT KIND ARGS...
  local port=$1 kind=$2 cfg="$REG_DIR/$1/config.yml"
  shift 2
  {
    echo "version: 0.1"
    echo "log:"
    echo "  level: info"
    echo "  fields:"
    echo "    service: registry"
    echo "storage:"
    if [ "$kind" = fs ]; then
      echo "  filesystem:"
      echo "    rootdirectory: $(yaml_str "$1")"
    else
      echo "  s3:"
      echo "    regionendpoint: $(yaml_str "$1")"
      echo "    bucket: $(yaml_str "$2")"
      echo "    rootdirectory: $(yaml_str "$3")"
      echo "    region: $(yaml_str "${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}")"
      echo "    accesskey: $(yaml_str "${AWS_ACCESS_KEY_ID:-s3dock-test}")"
      echo "    secretkey: $(yaml_str "${AWS_SECRET_ACCESS_KEY:-s3dock-test-secret}")"
      echo "    forcepathstyle: true"
      echo "    secure: false"
      echo "    v4auth: true"
      echo "  redirect:"
      echo "    disable: true"
    fi
    echo "  delete:"
    echo "    enabled: true"
    echo "  maintenance:"
    echo "    uploadpurging:"
    echo "      enabled: false"
    echo "http:"
    echo "  addr: 127.0.0.1:$port"
    echo "  headers:"
    echo "    X-Content-Type-Options: [nosniff]"
  } >"$cfg"
}

do_start() {
  local kind=${1:-} bin port code deadline rc logf
  case "$kind" in
    fs) [ $# -eq 2 ] || usage ;;
    s3) [ $# -eq 4 ] || usage ;;
    *) usage ;;
  esac
  shift
  bin=$(find_registry)
  command -v curl >/dev/null 2>&1 || die "curl not found (run scripts/setup.sh)"
  if [ "$kind" = fs ]; then
    mkdir -p "$1"
    set -- "$(cd "$1" && pwd)"
  fi
  mkdir -p "$REG_DIR" "$TEST_DIR/logs"

  for _ in 1 2 3; do
    port=$(free_port)
    mkdir -p "$REG_DIR/$port"
    write_config "$port" "$kind" "$@"
    logf="$TEST_DIR/logs/registry-$port.log"
    spawn "$logf" env -u AWS_CA_BUNDLE "$bin" serve "$REG_DIR/$port/config.yml"
    echo "$pid $REG_DIR/$port/config.yml" >"$REG_DIR/$port.pid"

    rc=1
    deadline=$((SECONDS + TIMEOUT))
    while :; do
      if ! alive "$pid"; then rc=2; break; fi
      code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/v2/" 2>/dev/null || true)
      if [ "$code" = 200 ]; then rc=0; break; fi
      [ $SECONDS -lt $deadline ] || break
      sleep 0.1
    done
    if [ $rc -eq 0 ]; then
      log "started $kind registry on 127.0.0.1:$port (pid $pid)"
      echo "REGISTRY=127.0.0.1:$port"
      return 0
    fi
    log "registry ($kind) failed to answer 200 on http://127.0.0.1:$port/v2/ (last: ${code:-none}); log:"
    tail -n 20 "$logf" >&2 || true
    stop_port "$port"
    # retry only if it died because the port was taken meanwhile (not on config errors)
    if [ $rc -ne 2 ] || ! grep -qi 'address already in use' "$logf" 2>/dev/null; then break; fi
  done
  die "could not start the $kind registry"
}

do_stop() {
  local port f
  if [ $# -ge 1 ]; then
    port=${1##*:}
    [[ "$port" =~ ^[0-9]+$ ]] || usage
    stop_port "$port"
    return 0
  fi
  [ -d "$REG_DIR" ] || return 0
  for f in "$REG_DIR"/*.pid; do
    [ -e "$f" ] || continue
    port=${f##*/}
    stop_port "${port%.pid}"
  done
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
  start) do_start "$@" ;;
  stop) [ $# -le 1 ] || usage; do_stop "$@" ;;
  *) usage ;;
esac
