#!/usr/bin/env bash
# Install everything the tests and the demo need, idempotently:
#  - Debian packages (redis-server, redis-tools, openssl) when missing;
#  - a virtualenv in .venv with the project and its dev dependencies
#    (reinstalled only when pyproject.toml changes);
#  - the control plane binaries (cached outside the repository);
#  - the test tools: node-redis/ioredis from npm and the kstatus helper (hack/tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap] %s\n' "$*" >&2; }

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a system redis on 6379; the project runs its own.
  if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
    $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
  pkill -f '^/usr/bin/redis-server 127.0.0.1:6379' 2>/dev/null || true
fi

stamp=".venv/.pyproject.sha256"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -x .venv/bin/python || ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
  log "creating .venv and installing Python dependencies"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi

if [[ "${SKIP_TEST_TOOLS:-}" != "1" ]]; then
  bash hack/tools.sh install
fi

if [[ "${SKIP_CONTROL_PLANE_BUILD:-}" != "1" ]]; then
  bash hack/build-control-plane.sh >/dev/null
fi
