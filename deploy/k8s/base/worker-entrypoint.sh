#!/bin/sh
# swarm-worker's entrypoint in Kubernetes: picks this pod's line of the layer map by its
# StatefulSet ordinal (the number after the last '-' of the pod name) and execs swarm-worker with
# it. Extra arguments (the container's `args`, e.g. --device cuda:0) are passed through.
# Environment: POD_NAME (downward API; falls back to the hostname), SWARM_MODEL_DIR,
# SWARM_LAYER_MAP, SWARM_WORKER_PORT, SWARM_METRICS_PORT, SWARM_NUM_BLOCKS (for "blocks" lines),
# SWARM_TLS_DIR (mutual TLS; see below), SWARM_METRICS_AUTH_TOKENS (a mounted tokens file: /metrics
# needs a bearer token), SWARM_WORKER_BIN (tests point it at a stub).
set -eu

die() {
  echo "worker-entrypoint: $*" >&2
  exit 2
}

map="${SWARM_LAYER_MAP:-/etc/swarm/layer-map.txt}"
pod="${POD_NAME:-$(hostname)}"
ordinal="${pod##*-}"
case "$ordinal" in
  '' | *[!0-9]*) die "cannot read a StatefulSet ordinal from pod name '$pod'" ;;
esac
[ -r "$map" ] || die "layer map '$map' is not readable"
: "${SWARM_MODEL_DIR:?worker-entrypoint: SWARM_MODEL_DIR is not set}"

# Entries: lines without comments and surrounding blanks, empty lines dropped.
entries=$(sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$map" | grep -v '^$' || true)
count=$(printf '%s\n' "$entries" | grep -c . || true)
line=$((ordinal + 1))
[ "$line" -le "$count" ] ||
  die "pod '$pod' has ordinal $ordinal but layer map '$map' has $count entries;" \
    "scale the StatefulSet to $count or add a line"
entry=$(printf '%s\n' "$entries" | sed -n "${line}p")

case "$entry" in
  blocks\ *)
    blocks="${entry#blocks }"
    blocks=$(printf '%s' "$blocks" | tr -d '[:space:]')
    : "${SWARM_NUM_BLOCKS:?worker-entrypoint: a 'blocks' entry needs SWARM_NUM_BLOCKS}"
    set -- --blocks "$blocks" --num-blocks "$SWARM_NUM_BLOCKS" "$@"
    ;;
  *)
    printf '%s' "$entry" | grep -Eq '^[0-9]+-[0-9]+$' ||
      die "layer map entry $line '$entry' is neither 'A-B' nor 'blocks i,j'"
    set -- --layers "$entry" "$@"
    ;;
esac

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
if [ -n "${SWARM_METRICS_AUTH_TOKENS:-}" ]; then
  [ -r "$SWARM_METRICS_AUTH_TOKENS" ] ||
    die "SWARM_METRICS_AUTH_TOKENS '$SWARM_METRICS_AUTH_TOKENS' is not readable"
  set -- --metrics-auth-tokens "$SWARM_METRICS_AUTH_TOKENS" "$@"
fi

echo "worker-entrypoint: pod $pod (ordinal $ordinal) hosts $entry" >&2
exec "${SWARM_WORKER_BIN:-swarm-worker}" \
  --model "$SWARM_MODEL_DIR" \
  --listen "0.0.0.0:${SWARM_WORKER_PORT:-7001}" \
  --metrics-listen "0.0.0.0:${SWARM_METRICS_PORT:-9100}" \
  "$@"
