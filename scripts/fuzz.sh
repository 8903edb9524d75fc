#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets of tests/fuzz with clang in their own build directory,
# seeds a corpus per target from ../shared (read there, written under the build directory, never
# into the repository), runs each for SECONDS, and prints executions and crashes per target and in
# total (docs/security.md quotes the figures).
#   scripts/fuzz.sh BUILD_DIR SECONDS TARGET...
# Crashing inputs land in BUILD_DIR/fuzz-crashes/TARGET/. Exit 1 when a target crashed.
# FUZZ_BUILD=0 skips building.
set -euo pipefail
build="${1:?usage: fuzz.sh BUILD_DIR SECONDS TARGET...}"
seconds="${2:?usage: fuzz.sh BUILD_DIR SECONDS TARGET...}"
shift 2
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="$src/../shared"
jobs="${JOBS:-$(nproc)}"

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  flags="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer"
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_C_FLAGS="$flags" \
    -DSWARM_BUILD_TESTS=OFF -DSWARM_FUZZ=ON
fi
# FUZZ_BUILD=0: run the targets as built (while another build of BUILD_DIR is under way).
if [[ "${FUZZ_BUILD:-1}" != 0 ]]; then cmake --build "$build" -j "$jobs" --target "$@"; fi

# Seeds from ../shared (tests/fuzz/seeds.sh, the same the ctest smoke runs use), read-only; each
# target's own corpus (what libFuzzer found) grows in fuzz-corpus/TARGET across runs.
bash "$src/tests/fuzz/seeds.sh" "$build/fuzz-seeds" "$shared"

total=0
crashed=0
printf '%-28s %14s %8s\n' TARGET EXECUTIONS CRASHES
for t in "$@"; do
  crashes="$build/fuzz-crashes/$t"
  mkdir -p "$crashes" "$build/fuzz-corpus/$t" "$build/fuzz-seeds/$t"
  log="$build/fuzz-$t.log"
  set +e
  "$build/tests/fuzz/$t" -max_total_time="$seconds" -print_final_stats=1 -timeout=30 \
    -rss_limit_mb=4096 -artifact_prefix="$crashes/" "$build/fuzz-corpus/$t" \
    "$build/fuzz-seeds/$t" >"$log" 2>&1
  rc=$?
  set -e
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)"
  n="$(find "$crashes" -type f | wc -l)"
  printf '%-28s %14s %8s\n' "$t" "${execs:-0}" "$n"
  total=$((total + ${execs:-0}))
  if ((rc != 0 || n > 0)); then crashed=1; fi
done
printf '%-28s %14s\n' total "$total"
exit "$crashed"
