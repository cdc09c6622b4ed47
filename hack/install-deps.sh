#!/usr/bin/env bash
# Installs the system packages Lumen needs to build and test (Debian/Ubuntu).
# Quick when everything is already there.
set -euo pipefail
# bird2 and frr: the lab's BGP routers (run inside lab namespaces only).
# containerd, runc, containernetworking-plugins: the real-node lab's container
# runtime (one containerd per lab node, private dirs) and the loopback plugin.
# netcat-openbsd, bind9-dnsutils (dig, nslookup), curl, wget: put into the e2e
# test images by make image.
pkgs=(clang llvm libbpf-dev iproute2 iputils-ping ethtool iperf3 bird2 frr iptables containerd runc containernetworking-plugins netcat-openbsd bind9-dnsutils curl wget)
missing=()
for p in "${pkgs[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${missing[@]}" >/dev/null
	# The frr package starts its service on the host where systemd runs; the lab
	# runs its own FRR daemons in namespaces, so a freshly installed one is stopped.
	if [[ " ${missing[*]} " == *" frr "* ]] && [ -d /run/systemd/system ]; then
		systemctl disable --now frr >/dev/null 2>&1 || true
	fi
	# likewise the host containerd service: lab nodes run their own
	if [[ " ${missing[*]} " == *" containerd "* ]] && [ -d /run/systemd/system ]; then
		systemctl disable --now containerd >/dev/null 2>&1 || true
	fi
fi
command -v go >/dev/null || { echo "Go 1.26 or newer is required (https://go.dev/dl)"; exit 1; }
