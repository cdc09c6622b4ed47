//go:build ignore

/* Socket-level load balancing (cgroup v2 socket address hooks): a connect()
 * or sendmsg() to a service frontend is given a backend's address before
 * any packet exists, so no per-packet NAT is needed; recvmsg() and
 * getpeername() show the frontend again. */
#include "lib/lb.h"

static __always_inline int sock_lb_applies(void *ctx)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&lumen_config, &zero);

	if (!cfg)
		return 0;
	/* --bpf-lb-sock-hostns-only: pods take the per-packet path, so that
	 * proxies in them see the original destination. */
	if (cfg->sock_hostns_only && bpf_get_netns_cookie(ctx) != cfg->host_netns_cookie)
		return 0;
	return 1;
}

/* sock_xlate rewrites a destination {addr, port} (network order) in place
 * when it is a service frontend, and remembers the translation. */
static __always_inline void sock_xlate(struct bpf_sock_addr *ctx, __u8 family, __u8 *addr, __u32 *port)
{
	struct lb_key key;
	struct lb_value *svc;
	struct lb_backend *b;
	struct lb_sock_key sk = {};
	struct lb_revnat rn = {};
	struct pkt p = {};
	__u8 proto = ctx->protocol;
	__u32 id;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_SCTP_)
		return;
	svc = lb_lookup(&key, family, proto, addr, bpf_ntohs((__u16)*port), 1);
	if (!svc)
		return;
	/* No source address yet: the socket cookie spreads connections, and
	 * the network namespace stands for the client (session affinity is
	 * per pod, as Cilium keys it by netns cookie). */
	p.family = family;
	p.proto = proto;
	p.sport = (__u16)bpf_get_socket_cookie(ctx);
	{
		__u64 ns = bpf_get_netns_cookie(ctx);

		__builtin_memcpy(p.src.addr, &ns, sizeof(ns));
	}
	p.dport = bpf_ntohs((__u16)*port);
	id = lb_select(&key, svc, &p);
	if (!id)
		return;
	b = bpf_map_lookup_elem(&lumen_lb_backends, &id);
	if (!b || b->family != family)
		return;
	rn.family = family;
	rn.port = (__u16)*port;
	__builtin_memcpy(rn.addr, addr, 16);
	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.family = family;
	sk.port = b->port;
	__builtin_memcpy(sk.addr, b->addr, 16);
	bpf_map_update_elem(&lumen_lb_sock_revnat, &sk, &rn, BPF_ANY);
	__builtin_memcpy(addr, b->addr, 16);
	*port = b->port;
}

/* sock_rev shows the frontend instead of the backend a socket talks to. */
static __always_inline void sock_rev(struct bpf_sock_addr *ctx, __u8 family, __u8 *addr, __u32 *port)
{
	struct lb_sock_key sk = {};
	struct lb_revnat *rn;

	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.family = family;
	sk.port = (__u16)*port;
	__builtin_memcpy(sk.addr, addr, 16);
	rn = bpf_map_lookup_elem(&lumen_lb_sock_revnat, &sk);
	if (!rn)
		return;
	__builtin_memcpy(addr, rn->addr, 16);
	*port = rn->port;
}

static __always_inline void v4_do(struct bpf_sock_addr *ctx, int reverse)
{
	__u8 addr[16] = {};
	__u32 ip = ctx->user_ip4, port = ctx->user_port;

	if (!sock_lb_applies(ctx))
		return;
	__builtin_memcpy(addr, &ip, 4);
	if (reverse)
		sock_rev(ctx, AF_INET, addr, &port);
	else
		sock_xlate(ctx, AF_INET, addr, &port);
	__builtin_memcpy(&ip, addr, 4);
	ctx->user_ip4 = ip;
	ctx->user_port = port;
}

static __always_inline void v6_do(struct bpf_sock_addr *ctx, int reverse)
{
	__u8 addr[16];
	__u32 w[4], port = ctx->user_port;

	if (!sock_lb_applies(ctx))
		return;
	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	__builtin_memcpy(addr, w, 16);
	if (reverse)
		sock_rev(ctx, AF_INET6, addr, &port);
	else
		sock_xlate(ctx, AF_INET6, addr, &port);
	__builtin_memcpy(w, addr, 16);
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = port;
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	v4_do(ctx, 0);
	return 1;
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	v4_do(ctx, 0);
	return 1;
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	v4_do(ctx, 1);
	return 1;
}

SEC("cgroup/getpeername4")
int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	v4_do(ctx, 1);
	return 1;
}

SEC("cgroup/connect6")
int sock_connect6(struct bpf_sock_addr *ctx)
{
	v6_do(ctx, 0);
	return 1;
}

SEC("cgroup/sendmsg6")
int sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	v6_do(ctx, 0);
	return 1;
}

SEC("cgroup/recvmsg6")
int sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	v6_do(ctx, 1);
	return 1;
}

SEC("cgroup/getpeername6")
int sock_getpeername6(struct bpf_sock_addr *ctx)
{
	v6_do(ctx, 1);
	return 1;
}

char __license[] SEC("license") = "GPL";
