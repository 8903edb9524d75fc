#!/usr/bin/env bash
# scripts/ci_summary.sh on a JUnit file as ctest 3.25 writes it (a pass, a failure, a timeout, a
# test that could not start, a SKIP_RETURN_CODE skip, a GTEST_SKIP, a disabled test, one without
# a label) with a stub ctest giving the labels: the per-label counts, the tests not exercised with
# their one-line reasons, and the failures. Needs only bash and awk.
#   ci_summary_test.sh SOURCE_DIR
set -euo pipefail
src="$(cd "${1:?usage: ci_summary_test.sh SOURCE_DIR}" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

mkdir "$tmp/bin" "$tmp/build"
cat >"$tmp/bin/ctest" <<'STUB'
#!/usr/bin/env bash
if [[ "$1" == --print-labels ]]; then
  printf 'Test project /b\nAll Labels:\n  integration\n  unit\n'
elif [[ "$1 $2" == "-N -L" && "$3" == '^unit$' ]]; then
  printf 'Test project /b\n  Test #1: pass_u\n  Test #2: fail_u\n  Test #4: Cli.X\n'
  printf '  Test #5: SyntheticTarget.ServeKnownLoad (Disabled)\n  Test #7: missing_exe\n'
  printf '  Test #8: Suite/Param.Name/0\n\nTotal Tests: 6\n'
elif [[ "$1 $2" == "-N -L" && "$3" == '^integration$' ]]; then
  printf 'Test project /b\n  Test #3: deploy_rules\n  Test #4: Cli.X\n\nTotal Tests: 2\n'
else
  exit 1
fi
STUB
chmod +x "$tmp/bin/ctest"
cat >"$tmp/build/ctest-junit.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="(empty)"
	tests="8"
	failures="2"
	disabled="1"
	skipped="3"
	hostname=""
	time="1"
	timestamp="2026-12-01T09:20:04"
	>
	<testcase name="pass_u" classname="pass_u" time="0.00516186" status="run">
		<system-out>hi
</system-out>
	</testcase>
	<testcase name="fail_u" classname="fail_u" time="0.00163123" status="fail">
		<failure message=""/>
		<system-out>ok: one
FAIL: bad &amp; &lt;worse&gt;
FAIL: a second failure
</system-out>
	</testcase>
	<testcase name="deploy_rules" classname="deploy_rules" time="0.00338748" status="notrun">
		<skipped message="SKIP_RETURN_CODE=77"/>
		<system-out>ok: PrometheusRule in sync with swarm-rules.yml
SKIP: promtool not found (run: SWARM_SETUP_INTEGRATION=1 bash scripts/setup.sh)
</system-out>
	</testcase>
	<testcase name="Cli.X" classname="Cli.X" time="0.00108215" status="notrun">
		<skipped message="SKIP_REGULAR_EXPRESSION_MATCHED"/>
		<system-out>[ RUN      ] Cli.X
/w/tests/router/cli_test.cc:42: Skipped
swarm binary not built

[  SKIPPED ] Cli.X (0 ms)
</system-out>
	</testcase>
	<testcase name="SyntheticTarget.ServeKnownLoad" classname="SyntheticTarget.ServeKnownLoad" time="0" status="disabled">
		<system-out>Disabled</system-out>
	</testcase>
	<testcase name="nolabel" classname="nolabel" time="0.00574536" status="run">
		<system-out></system-out>
	</testcase>
	<testcase name="missing_exe" classname="missing_exe" time="0" status="notrun">
		<skipped message="Unable to find executable"/>
		<system-out>Unable to find executable: /nonexistent/bin</system-out>
	</testcase>
	<testcase name="Suite/Param.Name/0" classname="Suite/Param.Name/0" time="1.00348" status="fail">
		<failure message=""/>
		<system-out></system-out>
	</testcase>
</testsuite>
XML

cat >"$tmp/expected" <<EXPECTED
== test summary by label ($tmp/build/ctest-junit.xml)
label           tests    run  passed  failed  skipped  disabled
(no label)          1      1       1       0        0         0
integration         2      0       0       0        2         0
unit                6      4       1       3        1         1
all                 8      5       2       3        2         1
not exercised (3):
  skipped   deploy_rules [integration]: SKIP: promtool not found (run: SWARM_SETUP_INTEGRATION=1 bash scripts/setup.sh)
  skipped   Cli.X [integration,unit]: swarm binary not built
  disabled  SyntheticTarget.ServeKnownLoad [unit]
failed (3):
  fail_u [unit]: FAIL: bad & <worse>
  missing_exe [unit]: Unable to find executable
  Suite/Param.Name/0 [unit]
EXPECTED

failures=0
status=0
PATH="$tmp/bin:$PATH" bash "$src/scripts/ci_summary.sh" "$tmp/build" >"$tmp/actual" 2>&1 || status=$?
if [[ "$status" == 0 ]] && diff -u "$tmp/expected" "$tmp/actual"; then
  echo "ok: the summary of a run"
else
  echo "FAIL: the summary of a run (exit $status)"
  failures=$((failures + 1))
fi
rm "$tmp/build/ctest-junit.xml"
status=0
out="$(PATH="$tmp/bin:$PATH" bash "$src/scripts/ci_summary.sh" "$tmp/build" 2>&1)" || status=$?
if [[ "$status" == 1 && "$out" == "ci_summary: no ctest results in "* ]]; then
  echo "ok: no results: one line, exit 1"
else
  echo "FAIL: no results: exit $status: $out"
  failures=$((failures + 1))
fi

if ((failures > 0)); then
  echo "$failures summary check(s) failed"
  exit 1
fi
echo "summary checks passed"
