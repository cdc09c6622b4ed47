#!/usr/bin/env bash
# Builds a real Kubernetes from the Go module proxy into a cache: the control
# plane (kube-apiserver, kube-controller-manager, kubectl, etcd) for the
# Kubernetes tests and `lumen lab up --k8s`, and the node side (kubelet,
# kube-scheduler) plus agnhost (the e2e test image's program, static) for
# `lumen lab up --kubelet`. Builds only what is missing.
# Cold build: ≈10-12 min and ≈3 GB RAM on 2 cores (the node side ≈2 min more).
# Usage: hack/build-k8s.sh          (prints the bin directory on stdout)
#        hack/build-k8s.sh --bin-dir (only prints it, builds nothing)
#        hack/build-k8s.sh --e2e     (also e2e.test, the conformance tests)
set -euo pipefail
version=${K8S_VERSION:-v1.37.2}
cache=${LUMEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lumen}
out=$cache/k8s/$version/bin
if [[ ${1:-} == --bin-dir ]]; then
	echo "$out"
	exit 0
fi
e2e=0
[[ ${1:-} == --e2e ]] && e2e=1
# binary -> Go package (etcd's main package is named server)
declare -A pkgs=(
	[kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
	[kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
	[kubectl]=k8s.io/kubernetes/cmd/kubectl
	[etcd]=go.etcd.io/etcd/server/v3
	[kubelet]=k8s.io/kubernetes/cmd/kubelet
	[kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
)
bins=(kube-apiserver kube-controller-manager kubectl etcd kubelet kube-scheduler)
missing=()
for b in "${bins[@]}"; do [[ -x $out/$b ]] || missing+=("$b"); done
need_agnhost=0
[[ -x $out/agnhost ]] || need_agnhost=1
need_e2e=0
[[ $e2e == 1 && ! -x $out/e2e.test ]] && need_e2e=1
if ((${#missing[@]} == 0)) && [[ $need_agnhost == 0 && $need_e2e == 0 ]]; then
	echo "$out"
	exit 0
fi
command -v go >/dev/null || { echo "build-k8s: go is required" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS=-mod=mod
# static everywhere (as Kubernetes' release builds): agnhost must be, as it
# runs alone in an image; one setting for all compiles the graph once.
export CGO_ENABLED=0
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
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/test/e2e"
	_ "k8s.io/kubernetes/test/images/agnhost"
)
GO
etcdv=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$modfile")
go get "k8s.io/kubernetes@$version" "go.etcd.io/etcd/server/v3@$etcdv" >&2
go mod tidy -e >&2 || true
if ((${#missing[@]})); then
	echo "build-k8s: building ${missing[*]} (10-12 minutes when cold)" >&2
	targets=()
	for b in "${missing[@]}"; do targets+=("${pkgs[$b]}"); done
	go build -o "$work/bin/" "${targets[@]}" >&2
	[[ -f $work/bin/server ]] && mv "$work/bin/server" "$work/bin/etcd"
	for b in "${missing[@]}"; do mv "$work/bin/$b" "$out/$b"; done
fi
if [[ $need_agnhost == 1 ]]; then
	echo "build-k8s: building agnhost" >&2
	go build -o "$work/agnhost" k8s.io/kubernetes/test/images/agnhost >&2
	mv "$work/agnhost" "$out/agnhost"
fi
if [[ $need_e2e == 1 ]]; then
	echo "build-k8s: building e2e.test (several minutes)" >&2
	go test -c -o "$work/e2e.test" k8s.io/kubernetes/test/e2e >&2
	mv "$work/e2e.test" "$out/e2e.test"
fi
echo "$out"
