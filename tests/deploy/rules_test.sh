#!/usr/bin/env bash
# Prometheus rules: the PrometheusRule of the prometheus-operator component is in sync with
# deploy/prometheus/swarm-rules.yml, `promtool check rules` accepts the file, `promtool check
# config` accepts the test Prometheus config, and `promtool test rules` runs rules_test.yml (the
# balance figures and alerts on hand-made series).
#   rules_test.sh SOURCE_DIR
# Exit 0 pass, 1 fail, 77 skip (no promtool: Debian's `prometheus` package, installed by
# `make test-integration`; with CI=true a missing promtool fails: lib.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
src="$(cd "${1:?usage: rules_test.sh SOURCE_DIR}" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

bash "$src/deploy/prometheus/sync-prometheusrule.sh" "$tmp/prometheusrule.yaml"
if ! diff -u "$src/deploy/k8s/components/prometheus-operator/prometheusrule.yaml" \
  "$tmp/prometheusrule.yaml"; then
  echo "FAIL: prometheusrule.yaml is stale: run bash deploy/prometheus/sync-prometheusrule.sh"
  exit 1
fi
echo "ok: PrometheusRule in sync with swarm-rules.yml"

require_tools promtool
promtool check rules "$src/deploy/prometheus/swarm-rules.yml"
sed -e "s/\"SWARM_TARGET\"/\"127.0.0.1:9090\"/" \
  -e "s|SWARM_RULES_FILE|$src/deploy/prometheus/swarm-rules.yml|" \
  "$src/deploy/prometheus/prometheus-test.yml" >"$tmp/prometheus.yml"
promtool check config "$tmp/prometheus.yml"
cd "$src/tests/deploy"
promtool test rules rules_test.yml
