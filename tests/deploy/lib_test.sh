#!/usr/bin/env bash
# tests/deploy/lib.sh's rule for a test that cannot run: require_tools with a tool missing is a
# skip (exit 77, one "SKIP:" line naming the tool) outside CI and a failure (exit 1, one "FAIL:"
# line naming it) with CI=true or CI=1; with every tool present it returns. Needs only bash.
#   lib_test.sh SOURCE_DIR
set -euo pipefail
src="$(cd "${1:?usage: lib_test.sh SOURCE_DIR}" && pwd)"
lib="$src/tests/deploy/lib.sh"

# shellcheck source=check.sh
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"
# run [VAR=VALUE...] -- TOOL...: prints "STATUS|OUTPUT" of require_tools TOOL... in a clean
# environment (so the CI of the run around this test does not leak in).
run() {
  split_env "$@"
  local out status=0
  out="$(env -i PATH="$PATH" ${env_vars[@]+"${env_vars[@]}"} bash -c \
    'source "$1"; shift; require_tools "$@"; echo "returned"' _ "$lib" ${rest[@]+"${rest[@]}"} \
    2>&1)" || status=$?
  echo "$status|$out"
}

hint="(run: SWARM_SETUP_INTEGRATION=1 bash scripts/setup.sh)"
check "outside CI a missing tool is a skip" "77|SKIP: swarm-no-such-tool not found $hint" \
  "$(run -- bash swarm-no-such-tool)"
check "CI=false is outside CI" "77|SKIP: swarm-no-such-tool not found $hint" \
  "$(run CI=false -- swarm-no-such-tool)"
check "with CI=true a missing tool fails, named" \
  "1|FAIL: swarm-no-such-tool not found $hint (CI=true: a test that cannot run fails)" \
  "$(run CI=true -- bash swarm-no-such-tool)"
check "CI=1 is CI, every missing tool named" \
  "1|FAIL: swarm-no-a swarm-no-b not found $hint (CI=1: a test that cannot run fails)" \
  "$(run CI=1 -- swarm-no-a bash swarm-no-b)"
check "every tool present: require_tools returns" "0|returned" "$(run CI=true -- bash env)"

if ((failures > 0)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "skip rule checks passed"
