# Sourced by the runners of other projects' JUnit 5 test suites (tests/netty/run,
# tests/kafka/run): runs a suite as its project's users run their code, with
# rdma-nio as the JVM-wide provider and nothing else changed, in several modes
# side by side: the JDK's provider (the reference) and rdma-nio with each
# transport named. A test counts for rdma-nio's modes only where the JDK's
# provider passes it; one the reference passed that a mode never reported
# counts as failed. Needs `. tests/lib/jars.sh` and the build.

# external_suite NAME CLASSPATH_FILE "MODES" SELECTOR...: runs the suite's tests
# that the console launcher's SELECTORs pick (--select-package P, ...) in each
# of MODES (jdk, or an rdma-nio transport: tcp, auto, ...) at once, each JVM
# with its results under target/NAME, and ends with "NAME: N passed, N failed".
# Returns non-zero when a test failed.
external_suite() {
  local suite=$1 classpath_file=$2 modes=$3
  shift 3
  local out=target/$suite
  local -x LC_ALL=C # sort and join agree on the order
  [ -s "$classpath_file" ] || { echo "$suite: run tests/build first"; echo "$suite: 0 passed, 1 failed"; return 1; }
  rm -rf "$out"
  mkdir -p "$out"
  local start=$SECONDS name
  for name in $modes; do external_suite_mode "$suite" "$classpath_file" "$name" "$@" & done
  wait
  echo "$suite: the suite ran in $((SECONDS - start)) s"
  [ -s "$out/jdk.results" ] || { echo "$suite: the JDK's provider ran no test"; echo "$suite: 0 passed, 1 failed"; return 1; }
  echo "jdk (the reference): $(grep -c '^Passed' "$out/jdk.results") passed; failing there, so not counted:"
  grep '^FAILED' "$out/jdk.results" | sed 's/^/  /'

  local passed=0 failed=0 status test missing
  for name in $modes; do
    [ "$name" = jdk ] && continue
    while read -r status test; do
      grep -qxF "Passed $test" "$out/jdk.results" || continue
      if [ "$status" = Passed ]; then
        passed=$((passed + 1))
      else
        failed=$((failed + 1)) && echo "$name: $status: $test (see $out/$name.log)"
      fi
    done < "$out/$name.results"
    missing=$(join -1 2 -2 2 -v 1 <(grep '^Passed' "$out/jdk.results") "$out/$name.results" | wc -l)
    [ "$missing" -gt 0 ] && failed=$((failed + missing)) && echo "$name: $missing tests not run"
  done
  echo "$suite: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# external_suite_mode SUITE CLASSPATH_FILE MODE SELECTOR...: one run of the
# suite, its results as sorted "STATUS class#test" lines in target/SUITE/MODE.results.
external_suite_mode() {
  local suite=$1 classpath_file=$2 name=$3 options=()
  shift 3
  local out=target/$suite
  if [ "$name" != jdk ]; then
    options=(-Djava.nio.channels.spi.SelectorProvider=rdmanio.nio.RdmaSelectorProvider -Drdmanio.transport="$name"
      -Djava.library.path="$PWD/target/release")
  fi
  java "${options[@]}" -cp "$(cat "$classpath_file"):$PROVIDER_JAR" org.junit.platform.console.ConsoleLauncher \
    execute "$@" --reports-dir="$out/$name" --disable-banner --details=summary > "$out/$name.log" 2>&1
  # JUnit's XML report: a test case failed if a <failure> or <error> comes before its end.
  awk '/<testcase / {
         match($0, /name="[^"]*"/); test = substr($0, RSTART + 6, RLENGTH - 7); gsub(/ /, "", test)
         match($0, /classname="[^"]*"/); class = substr($0, RSTART + 11, RLENGTH - 12)
         status = "Passed"
       }
       /<failure|<error/ { status = "FAILED" }
       /<skipped/ { status = "Skipped" }
       /<\/testcase>/ { print status, class "#" test }' "$out/$name/TEST-junit-jupiter.xml" 2>/dev/null |
    sort -k2 > "$out/$name.results"
}
