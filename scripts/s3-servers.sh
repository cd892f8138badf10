#!/usr/bin/env bash
# Start/stop the local S3 servers used by the tests (127.0.0.1 only).
#
#   scripts/s3-servers.sh start   # (re)start s3s-fs, moto and Garage, create the bucket, write servers.env
#   scripts/s3-servers.sh stop    # kill exactly the recorded PIDs, remove the s3s-fs data dir
#   scripts/s3-servers.sh env     # print servers.env
#
# Environment:
#   S3DOCK_TEST_DIR  state dir (default /tmp/s3dock-test): s3s/ data, *.pid, logs/, servers.env
#   S3DOCK_VENV      venv with moto_server, boto3, awscli (default ~/.cache/s3dock/moto-venv)
#   S3DOCK_START_TIMEOUT  seconds to wait for each server (default 60)
#   S3DOCK_GARAGE_ROOT    where scripts/setup.sh installed Garage (default ~/.cache/s3dock/garage);
#                         without it Garage is skipped (tests that need it fail under
#                         S3DOCK_REQUIRE_PEERS=1)
set -euo pipefail

TEST_DIR="${S3DOCK_TEST_DIR:-/tmp/s3dock-test}"
VENV="${S3DOCK_VENV:-$HOME/.cache/s3dock/moto-venv}"
TIMEOUT="${S3DOCK_START_TIMEOUT:-60}"

# Garage only takes key ids of the form GK + 24 hex digits and 64-hex secrets; the other
# servers take anything, so one key serves all three.
ACCESS_KEY=GK5d0c4e3a7e6b2f10c0ffee01
SECRET_KEY=5d0c4e3a7e6b2f10c0ffee015d0c4e3a7e6b2f10c0ffee015d0c4e3a7e6b2f10
REGION=us-east-1
BUCKET=s3dock-test

ENV_FILE="$TEST_DIR/servers.env"
DATA_DIR="$TEST_DIR/s3s"
LOG_DIR="$TEST_DIR/logs"
SERVERS=(s3s moto garage)
GARAGE_ROOT="${S3DOCK_GARAGE_ROOT:-$HOME/.cache/s3dock/garage}"
GARAGE_DIR="$TEST_DIR/garage"

log() { printf 's3-servers: %s\n' "$*" >&2; }
die() { printf 's3-servers: ERROR: %s\n' "$*" >&2; exit 1; }

