#!/usr/bin/env bash
# Clang's -Wthread-safety over every translation unit of ours that uses a lock annotation (in
# itself or in a project header it includes): checks the ABSL_GUARDED_BY /
# ABSL_EXCLUSIVE_LOCKS_REQUIRED annotations that GCC ignores. Syntax-only (no code generated),
# with the flags of the real build taken from its compile_commands.json. LibTorch translation
# units (LibTorch included directly or through a model/*_torch.h) are left out: they hold no
# lock, and parsing LibTorch is slow. Fails naming every warning.
# Usage: thread_safety_check.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src="${1:?usage: thread_safety_check.sh SOURCE_DIR BUILD_DIR}"
build="${2:?usage: thread_safety_check.sh SOURCE_DIR BUILD_DIR}"
clangxx=""
for c in clang++ clang++-14 clang++-15 clang++-16; do
  if command -v "$c" >/dev/null 2>&1; then
    clangxx="$c"
    break
  fi
done
if [[ -z "$clangxx" ]]; then
  # shellcheck source=../tests/deploy/lib.sh
  source "$src/tests/deploy/lib.sh"
  skip_or_fail "clang++ is not installed (scripts/setup.sh installs clang)"
fi
db="$build/compile_commands.json"
[[ -f "$db" ]] || { echo "thread-safety: $db not found (configure the build first)" >&2; exit 1; }

# One line per translation unit: "<file>\t<command>", our own sources only.
mapfile -t entries < <(python3 - "$db" "$src" <<'PY'
import json, os, re, sys
db, src = sys.argv[1], os.path.realpath(sys.argv[2])
ANNOTATION = re.compile(r"ABSL_(GUARDED_BY|PT_GUARDED_BY|EXCLUSIVE_LOCKS_REQUIRED|LOCKS_EXCLUDED|"
                        r"SHARED_LOCKS_REQUIRED|LOCK_RETURNED)|absl::(Mutex|MutexLock)")
INCLUDE = re.compile(r'^#include "([^"]+)"', re.M)
TORCH = re.compile(r"^#include <(torch|ATen|c10)/", re.M)
def read(path):
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read()
for e in json.load(open(db)):
    f = os.path.realpath(e["file"])
    if not f.startswith(src + "/") or "/build" in f[len(src):]:
        continue
    text = read(f)
    headers = [os.path.join(src, h) for h in INCLUDE.findall(text)]
    texts = [text] + [read(h) for h in headers if os.path.isfile(h)]
    if any(TORCH.search(t) for t in texts):
        continue
    if any(ANNOTATION.search(t) for t in texts):
        print(f + "\t" + e["directory"] + "\t" + e["command"])
PY
)
((${#entries[@]} > 0)) || { echo "thread-safety: no translation units in $db" >&2; exit 1; }

jobs="${SWARM_CHECK_JOBS:-$(nproc)}"
log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT
i=0
for entry in "${entries[@]}"; do
  IFS=$'\t' read -r file dir cmd <<<"$entry"
  # The GCC command line, made a clang syntax-only check: drop -o/-c and GCC-only flags.
  args=$(sed -E 's/^[^ ]+ //; s/ -o [^ ]+//; s/ -c [^ ]+//; s/ -g1//' <<<"$cmd")
  out="$log_dir/$i.log"
  (cd "$dir" && eval "$clangxx" $args -fsyntax-only -Wno-everything -Wthread-safety \
    -Wthread-safety-beta -Werror=thread-safety "$file" >"$out" 2>&1 || echo "FAILED $file" >>"$out") &
  i=$((i + 1))
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
done
wait
failed=0
for f in "$log_dir"/*.log; do
  if [[ -s "$f" ]]; then
    cat "$f" >&2
    failed=1
  fi
done
if ((failed)); then
  echo "thread-safety: clang -Wthread-safety found problems (above)" >&2
  exit 1
fi
echo "thread-safety: ${#entries[@]} translation units pass clang -Wthread-safety"
