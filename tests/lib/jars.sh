# Sourced by the scripts that run Java: where the Gradle build (tests/build,
# or `gradle jar`) leaves each project's jar, and the class paths made of them.
PROVIDER_JAR=build/provider/libs/rdma-nio.jar
BENCH_CP=$PROVIDER_JAR:build/bench/libs/rdma-nio-bench.jar
HYBSTER_CP=build/hybster/libs/hybster.jar:$PROVIDER_JAR
# The benchmark suite's drivers and what they use (HdrHistogram, Hybster's
# client): written by `gradle suiteClasspath`.
SUITE_CP_FILE=build/bench-classpath.txt
