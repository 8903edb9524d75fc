#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets of tests/fuzz with clang in their own build directory,
# seeds a corpus per target from ../shared (read there, written under the build directory, never
# into the repository), runs each for SECONDS, and prints executions and crashes per target and in
# total (docs/security.md quotes the figures).
#   scripts/fuzz.sh BUILD_DIR SECONDS TARGET...
# Crashing inputs land in BUILD_DIR/fuzz-crashes/TARGET/. Exit 1 when a target crashed.
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
cmake --build "$build" -j "$jobs" --target "$@"

# Seeds: real files of each kind, headers only where the data would not matter.
seed() {  # seed TARGET FILE...
  local dir="$build/fuzz-corpus/$1"
  shift
  mkdir -p "$dir"
  for f in "$@"; do [[ -r "$f" ]] && cp "$f" "$dir/$(echo "$f" | tr '/' '_')"; done
}
header_of() {  # header_of SAFETENSORS OUT: the 8-byte length and the JSON header, no data.
  python3 - "$1" "$2" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read(1 << 20)
n = struct.unpack('<Q', data[:8])[0]
open(sys.argv[2], 'wb').write(data[:8 + n])
PY
}
mkdir -p "$build/fuzz-corpus/safetensors_fuzz" "$build/fuzz-corpus/router_file_fuzz"
for m in "$shared"/fixtures/hf-random/* "$shared"/models/stories260K; do
  [[ -r "$m/model.safetensors" ]] &&
    header_of "$m/model.safetensors" "$build/fuzz-corpus/safetensors_fuzz/$(basename "$m").st"
done
seed config_fuzz "$shared"/fixtures/hf-random/*/config.json "$shared"/models/stories260K/config.json
seed tokenizer_load_fuzz "$shared"/models/stories260K/tokenizer.json
mkdir -p "$build/fuzz-corpus/tokenizer_encode_fuzz"
printf '\x00Once upon a time' >"$build/fuzz-corpus/tokenizer_encode_fuzz/once"
printf '\x03Hello, world! <|begin_of_text|> 123' >"$build/fuzz-corpus/tokenizer_encode_fuzz/hello"
mkdir -p "$build/fuzz-corpus/auth_tokens_fuzz"
printf 'alice:alice-0123456789abcdef\n\x00Bearer alice-0123456789abcdef' \
  >"$build/fuzz-corpus/auth_tokens_fuzz/alice"
mkdir -p "$build/fuzz-corpus/worker_forward_fuzz" "$build/fuzz-corpus/coordinator_generate_fuzz"

total=0
crashed=0
printf '%-28s %14s %8s\n' TARGET EXECUTIONS CRASHES
for t in "$@"; do
  crashes="$build/fuzz-crashes/$t"
  mkdir -p "$crashes"
  log="$build/fuzz-$t.log"
  set +e
  "$build/tests/fuzz/$t" -max_total_time="$seconds" -print_final_stats=1 -timeout=30 \
    -rss_limit_mb=4096 -artifact_prefix="$crashes/" "$build/fuzz-corpus/$t" >"$log" 2>&1
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
