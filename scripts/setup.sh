#!/usr/bin/env bash
# Installs the Debian bookworm packages Swarm builds and tests with. Idempotent: packages that are
# already installed are not touched, and apt is not called at all when nothing is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ccache pkg-config clang-format
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev
  nlohmann-json3-dev libcpp-httplib-dev libpcre2-dev libutf8proc-dev
  iproute2 procps
)
# Extra packages for the integration tests (a real Prometheus, manifest checks).
if [[ "${SWARM_SETUP_INTEGRATION:-0}" == "1" ]]; then
  PACKAGES+=(prometheus kubectl yamllint curl)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
