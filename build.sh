#!/usr/bin/env bash
# flashattn4j's entry point on a fresh machine: finds a JDK >= 25 and Maven's, then
#   ./build.sh demo    builds everything (native library, bindings, Java, benchmarks) and runs the demo
#   ./build.sh test    builds everything, runs the native and Java test suites, installs the artifacts
#                      into the local Maven repository, runs the consumer test (scripts/consumer-test.sh)
#                      and then `sanitize`
#   ./build.sh sanitize  builds the native library without CUDA under AddressSanitizer and
#                      UndefinedBehaviorSanitizer and runs its test drivers, the C ABI fuzzer at length
#   ./build.sh bench [args]  runs the benchmark CLI (after demo or test built it)
#   ./build.sh jmh [args]    runs the JMH benchmarks
#   ./build.sh java-home     prints the JDK it would use
set -euo pipefail
cd "$(dirname "$0")"

required_java=25

java_major() {  # prints the feature version of the java binary $1, or nothing
  "$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | head -n1
}

find_jdk() {
  local candidates=()
  [ -n "${JAVA_HOME:-}" ] && candidates+=("$JAVA_HOME")
  command -v java >/dev/null 2>&1 && candidates+=("$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")")
  for d in /usr/lib/jvm/* /opt/java/* /opt/jdk* "$HOME"/.sdkman/candidates/java/*; do [ -d "$d" ] && candidates+=("$d"); done
  for home in "${candidates[@]}"; do
    if [ -x "$home/bin/java" ] && [ -x "$home/bin/javac" ]; then
      local v; v=$(java_major "$home/bin/java")
      if [ -n "$v" ] && [ "${v%%.*}" -ge "$required_java" ]; then echo "$home"; return 0; fi
    fi
  done
  return 1
}

JAVA_HOME=$(find_jdk) || { echo "flashattn4j needs a JDK >= $required_java (for the FFM API); none found in JAVA_HOME, PATH or /usr/lib/jvm" >&2; exit 1; }
export JAVA_HOME
export PATH="$JAVA_HOME/bin:$PATH"
command -v mvn >/dev/null 2>&1 || { echo "Maven (mvn) is required: apt-get install maven" >&2; exit 1; }
command -v cmake >/dev/null 2>&1 || { echo "CMake >= 3.24 is required: apt-get install cmake" >&2; exit 1; }

native_access="--enable-native-access=ALL-UNNAMED"
bench_jar=benchmarks/target/flashattn4j-benchmarks.jar
mvn_flags=(-B -ntp)

case "${1:-}" in
  java-home)
    echo "$JAVA_HOME"
    ;;
  demo)
    mvn "${mvn_flags[@]}" -DskipTests package
    exec java "$native_access" -cp "$bench_jar" io.github.flashattn4j.bench.Demo "${@:2}"
    ;;
  test)
    # install, not verify: the consumer test resolves our artifacts from the local repository, as users do.
    mvn "${mvn_flags[@]}" install
    scripts/consumer-test.sh
    exec "$0" sanitize
    ;;
  sanitize)
    build=native/target/sanitize
    cmake -S native -B "$build" -DFA4J_CUDA=OFF -DFA4J_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$build" -j"$(nproc)"
    # Leaks count too: every driver frees what it allocates.
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1
    ctest --test-dir "$build" --output-on-failure
    "$build/abi_fuzz_test" --iterations "${FA4J_FUZZ_ITERATIONS:-30000}"
    ;;
  bench)
    exec java "$native_access" -cp "$bench_jar" io.github.flashattn4j.bench.BenchCli "${@:2}"
    ;;
  jmh)
    exec java "$native_access" -jar "$bench_jar" "${@:2}"
    ;;
  *)
    echo "usage: $0 demo | test | sanitize | bench [args] | jmh [jmh args] | java-home" >&2
    exit 2
    ;;
esac
