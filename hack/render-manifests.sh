#!/usr/bin/env bash
# Renders the Helm chart to plain manifests (deploy/manifests/lumen.yaml,
# default values, namespace kube-system, CRDs included) with the real helm
# CLI (hack/build-helm.sh). CI checks the committed file is current.
# Usage: hack/render-manifests.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
helm=$(./hack/build-helm.sh)
out=${1:-deploy/manifests/lumen.yaml}
mkdir -p "$(dirname "$out")"
{
	echo "# Rendered from deploy/helm/lumen by hack/render-manifests.sh (helm template"
	echo "# --include-crds, default values, namespace kube-system): do not edit."
	echo "# Without kube-proxy, set the API server's address first (Cilium's"
	echo "# k8sServiceHost/k8sServicePort): helm template ... --set k8sServiceHost=H."
	"$helm" template lumen deploy/helm/lumen --namespace kube-system --include-crds
} >"$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
