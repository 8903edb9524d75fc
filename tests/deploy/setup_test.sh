#!/usr/bin/env bash
# scripts/setup.sh against stub dpkg-query, apt-cache, apt-get and sudo on the PATH (nothing is
# installed): its apt_available check reports a package whose `apt-cache policy` prints a long
# text (longer than a pipe's buffer, the Candidate line early) as available, and `Candidate:
# (none)` or an unknown package as not; run with SWARM_SETUP_INTEGRATION=1 and optional packages
# missing, it installs those apt has and reports the others. Reading apt-cache through
# `| grep -q` under pipefail fails all of this (status 141: grep exits at the Candidate line,
# apt-cache dies of SIGPIPE). Needs only bash.
#   setup_test.sh SOURCE_DIR
set -euo pipefail
src="$(cd "${1:?usage: setup_test.sh SOURCE_DIR}" && pwd)"
setup="$src/scripts/setup.sh"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Stubs. STUB_NOT_INSTALLED: packages dpkg-query reports missing (all others are installed);
# STUB_NO_CANDIDATE: packages apt-cache knows without a candidate; STUB_UNKNOWN: packages it does
# not know. apt-get and sudo log their arguments to STUB_LOG.
mkdir "$tmp/bin"
{
  printf 'prometheus:\n  Installed: (none)\n  Candidate: 2.42.0+ds-5+deb12u1\n  Version table:\n'
  for i in $(seq 1 4000); do
    printf '     2.42.0+ds-%d 500\n' "$i"
    printf '        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n'
  done
} >"$tmp/policy-long.txt"
{
  printf 'curl:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n'
  for i in $(seq 1 4000); do
    printf '     7.88.1-%d -1\n        100 /var/lib/dpkg/status\n' "$i"
  done
} >"$tmp/policy-none.txt"
cat >"$tmp/bin/dpkg-query" <<'EOF'
#!/usr/bin/env bash
pkg="${!#}"
for p in $STUB_NOT_INSTALLED; do
  if [[ "$p" == "$pkg" ]]; then
    echo "dpkg-query: no packages found matching $pkg" >&2
    exit 1
  fi
done
printf 'install ok installed'
EOF
cat >"$tmp/bin/apt-cache" <<EOF
#!/usr/bin/env bash
[[ "\$1" == policy ]] || exit 100
for p in \$STUB_UNKNOWN; do
  [[ "\$p" == "\$2" ]] && { echo "N: Unable to locate package \$2" >&2; exit 0; }
done
for p in \$STUB_NO_CANDIDATE; do
  [[ "\$p" == "\$2" ]] && exec cat "$tmp/policy-none.txt"
done
exec cat "$tmp/policy-long.txt"
EOF
cat >"$tmp/bin/apt-get" <<'EOF'
#!/usr/bin/env bash
echo "apt-get $*" >>"$STUB_LOG"
EOF
cat >"$tmp/bin/sudo" <<'EOF'
#!/usr/bin/env bash
exec "$@"
EOF
chmod +x "$tmp/bin"/*
size="$(wc -c <"$tmp/policy-long.txt")"
((size > 100000)) || { echo "FAIL: the long policy text has only $size bytes"; exit 1; }

# shellcheck source=check.sh
source "$(dirname "${BASH_SOURCE[0]}")/check.sh"
# in_env VAR=VALUE... -- COMMAND...: runs COMMAND with only the stubs' environment.
in_env() {
  split_env "$@"
  env -i PATH="$tmp/bin:$PATH" HOME="$tmp" STUB_LOG="$tmp/apt.log" \
    STUB_NOT_INSTALLED="prometheus yamllint curl" STUB_NO_CANDIDATE="curl" STUB_UNKNOWN="nosuch" \
    ${env_vars[@]+"${env_vars[@]}"} "${rest[@]}"
}
# call FUNCTION PKG: sources setup.sh (which must only define its functions) and prints the
# function's exit status.
call() {
  in_env -- bash -c 'source "$1" >/dev/null 2>&1 || exit 99; "$2" "$3" && echo 0 || echo $?' \
    _ "$setup" "$1" "$2" 2>&1 || true
}

# The check itself.
check "apt_available: a long policy text with a candidate" "0" "$(call apt_available prometheus)"
check "apt_available: Candidate: (none)" "1" "$(call apt_available curl)"
check "apt_available: a package apt does not know" "1" "$(call apt_available nosuch)"
check "installed: an installed package" "0" "$(call installed cmake)"
check "installed: a package dpkg does not have" "1" "$(call installed prometheus)"

# The whole script: the optional packages apt has are installed, the one it lacks is reported.
rm -f "$tmp/apt.log"
status=0
out="$(in_env SWARM_SETUP_INTEGRATION=1 -- bash "$setup" 2>&1)" || status=$?
check "setup.sh with missing optional packages exits 0" "0" "$status"
check "setup.sh installs the optional packages apt has" "1" \
  "$(grep -cx 'setup: installing prometheus yamllint' <<<"$out" || true)"
check "setup.sh reports the one apt has no candidate for" "1" \
  "$(grep -c '^setup: optional package curl is not available from apt' <<<"$out" || true)"
check "apt-get calls" \
  "apt-get update -q|apt-get install -y -q --no-install-recommends prometheus yamllint" \
  "$(paste -sd'|' "$tmp/apt.log" 2>/dev/null || true)"
((failures == 0)) || printf 'setup.sh said:\n%s\n' "$out"

# Nothing missing: apt is not called.
rm -f "$tmp/apt.log"
status=0
out="$(in_env SWARM_SETUP_INTEGRATION=1 STUB_NOT_INSTALLED= -- bash "$setup" 2>&1)" || status=$?
check "setup.sh with nothing missing exits 0" "0" "$status"
check "setup.sh with nothing missing says so" "1" \
  "$(grep -c '^setup: all [0-9]* packages present$' <<<"$out" || true)"
check "setup.sh with nothing missing calls no apt-get" "no log" \
  "$([[ -e "$tmp/apt.log" ]] && cat "$tmp/apt.log" || echo "no log")"

if ((failures > 0)); then
  echo "$failures set-up check(s) failed"
  exit 1
fi
echo "set-up checks passed"
