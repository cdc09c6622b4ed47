#!/usr/bin/env bash
# Builds a real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kubectl) and etcd from the Go module proxy into a cache, for the Kubernetes tests
# and `lumen lab up --k8s`. Does nothing when the binaries are already there.
# Cold build: ≈10-12 min and ≈3 GB RAM on 2 cores.
# Usage: hack/build-k8s.sh   (prints the bin directory on stdout)
set -euo pipefail
version=${K8S_VERSION:-v1.37.2}
cache=${LUMEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lumen}
out=$cache/k8s/$version/bin
bins=(kube-apiserver kube-controller-manager kubectl etcd)
have=1
for b in "${bins[@]}"; do [[ -x $out/$b ]] || have=0; done
if [[ $have == 1 ]]; then
	echo "$out"
	exit 0
fi
command -v go >/dev/null || { echo "build-k8s: go is required" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS=-mod=mod
# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the staging modules
# with local paths), so a wrapper module requires it and replaces each staging module
# by its published version (v0.X.Y for v1.X.Y), read from kubernetes' own go.mod.
echo "build-k8s: resolving k8s.io/kubernetes@$version" >&2
modfile=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
staging=v0.${version#v1.}
{
	echo "module lumen.local/k8s-build"
	echo
	echo "go 1.26"
	echo
	echo "require k8s.io/kubernetes $version"
	echo
	echo "replace ("
	sed -n '/^replace (/,/^)/p' "$modfile" | awk '$2 == "=>" {print $1}' |
		grep -v -e sample-cli-plugin -e sample-controller |
		while read -r m; do echo "	$m => $m $staging"; done
	echo ")"
} >go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
etcdv=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$modfile")
go get "k8s.io/kubernetes@$version" "go.etcd.io/etcd/server/v3@$etcdv" >&2
go mod tidy -e >&2 || true
echo "build-k8s: building (10-12 minutes when cold)" >&2
go build -o "$work/bin/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3 >&2
mv "$work/bin/server" "$work/bin/etcd"
for b in "${bins[@]}"; do mv "$work/bin/$b" "$out/$b"; done
echo "$out"
