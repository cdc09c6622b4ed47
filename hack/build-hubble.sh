#!/usr/bin/env bash
# Builds the real hubble CLI (github.com/cilium/cilium/hubble) into a cache so
# the Hubble compatibility tests can drive Lumen with the genuine client.
# Does nothing when the binary is already there. Cold build: ≈8 min, 1.5 GB RAM.
# Usage: hack/build-hubble.sh   (prints the binary's path on stdout)
set -euo pipefail
version=${HUBBLE_VERSION:-v1.20.2}
cache=${LUMEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lumen}
out=$cache/hubble/$version/hubble
if [[ -x $out ]]; then
	echo "$out"
	exit 0
fi
command -v go >/dev/null || { echo "build-hubble: go is required" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# A throwaway module: the hubble CLI lives in the cilium module since v1.18
# (github.com/cilium/hubble is not available from the proxy).
export GOFLAGS=-mod=mod
go mod init lumen.local/hubble-build >/dev/null 2>&1
echo "build-hubble: fetching github.com/cilium/cilium/hubble@$version" >&2
go get -tool "github.com/cilium/cilium/hubble@$version" >&2
echo "build-hubble: building (several minutes when cold)" >&2
go build -o "$out.tmp" github.com/cilium/cilium/hubble >&2
mv "$out.tmp" "$out"
echo "$out"
