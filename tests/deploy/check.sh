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
