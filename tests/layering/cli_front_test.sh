#!/usr/bin/env bash
# The `swarm` front binary is torch-free, so that the client commands (status, generate, predict)
# start in milliseconds: no LibTorch library among its dynamic dependencies and no function of
# the model library in it. As a control, swarm-tools (which `swarm` runs for the other commands)
# needs LibTorch.
# Usage: cli_front_test.sh BUILD_DIR
set -euo pipefail
build="${1:?usage: cli_front_test.sh BUILD_DIR}"
command -v readelf >/dev/null || { echo "readelf not found (binutils)" >&2; exit 1; }
for bin in swarm swarm-tools; do
  [[ -f "$build/$bin" ]] || { echo "missing $build/$bin" >&2; exit 1; }
done
needed() { readelf -d "$1" | awk '/NEEDED/ { gsub(/[\[\]]/, "", $5); print $5 }'; }
failures=0
if needed "$build/swarm" | grep -E 'torch|c10'; then
  echo "swarm links LibTorch (above); the client commands would load it at every start" >&2
  failures=$((failures + 1))
fi
if ! needed "$build/swarm-tools" | grep -qE 'torch'; then
  echo "control failed: swarm-tools does not link LibTorch either?" >&2
  failures=$((failures + 1))
fi
model=$(nm -C --defined-only "$build/swarm" | grep -c ' swarm::model::' || true)
if ((model > 0)); then
  echo "swarm contains $model function(s) of swarm::model" >&2
  failures=$((failures + 1))
fi
echo "swarm needs: $(needed "$build/swarm" | tr '\n' ' ')"
exit $((failures > 0))
