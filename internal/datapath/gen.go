// Package datapath loads Lumen's eBPF programs, pins their maps and links,
// and gives typed access to the maps. The bpf2go output (lxc_bpfel.go,
// host_bpfel.go, overlay_bpfel.go and their .o files) is committed, so
// building needs only Go; `go generate` rebuilds it with clang.
package datapath

//go:generate go tool bpf2go -tags linux -target bpfel -type event -type endpoint_info -type ip_key -type ipcache_key -type ipcache_value -type metrics_value -type config -type policy_key -type policy_value -type ct_key -type ct_entry -type lb_key -type lb_value -type lb_backend -type lb_revnat lxc ../../bpf/lxc.c -- -O2 -g -Wall -Werror -I../../bpf -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -target bpfel host ../../bpf/host.c -- -O2 -g -Wall -Werror -I../../bpf -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -target bpfel sock ../../bpf/sock.c -- -O2 -g -Wall -Werror -I../../bpf -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -target bpfel xdp ../../bpf/xdp.c -- -O2 -g -Wall -Werror -I../../bpf -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -target bpfel overlay ../../bpf/overlay.c -- -O2 -g -Wall -Werror -I../../bpf -I/usr/include/x86_64-linux-gnu
