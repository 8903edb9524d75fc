#!/usr/bin/env bash
# The Dockerfile's runtime stage installs every shared library the binaries load: each library
# `ldd` resolves for the given binaries belongs to a Debian package in the dependency closure of
# the runtime stage's `apt-get install` list (apt-cache depends --recurse).
#   runtime_deps_test.sh SOURCE_DIR BINARY...
# Exit 0 pass, 1 fail, 77 skip (no dpkg/apt-cache, no apt lists, or no binary built yet; with
# CI=true these fail instead: lib.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
src="$(cd "${1:?usage: runtime_deps_test.sh SOURCE_DIR BINARY...}" && pwd)"
shift

require_tools ldd dpkg-query apt-cache
binaries=()
for b in "$@"; do
  [[ -x "$b" ]] && binaries+=("$b")
done
((${#binaries[@]} > 0)) || skip_or_fail "none of the binaries is built: $*"

# The runtime stage's package list: the words of its first `apt-get install` command.
mapfile -t packages < <(awk '
  /^FROM .* AS runtime$/ { in_stage = 1; next }
  /^FROM / { in_stage = 0 }
  in_stage && /apt-get install/ { in_list = 1; next }
  in_list && /&&/ { exit }
  in_list { for (i = 1; i <= NF; i++) if ($i != "\\") print $i }
' "$src/deploy/Dockerfile")
((${#packages[@]} > 3)) || { echo "FAIL: no runtime package list found in deploy/Dockerfile"; exit 1; }
echo "runtime stage installs: ${packages[*]}"

errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
if ! closure="$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances "${packages[@]}" 2>"$errors")"; then
  if unknown="$(grep -m1 "Unable to locate package" "$errors")"; then
    skip_or_fail "apt-cache: $unknown (no apt lists? run apt-get update)"
  fi
  cat "$errors"
  exit 1
fi
declare -A have=()
while read -r line; do
  [[ "$line" =~ ^[a-z0-9] ]] && have["${line%%:*}"]=1
done <<<"$closure"
echo "closure: ${#have[@]} packages"

# Which Debian package ships each library the binaries load: one dpkg-query for all of them
# (dpkg records some under /lib, merged /usr resolves them under /usr/lib).
declare -A libs_of=() owner=()
# The sanitizer runtimes an instrumented build (make test-asan) loads are left out: the image
# builds its binaries without sanitizers.
for b in "${binaries[@]}"; do
  libs_of["$b"]="$(ldd "$b" | awk '/=> \// { print $3 }' | xargs -r readlink -f |
    grep -Ev '/lib(asan|ubsan|tsan|lsan)\.so' | sort -u)"
done
mapfile -t all_libs < <(printf '%s\n' "${libs_of[@]}" | grep . | sort -u)
lookup() {
  dpkg-query -S "$@" 2>/dev/null | while IFS= read -r line; do
    printf '%s\t%s\n' "${line##*: }" "${line%%: *}"
  done || true
}
while IFS=$'\t' read -r path pkgs; do
  pkg="${pkgs%%,*}"
  owner["$path"]="${pkg%%:*}"
  owner["/usr$path"]="${pkg%%:*}"
done < <(lookup "${all_libs[@]}"; lookup $(printf '%s\n' "${all_libs[@]}" | sed -n 's|^/usr/|/|p'))

failures=0
for b in "${binaries[@]}"; do
  missing=()
  n=0
  while read -r lib; do
    [[ -n "$lib" ]] || continue
    n=$((n + 1))
    pkg="${owner[$lib]:-}"
    if [[ -z "$pkg" ]]; then
      missing+=("$lib (no Debian package owns it)")
    elif [[ -z "${have[$pkg]:-}" ]]; then
      missing+=("$lib ($pkg)")
    fi
  done <<<"${libs_of[$b]}"
  if ((${#missing[@]} > 0)); then
    echo "FAIL: $(basename "$b"): the runtime stage lacks"
    printf '  %s\n' "${missing[@]}"
    failures=$((failures + 1))
  else
    echo "ok: $(basename "$b"): all $n shared libraries come with the runtime packages"
  fi
done
((failures == 0)) || exit 1