find_s3s_fs() {
  if command -v s3s-fs >/dev/null 2>&1; then command -v s3s-fs
  elif [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
  else die "s3s-fs not found (run scripts/setup.sh)"
  fi
}

free_port() {
  "$VENV/bin/python" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# pid_matches PID PATTERN: the process exists and its command line contains PATTERN
# (guards against killing an unrelated process that reused a stale PID).
pid_matches() {
  local pid=$1 pat=$2 cmd
  [ -r "/proc/$pid/cmdline" ] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmd" == *"$pat"* ]]
}

# spawn LOGFILE CMD...: run CMD in the background with stdin from /dev/null, stdout+stderr to
# LOGFILE and every other inherited descriptor closed (the lock on fd 9, and any pipe of
# whoever called us, so that e.g. `$(scripts/s3-servers.sh start)` or `| tee` never hang).
# Sets pid (the PID of CMD itself: the subshell execs it).
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

# alive PID: the process exists and is not a zombie
alive() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

stop_one() {
  local name=$1 pidf="$TEST_DIR/$1.pid" pid pat i
  [ -f "$pidf" ] || return 0
  read -r pid pat <"$pidf" || true
  if [ -n "${pid:-}" ] && pid_matches "$pid" "$pat"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      pid_matches "$pid" "$pat" || break
      sleep 0.1
    done
    if pid_matches "$pid" "$pat"; then
      log "$name (pid $pid) did not exit on SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$pidf"
}

do_stop() {
  local s
  for s in "${SERVERS[@]}"; do stop_one "$s"; done
  rm -rf "$DATA_DIR" "$GARAGE_DIR"
  rm -f "$ENV_FILE"
}

# wait_http NAME PID PATTERN URL: any HTTP answer counts as up (S3 roots answer 403/200).
wait_http() {
  local name=$1 pid=$2 pat=$3 url=$4 deadline code
  deadline=$((SECONDS + TIMEOUT))
  while :; do
    if ! alive "$pid"; then
      log "$name exited during startup; last log lines:"
      tail -n 20 "$LOG_DIR/$name.log" >&2 || true
      return 2
    fi
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" 2>/dev/null || true)
    if [ -n "$code" ] && [ "$code" != 000 ]; then return 0; fi
    if [ $SECONDS -ge $deadline ]; then
      log "$name did not answer on $url within ${TIMEOUT}s; last log lines:"
      tail -n 20 "$LOG_DIR/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# start_server NAME PATTERN CMD... (CMD may contain the literal word @PORT@)
# Picks a free port, starts CMD in the background, waits until it answers.
# Retries with a new port if the process dies (e.g. port taken in the meantime).
# Sets PORT.
start_server() {
  local name=$1 pat=$2 attempt pid rc args a
  shift 2
  for attempt in 1 2 3; do
    PORT=$(free_port)
    args=()
    for a in "$@"; do args+=("${a//@PORT@/$PORT}"); done
    spawn "$LOG_DIR/$name.log" env -u AWS_CA_BUNDLE "${args[@]}"
    echo "$pid $pat" >"$TEST_DIR/$name.pid"
    rc=0
    wait_http "$name" "$pid" "$pat" "http://127.0.0.1:$PORT/" || rc=$?
    if [ $rc -eq 0 ]; then
      log "started $name on 127.0.0.1:$PORT (pid $pid)"
      return 0
    fi
    stop_one "$name"
    # retry only if it died because the port was taken meanwhile (not on other errors)
    if [ $rc -ne 2 ] || [ "$attempt" -ge 3 ] || ! grep -qi 'address already in use' "$LOG_DIR/$name.log"; then
      break
    fi
    log "port $PORT was taken; retrying $name on another port"
  done
  return 1
}

create_bucket() {
  local endpoint=$1
  AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_DEFAULT_REGION=$REGION \
    "$VENV/bin/python" - "$endpoint" "$BUCKET" <<'EOF'
import sys, boto3
from botocore.config import Config
from botocore.exceptions import ClientError
endpoint, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint,
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}))
try:
    s3.create_bucket(Bucket=bucket)
except ClientError as e:
    if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
        raise
s3.head_bucket(Bucket=bucket)
EOF
}

# start_garage: a single node (replication 1, sqlite metadata) on three free ports, the
# shared key imported and the bucket created. Sets GARAGE_PORT. Region us-east-1, so
# clients need no --region.
start_garage() {
  local bin="$GARAGE_ROOT/bin/garage" rpc admin conf id i
  rm -rf "$GARAGE_DIR"
  mkdir -p "$GARAGE_DIR/meta" "$GARAGE_DIR/data"
  rpc=$(free_port)
  admin=$(free_port)
  GARAGE_PORT=$(free_port)
  conf="$GARAGE_DIR/garage.toml"
  cat >"$conf" <<EOF
metadata_dir = "$GARAGE_DIR/meta"
data_dir = "$GARAGE_DIR/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))')"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$GARAGE_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(16))')"
EOF
  spawn "$LOG_DIR/garage.log" env RUST_LOG=warn "$bin" -c "$conf" server
  echo "$pid $conf" >"$TEST_DIR/garage.pid"
  wait_http garage "$pid" "$conf" "http://127.0.0.1:$GARAGE_PORT/" || return 1
  g() { "$bin" -c "$conf" "$@" >>"$LOG_DIR/garage-admin.log" 2>&1; }
  for ((i = 0; i < 100; i++)); do
    id=$("$bin" -c "$conf" node id -q 2>>"$LOG_DIR/garage-admin.log") && break
    sleep 0.1
  done
  [ -n "${id:-}" ] || return 1
  g layout assign -z dc1 -c 10G "${id%%@*}" && g layout apply --version 1 \
    && g key import --yes -n s3dock-test "$ACCESS_KEY" "$SECRET_KEY" \
    && g bucket create "$BUCKET" \
    && g bucket allow --read --write --owner "$BUCKET" --key "$ACCESS_KEY" \
    || { tail -n 20 "$LOG_DIR/garage-admin.log" >&2; return 1; }
  log "started garage on 127.0.0.1:$GARAGE_PORT (pid $pid)"
}

