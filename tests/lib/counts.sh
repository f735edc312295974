# Sourced by tests/run-all and tests/vm/suite: reads each runner's own report
# and prints "PASSED FAILED" for it.

# count_cargo LOG: the sum of cargo test's "test result:" lines.
count_cargo() {
  awk '/^test result:/ {
         for (i = 2; i <= NF; i++) {
           if ($i == "passed;") passed += $(i - 1)
           if ($i == "failed;") failed += $(i - 1)
         }
       }
       END { print passed + 0, failed + 0 }' "$1"
}

# count_junit_xml DIR...: Gradle's JUnit XML reports; a skipped test counts as failed
# (the project has no skipped tests: a skip would hide a test).
count_junit_xml() {
  local dir
  for dir in "$@"; do cat "$dir"/TEST-*.xml 2>/dev/null; done | grep -o '<testsuite [^>]*>' | awk '
    function attr(name,   m) { return match($0, name "=\"[0-9]+\"") ? substr($0, RSTART + length(name) + 2, RLENGTH - length(name) - 3) : 0 }
    { tests += attr("tests"); bad += attr("failures") + attr("errors") + attr("skipped") }
    END { print tests - bad, bad + 0 }'
}

# count_junitcore LOG: JUnit 4's console runner ("OK (N tests)" or "Tests run: N,  Failures: F").
count_junitcore() {
  awk '/^OK \(/ { gsub(/[(]/, ""); passed += $2 }
       /^Tests run: / { gsub(/,/, ""); passed += $3 - $5; failed += $5 }
       END { print passed + 0, failed + 0 }' "$1"
}

# count_plain LOG: the last "[word:] N passed, N failed" line.
count_plain() {
  grep -E '^([A-Za-z-]+: )?[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1 |
    sed -E 's/^([A-Za-z-]+: )?([0-9]+) passed, ([0-9]+) failed.*/\2 \3/' | grep . || echo "0 0"
}

# settle NAME EXIT PASSED FAILED: prints the suite's line; a runner that failed
# without reporting a failed test (a crash, a build error) counts as one failure.
settle() {
  local name=$1 status=$2 passed=$3 failed=$4
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1
    echo "$name: the runner exited with status $status without a failed test: counted as one failure"
  fi
  echo "$name: $passed passed, $failed failed"
  SUITE_PASSED=$passed SUITE_FAILED=$failed
}

# failed_tests LOG...: the lines in which the runners name a test that failed
# (cargo, Gradle, JUnit's console runner, the external suites, the fuzz
# targets, the C test, settle's own), at most 30: a CI record that keeps only
# a run's last lines still says which tests failed.
failed_tests() {
  grep -hE '^test .* \.\.\. FAILED$|^[A-Za-z0-9_.$]+ > .+ FAILED$|^[0-9]+\) [A-Za-z_]|^[A-Za-z0-9_-]+: (FAILED|Error|Skipped)\b|^[A-Za-z0-9_-]+: [0-9]+ tests not run$|^FAIL |without a failed test: counted as one failure$' "$@" 2>/dev/null |
    awk '!seen[$0]++' | head -n 30
}
