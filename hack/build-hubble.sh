#!/usr/bin/env bash
# Builds the real hubble CLI (github.com/cilium/cilium/hubble) and the real
# hubble-relay (github.com/cilium/cilium/hubble-relay) into a cache so the
# Hubble compatibility tests can drive Lumen with the genuine client and relay.
# Does nothing when both binaries are already there. Cold build: ≈8 min, 1.5 GB RAM.
# Usage: hack/build-hubble.sh   (prints the hubble CLI's path on stdout; the
# relay is next to it, named hubble-relay)
set -euo pipefail
version=${HUBBLE_VERSION:-v1.20.2}
cache=${LUMEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lumen}
dir=$cache/hubble/$version
out=$dir/hubble
if [[ -x $out && -x $dir/hubble-relay ]]; then
	echo "$out"
	exit 0
fi
command -v go >/dev/null || { echo "build-hubble: go is required" >&2; exit 1; }
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# A throwaway module: the hubble CLI lives in the cilium module since v1.18
# (github.com/cilium/hubble is not available from the proxy); hubble-relay is
# in the same module.
export GOFLAGS=-mod=mod
go mod init lumen.local/hubble-build >/dev/null 2>&1
echo "build-hubble: fetching github.com/cilium/cilium/hubble{,-relay}@$version" >&2
go get -tool "github.com/cilium/cilium/hubble@$version" "github.com/cilium/cilium/hubble-relay@$version" >&2
echo "build-hubble: building (several minutes when cold)" >&2
# One build for both: with several main packages, -o names a directory and
# each binary is named after its package's last path element.
mkdir bin
go build -o bin/ github.com/cilium/cilium/hubble github.com/cilium/cilium/hubble-relay >&2
mv bin/hubble "$out.tmp" && mv "$out.tmp" "$out"
mv bin/hubble-relay "$dir/hubble-relay.tmp" && mv "$dir/hubble-relay.tmp" "$dir/hubble-relay"
echo "$out"
