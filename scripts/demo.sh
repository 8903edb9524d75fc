#!/usr/bin/env bash
# `make demo`: a local Swarm cluster — a swarm-coordinator and two swarm-workers, each its own
# process, the model's layers split between the workers — streams one story, then stops every
# process. Usage: scripts/demo.sh [MODEL_DIR] (default ../shared/models/stories260K); the binaries
# come from $BUILD (default build), as `make build` leaves them.
set -euo pipefail

MODEL=${1:-../shared/models/stories260K}
BUILD=${BUILD:-build}
SWARM="$BUILD/swarm"
if [[ ! -x "$SWARM" ]]; then
  echo "demo: $SWARM not found; run 'make build' first" >&2
  exit 1
fi
if [[ ! -f "$MODEL/config.json" ]]; then
  echo "demo: no model at $MODEL (expected ../shared/models/stories260K)" >&2
  exit 1
fi

logs=$(mktemp -d)
"$SWARM" up --model "$MODEL" --workers 2 >"$logs/up.out" 2>"$logs/up.err" &
up=$!
stop() {
  if kill -0 "$up" 2>/dev/null; then
    kill -INT "$up"
    wait "$up" || true
  fi
}
trap stop EXIT

# `swarm up` prints "serving on HOST:PORT" once the coordinator covers every layer.
for _ in $(seq 1200); do
  grep -q '^serving on ' "$logs/up.out" && break
  if ! kill -0 "$up" 2>/dev/null; then
    echo "demo: swarm up failed:" >&2
    cat "$logs/up.err" >&2
    exit 1
  fi
  sleep 0.1
done
addr=$(sed -n 's/^serving on //p' "$logs/up.out")
if [[ -z "$addr" ]]; then
  echo "demo: the cluster did not come up in time:" >&2
  cat "$logs/up.err" >&2
  exit 1
fi

echo "== a local cluster: coordinator on $addr, 2 workers (separate processes)"
"$SWARM" status --server "$addr"
echo
echo "== swarm generate --server $addr --prompt \"Once upon a time\" (streamed)"
"$SWARM" generate --server "$addr" --prompt "Once upon a time" --max-new-tokens 200 \
  --temperature 0.8 --top-p 0.9 --seed 7
echo
stop
trap - EXIT
echo "== stopped: $(grep -c 'shutting down' "$logs/up.err") processes shut down cleanly (logs in $logs)"
