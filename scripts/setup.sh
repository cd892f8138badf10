#!/usr/bin/env bash
# Idempotent installer for the test peers of s3dock (Debian 12).
#
#   - apt packages: skopeo, umoci, podman, docker-registry, ... (apt-get update only if something is missing)
#   - s3s-fs 0.14.1 via cargo install (only if s3s-fs is not found)
#   - Garage 2.5.0 via cargo install into ~/.cache/s3dock/garage (~12 min on two cores, once;
#     AGPL: a test peer only, never linked into s3dock)
#   - moto server + boto3 + pip awscli v1 in a venv at $S3DOCK_VENV (default ~/.cache/s3dock/moto-venv)
#   - the docker-registry package's own service is stopped and disabled (we start our own instances)
#
# Environment:
#   S3DOCK_VENV    venv for moto/awscli (default $HOME/.cache/s3dock/moto-venv)
#   S3DOCK_PYTHON  interpreter used to create the venv (default /usr/bin/python3, else python3)
#
# Progress goes to stderr. Exits non-zero on failure.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }
on_exit() {
  local rc=$?
  [ $rc -eq 0 ] || printf 'setup: FAILED (exit %s)\n' "$rc" >&2
}
trap on_exit EXIT

S3DOCK_VENV="${S3DOCK_VENV:-$HOME/.cache/s3dock/moto-venv}"
S3S_FS_VERSION="0.14.1"
# moto 5.2 serializes ListParts with the root element ListPartsResponse instead of S3's
# ListPartsResult, which aws-sdk-s3 (rightly) rejects; 5.1.22 answers like S3.
MOTO_VERSION='5.1.22'
MOTO_SPEC="moto[server]==$MOTO_VERSION"
AWSCLI_SPEC='awscli>=1.29,<2'   # pip awscli v1: has s3api put-object --if-none-match/--if-match

APT_PACKAGES=(
  # peers used by the tests
  skopeo umoci podman docker-registry busybox-static
  # deploy tests: the traffic switch (each test runs its own nginx on 127.0.0.1)
  nginx-light
  # podman's runtime bits (pulled as Depends too; listed so a missing one is noticed)
  conmon runc golang-github-containers-common uidmap
  # tools
  pigz zstd jq curl openssl ca-certificates procps util-linux
  # moto venv, free-port finder, cargo install of s3s-fs
  python3 python3-venv gcc libc6-dev pkg-config
)

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  SUDO=()
fi

t0=$SECONDS

