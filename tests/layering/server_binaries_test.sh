#!/usr/bin/env bash
# The servers carry no offline code: no function defined by the converters and generators
# (libswarm_tools.a) or by calibration/evaluation/fitting (libswarm_calibration.a) is linked into
# swarm-worker or swarm-coordinator. As a control, swarm-tools (the CLI's torch commands), which
# runs those commands, must contain them: a check that found nothing anywhere would prove nothing.
# Usage: server_binaries_test.sh BUILD_DIR
set -euo pipefail
build="${1:?usage: server_binaries_test.sh BUILD_DIR}"
command -v nm >/dev/null || { echo "nm not found (binutils)" >&2; exit 1; }

# Strong text symbols a library defines (inline functions and templates are weak: 'W').
defined() { nm -C --defined-only "$1" 2>/dev/null | awk '$2 == "T" { $1 = ""; $2 = ""; print substr($0, 3) }' | sort -u; }

failures=0
for lib in libswarm_tools.a libswarm_calibration.a; do
  [[ -f "$build/$lib" ]] || { echo "missing $build/$lib" >&2; exit 1; }
  defined "$build/$lib" >"$build/.offline_symbols"
  n=$(wc -l <"$build/.offline_symbols")
  ((n > 0)) || { echo "$lib defines no symbols?" >&2; exit 1; }
  cli=$(defined "$build/swarm-tools" | comm -12 - "$build/.offline_symbols" | wc -l)
  if ((cli == 0)); then
    echo "control failed: swarm-tools contains none of the $n functions of $lib" >&2
    failures=$((failures + 1))
  fi
  for bin in swarm-worker swarm-coordinator; do
    [[ -f "$build/$bin" ]] || { echo "missing $build/$bin" >&2; exit 1; }
    found=$(defined "$build/$bin" | comm -12 - "$build/.offline_symbols")
    if [[ -n "$found" ]]; then
      echo "$bin contains $(wc -l <<<"$found") function(s) of $lib, e.g.:" >&2
      head -5 <<<"$found" >&2
      failures=$((failures + 1))
    fi
  done
  echo "$lib: $n functions; swarm-tools has $cli of them, the servers none"
done
rm -f "$build/.offline_symbols"
exit $((failures > 0))
