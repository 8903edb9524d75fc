#!/usr/bin/env bash
# Summary of a ctest run by label, for the end of a CI log: how many tests each label has, how
# many ran, passed and failed, how many were skipped or disabled, then every test that was not
# exercised (with its one-line reason) and every failure. Reads the JUnit file `make test` writes
# (ctest --output-junit BUILD_DIR/ctest-junit.xml) and the labels from ctest itself
# (--print-labels, -N -L). Needs bash, awk and ctest.
#   ci_summary.sh [BUILD_DIR] [JUNIT_FILE]      (defaults: build, BUILD_DIR/ctest-junit.xml)
# "failed" counts tests that failed, timed out or could not start (e.g. a missing executable);
# "run" is passed + failed. A test with several labels counts under each; "all" counts it once.
# Exit 0 when a summary was printed, 1 when there are no results to read.
set -euo pipefail
build="${1:-build}"
junit="${2:-$build/ctest-junit.xml}"
if [[ ! -s "$junit" ]]; then
  echo "ci_summary: no ctest results in $junit (the run stopped before ctest)"
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# One line per test: NAME<TAB>OUTCOME<TAB>REASON, OUTCOME one of passed failed skipped disabled.
# REASON: a skip's "SKIP: ..." line or GTEST_SKIP message; a failure's first "FAIL: ..." line
# (the tests/deploy scripts' style) or ctest's message.
awk '
  function attr(s, key,    m) {
    if (match(s, " " key "=\"[^\"]*\"")) {
      m = substr(s, RSTART + length(key) + 3, RLENGTH - length(key) - 4)
      return unescape(m)
    }
    return ""
  }
  function unescape(s) {
    gsub(/&lt;/, "<", s); gsub(/&gt;/, ">", s); gsub(/&quot;/, "\"", s); gsub(/&apos;/, "'\''", s)
    gsub(/&amp;/, "\\&", s)
    return s
  }
  function flush() {
    if (name == "") return
    if (outcome == "notrun") outcome = "failed"
    if (outcome == "skipped" && skip_line != "") reason = skip_line
    else if (outcome == "skipped" && gtest_reason != "") reason = gtest_reason
    else if (outcome == "failed" && fail_line != "") reason = fail_line
    gsub(/[\t\r]/, " ", reason)
    printf "%s\t%s\t%s\n", name, outcome, reason
    name = ""
  }
  /<testcase / {
    flush()
    name = attr($0, "name"); status = attr($0, "status")
    outcome = status == "run" ? "passed" : status == "fail" ? "failed" : \
              status == "disabled" ? "disabled" : "notrun"
    reason = ""; skip_line = ""; fail_line = ""; gtest_reason = ""; after_skipped = 0
    next
  }
  name == "" { next }
  /<skipped / {
    reason = attr($0, "message")
    # ctest marks a skip (SKIP_RETURN_CODE, SKIP_REGULAR_EXPRESSION) and a test it could not
    # start (no executable, a failed fixture) the same way; only the first is a skip.
    outcome = reason ~ /^SKIP_/ ? "skipped" : "failed"
    next
  }
  /<failure / { m = attr($0, "message"); if (m != "") reason = m; next }
  {
    line = $0
    sub(/^[ \t]*<system-out>/, "", line)
    if (skip_line == "" && line ~ /^SKIP: /) skip_line = unescape(line)
    if (fail_line == "" && line ~ /^FAIL: /) fail_line = unescape(line)
    if (after_skipped && gtest_reason == "" && line != "") gtest_reason = unescape(line)
    after_skipped = line ~ /: Skipped$/
  }
  /<\/testcase>/ { flush() }
  END { flush() }
' "$junit" >"$tmp/results.tsv"

# LABEL<TAB>NAME for every labelled test.
(
  cd "$build"
  ctest --print-labels 2>/dev/null | sed -n 's/^  \(..*\)$/\1/p' | while IFS= read -r label; do
    ctest -N -L "^${label}\$" 2>/dev/null | sed -n 's/^ *Test *#[0-9]*: //p' |
      sed 's/ (Disabled)$//' | while IFS= read -r test; do
      printf '%s\t%s\n' "$label" "$test"
    done
  done
) >"$tmp/labels.tsv" || true

awk -F'\t' -v junit="$junit" '
  FILENAME == ARGV[1] {
    if ($2 in labels) labels[$2] = labels[$2] "," $1
    else labels[$2] = $1
    next
  }
  {
    name = $1; outcome = $2; reason = $3
    l = (name in labels) ? labels[name] : "(no label)"
    n = split(l, ls, ",")
    for (i = 1; i <= n; i++) { count[ls[i], outcome]++; total[ls[i]]++; used[ls[i]] = 1 }
    count["all", outcome]++; total["all"]++
    if (outcome == "skipped" || outcome == "disabled") {
      idle[++n_idle] = sprintf("  %-8s  %s [%s]%s", outcome, name, l,
                               reason == "" ? "" : ": " reason)
    } else if (outcome == "failed") {
      bad[++n_bad] = sprintf("  %s [%s]%s", name, l, reason == "" ? "" : ": " reason)
    }
  }
  function row(label) {
    p = count[label, "passed"] + 0; f = count[label, "failed"] + 0
    printf "%-14s %6d %6d %7d %7d %8d %9d\n", label, total[label], p + f, p, f,
           count[label, "skipped"], count[label, "disabled"]
  }
  END {
    printf "== test summary by label (%s)\n", junit
    printf "%-14s %6s %6s %7s %7s %8s %9s\n", "label", "tests", "run", "passed", "failed",
           "skipped", "disabled"
    k = 0
    for (label in used) order[++k] = label
    for (i = 2; i <= k; i++) {  # Insertion sort: POSIX awk has no asort.
      for (j = i; j > 1 && order[j - 1] > order[j]; j--) {
        t = order[j]; order[j] = order[j - 1]; order[j - 1] = t
      }
    }
    for (i = 1; i <= k; i++) row(order[i])
    row("all")
    if (n_idle > 0) {
      printf "not exercised (%d):\n", n_idle
      for (i = 1; i <= n_idle; i++) print idle[i]
    }
    if (n_bad > 0) {
      printf "failed (%d):\n", n_bad
      for (i = 1; i <= n_bad; i++) print bad[i]
    }
  }
' "$tmp/labels.tsv" "$tmp/results.tsv"
