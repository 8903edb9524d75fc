# Helpers the tests/deploy scripts share; each sources it first:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# The one rule for a test that cannot run here (a tool, the model or a built binary missing):
# outside CI it is a skip with a one-line reason; with CI=true (or CI=1, any case) in the
# environment it is a failure naming what is missing, so a CI run never passes with the test
# unexercised. ctest reports exit 77 as skipped (SKIP_RETURN_CODE 77 in CMakeLists.txt).

# skip_or_fail REASON...: prints "SKIP: REASON" and exits 77, or under CI prints
# "FAIL: REASON (CI=...: ...)" and exits 1.
skip_or_fail() {
  local ci="${CI:-}"
  ci="${ci,,}"
  if [[ "$ci" == true || "$ci" == 1 ]]; then
    echo "FAIL: $* (CI=${CI}: a test that cannot run fails)"
    exit 1
  fi
  echo "SKIP: $*"
  exit 77
}

# require_tools TOOL...: skip_or_fail naming every TOOL that is not on the PATH (the integration
# tools, which `SWARM_SETUP_INTEGRATION=1 bash scripts/setup.sh` installs).
require_tools() {
  local tool missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]} > 0)); then
    skip_or_fail "${missing[*]} not found (run: SWARM_SETUP_INTEGRATION=1 bash scripts/setup.sh)"
  fi
}
