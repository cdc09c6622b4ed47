#!/usr/bin/env bash
# Installs the system packages Lumen needs to build and test (Debian/Ubuntu).
# Quick when everything is already there.
set -euo pipefail
pkgs=(clang llvm libbpf-dev iproute2 iputils-ping ethtool iperf3)
missing=()
for p in "${pkgs[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "Go 1.26 or newer is required (https://go.dev/dl)"; exit 1; }
