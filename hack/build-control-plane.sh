#!/usr/bin/env bash
# Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
# kubectl from the Go module proxy into a cache outside the repository,
# keyed by version. Idempotent: exits at once when every binary exists.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE="${CACHETIER_CACHE:-$HOME/.cache/cachetier}"
K8S_BIN="$CACHE/k8s/$K8S_VERSION/bin"
ETCD_BIN="$CACHE/etcd/$ETCD_VERSION/bin"
K8S_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

log() { printf '[control-plane build %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

need_k8s=0
for c in "${K8S_COMPONENTS[@]}"; do [[ -x "$K8S_BIN/$c" ]] || need_k8s=1; done
need_etcd=0
[[ -x "$ETCD_BIN/etcd" ]] || need_etcd=1

if [[ $need_k8s == 0 && $need_etcd == 0 ]]; then
  echo "$K8S_BIN:$ETCD_BIN"
  exit 0
fi

command -v go >/dev/null || { log "Go toolchain not found (need Go >= 1.26)"; exit 1; }
# One build at a time: a second caller waits for the first, then finds the binaries.
mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock 9
need_k8s=0
for c in "${K8S_COMPONENTS[@]}"; do [[ -x "$K8S_BIN/$c" ]] || need_k8s=1; done
[[ -x "$ETCD_BIN/etcd" ]] && need_etcd=0
if [[ $need_k8s == 0 && $need_etcd == 0 ]]; then
  echo "$K8S_BIN:$ETCD_BIN"
  exit 0
fi
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=mod"
WORK="$CACHE/build"
mkdir -p "$WORK"

if [[ $need_etcd == 1 ]]; then
  log "building etcd $ETCD_VERSION (first run only)"
  d="$WORK/etcd-$ETCD_VERSION"; rm -rf "$d"; mkdir -p "$d"
  cat > "$d/go.mod" <<GOMOD
module cachetier.local/etcdbuild

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat > "$d/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$d" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$d/etcd" .)
  mkdir -p "$ETCD_BIN"; mv "$d/etcd" "$ETCD_BIN/etcd"
  log "etcd ready: $ETCD_BIN/etcd"
fi

if [[ $need_k8s == 1 ]]; then
  ver="${K8S_VERSION#v}"; minor="$(cut -d. -f2 <<<"$ver")"; patch="$(cut -d. -f3 <<<"$ver")"
  log "downloading k8s.io/kubernetes@$K8S_VERSION module (a few hundred MB, first run only)"
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  d="$WORK/k8s-$K8S_VERSION"; rm -rf "$d"; mkdir -p "$d"
  {
    echo "module cachetier.local/k8sbuild"
    echo
    echo "go 1.26.0"
    echo
    grep -E '^godebug ' "$gomod" || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    grep -oE '^\s*k8s\.io/[A-Za-z0-9._-]+ => \./staging/src/k8s\.io/[A-Za-z0-9._-]+' "$gomod" \
      | awk -v v="v0.$minor.$patch" '{print "replace " $1 " => " $1 " " v}'
  } > "$d/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "package tools"
    echo
    echo "import ("
    echo '	_ "k8s.io/kubernetes/cmd/kube-apiserver"'
    echo '	_ "k8s.io/kubernetes/cmd/kube-controller-manager"'
    echo '	_ "k8s.io/kubernetes/cmd/kube-scheduler"'
    echo '	_ "k8s.io/kubectl/pkg/cmd"'
    echo '	_ "k8s.io/kubernetes/cmd/kubectl"'
    echo ")"
  } > "$d/tools.go"
  log "resolving modules (go mod tidy; downloads several GB on the first run)"
  (cd "$d" && go mod tidy)
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  mkdir -p "$d/out"
  # Expected on 2 cores, cold (measured): kube-apiserver ~8 min, kube-controller-manager
  # ~2 min (most packages shared), kube-scheduler and kubectl under a minute each.
  for c in "${K8S_COMPONENTS[@]}"; do
    total=$(cd "$d" && go list -deps "k8s.io/kubernetes/cmd/$c" | wc -l)
    log "compiling $c: $total packages (about 10 minutes in all on 2 cores, cold; cached ones are skipped)"
    # go build -v names each package it compiles: count them, say where we are every 15 s.
    (cd "$d" && go build -v -trimpath -ldflags "$ld" -o "$d/out/$c" "k8s.io/kubernetes/cmd/$c" 2>&1) |
      awk -v c="$c" -v total="$total" '
        BEGIN { last = systime() }
        /^[a-zA-Z0-9._\/-]+$/ { n++ }
        !/^[a-zA-Z0-9._\/-]+$/ { print > "/dev/stderr" }
        systime() - last >= 15 {
          last = systime()
          printf "[control-plane build %s] %s: %d of %d packages compiled (%d%%)\n", strftime("%H:%M:%S"), c, n, total, (100 * n) / total > "/dev/stderr"
          fflush("/dev/stderr")
        }
        END { printf "[control-plane build %s] %s: done (%d packages compiled, the rest cached)\n", strftime("%H:%M:%S"), c, n > "/dev/stderr" }'
    [[ ${PIPESTATUS[0]} -eq 0 && -x $d/out/$c ]] || { log "compiling $c failed"; exit 1; }
  done
  mkdir -p "$K8S_BIN"
  for c in "${K8S_COMPONENTS[@]}"; do mv "$d/out/$c" "$K8S_BIN/$c"; done
  log "kubernetes $K8S_VERSION ready in $K8S_BIN"
fi
echo "$K8S_BIN:$ETCD_BIN"
