#!/usr/bin/env bash
# Regenerates the Java bindings of native/include/flashattn4j.h into src/main/java.
#
# Generated with: jextract 23 (openjdk/jextract master, commit f9866df), JDK 25.0.3, Debian libclang 14.0.6.
# jextract is on no package registry: build it from source (it needs JDK 22+ and libclang) and put it on
# PATH, or point JEXTRACT at its launcher. Only symbols declared in our header are emitted: the list comes
# from jextract's own --dump-includes, filtered to that header.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
header=$(cd "$here/../native/include" && pwd)/flashattn4j.h
out="$here/src/main/java"
package=io.github.flashattn4j.internal.bindings
jextract=${JEXTRACT:-jextract}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$jextract" --dump-includes "$work/all.txt" "$header" >/dev/null
grep -F "# header: $header" "$work/all.txt" | sed 's/[[:space:]]*#.*$//' > "$work/ours.txt"
[ -s "$work/ours.txt" ] || { echo "no symbols found in $header" >&2; exit 1; }

rm -rf "$out/${package//.//}"
"$jextract" --output "$out" --target-package "$package" --header-class-name flashattn4j_h \
  @"$work/ours.txt" "$header"
echo "bindings regenerated from $header into $out/${package//.//} ($(wc -l < "$work/ours.txt") symbols)"
