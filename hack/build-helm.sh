#!/usr/bin/env bash
# Builds the real helm CLI (helm.sh/helm/v4) from the Go module proxy into a
# cache, for the chart tests (helm lint, template, install, upgrade) and the
# real-node lab. Does nothing when the binary is already there.
# Cold build: ≈3-5 min on 2 cores.
# Usage: hack/build-helm.sh   (prints the helm binary's path on stdout)
set -euo pipefail
version=${HELM_VERSION:-v4.3.2}
cache=${LUMEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lumen}
dir=$cache/helm/$version
out=$dir/helm
if [[ -x $out ]]; then
	echo "$out"
	exit 0
fi
command -v go >/dev/null || { echo "build-helm: go is required" >&2; exit 1; }
mkdir -p "$dir"
echo "build-helm: building helm.sh/helm/v4/cmd/helm@$version" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# CGO off: a static binary, like the release builds
CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN=$tmp go install -trimpath -ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$version" "helm.sh/helm/v4/cmd/helm@$version" >&2
mv "$tmp/helm" "$out.tmp" && mv "$out.tmp" "$out"
echo "$out"
