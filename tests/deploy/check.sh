# Sourced by the shell tests: `check NAME EXPECTED ACTUAL` prints ok/FAIL lines and counts
# failures in $failures; a test ends with `exit $((failures > 0))`.
failures=0
check() {
  if [[ "$2" == "$3" ]]; then
    echo "ok: $1"
  else
    echo "FAIL: $1"
    echo "  expected: $2"
    echo "  actual:   $3"
    failures=$((failures + 1))
  fi
}

# `split_env VAR=VALUE... -- REST...` sets env_vars=(VAR=VALUE...) and rest=(REST...): the
# environment a test gives one command run under `env -i`, and the command.
split_env() {
  env_vars=()
  while (($# > 0)) && [[ "$1" != -- ]]; do
    env_vars+=("$1")
    shift
  done
  (($# > 0)) && shift
  rest=("$@")
}
