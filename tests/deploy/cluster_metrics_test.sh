#!/usr/bin/env bash
# The metrics of a live local cluster, end to end: swarm-coordinator and 2 swarm-workers as
# processes with --metrics-listen, Debian's prometheus scraping them (prometheus_test.sh), a few
# `swarm generate` calls, then PromQL checks whose expected values come from what the clients
# received:
#   - Σ swarm_coordinator_block_steps_total = Σ over requests of (blocks run × steps), per block
#     too (exact requests run all 5 blocks of stories260K, one block per layer; sparse ones the
#     explicit plan's blocks 0 and 2), so Jain's index and max/mean have known values < 1 / > 1;
#   - generated and prompt token counters = the tokens the clients received and sent, by mode;
#   - the coordinator's per-worker step counters = the workers' own forward counters;
#   - readiness, worker_up, block replicas, the recording rules' shares and Jain's index.
# Before that, every metric the Grafana dashboard queries (directly or through a recording rule of
# deploy/prometheus/swarm-rules.yml) and every metric docs/metrics.md lists must appear in the
# running processes' own /metrics: renaming a metric in code fails this test.
#
#   cluster_metrics_test.sh SOURCE_DIR SWARM SWARM_WORKER SWARM_COORDINATOR [MODEL_DIR]
#
# Exit 0 pass, 1 fail, 77 skip (prometheus, curl or python3 missing, or no model; with CI=true
# these fail instead: lib.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ $# -lt 4 ]]; then
  sed -n '2,17p' "$0" >&2
  exit 2
fi
src="$(cd "$1" && pwd)"
swarm="$2"
worker_bin="$3"
coord_bin="$4"
model="${5:-$src/../shared/models/stories260K}"

require_tools prometheus curl python3
[[ -f "$model/config.json" ]] || skip_or_fail "no model at $model"

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in ${pids[@]+"${pids[@]}"}; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# start NAME COMMAND...: runs it in the background; sets $addr and $metrics from its stdout.
start() {
  local name="$1"
  shift
  # The files exist before the loop below reads them: the background job opens its redirections
  # only once it runs, and a sed on a missing file would end this script under set -e.
  : >"$tmp/$name.out"
  : >"$tmp/$name.err"
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=($!)
  local pid=$!
  addr="" metrics=""
  for _ in $(seq 1 600); do
    # The first match of each, by sed alone (`sed | head -1` can fail with 141 under pipefail).
    addr="$(sed -n '/^listening on /{s///p;q;}' "$tmp/$name.out")"
    metrics="$(sed -n '\|^metrics on http://\(.*\)/metrics$|{s||\1|p;q;}' "$tmp/$name.out")"
    [[ -n "$addr" && -n "$metrics" ]] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "FAIL: $name printed no 'listening on' and 'metrics on' lines"
  cat "$tmp/$name.out" "$tmp/$name.err"
  exit 1
}

# Worker B's KV budget (128 KiB: 256 positions of its 2 layers) is too small for one request on
# purpose: its OpenSession fails with RESOURCE_EXHAUSTED, which the error series must show.
common_flags=(--model "$model" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --threads 1)
start worker_a "$worker_bin" "${common_flags[@]}" --layers 0-2 --kv-budget 64MiB
worker_a="$addr" worker_a_metrics="$metrics"
start worker_b "$worker_bin" "${common_flags[@]}" --layers 3-4 --kv-budget 128KiB
worker_b="$addr" worker_b_metrics="$metrics"
start coordinator "$coord_bin" --model "$model" --workers "$worker_a,$worker_b" \
  --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0
coord="$addr" coord_metrics="$metrics"
echo "cluster: coordinator $coord (metrics $coord_metrics), workers $worker_a ($worker_a_metrics)," \
  "$worker_b ($worker_b_metrics)"

# Serving, as the coordinator's own ready gauge says. (The scrape is read whole before grep:
# `curl | grep -q` fails under pipefail when grep stops reading early.)
ready() {
  local text
  text="$(curl -fsS --max-time 1 "http://$coord_metrics/metrics" 2>/dev/null)" || return 1
  grep -qx 'swarm_coordinator_ready 1' <<<"$text"
}
for _ in $(seq 1 600); do
  ready && break
  sleep 0.05
