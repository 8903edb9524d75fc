#!/usr/bin/env bash
# Installs the Debian bookworm packages Swarm builds and tests with. Idempotent: packages that are
# already installed are not touched, and apt is not called at all when nothing is missing.
#
# Sourced (`source scripts/setup.sh`) it only defines its functions, for
# tests/deploy/setup_test.sh; run, it installs.
set -euo pipefail

PACKAGES=(
  build-essential cmake ccache pkg-config clang-format
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev
  nlohmann-json3-dev libcpp-httplib-dev libpcre2-dev libutf8proc-dev
  iproute2 procps openssl
  python3-grpcio python3-protobuf
)
# Extra packages for the integration tests (tests/deploy: a real Prometheus and promtool, manifest
# checks with kubectl kustomize, yamllint and Node.js; clang for the -Wthread-safety check). They
# are optional: one apt cannot find (kubectl is not in Debian bookworm itself; machines here come
# with it) is reported and its tests skip (with CI=true they fail: tests/deploy/lib.sh). A kubectl,
# node or npm already on the PATH is used as it is.
OPTIONAL=()
if [[ "${SWARM_SETUP_INTEGRATION:-0}" == "1" ]]; then
  OPTIONAL+=(prometheus yamllint curl python3 clang)
  command -v kubectl >/dev/null 2>&1 || OPTIONAL+=(kubectl)
  command -v node >/dev/null 2>&1 || OPTIONAL+=(nodejs)
  command -v npm >/dev/null 2>&1 || OPTIONAL+=(npm)
fi

# installed PKG: dpkg has PKG installed.
# apt_available PKG: apt has an install candidate for PKG (apt-get update has run).
# Both read the whole output before matching: `cmd | grep -q` fails under pipefail with 141 when
# grep exits at its first match while cmd is still writing (apt-cache policy does, even for a
# few lines), which made every optional package look unavailable.
installed() {
  local status
  status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" || return 1
  [[ "$status" == *"install ok installed"* ]]
}
apt_available() {
  local policy
  policy="$(apt-cache policy "$1" 2>/dev/null)" || return 1
  grep -q 'Candidate: [^(]' <<<"$policy"
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  return 0
fi

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done
missing_optional=()
for p in ${OPTIONAL[@]+"${OPTIONAL[@]}"}; do
  installed "$p" || missing_optional+=("$p")
done

if ((${#missing[@]} + ${#missing_optional[@]} == 0)); then
  echo "setup: all $((${#PACKAGES[@]} + ${#OPTIONAL[@]})) packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
$SUDO apt-get update -q
for p in ${missing_optional[@]+"${missing_optional[@]}"}; do
  if apt_available "$p"; then
    missing+=("$p")
  else
    echo "setup: optional package $p is not available from apt; the tests that need it will skip" \
      "(with CI=true: fail)"
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "setup: installing ${missing[*]}"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
