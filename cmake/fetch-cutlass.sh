#!/usr/bin/env bash
# Unpacks Debian's header-only CUTLASS/CuTe (libcutlass-dev, trixie contrib) into a folder without
# installing anything system-wide: a private apt sources file, `apt-get download`, `dpkg -x`.
# The Debian mirror is taken from the machine's own apt configuration.
#   cmake/fetch-cutlass.sh [DEST]   (default: .deps/cutlass); prints the include directory.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$top/.deps/cutlass}
if [ -f "$dest/usr/include/cutlass/cutlass.h" ]; then echo "$dest/usr/include"; exit 0; fi

mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
           | grep -oE '^(deb |URIs: )[^ ]*/debian/?$|^deb [^ ]*/debian/? ' | sed -E 's/^(deb |URIs: )//; s/ $//' | head -n1 || true)
[ -n "$mirror" ] || { echo "fetch-cutlass: no Debian mirror in the apt configuration" >&2; exit 1; }

state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/etc"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie contrib" > "$state/etc/sources.list"
apt_opts=(-o Dir::Etc::SourceList="$state/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache" -o APT::Architecture=amd64
          -o Acquire::Languages=none -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" -qq update >&2
(cd "$state" && apt-get "${apt_opts[@]}" -qq download libcutlass-dev >&2)
mkdir -p "$dest"
dpkg -x "$state"/libcutlass-dev_*.deb "$dest"
cp "$state"/libcutlass-dev_*.deb "$dest/" 2>/dev/null || true
echo "$dest/usr/include"
