#!/usr/bin/env bash
# Wall time of `swarm status` against a running local cluster: the torch-free front (build/swarm)
# and the same command in swarm-tools (links LibTorch, as the single swarm binary did before);
# OLD=path/to/an/older/swarm adds that binary (e.g. a build of the commit before the split).
# Usage (repository root, ../shared beside it): bash bench/cli_startup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
$B/swarm up --model ../shared/models/stories260K --workers 2 > /tmp/up.out 2>/tmp/up.err &
UP=$!
for i in $(seq 100); do grep -q "serving on" /tmp/up.out && break; sleep 0.2; done
ADDR=$(awk '/serving on/ {print $3}' /tmp/up.out)
measure() {
  local ts=()
  for i in $(seq 21); do
    local t0=$(date +%s%N); "$@" > /dev/null; local t1=$(date +%s%N)
    ts+=($(( (t1 - t0) / 1000 )))
  done
  printf '%s\n' "${ts[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median %.1f ms, min %.1f ms, max %.1f ms (%d runs)\n", a[int((NR+1)/2)]/1000, a[1]/1000, a[NR]/1000, NR}'
}
echo "swarm status (front):       $(measure $B/swarm status --server $ADDR)"
echo "swarm-tools status (torch): $(measure $B/swarm-tools status --server $ADDR)"
if [[ -n "${OLD:-}" ]]; then
  echo "OLD status ($OLD):   $(measure "$OLD" status --server $ADDR)"
fi
echo "swarm status --help:        $(measure $B/swarm status --help)"
kill -INT $UP; wait $UP || true
