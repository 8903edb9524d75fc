#!/usr/bin/env bash
# A real Prometheus (Debian's `prometheus`) on loopback, scraping given targets every second with
# deploy/prometheus/prometheus-test.yml and evaluating Swarm's rules, then asserting on PromQL
# results through its HTTP query API (/api/v1/query).
#
#   prometheus_test.sh SOURCE_DIR [--targets HOST:PORT,... | --serve 'COMMAND'] [--during 'COMMAND']
#                      [--scrapes N] [--expect 'PROMQL' OP VALUE]... [--expect-series 'PROMQL']...
#                      [--expect-file FILE] [--token-file FILE]
#
#   --targets        what to scrape (metrics ports of a local coordinator and workers). Without it
#                    or --serve, a self-test: Prometheus scrapes itself, which exercises start-up,
#                    rule loading and the query path without any Swarm process.
#   --serve          a command to start in the background as the target: it must write its
#                    HOST:PORT to the file named by $SWARM_SERVE_ADDRESS_FILE; it is stopped at exit.
#   --during         a command run after every target has been scraped once (e.g. generations
#                    against the local cluster); the checks wait for --scrapes more scrapes after
#                    it, so rates and recording rules see its traffic.
#   --expect         'PROMQL' OP VALUE, OP one of == != < <= > >= (float compare, 1e-9 slack for
#                    ==) or ~ (within 1%); the query must return exactly one sample.
#   --expect-series  the query must return at least one sample.
#   --expect-file    more checks, read after --during ran (so it can write them from what its
#                    clients received): one per line, tab-separated, 'PROMQL<TAB>OP<TAB>VALUE' as
#                    --expect or 'PROMQL<TAB>series' as --expect-series. A missing file fails.
#   --token-file     Prometheus scrapes with `authorization: {credentials_file: FILE}` (targets
#                    started with --metrics-auth-tokens; deploy/prometheus/scrape-with-token.yml).
#
# Every rule group's interval is lowered to 1s in a copy of swarm-rules.yml, and every rule
# group must load with health "ok". Exit 0 pass, 1 fail, 77 skip (prometheus, curl or python3
# missing: `make test-integration` installs them; with CI=true a missing tool fails: lib.sh).
#
# The live-cluster use (a coordinator and 2 workers, generations, then checks written from what
# the clients received) is tests/deploy/cluster_metrics_test.sh, which calls this script.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  sed -n '2,30p' "$0" >&2
  exit 2
}
[[ $# -ge 1 ]] || usage
src="$(cd "$1" && pwd)"
shift
targets=""
serve=""
during=""
scrapes=3
expects=()
series=()
expect_file=""
token_file=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --targets) targets="$2"; shift 2 ;;
    --serve) serve="$2"; shift 2 ;;
    --during) during="$2"; shift 2 ;;
    --scrapes) scrapes="$2"; shift 2 ;;
    --expect) expects+=("$2" "$3" "$4"); shift 4 ;;
    --expect-series) series+=("$2"); shift 2 ;;
    --expect-file) expect_file="$2"; shift 2 ;;
    --token-file) token_file="$2"; shift 2 ;;
    *) usage ;;
  esac
done

require_tools prometheus curl python3

tmp="$(mktemp -d)"
prom_pid=""
serve_pid=""
cleanup() {
  for pid in "$prom_pid" "$serve_pid"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

if [[ -n "$serve" ]]; then
  SWARM_SERVE_ADDRESS_FILE="$tmp/serve-address" bash -c "exec env $serve" >"$tmp/serve.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 1 100); do
    [[ -s "$tmp/serve-address" ]] && break
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ ! -s "$tmp/serve-address" ]]; then
    echo "FAIL: --serve command wrote no address"
    cat "$tmp/serve.log"
    exit 1
  fi
  targets="$(cat "$tmp/serve-address")"
fi

# A free loopback port (tiny race with other processes; start-up failure is reported below).
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
api="http://127.0.0.1:$port"
if [[ -z "$targets" ]]; then
  targets="127.0.0.1:$port"
  self_test=1
else
  self_test=0
fi
target_list="$(printf '%s' "$targets" | sed -e 's/[^,][^,]*/"&"/g')"

sed -e 's/interval: 30s/interval: 1s/' "$src/deploy/prometheus/swarm-rules.yml" >"$tmp/rules.yml"
sed -e "s|\"SWARM_TARGET\"|$target_list|" -e "s|SWARM_RULES_FILE|$tmp/rules.yml|" \
  "$src/deploy/prometheus/prometheus-test.yml" >"$tmp/prometheus.yml"
if [[ -n "$token_file" ]]; then
  token_file="$(realpath "$token_file")"
  sed -i "s|^  - job_name: swarm\$|&\n    authorization: {type: Bearer, credentials_file: \"$token_file\"}|" \
    "$tmp/prometheus.yml"
fi

prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$port" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
prom_pid=$!

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# Runs an instant query; prints the raw JSON.
query() {
  curl -fsS --max-time 5 --get --data-urlencode "query=$1" "$api/api/v1/query"
}
# Reads query JSON on stdin; prints one line per sample: "{labels} value".
samples() {
  python3 -c '
import json, sys
d = json.load(sys.stdin)
if d.get("status") != "success":
    sys.exit("query failed: %s" % d.get("error"))
r = d["data"]
rows = r["result"] if r["resultType"] in ("vector", "matrix") else [{"metric": {}, "value": r["result"]}]
for s in rows:
    print(json.dumps(s["metric"], sort_keys=True), s["value"][1])
'
}

# Up and answering.
for _ in $(seq 1 100); do
  curl -fsS --max-time 1 "$api/-/ready" >/dev/null 2>&1 && break
  kill -0 "$prom_pid" 2>/dev/null || break
  sleep 0.2
done
if ! curl -fsS --max-time 2 "$api/-/ready" >/dev/null 2>&1; then
  echo "FAIL: prometheus did not become ready on $api"
  cat "$tmp/prometheus.log"
  exit 1
fi
echo "prometheus ready on $api, scraping $targets"

# Every target scraped successfully at least once.
n_targets="$(printf '%s' "$targets" | tr ',' '\n' | grep -c .)"
for _ in $(seq 1 60); do
  up="$(query 'sum(up{job="swarm"})' | samples | awk '{print $NF}')"
  [[ "${up:-0}" == "$n_targets" ]] && break
  sleep 0.5
done
[[ "${up:-0}" == "$n_targets" ]] || fail "only ${up:-0} of $n_targets targets are up"

if [[ -n "$during" ]]; then
  echo "running: $during"
  bash -c "$during" || fail "the --during command failed"
fi
# Let the scrapes and 1 s rule evaluations catch up.
sleep "$((scrapes + 1))"

if [[ -n "$expect_file" ]]; then
  if [[ -f "$expect_file" ]]; then
    while IFS=$'\t' read -r q op want; do
      [[ -z "$q" ]] && continue
      if [[ "$op" == series ]]; then
        series+=("$q")
      else
        expects+=("$q" "$op" "$want")
      fi
    done <"$expect_file"
  else
    fail "--expect-file $expect_file was not written"
  fi
fi

# Every rule group loaded and evaluates without error.
curl -fsS --max-time 5 "$api/api/v1/rules" >"$tmp/rules.json"
python3 - "$tmp/rules.json" <<'PY' || fail "rule groups"
import json, sys
groups = json.load(open(sys.argv[1]))["data"]["groups"]
names = sorted(g["name"] for g in groups)
bad = [(g["name"], r.get("name"), r.get("lastError")) for g in groups for r in g["rules"]
       if r.get("health") not in ("ok", "unknown")]
print("rule groups:", ", ".join(names), "-", sum(len(g["rules"]) for g in groups), "rules")
if names != ["swarm-alerts", "swarm-balance", "swarm-serving"]:
    sys.exit("unexpected rule groups %s" % names)
if bad:
    sys.exit("unhealthy rules: %s" % bad)
PY

if [[ "$self_test" == 1 ]]; then
  # Prometheus's own counters prove the scrape → store → query path end to end.
  expects+=('sum(up{job="swarm"})' '==' '1')
  expects+=('sum(prometheus_rule_group_rules{rule_group=~".*swarm-balance"})' '==' '7')
  series+=('prometheus_tsdb_head_samples_appended_total{job="swarm"}')
fi

for ((i = 0; i < ${#expects[@]}; i += 3)); do
  q="${expects[i]}" op="${expects[i + 1]}" want="${expects[i + 2]}"
  got="$(query "$q" | samples)" || { fail "query '$q' failed"; continue; }
  count="$(printf '%s' "$got" | grep -c . || true)"
  if [[ "$count" != 1 ]]; then
    fail "'$q' returned $count samples, expected 1: $got"
    continue
  fi
  value="$(printf '%s' "$got" | awk '{print $NF}')"
  if python3 -c '
import sys
got, op, want = float(sys.argv[1]), sys.argv[2], float(sys.argv[3])
ok = {"==": abs(got - want) <= 1e-9 * max(1.0, abs(want)), "~": abs(got - want) <= 0.01 * abs(want),
      "!=": got != want, "<": got < want,
      "<=": got <= want, ">": got > want, ">=": got >= want}[op]
sys.exit(0 if ok else 1)' "$value" "$op" "$want"; then
    echo "ok: $q = $value ($op $want)"
  else
    fail "$q = $value, expected $op $want"
  fi
done
for q in ${series[@]+"${series[@]}"}; do
  got="$(query "$q" | samples)" || { fail "query '$q' failed"; continue; }
  if [[ -n "$got" ]]; then
    echo "ok: $q has $(printf '%s\n' "$got" | grep -c .) series"
  else
    fail "$q returned no series"
  fi
done

if ((failures > 0)); then
  echo "--- prometheus log"
  tail -20 "$tmp/prometheus.log"
  echo "$failures prometheus check(s) failed"
  exit 1
fi
echo "prometheus checks passed"
