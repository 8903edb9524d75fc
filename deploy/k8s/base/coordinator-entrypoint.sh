#!/bin/sh
# swarm-coordinator's entrypoint in Kubernetes: builds --workers from the layer map (one worker per
# entry) as the DNS names the worker StatefulSet's headless Service gives its pods,
#   swarm-worker-0.swarm-worker.<namespace>.svc.<cluster domain>:7001,...
# and execs swarm-coordinator. Extra arguments (the container's `args`) are passed through.
# Environment: POD_NAMESPACE (downward API), SWARM_MODEL_DIR, SWARM_LAYER_MAP,
# SWARM_WORKER_STATEFULSET and SWARM_WORKER_SERVICE (default swarm-worker), SWARM_WORKER_PORT,
# SWARM_COORDINATOR_PORT, SWARM_METRICS_PORT, SWARM_CLUSTER_DOMAIN (default cluster.local; empty
# for names ending in .svc), SWARM_TLS_DIR (mutual TLS; see below), SWARM_AUTH_TOKENS (a mounted
# tokens file: clients need a bearer token), SWARM_METRICS_AUTH_TOKENS (a mounted tokens file:
# /metrics needs a bearer token), SWARM_COORDINATOR_BIN (tests point it at a stub).
set -eu

die() {
  echo "coordinator-entrypoint: $*" >&2
  exit 2
}

map="${SWARM_LAYER_MAP:-/etc/swarm/layer-map.txt}"
[ -r "$map" ] || die "layer map '$map' is not readable"
: "${SWARM_MODEL_DIR:?coordinator-entrypoint: SWARM_MODEL_DIR is not set}"
ns="${POD_NAMESPACE:-default}"
sts="${SWARM_WORKER_STATEFULSET:-swarm-worker}"
svc="${SWARM_WORKER_SERVICE:-swarm-worker}"
port="${SWARM_WORKER_PORT:-7001}"
domain="${SWARM_CLUSTER_DOMAIN-cluster.local}"
suffix="svc${domain:+.$domain}"

count=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$map" | grep -c . || true)
[ "$count" -gt 0 ] || die "layer map '$map' has no entries"

workers=""
i=0
while [ "$i" -lt "$count" ]; do
  workers="${workers:+$workers,}$sts-$i.$svc.$ns.$suffix:$port"
  i=$((i + 1))
done

# Transport security. SWARM_TLS_DIR: a mounted kubernetes.io/tls Secret (tls.crt, tls.key and
# ca.crt, as cert-manager writes them) gives mutual TLS, reloaded when the Secret is updated;
# without it the servers run plaintext with --insecure and the NetworkPolicies are the only fence
# (docs/security.md).
if [ -n "${SWARM_TLS_DIR:-}" ]; then
  for f in tls.crt tls.key ca.crt; do
    [ -r "$SWARM_TLS_DIR/$f" ] || die "SWARM_TLS_DIR '$SWARM_TLS_DIR' has no readable $f"
  done
  set -- --tls-cert "$SWARM_TLS_DIR/tls.crt" --tls-key "$SWARM_TLS_DIR/tls.key" \
    --tls-ca "$SWARM_TLS_DIR/ca.crt" "$@"
else
  set -- --insecure "$@"
fi
if [ -n "${SWARM_AUTH_TOKENS:-}" ]; then
  [ -r "$SWARM_AUTH_TOKENS" ] || die "SWARM_AUTH_TOKENS '$SWARM_AUTH_TOKENS' is not readable"
  set -- --auth-tokens "$SWARM_AUTH_TOKENS" "$@"
fi
if [ -n "${SWARM_METRICS_AUTH_TOKENS:-}" ]; then
  [ -r "$SWARM_METRICS_AUTH_TOKENS" ] ||
    die "SWARM_METRICS_AUTH_TOKENS '$SWARM_METRICS_AUTH_TOKENS' is not readable"
  set -- --metrics-auth-tokens "$SWARM_METRICS_AUTH_TOKENS" "$@"
fi

echo "coordinator-entrypoint: $count workers: $workers" >&2
exec "${SWARM_COORDINATOR_BIN:-swarm-coordinator}" \
  --model "$SWARM_MODEL_DIR" \
  --workers "$workers" \
  --listen "0.0.0.0:${SWARM_COORDINATOR_PORT:-7000}" \
  --metrics-listen "0.0.0.0:${SWARM_METRICS_PORT:-9100}" \
  "$@"