do_start() {
  local s3s_bin s3s_port moto_port
  [ -x "$VENV/bin/moto_server" ] || die "moto_server not found in $VENV (run scripts/setup.sh)"
  s3s_bin=$(find_s3s_fs)
  command -v curl >/dev/null 2>&1 || die "curl not found (run scripts/setup.sh)"

  do_stop # restart cleanly if already started
  mkdir -p "$DATA_DIR" "$LOG_DIR"
  # s3s-fs without Nagle, like a production server (why: scripts/nodelay.c)
  NODELAY_SO="$TEST_DIR/nodelay.so"
  local nodelay_c
  nodelay_c="$(dirname "${BASH_SOURCE[0]}")/nodelay.c"
  # Built once per test dir (and again when the source changes), not at every start.
  [ "$NODELAY_SO" -nt "$nodelay_c" ] || gcc -shared -fPIC -O2 -o "$NODELAY_SO" "$nodelay_c" -ldl \
    || die "could not build $NODELAY_SO (gcc missing? run scripts/setup.sh)"

  start_server s3s "$s3s_bin" env LD_PRELOAD="$NODELAY_SO" "$s3s_bin" --host 127.0.0.1 --port @PORT@ \
    --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$DATA_DIR" \
    || { do_stop; die "could not start s3s-fs"; }
  s3s_port=$PORT

  start_server moto "$VENV/bin/moto_server" "$VENV/bin/moto_server" -H 127.0.0.1 -p @PORT@ \
    || { do_stop; die "could not start moto_server"; }
  moto_port=$PORT

  create_bucket "http://127.0.0.1:$s3s_port" >"$LOG_DIR/create-bucket-s3s.log" 2>&1 \
    || { cat "$LOG_DIR/create-bucket-s3s.log" >&2; do_stop; die "could not create bucket on s3s-fs"; }
  create_bucket "http://127.0.0.1:$moto_port" >"$LOG_DIR/create-bucket-moto.log" 2>&1 \
    || { cat "$LOG_DIR/create-bucket-moto.log" >&2; do_stop; die "could not create bucket on moto"; }

  local garage_line="# Garage not installed in $GARAGE_ROOT (scripts/setup.sh installs it)"
  if [ -x "$GARAGE_ROOT/bin/garage" ]; then
    start_garage || { do_stop; die "could not start garage (logs in $LOG_DIR)"; }
    garage_line="export S3DOCK_TEST_GARAGE=http://127.0.0.1:$GARAGE_PORT"
  else
    log "garage: not installed in $GARAGE_ROOT; skipped"
  fi

  cat >"$ENV_FILE.tmp" <<EOF
export S3DOCK_TEST_DIR=$TEST_DIR
export S3DOCK_TEST_S3S=http://127.0.0.1:$s3s_port
export S3DOCK_TEST_MOTO=http://127.0.0.1:$moto_port
$garage_line
export S3DOCK_TEST_BUCKET=$BUCKET
export S3DOCK_TEST_VENV=$VENV
export S3DOCK_NODELAY_SO=$NODELAY_SO
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=$REGION
export AWS_DEFAULT_REGION=$REGION
export AWS_EC2_METADATA_DISABLED=true
EOF
  mv "$ENV_FILE.tmp" "$ENV_FILE"
  log "bucket '$BUCKET' ready; env file: $ENV_FILE"
}

[ $# -eq 1 ] || die "usage: $0 start|stop|env"
mkdir -p "$TEST_DIR"
# Serialize concurrent start/stop on the same test dir.
exec 9>"$TEST_DIR/.s3-servers.lock"
flock 9

case "$1" in
  start) do_start ;;
  stop) do_stop ;;
  env)
    [ -f "$ENV_FILE" ] || die "no $ENV_FILE: servers not started (run: $0 start)"
    cat "$ENV_FILE"
    ;;
  *) die "usage: $0 start|stop|env" ;;
esac
