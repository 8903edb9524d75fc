#!/usr/bin/env bash
# The Kubernetes entrypoints (deploy/k8s/base/*-entrypoint.sh) against stub binaries that print
# their arguments: each worker ordinal gets its line of the layer map, the coordinator gets one
# DNS name per entry, and bad input fails with a clear message. Needs only a POSIX sh.
#   entrypoints_test.sh SOURCE_DIR
set -euo pipefail
src="$(cd "${1:?usage: entrypoints_test.sh SOURCE_DIR}" && pwd)"
base="$src/deploy/k8s/base"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

printf '#!/bin/sh\nprintf "%%s\\n" "$@"\n' >"$tmp/stub"
chmod +x "$tmp/stub"
cat >"$tmp/map.txt" <<'MAP'
# comment line
0-1   # first worker

  2-4
blocks 1, 3
MAP

# shellcheck source=check.sh
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"
worker() {  # worker POD_NAME [extra env...] -- [args...]
  local pod="$1"
  shift
  env -i PATH="$PATH" POD_NAME="$pod" SWARM_MODEL_DIR=/models/m SWARM_LAYER_MAP="$tmp/map.txt" \
    SWARM_WORKER_BIN="$tmp/stub" SWARM_NUM_BLOCKS=8 "$@" sh "$base/worker-entrypoint.sh" \
    --device cuda:0 2>"$tmp/err" | tr '\n' ' '
}

check "ordinal 0" \
  "--model /models/m --listen 0.0.0.0:7001 --metrics-listen 0.0.0.0:9100 --insecure --layers 0-1 --device cuda:0 " \
  "$(worker swarm-worker-0)"
check "ordinal 1 skips blanks and comments" \
  "--model /models/m --listen 0.0.0.0:7001 --metrics-listen 0.0.0.0:9100 --insecure --layers 2-4 --device cuda:0 " \
  "$(worker swarm-worker-1)"
check "blocks entry" \
  "--model /models/m --listen 0.0.0.0:7001 --metrics-listen 0.0.0.0:9100 --insecure --blocks 1,3 --num-blocks 8 --device cuda:0 " \
  "$(worker swarm-worker-2)"
check "ports from the environment" \
  "--model /models/m --listen 0.0.0.0:8001 --metrics-listen 0.0.0.0:9200 --insecure --layers 0-1 --device cuda:0 " \
  "$(worker my-sts-10-0 SWARM_WORKER_PORT=8001 SWARM_METRICS_PORT=9200)"

# Failures: an ordinal beyond the map, a pod name without an ordinal, a malformed entry.
if worker swarm-worker-3 >/dev/null; then
  check "ordinal beyond the map fails" "exit != 0" "exit 0"
else
  check "ordinal beyond the map names the count" "1" "$(grep -c 'has 3 entries' "$tmp/err")"
fi
if worker swarm-worker >/dev/null; then
  check "pod name without ordinal fails" "exit != 0" "exit 0"
else
  check "pod name without ordinal is explained" "1" "$(grep -c 'cannot read a StatefulSet ordinal' "$tmp/err")"
fi
printf '0-1\nlayers 5\n' >"$tmp/bad.txt"
if worker swarm-worker-1 SWARM_LAYER_MAP="$tmp/bad.txt" >/dev/null; then
  check "malformed entry fails" "exit != 0" "exit 0"
else
  check "malformed entry is explained" "1" "$(grep -c "neither 'A-B' nor 'blocks i,j'" "$tmp/err")"
fi

coordinator() {
  env -i PATH="$PATH" POD_NAMESPACE=llm SWARM_MODEL_DIR=/models/m SWARM_LAYER_MAP="$tmp/map.txt" \
    SWARM_COORDINATOR_BIN="$tmp/stub" "$@" sh "$base/coordinator-entrypoint.sh" --x 1 2>/dev/null |
    tr '\n' ' '
}
w="swarm-worker-0.swarm-worker.llm.svc.cluster.local:7001"
w="$w,swarm-worker-1.swarm-worker.llm.svc.cluster.local:7001"
w="$w,swarm-worker-2.swarm-worker.llm.svc.cluster.local:7001"
check "coordinator dials one worker per entry" \
  "--model /models/m --workers $w --listen 0.0.0.0:7000 --metrics-listen 0.0.0.0:9100 --insecure --x 1 " \
  "$(coordinator)"
