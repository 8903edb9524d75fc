#!/usr/bin/env bash
# Every C++ file of ours is clang-formatted (.clang-format, Google based): `make format` fixes
# what this reports. Usage: format_test.sh SOURCE_DIR
set -euo pipefail
cd "${1:?usage: format_test.sh SOURCE_DIR}"
if ! command -v clang-format >/dev/null 2>&1; then
  # shellcheck source=../deploy/lib.sh
  source tests/deploy/lib.sh
  skip_or_fail "clang-format is not installed (scripts/setup.sh installs it)"
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files -c -o --exclude-standard -- '*.h' '*.cc')
else
  mapfile -t files < <(find . -path ./build -prune -o \( -name '*.h' -o -name '*.cc' \) -print)
fi
out=$(clang-format --dry-run -Werror "${files[@]}" 2>&1) || {
  grep -E 'error: code should be clang-formatted' <<<"$out" | sed -E 's/:[0-9]+:[0-9]+: error:.*//' | sort -u >&2
  echo "format: the files above are not clang-formatted (run: make format)" >&2
  exit 1
}
echo "format: ${#files[@]} files clang-formatted"