# ---------------------------------------------------------------- apt
missing=()
for p in "${APT_PACKAGES[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$st" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || [ ${#SUDO[@]} -gt 0 ] || die "need root or sudo to install: ${missing[*]}"
  log "apt: installing ${missing[*]}"
  apt_log=$(mktemp /tmp/s3dock-setup-apt.XXXXXX.log)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$apt_log" 2>&1 \
    || { tail -n 30 "$apt_log" >&2; die "apt-get update failed (full log: $apt_log)"; }
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" >>"$apt_log" 2>&1 \
    || { tail -n 30 "$apt_log" >&2; die "apt-get install failed (full log: $apt_log)"; }
  rm -f "$apt_log"
else
  log "apt: all ${#APT_PACKAGES[@]} packages present"
fi

# ------------------------------------------- packaged system services
# docker-registry listens on :5000 and nginx on :80 as packaged services. The tests run
# their own instances (scripts/registry.sh, tests/deploy.rs), so make sure those are not running.
for svc in docker-registry nginx; do
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    if systemctl is-active --quiet "$svc.service" 2>/dev/null \
       || systemctl is-enabled --quiet "$svc.service" 2>/dev/null; then
      log "$svc: stopping and disabling the packaged systemd service"
      "${SUDO[@]}" systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
    fi
  elif [ -x "/etc/init.d/$svc" ]; then
    if "/etc/init.d/$svc" status >/dev/null 2>&1; then
      log "$svc: stopping the packaged init.d service"
      "${SUDO[@]}" "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
    "${SUDO[@]}" update-rc.d "$svc" disable >/dev/null 2>&1 || true
  fi
done

# ---------------------------------------------------------------- s3s-fs
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if command -v s3s-fs >/dev/null 2>&1; then
  log "s3s-fs: present ($(command -v s3s-fs))"
elif [ -x "$cargo_bin/s3s-fs" ]; then
  log "s3s-fs: present at $cargo_bin/s3s-fs (not on PATH; scripts look there too)"
else
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain first (https://rustup.rs)"
  log "s3s-fs: cargo install s3s-fs@$S3S_FS_VERSION (takes a few minutes)"
  ts=$SECONDS
  cargo install "s3s-fs@$S3S_FS_VERSION" --features binary --locked --quiet \
    || die "cargo install s3s-fs@$S3S_FS_VERSION failed"
  log "s3s-fs: installed in $((SECONDS - ts))s"
fi

# ---------------------------------------------------------------- Garage
GARAGE_VERSION="2.5.0"
GARAGE_ROOT="${S3DOCK_GARAGE_ROOT:-$HOME/.cache/s3dock/garage}"
if [ -x "$GARAGE_ROOT/bin/garage" ] && "$GARAGE_ROOT/bin/garage" --version 2>/dev/null | grep -q "v$GARAGE_VERSION"; then
  log "garage: present ($GARAGE_ROOT/bin/garage)"
else
  log "garage: cargo install garage@$GARAGE_VERSION into $GARAGE_ROOT (about 12 min on two cores, cached)"
  ts=$SECONDS
  cargo install "garage@$GARAGE_VERSION" --locked --quiet --root "$GARAGE_ROOT" \
    || die "cargo install garage@$GARAGE_VERSION failed"
  log "garage: installed in $((SECONDS - ts))s"
fi

# ---------------------------------------------------------------- moto venv
venv_ok() {
  [ -x "$S3DOCK_VENV/bin/python" ] && [ -x "$S3DOCK_VENV/bin/moto_server" ] && [ -x "$S3DOCK_VENV/bin/aws" ] \
    && "$S3DOCK_VENV/bin/python" - <<EOF >/dev/null 2>&1
import importlib.metadata as md, boto3, moto, flask  # noqa: F401  (flask: moto[server])
assert md.version("moto") == "$MOTO_VERSION"
assert md.version("awscli").split(".")[0] == "1"
EOF
}
if venv_ok; then
  log "moto venv: present ($S3DOCK_VENV)"
else
  py="${S3DOCK_PYTHON:-}"
  if [ -z "$py" ]; then
    if [ -x /usr/bin/python3 ]; then py=/usr/bin/python3; else py=python3; fi
  fi
  if [ ! -x "$S3DOCK_VENV/bin/python" ] || ! "$S3DOCK_VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "moto venv: creating $S3DOCK_VENV with $py"
    rm -rf "$S3DOCK_VENV"
    mkdir -p "$(dirname "$S3DOCK_VENV")"
    "$py" -m venv "$S3DOCK_VENV" || die "python venv creation failed ($py -m venv)"
  fi
  log "moto venv: pip install $MOTO_SPEC $AWSCLI_SPEC"
  ts=$SECONDS
  "$S3DOCK_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$MOTO_SPEC" "$AWSCLI_SPEC" boto3 >&2 \
    || die "pip install into $S3DOCK_VENV failed"
  venv_ok || die "moto venv at $S3DOCK_VENV is still incomplete after pip install"
  log "moto venv: ready in $((SECONDS - ts))s"
fi

# moto's IAM enforcement authorizes HeadBucket as the action "s3:HeadBucket", which no
# real policy grants (AWS authorizes it as s3:ListBucket): a least-privilege user would
# be refused. Patch the action map in place (idempotent: only the old text is replaced).
moto_s3="$("$S3DOCK_VENV/bin/python" -c 'import moto.s3.responses as r; print(r.__file__)')"
if grep -q '"HEAD": {"DEFAULT": "HeadBucket"}' "$moto_s3"; then
  sed -i 's/"HEAD": {"DEFAULT": "HeadBucket"}/"HEAD": {"DEFAULT": "ListBucket"}/' "$moto_s3"
  log "moto: HeadBucket authorized as s3:ListBucket (patched $moto_s3)"
fi

# moto's IAM enforcement re-signs a request from its URL with the query string decoded, so
# a signed ListObjectsV2 whose prefix holds "/" (sent as %2F) fails SignatureDoesNotMatch.
# Sign the raw query string, as the client did (idempotent: applied once).
moto_dir="$("$S3DOCK_VENV/bin/python" -c 'import moto, os; print(os.path.dirname(moto.__file__))')"
if ! grep -q "raw_query" "$moto_dir/core/authorization.py"; then
  "$S3DOCK_VENV/bin/python" - "$moto_dir" <<'PY'
import sys
d = sys.argv[1]
p = d + "/core/responses.py"
s = open(p).read()
old = 'self.raw_path = urlparse(request.environ.get("RAW_URI")).path\n'
assert old in s, "moto core/responses.py changed"
s = s.replace(old, old + '            self.raw_query = urlparse(request.environ.get("RAW_URI")).query\n', 1)
open(p, "w").write(s)
p = d + "/core/authorization.py"
s = open(p).read()
old = '            if parsed_url.query:\n                path += "?" + parsed_url.query\n'
assert old in s, "moto core/authorization.py changed"
new = ('            query = getattr(self, "raw_query", None) or parsed_url.query\n'
       '            if query:\n                path += "?" + query\n')
open(p, "w").write(s.replace(old, new, 1))
PY
  log "moto: IAM signature check on the raw query string (patched $moto_dir/core)"
fi

# moto judges an anonymous HeadObject against a bucket policy as "s3:HeadObject", an action
# no policy grants (AWS checks s3:GetObject), so a public-read bucket refuses HEAD. Patch
# that one line (idempotent: only the old text is replaced).
if grep -q 'action = f"s3:{method.upper()\[0\]}{method.lower()\[1:\]}Object"' "$moto_s3"; then
  sed -i 's/action = f"s3:{method.upper()\[0\]}{method.lower()\[1:\]}Object"/action = "s3:GetObject" if method.upper() == "HEAD" else f"s3:{method.upper()[0]}{method.lower()[1:]}Object"/' "$moto_s3"
  log "moto: anonymous HeadObject judged as s3:GetObject (patched $moto_s3)"
fi

log "done in $((SECONDS - t0))s"
