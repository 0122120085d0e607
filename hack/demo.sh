#!/usr/bin/env bash
# make demo: local control plane (+ node agent), CRD, operator, examples; then
# show a CacheTier going Ready and a consumer switching to Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCAL=.local
PY=.venv/bin/python
export KUBECONFIG="$PWD/$LOCAL/kubeconfig"
KUBECTL="$(bash hack/build-control-plane.sh | cut -d: -f1)/kubectl"
k() { "$KUBECTL" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting the local control plane (first run builds it: minutes)"
$PY -m ctdev.controlplane up --dir "$LOCAL"

say "installing the CacheTier CRD"
k apply -f crds/cachetier.yaml
k wait --for condition=Established crd/cachetiers.cachetier.io --timeout=60s

say "starting the operator (log: $LOCAL/logs/operator.log)"
mkdir -p "$LOCAL/logs" "$LOCAL/pids"
if [[ -f $LOCAL/pids/operator.pid ]] && kill -0 "$(cat $LOCAL/pids/operator.pid)" 2>/dev/null; then
  echo "operator already running (pid $(cat $LOCAL/pids/operator.pid))"
else
  LIVENESS_PORT="${CACHETIER_LIVENESS_PORT:-8081}"
  METRICS_PORT="${CACHETIER_METRICS_PORT:-9090}"
  setsid $PY -m cachetier.main --kubeconfig "$KUBECONFIG" \
    --liveness "http://127.0.0.1:$LIVENESS_PORT/healthz" --metrics-port "$METRICS_PORT" \
    >"$LOCAL/logs/operator.log" 2>&1 < /dev/null &
  echo $! > "$LOCAL/pids/operator.pid"
  echo "operator pid $(cat $LOCAL/pids/operator.pid)"
fi
operator_alive() {
  if ! kill -0 "$(cat $LOCAL/pids/operator.pid)" 2>/dev/null; then
    echo "The operator is not running. Its last log lines ($LOCAL/logs/operator.log):" >&2
    tail -n 20 "$LOCAL/logs/operator.log" >&2 || true
    if grep -q "already in use" "$LOCAL/logs/operator.log" 2>/dev/null; then
      echo "A port is taken: run again with CACHETIER_LIVENESS_PORT=<free port> and/or" \
        "CACHETIER_METRICS_PORT=<free port> (0 turns metrics off)." >&2
    fi
    rm -f "$LOCAL/pids/operator.pid"
    exit 1
  fi
}
sleep 2
operator_alive

say "applying examples/ (namespace ordo, CacheTier tasks-cache, the demo consumer app)"
k apply -f examples/00-namespace.yaml
k apply -f examples/tasks-cache.yaml
if [[ -f examples/demo-app/deployment.yaml ]]; then k apply -f examples/demo-app/deployment.yaml; fi

say "waiting for tasks-cache (kubectl get cachetiers -n ordo)"
nodes="$(k get nodes --no-headers 2>/dev/null | wc -l)"
phase=""
for _ in $(seq 1 120); do
  phase="$(k get cachetier tasks-cache -n ordo -o jsonpath='{.status.phase}' 2>/dev/null || true)"
  [[ $phase == Ready ]] && break
  [[ $nodes == 0 && $phase == Pending ]] && break
  sleep 1
done
operator_alive
k get cachetiers -n ordo
if [[ -z $phase ]]; then
  echo "tasks-cache has no status: the operator has not reconciled it (see $LOCAL/logs/operator.log)." >&2
  exit 1
fi
if [[ $nodes == 0 ]]; then
  echo "No node is registered, so the Redis pod stays Pending (the status says so)."
fi

say "what the operator made for it"
k get secret,configmap,service,statefulset,poddisruptionbudget,networkpolicy,pvc \
  -n ordo -l app.kubernetes.io/instance=tasks-cache
say "status"
k get cachetier tasks-cache -n ordo -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}) {.message}{"\n"}{end}'

if k get deployment demo-app -n ordo >/dev/null 2>&1; then
  say "the consumer: env the operator injected into demo-app (REDIS_URL is a secretKeyRef)"
  k get deployment demo-app -n ordo \
    -o jsonpath='{range .spec.template.spec.containers[0].env[*]}{.name}{"  "}{.value}{.valueFrom.secretKeyRef.name}{"\n"}{end}' || true
  if [[ $phase == Ready ]]; then
    for _ in $(seq 1 60); do
      ip="$(k get pods -n ordo -l app.kubernetes.io/name=demo-app -o jsonpath='{.items[0].status.podIP}' 2>/dev/null || true)"
      if [[ -n $ip ]] && curl -fsS "http://$ip:8080/" >/dev/null 2>&1 \
        && out="$(curl -fsS "http://$ip:8080/status" 2>/dev/null)"; then
        echo "demo-app /status: $out"
        grep -q '"cache": *"redis"' <<<"$out" && break
      fi
      sleep 2
    done
  fi
fi

if [[ ${FAILOVER:-} == 1 ]]; then
  # A failover of a replication tier, shown with plain kubectl (README "Replication mode").
  say "FAILOVER=1: a replication tier (examples/more/replicated-cache.yaml)"
  k apply -f examples/more/replicated-cache.yaml
  sel="app.kubernetes.io/name=cachetier,app.kubernetes.io/instance=profiles-cache"
  ready=""
  for _ in $(seq 1 180); do
    ready="$(k get cachetier profiles-cache -n ordo -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    [[ $ready == Ready ]] && break
    sleep 1
  done
  operator_alive
  k get cachetier profiles-cache -n ordo
  if [[ $ready != Ready ]]; then
    echo "profiles-cache is not Ready (status above): no failover to show." >&2
    exit 1
  fi
  k get pods -n ordo -l "$sel" -L cachetier.io/role
  old="$(k get pods -n ordo -l "$sel,cachetier.io/role=primary" -o jsonpath='{.items[0].metadata.name}')"
  say "deleting the primary pod $old: the Sentinels elect another, the label follows"
  k delete pod -n ordo "$old" --wait=false
  new=""
  for _ in $(seq 1 120); do
    new="$(k get pods -n ordo -l "$sel,cachetier.io/role=primary" -o jsonpath='{.items[*].metadata.name}' 2>/dev/null || true)"
    [[ -n $new && $new != "$old" ]] && break
    sleep 1
  done
  k get pods -n ordo -l "$sel" -L cachetier.io/role
  k get events -n ordo --field-selector reason=Failover
  if [[ -z $new || $new == "$old" ]]; then
    echo "the primary label did not move within 120 s (see $LOCAL/logs/operator.log)" >&2
    exit 1
  fi
  echo "primary: $old -> $new; REDIS_URL is unchanged (the profiles-cache Service follows the label)"
fi

say "done. Try: KUBECONFIG=$KUBECONFIG .venv/bin/cachetier status -n ordo"
echo "Stop everything with: make cluster-down"
