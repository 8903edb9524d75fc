#!/usr/bin/env bash
# The layering of the tree, checked on every #include of our own sources (../shared/DESIGN.md,
# docs/architecture.md "Where things live"): a folder may include only the folders below it.
#
#   common ← rpc, tokenizer ← model ← router ← router/calibration, tools
#          ← worker, coordinator ← client (SDK) ← client/cli, bench, tests
#
# Also: LibTorch (it costs ~8-25 s per translation unit) is included only by the model library's
# .cc files and its internal model/*_torch.h headers, the router's fits, the benchmarks and the
# tests; no other header includes it. A model/*_torch.h header is included only by model/*.cc and
# by other model/*_torch.h headers: never by a public header, never outside model/. Fails naming
# every include that breaks a rule. Usage: layering_test.sh SOURCE_DIR
set -euo pipefail
root="${1:?usage: layering_test.sh SOURCE_DIR}"
cd "$root"

# folder (longest match first) → the include prefixes it may use besides its own folder.
allowed_for() {
  case "$1" in
    common) echo "" ;;
    rpc) echo "common/ swarm/v1/ grpc/" ;;
    tokenizer) echo "common/" ;;
    model) echo "common/ tokenizer/" ;;
    router/calibration) echo "common/ tokenizer/ model/ router/" ;;
    router) echo "common/ tokenizer/ model/" ;;
    tools) echo "common/ tokenizer/ model/" ;;
    worker) echo "common/ tokenizer/ model/ rpc/ swarm/v1/ grpc/" ;;
    coordinator) echo "common/ tokenizer/ model/ router/ rpc/ swarm/v1/ grpc/" ;;
    client) echo "common/ rpc/ swarm/v1/ grpc/" ;;
    *) echo "*" ;;
  esac
}

folder_of() {
  case "$1" in
    router/calibration/*) echo router/calibration ;;
    client/cli/*) echo client/cli ;;
    *) echo "${1%%/*}" ;;
  esac
}

failures=0
fail() {
  echo "layering: $1" >&2
  failures=$((failures + 1))
}

# git ls-files when this is a checkout; otherwise every source under the tree.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files -c -o --exclude-standard -- '*.h' '*.cc')
else
  mapfile -t files < <(find . -name '*.h' -o -name '*.cc' | sed 's|^\./||')
fi
((${#files[@]} > 0)) || { echo "layering: no sources found under $root" >&2; exit 1; }

checked=0
for f in "${files[@]}"; do
  [[ -f "$f" ]] || continue
  folder=$(folder_of "$f")
  allowed=$(allowed_for "$folder")
  while IFS= read -r line; do
    inc=$(sed -E 's/^#include "([^"]+)".*/\1/' <<<"$line")
    # Only our own headers (and the generated swarm/v1, grpc/health ones) are checked; a quoted
    # third-party header (absl, nlohmann, prometheus, httplib, utf8proc) is not ours.
    case "${inc%%/*}" in
      common | rpc | proto | tokenizer | model | router | tools | worker | coordinator | client | \
        bench | tests | swarm | grpc) ;;
      *) continue ;;
    esac
    checked=$((checked + 1))
    # The model library's LibTorch-typed internals stay inside it.
    if [[ "$inc" =~ ^model/[^/]*_torch\.h$ ]]; then
      case "$f" in
        model/*_torch.h | model/*.cc) ;;
        *) fail "$f includes \"$inc\": only model/*.cc may include the model's LibTorch internals" ;;
      esac
    fi
    [[ "$allowed" == "*" ]] && continue
    # The router's runtime may not reach into its offline part.
    if [[ "$folder" == router && "$inc" == router/calibration/* ]]; then
      fail "$f includes \"$inc\": the router's runtime may not use router/calibration/"
      continue
    fi
    [[ "$inc" == "$folder/"* ]] && continue
    ok=0
    for p in $allowed; do
      if [[ "$inc" == "$p"* ]]; then ok=1; fi
    done
    [[ "$inc" == router/calibration/* && "$folder" != router/calibration ]] && ok=0
    ((ok)) || fail "$f includes \"$inc\": $folder/ may include only ${allowed:-nothing} outside itself"
  done < <(grep -E '^#include "' "$f" || true)
  if grep -qE '^#include <(torch|ATen|c10)/' "$f"; then
    case "$f" in
      model/*/*) fail "$f includes LibTorch; only model/*.cc and model/*_torch.h may" ;;
      model/*_torch.h) ;;
      *.h) fail "$f includes LibTorch in a header (keep it in .cc files: forward-declare or pimpl)" ;;
      model/*.cc | router/calibration/fit.cc | bench/*.cc | tests/*) ;;
      *) fail "$f includes LibTorch; only model/*.cc (and the router's fits) may" ;;
    esac
  fi
done

if ((failures > 0)); then
  echo "layering: $failures include(s) break the layering" >&2
  exit 1
fi
echo "layering: ${#files[@]} files, $checked project includes, all point down"
