#!/usr/bin/env bash
# Builds CoreDNS (github.com/coredns/coredns) from the Go module proxy into a
# cache: the cluster DNS server (kube-dns) of the real-node lab. Only the
# plugins a cluster's Corefile uses are compiled in (the cloud backends such as
# route53/azure/clouddns would double the build), through CoreDNS's own
# coremain like its release main. Does nothing when the binary is there.
# Cold build: ≈3-5 min on 2 cores (client-go is shared with build-k8s.sh's cache).
# Usage: hack/build-coredns.sh        (prints the coredns binary's path on stdout)
#        hack/build-coredns.sh --path (only prints it, builds nothing)
set -euo pipefail
version=${COREDNS_VERSION:-v1.15.0}
cache=${LUMEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lumen}
dir=$cache/coredns/$version
out=$dir/coredns
if [[ ${1:-} == --path ]]; then
	echo "$out"
	exit 0
fi
if [[ -x $out ]]; then
	echo "$out"
	exit 0
fi
command -v go >/dev/null || { echo "build-coredns: go is required" >&2; exit 1; }
mkdir -p "$dir"
echo "build-coredns: building github.com/coredns/coredns@$version" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS=-mod=mod CGO_ENABLED=0
cat >go.mod <<MOD
module lumen.local/coredns-build

go 1.26

require github.com/coredns/coredns $version
MOD
# The plugin set of the kubeadm/Cilium default Corefile plus what the e2e DNS
# tests' pods may ask for (hosts, rewrite, template, whoami).
cat >main.go <<'GO'
package main

import (
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/rewrite"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
GO
go mod tidy >&2
go build -trimpath -ldflags="-s -w" -o "$work/coredns" . >&2
mv "$work/coredns" "$out.tmp" && mv "$out.tmp" "$out"
echo "$out"