done
if ! ready; then
  echo "FAIL: swarm_coordinator_ready never became 1"
  cat "$tmp/coordinator.err"
  exit 1
fi

# Every metric the dashboard queries and the docs list is exported by the running processes.
for t in coordinator:$coord_metrics worker_a:$worker_a_metrics worker_b:$worker_b_metrics; do
  curl -fsS --max-time 5 "http://${t#*:}/metrics" >"$tmp/${t%%:*}.metrics"
done
python3 - "$src" "$tmp"/coordinator.metrics "$tmp"/worker_a.metrics "$tmp"/worker_b.metrics <<'PY'
import json, re, sys, yaml
src, scrapes = sys.argv[1], sys.argv[2:]
exported = set()
for path in scrapes:
    for line in open(path):
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            exported.add(m.group(1))
rules = {}
for g in yaml.safe_load(open(src + "/deploy/prometheus/swarm-rules.yml"))["groups"]:
    for r in g["rules"]:
        if "record" in r:
            rules[r["record"]] = r["expr"]
name_re = re.compile(r"\b(swarm(?::[A-Za-z0-9_]+)+|swarm_[a-z0-9_]+)\b")
def raw_names(expr, seen=()):
    out = set()
    for n in name_re.findall(expr):
        if ":" in n:
            if n not in rules:
                sys.exit("FAIL: %r is not a recording rule of swarm-rules.yml" % n)
            if n not in seen:
                out |= raw_names(rules[n], seen + (n,))
        else:
            out.add(re.sub(r"_(bucket|sum|count)$", "", n))
    return out
def exprs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                yield v
            else:
                yield from exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from exprs(v)
dashboard = json.load(open(src + "/deploy/grafana/swarm-block-balance.json"))
wanted = set()
for e in exprs(dashboard):
    wanted |= raw_names(e)
docs = set(re.findall(r"^\| `(swarm_[a-z0-9_]+)` \|", open(src + "/docs/metrics.md").read(), re.M))
if len(wanted) < 10 or len(docs) < 30:
    sys.exit("FAIL: found only %d dashboard and %d documented metric names" % (len(wanted), len(docs)))
missing = sorted((wanted | docs) - exported)
if missing:
    sys.exit("FAIL: not exported by the running processes: %s" % ", ".join(missing))
print("ok: the %d metrics the dashboard queries and the %d docs/metrics.md lists are exported"
      % (len(wanted), len(docs)))
PY

# The traffic, and the checks that follow from what the clients received.
cat >"$tmp/during.sh" <<EOF
set -euo pipefail
run() { "$swarm" generate --server "$coord" --no-stop --json "\$@" >>"$tmp/results.jsonl"; }
run --prompt "Once upon a time" --max-new-tokens 8
run --prompt "The little dog" --max-new-tokens 5
run --prompt "Lily and Tom went to the park" --max-new-tokens 12 --temperature 0.8 --seed 3
run --prompt "One day" --max-new-tokens 6 --blocks 0,2 --num-blocks 5
run --prompt "The sun was hot" --max-new-tokens 9 --blocks 0,2 --num-blocks 5
# 3 prompt tokens + 400 positions do not fit worker B's KV budget: the request fails.
if "$swarm" generate --server "$coord" --no-stop --json --ids 1,2,3 --max-new-tokens 400 \
    >"$tmp/too-big.out" 2>&1; then
  echo "the request beyond worker B's KV budget succeeded"
  exit 1
fi
python3 "$tmp/expect.py" "$tmp/results.jsonl" >"$tmp/expect.tsv"
EOF
cat >"$tmp/expect.py" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
N = 5  # stories260K: 5 layers, one metric block per layer without a router.
steps = [0] * N
tokens = {"exact": 0, "sparse": 0}
prompt = {"exact": 0, "sparse": 0}
count = {"exact": 0, "sparse": 0}
exact_steps = 0
for r in rows:
    mode = "sparse" if r.get("num_blocks") else "exact"
    g = len(r["ids"])
    # Generate: the prefill yields the first token, each later token one decode step.
    s = g
    for b in (r["blocks"] if mode == "sparse" else range(N)):
        steps[b] += s
    if mode == "exact":
        exact_steps += s
    tokens[mode] += g
    prompt[mode] += len(r["prompt_ids"])
    count[mode] += 1
