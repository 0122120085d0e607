#!/usr/bin/env bash
# Test tools outside the control plane, built or installed into the cache (outside the
# repository), keyed by the hash of their pinned inputs, so a change rebuilds and a
# repeat finds them:
#   npm      node-redis 4 and ioredis, pinned by tests/clients/package-lock.json
#   kstatus  the kstatus verdict of sigs.k8s.io/cli-utils (hack/kstatus, go.sum-pinned)
#   luahealth  Argo CD's Lua health checks in gopher-lua (hack/luahealth, go.sum-pinned)
#   helm     Helm v4, built from the Go module proxy (hack/helm: go.mod's tool, go.sum-pinned)
# Usage: hack/tools.sh install        (idempotent; what bootstrap runs)
#        hack/tools.sh path npm|kstatus|luahealth|helm   (the node_modules dir / a binary)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CACHETIER_CACHE:-$HOME/.cache/cachetier}"

key() { cat "$@" | sha256sum | cut -c1-16; }
npm_dir() { echo "$CACHE/npm/$(key tests/clients/package.json tests/clients/package-lock.json)"; }
kstatus_bin() {
  echo "$CACHE/kstatus/$(key hack/kstatus/go.mod hack/kstatus/go.sum hack/kstatus/main.go)/kstatus-compute"
}
luahealth_bin() {
  echo "$CACHE/luahealth/$(key hack/luahealth/go.mod hack/luahealth/go.sum hack/luahealth/main.go)/luahealth"
}
helm_bin() { echo "$CACHE/helm/$(key hack/helm/go.mod hack/helm/go.sum)/helm"; }
log() { printf '[tools] %s\n' "$*" >&2; }

install_npm() {
  local dir; dir="$(npm_dir)"
  [[ -f $dir/.installed ]] && return 0
  command -v npm >/dev/null || { log "npm not found (need Node.js 20 with npm)"; exit 1; }
  log "installing node-redis and ioredis (pinned by package-lock.json) into $dir"
  mkdir -p "$dir"
  cp tests/clients/package.json tests/clients/package-lock.json "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  touch "$dir/.installed"
}

install_kstatus() {
  local bin; bin="$(kstatus_bin)"
  [[ -x $bin ]] && return 0
  command -v go >/dev/null || { log "Go toolchain not found"; exit 1; }
  log "building kstatus-compute (sigs.k8s.io/cli-utils) into $(dirname "$bin")"
  mkdir -p "$(dirname "$bin")"
  (cd hack/kstatus && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" \
    go build -trimpath -o "$bin.tmp" . && mv "$bin.tmp" "$bin")
}

install_luahealth() {
  local bin; bin="$(luahealth_bin)"
  [[ -x $bin ]] && return 0
  command -v go >/dev/null || { log "Go toolchain not found"; exit 1; }
  log "building luahealth (github.com/yuin/gopher-lua) into $(dirname "$bin")"
  mkdir -p "$(dirname "$bin")"
  (cd hack/luahealth && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" \
    go build -trimpath -o "$bin.tmp" . && mv "$bin.tmp" "$bin")
}

install_helm() {
  local bin; bin="$(helm_bin)"
  [[ -x $bin ]] && return 0
  command -v go >/dev/null || { log "Go toolchain not found"; exit 1; }
  log "building helm $(awk '$1 == "helm.sh/helm/v4" {print $2}' hack/helm/go.mod) into $(dirname "$bin") (a few minutes, cold)"
  mkdir -p "$(dirname "$bin")"
  (cd hack/helm && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" \
    go build -trimpath -o "$bin.tmp" helm.sh/helm/v4/cmd/helm && mv "$bin.tmp" "$bin")
}

case "${1:-}" in
  install) install_npm; install_kstatus; install_luahealth; install_helm ;;
  path)
    case "${2:-}" in
      npm) echo "$(npm_dir)/node_modules" ;;
      kstatus) kstatus_bin ;;
      luahealth) luahealth_bin ;;
      helm) helm_bin ;;
      *) echo "usage: $0 path npm|kstatus|luahealth|helm" >&2; exit 2 ;;
    esac ;;
  *) echo "usage: $0 install | path npm|kstatus|luahealth|helm" >&2; exit 2 ;;
esac
