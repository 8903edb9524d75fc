#!/usr/bin/env bash
# Manifest checks for deploy/k8s: renders the base and every overlay with `kubectl kustomize`,
# lints sources and renderings with yamllint, validates the renderings offline with
# validate_manifests.mjs (typed schemas from the npm package kubernetes-models, strict on unknown
# fields, plus cross-object checks), and finally seeds breakages into a rendering to prove the
# validator rejects them.
#   manifests_test.sh SOURCE_DIR WORK_DIR
# Exit 0 pass, 1 fail, 77 skip (kubectl, yamllint, node or npm missing: `make test-integration`
# installs them; with CI=true a missing tool fails: lib.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
src="$(cd "${1:?usage: manifests_test.sh SOURCE_DIR WORK_DIR}" && pwd)"
work="${2:?usage: manifests_test.sh SOURCE_DIR WORK_DIR}"
here="$src/tests/deploy"

require_tools kubectl yamllint node npm

mkdir -p "$work"
# The validator and its npm dependencies live in the build tree: `npm ci` from the lock file,
# again only when the lock file changes.
cp "$here/package.json" "$here/package-lock.json" "$here/validate_manifests.mjs" "$work/"
if ! cmp -s "$here/package-lock.json" "$work/node_modules/.swarm-lock" 2>/dev/null; then
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$work/node_modules/.swarm-lock"
fi

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

echo "== yamllint: deploy/ sources"
mapfile -t sources < <(find "$src/deploy" -name '*.yaml' -o -name '*.yml' | sort)
yamllint -s -c "$here/yamllint.yml" "${sources[@]}" || fail "yamllint of deploy/ sources"

renders=()
for dir in "$src"/deploy/k8s/base "$src"/deploy/k8s/overlays/*/; do
  dir="${dir%/}"
  name="$(basename "$dir")"
  out="$work/rendered-$name.yaml"
  echo "== kubectl kustomize deploy/k8s/${dir#"$src"/deploy/k8s/}"
  if ! kubectl kustomize "$dir" >"$out"; then
    fail "kubectl kustomize $dir"
    continue
  fi
  yamllint -s -c "$here/yamllint.yml" "$out" || fail "yamllint of the $name rendering"
  renders+=("$out")
done
[[ ${#renders[@]} -ge 4 ]] || fail "expected base + 3 overlays, rendered ${#renders[@]}"

echo "== validate_manifests.mjs"
node "$work/validate_manifests.mjs" "${renders[@]}" || fail "validation of the renderings"

# The validator must reject each of these breakages of the gpu + prometheus-operator rendering.
echo "== seeded breakages"
base="$work/rendered-gpu-prometheus-operator.yaml"
mutations=(
  's/serviceName: swarm-worker/serviceNme: swarm-worker/'            # unknown field (typo)
  's/^  replicas: 2$/  replicas: 3/'                                  # replicas != layer map
  's/^  replicas: 2$/  replicas: two/'                                # wrong type
  's/port: 7001$/port: 7002/'                                         # probe misses the port
  's/nvidia.com\/gpu: 1/cpu: "9"/'                                    # cuda without a GPU
  '/- --kv-budget$/d'                                                  # cuda without a KV budget
  's/runAsNonRoot: true/runAsNonRoot: false/'                         # not restricted
  's/clusterIP: None/clusterIP: 10.0.0.1/'                            # not headless
  's/claimName: swarm-model/claimName: swarm-modl/'                   # dangling PVC
  's/record: swarm:block_steps:rate5m/recrd: swarm:block_steps:rate5m/'  # CRD typo
)
for m in "${mutations[@]}"; do
  sed "$m" "$base" >"$work/mutated.yaml"
  if cmp -s "$base" "$work/mutated.yaml"; then
    fail "mutation '$m' changed nothing (update the test)"
  elif node "$work/validate_manifests.mjs" "$work/mutated.yaml" >"$work/mutated.log" 2>&1; then
    fail "validator accepted mutation '$m'"
  else
    echo "rejected as expected: $m"
  fi
done

if ((failures > 0)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all manifest checks passed (${#renders[@]} renderings)"