total = sum(steps)
jain = total ** 2 / (N * sum(x * x for x in steps))
max_mean = max(steps) / (total / N)
out = []
def expect(q, op, v):
    out.append("%s\t%s\t%r" % (q, op, v))
# The request beyond worker B's KV budget: 3 prompt ids, no token, no step.
prompt["exact"] += 3
expect('swarm_coordinator_requests_total{mode="exact",outcome="resource_exhausted"}', "==", 1)
expect('swarm_worker_errors_total{method="OpenSession",code="resource_exhausted"}', "==", 1)
expect('swarm_coordinator_request_duration_seconds_count{mode="exact"}', "==", count["exact"] + 1)
expect("sum(swarm_coordinator_block_steps_total)", "==", total)
for b in range(N):
    expect('swarm_coordinator_block_steps_total{block="%d"}' % b, "==", steps[b])
    expect('swarm:block_load_share:ratio_rate5m{block="%d"}' % b, "~", steps[b] / total)
for b in (0, 2):
    expect('swarm_coordinator_block_selections_total{block="%d"}' % b, "==", count["sparse"])
expect('sum(swarm_coordinator_block_selections_total)', "==", 2 * count["sparse"])
expect("swarm_coordinator_block_load_jain_ratio", "~", jain)
expect("swarm_coordinator_block_load_max_mean_ratio", "~", max_mean)
expect("swarm:block_load_jain:ratio_rate5m", "~", jain)
expect("swarm:block_load_max_mean:ratio_rate5m", "~", max_mean)
for mode in ("exact", "sparse"):
    expect('swarm_coordinator_generated_tokens_total{mode="%s"}' % mode, "==", tokens[mode])
    expect('swarm_coordinator_prompt_tokens_total{mode="%s"}' % mode, "==", prompt[mode])
    expect('swarm_coordinator_requests_total{mode="%s",outcome="ok"}' % mode, "==", count[mode])
    expect('swarm_coordinator_time_to_first_token_seconds_count{mode="%s"}' % mode, "==",
           count[mode])
    expect('swarm_coordinator_inter_token_latency_seconds_count{mode="%s"}' % mode, "==",
           tokens[mode] - count[mode])
# Worker B hosts layers 3-4, which only exact requests run: one Forward per exact step.
expect('sum(swarm_worker_forward_steps_total{layers="3-4"})', "==", exact_steps)
print("\n".join(out))
print("clients: %d requests, %s generated tokens, block steps %s, Jain %.4f, max/mean %.4f"
      % (len(rows), tokens, steps, jain, max_mean), file=sys.stderr)
PY

jain_range_low='swarm_coordinator_block_load_jain_ratio'
bash "$src/tests/deploy/prometheus_test.sh" "$src" \
  --targets "$coord_metrics,$worker_a_metrics,$worker_b_metrics" \
  --during "bash $tmp/during.sh" --expect-file "$tmp/expect.tsv" --scrapes 3 \
  --expect "$jain_range_low" ">" "0" \
  --expect "$jain_range_low" "<" "1" \
  --expect "swarm_coordinator_ready" "==" "1" \
  --expect "sum(swarm_coordinator_worker_up)" "==" "2" \
  --expect "sum(swarm_worker_ready)" "==" "2" \
  --expect "min(swarm_coordinator_block_replicas)" "==" "1" \
  --expect "count(swarm_coordinator_block_replicas)" "==" "5" \
  --expect "sum(swarm_coordinator_worker_steps_total) - sum(swarm_worker_forward_steps_total)" \
    "==" "0" \
  --expect "sum(swarm_coordinator_worker_errors_total)" "==" "0" \
  --expect "sum(swarm_worker_errors_total)" "==" "1" \
  --expect "swarm_coordinator_active_requests" "==" "0" \
  --expect "sum(swarm_coordinator_requests_total{outcome!=\"ok\"})" "==" "1" \
  --expect "sum(swarm_worker_kv_cache_budget_bytes)" "==" "$((64 * 1024 * 1024 + 128 * 1024))" \
  --expect "count(swarm_worker_forward_duration_seconds_count)" "==" "2" \
  --expect-series "swarm:generated_tokens:rate5m" \
  --expect-series "swarm:worker_steps:rate5m" \
  --expect-series "swarm:request_duration_seconds:p95_5m" \
  --expect-series "swarm:worker_forward_duration_seconds:p95_5m"
