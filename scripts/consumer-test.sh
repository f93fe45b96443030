#!/usr/bin/env bash
# The consumer test: builds consumer-test/, a Maven project of its own (not a module of our build), offline
# against the flashattn4j artifacts that `mvn install` put into the local repository, and runs its
# attention check in two fresh JVMs, on the class path and on the module path, with the native library
# from the JAR. Run it after `mvn install` (./build.sh test does both); it uses only plugins our build has
# already fetched, so it needs no network.
#   scripts/consumer-test.sh [Maven arguments, e.g. -Dmaven.repo.local=/path]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# The version of our parent pom: the first <version> after its <artifactId>.
version=$(sed -n '0,/<artifactId>flashattn4j-parent<\/artifactId>/d; s:.*<version>\(.*\)</version>.*:\1:p' "$top/pom.xml" | head -n1)
[ -n "$version" ] || { echo "consumer-test: found no version in $top/pom.xml" >&2; exit 1; }
# No `clean` goal: maven-clean-plugin is not among the plugins our build fetched.
rm -rf "$top/consumer-test/target"
exec mvn -B -ntp -o -f "$top/consumer-test/pom.xml" -Dflashattn4j.version="$version" \
  -Djava.executable="${JAVA_HOME:+$JAVA_HOME/bin/}java" "$@" verify
