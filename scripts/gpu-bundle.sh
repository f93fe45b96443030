#!/usr/bin/env bash
# Prepares, in one step, everything a GPU machine without Java or network needs to run the GPU loop
# (scripts/gpu-loop.sh): builds the jars and test classes, makes a jlink'd Java runtime, fetches the JUnit
# console launcher and Debian's CUTLASS package, all into the git-ignored folder .bundle/ (about 35 MB).
# Then send the repository with .bundle/ to the GPU machine and run scripts/gpu-loop.sh there.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bundle="$top/.bundle"
junit_console_version=1.14.1
modules=java.base,java.logging,java.management,java.naming,java.scripting,java.xml,jdk.unsupported,java.instrument,jdk.management,java.compiler

./build.sh demo >/dev/null  # finds a JDK >= 25, builds every module (and checks the result on the CPU)
JAVA_HOME=$(./build.sh java-home)
export JAVA_HOME PATH="$JAVA_HOME/bin:$PATH"
mvn -B -ntp -q -DskipTests test-compile -pl tests -am >/dev/null

rm -rf "$bundle" && mkdir -p "$bundle/jars"
cp java/target/flashattn4j-*.jar bindings/target/flashattn4j-bindings-*.jar benchmarks/target/flashattn4j-benchmarks.jar "$bundle/jars/"
(cd tests/target && tar czf "$bundle/test-classes.tgz" test-classes)
mvn -B -ntp -q dependency:copy -Dartifact=org.junit.platform:junit-platform-console-standalone:$junit_console_version \
  -DoutputDirectory="$bundle/jars" >/dev/null
# jqwik, the engine of the property-based tests (the console jar has JUnit's own engines only).
jqwik_version=$(sed -n 's:.*<jqwik.version>\(.*\)</jqwik.version>.*:\1:p' pom.xml)
for artifact in jqwik-api jqwik-engine; do
  mvn -B -ntp -q dependency:copy -Dartifact=net.jqwik:$artifact:$jqwik_version -DoutputDirectory="$bundle/jars" >/dev/null
done
jlink --add-modules "$modules" --strip-debug --no-header-files --no-man-pages --compress=zip-9 --output "$bundle/jre"
tar czf "$bundle/jre.tgz" -C "$bundle" jre && rm -rf "$bundle/jre"
bash cmake/fetch-cutlass.sh "$bundle/cutlass" >/dev/null
rm -rf "$bundle/cutlass/usr"  # the .deb (under 1 MB) travels; gpu-loop.sh unpacks it
du -sh "$bundle"