check "coordinator with an empty cluster domain uses <name>.svc" \
  "--model /models/m --workers swarm-worker-0.swarm-worker.llm.svc:7001,swarm-worker-1.swarm-worker.llm.svc:7001,swarm-worker-2.swarm-worker.llm.svc:7001 --listen 0.0.0.0:7000 --metrics-listen 0.0.0.0:9100 --insecure --x 1 " \
  "$(coordinator SWARM_CLUSTER_DOMAIN=)"

# Mutual TLS from a mounted Secret, and client tokens.
mkdir -p "$tmp/tls"
touch "$tmp/tls/tls.crt" "$tmp/tls/tls.key" "$tmp/tls/ca.crt" "$tmp/tokens"
tls="--tls-cert $tmp/tls/tls.crt --tls-key $tmp/tls/tls.key --tls-ca $tmp/tls/ca.crt"
check "worker with SWARM_TLS_DIR" \
  "--model /models/m --listen 0.0.0.0:7001 --metrics-listen 0.0.0.0:9100 $tls --layers 0-1 --device cuda:0 " \
  "$(worker swarm-worker-0 SWARM_TLS_DIR="$tmp/tls")"
check "coordinator with SWARM_TLS_DIR and SWARM_AUTH_TOKENS" \
  "--model /models/m --workers $w --listen 0.0.0.0:7000 --metrics-listen 0.0.0.0:9100 --auth-tokens $tmp/tokens $tls --x 1 " \
  "$(coordinator SWARM_TLS_DIR="$tmp/tls" SWARM_AUTH_TOKENS="$tmp/tokens")"
check "worker with SWARM_METRICS_AUTH_TOKENS" \
  "--model /models/m --listen 0.0.0.0:7001 --metrics-listen 0.0.0.0:9100 --metrics-auth-tokens $tmp/tokens --insecure --layers 0-1 --device cuda:0 " \
  "$(worker swarm-worker-0 SWARM_METRICS_AUTH_TOKENS="$tmp/tokens")"
check "coordinator with SWARM_METRICS_AUTH_TOKENS" \
  "--model /models/m --workers $w --listen 0.0.0.0:7000 --metrics-listen 0.0.0.0:9100 --metrics-auth-tokens $tmp/tokens --insecure --x 1 " \
  "$(coordinator SWARM_METRICS_AUTH_TOKENS="$tmp/tokens")"
rm "$tmp/tls/ca.crt"
if worker swarm-worker-0 SWARM_TLS_DIR="$tmp/tls" >/dev/null; then
  check "SWARM_TLS_DIR without ca.crt fails" "exit != 0" "exit 0"
else
  check "SWARM_TLS_DIR without ca.crt is explained" "1" "$(grep -c 'has no readable ca.crt' "$tmp/err")"
fi

# The layer map shipped in the base parses for every ordinal the StatefulSet runs.
replicas="$(awk '/^kind: StatefulSet/{s=1} s && /^  replicas:/{print $2; exit}' "$base/worker.yaml")"
for ((i = 0; i < replicas; i++)); do
  out="$(env -i PATH="$PATH" POD_NAME="swarm-worker-$i" SWARM_MODEL_DIR=/m \
    SWARM_LAYER_MAP="$base/layer-map.txt" SWARM_WORKER_BIN="$tmp/stub" \
    sh "$base/worker-entrypoint.sh" 2>/dev/null | tr '\n' ' ')"
  layers="$(printf '%s' "$out" | grep -Eo -- '--layers [0-9]+-[0-9]+' || true)"
  check "base layer map, ordinal $i hosts a range" "1" "$(printf '%s' "$layers" | grep -c .)"
done

if ((failures > 0)); then
  echo "$failures entrypoint check(s) failed"
  exit 1
fi
echo "entrypoint checks passed"
