//go:build ignore

/* XDP acceleration of NodePort/LoadBalancer traffic from outside, on the
 * node's devices: a new or known connection to a backend on another node
 * is translated (DNAT to the backend, SNAT to this node) and sent back out
 * right from the driver (XDP_TX on the same device, XDP_REDIRECT to
 * another); so are the backends' replies. Everything else, traffic for
 * local backends, and DSR (--bpf-lb-mode=dsr), goes on to tc (from_netdev)
 * untouched. lumen_xdp_stats counts what it did. */
#include "lib/common.h"
#include "lib/maps.h"

/* lumen_config.lb_flags (lib/dsr.h). */
#define LB_F_DSR (1 << 0)

/* What the accelerator did, counted per CPU (packets, bytes) so that one
 * can tell XDP from tc handling NodePort traffic. */
#define XDP_STAT_FWD_TX 0       /* to a backend, back out of the same device */
#define XDP_STAT_FWD_REDIRECT 1 /* to a backend, through another device */
#define XDP_STAT_REV_TX 2       /* a backend's reply to the client, same device */
#define XDP_STAT_REV_REDIRECT 3 /* a backend's reply, another device */
#define XDP_STAT_TO_TC 4        /* a service packet left to tc (local backend, DSR, no route) */
#define XDP_STAT_MAX 8

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(max_entries, XDP_STAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lumen_xdp_stats SEC(".maps");

/* xcount counts one packet under stat (its first of two per action:
 * TX, else REDIRECT) and returns the action. */
static __always_inline int xcount(struct xdp_md *ctx, __u32 stat, int action)
{
	struct metrics_value *v;

	if (action == XDP_PASS)
		stat = XDP_STAT_TO_TC;
	else if (action != XDP_TX)
		stat++;
	v = bpf_map_lookup_elem(&lumen_xdp_stats, &stat);
	if (v) {
		v->packets++;
		v->bytes += ctx->data_end - ctx->data;
	}
	return action;
}

struct xpkt {
	__u8 family;
	__u8 proto;
	__u16 sport, dport; /* host order */
	__u8 src[16], dst[16];
	void *l3, *l4;
};

static __always_inline int xparse(struct xdp_md *ctx, struct xpkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u16 *ports;

	__builtin_memset(p, 0, sizeof(*p));
	if ((void *)(eth + 1) > data_end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
			return -1;
		p->family = AF_INET;
		p->proto = ip->protocol;
		__builtin_memcpy(p->src, &ip->saddr, 4);
		__builtin_memcpy(p->dst, &ip->daddr, 4);
		p->l3 = ip;
		p->l4 = ip + 1;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		p->family = AF_INET6;
		p->proto = ip6->nexthdr;
		__builtin_memcpy(p->src, &ip6->saddr, 16);
		__builtin_memcpy(p->dst, &ip6->daddr, 16);
		p->l3 = ip6;
		p->l4 = ip6 + 1;
	} else {
		return -1;
	}
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return -1;
	ports = p->l4;
	if ((void *)(ports + 2) > data_end)
		return -1;
	p->sport = bpf_ntohs(ports[0]);
	p->dport = bpf_ntohs(ports[1]);
	return 0;
}

static __always_inline __u16 csum_fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return ~c;
}

/* xrewrite sets source and destination (addresses and ports) and fixes the
 * checksums by difference, as XDP has no checksum helpers. */
static __always_inline int xrewrite(struct xdp_md *ctx, struct xpkt *p, const __u8 *src, __be16 sport,
				    const __u8 *dst, __be16 dport)
{
	void *data_end = (void *)(long)ctx->data_end;
	__be32 old[10] = {}, new[10] = {};
	__u16 *l4csum;
	__s64 diff;

	/* Old and new pseudo-header addresses and ports, as 32-bit words. */
	__builtin_memcpy(old, p->src, 16);
	__builtin_memcpy(old + 4, p->dst, 16);
	old[8] = bpf_htons(p->sport) | (__u32)bpf_htons(p->dport) << 16;
	__builtin_memcpy(new, src, 16);
	__builtin_memcpy(new + 4, dst, 16);
	new[8] = sport | (__u32)dport << 16;

	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = p->l4;
		if ((void *)(th + 1) > data_end)
			return -1;
		l4csum = &th->check;
	} else {
		struct udphdr *uh = p->l4;
		if ((void *)(uh + 1) > data_end)
			return -1;
		l4csum = &uh->check;
	}
	diff = bpf_csum_diff(old, sizeof(old), new, sizeof(new), 0);
	if (diff < 0)
		return -1;
	if (!(p->proto == IPPROTO_UDP && *l4csum == 0)) {
		__u32 c = (__u16)~*l4csum + (__u32)diff;
		*l4csum = csum_fold(c);
		if (p->proto == IPPROTO_UDP && *l4csum == 0)
			*l4csum = 0xffff;
	}
	if (p->family == AF_INET) {
		struct iphdr *ip = p->l3;

		if ((void *)(ip + 1) > data_end)
			return -1;
		__builtin_memcpy(&ip->saddr, src, 4);
		__builtin_memcpy(&ip->daddr, dst, 4);
		ip->check = 0;
		{
			__u32 c = 0;
			__u16 *w = (__u16 *)ip;
#pragma unroll
			for (int i = 0; i < 10; i++)
				c += w[i];
			ip->check = csum_fold(c);
		}
	} else {
		struct ipv6hdr *ip6 = p->l3;
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__builtin_memcpy(&ip6->saddr, src, 16);
		__builtin_memcpy(&ip6->daddr, dst, 16);
	}
	{
		__u16 *ports = p->l4;
		if ((void *)(ports + 2) > data_end)
			return -1;
		ports[0] = sport;
		ports[1] = dport;
	}
	__builtin_memcpy(p->src, src, 16);
	__builtin_memcpy(p->dst, dst, 16);
	p->sport = bpf_ntohs(sport);
	p->dport = bpf_ntohs(dport);
	return 0;
}

/* xforward routes the translated packet: XDP_TX when it leaves through the
 * device it came in on, XDP_REDIRECT to another device, XDP_PASS (to tc
 * and the stack) when the FIB cannot tell. */
static __always_inline int xforward(struct xdp_md *ctx, struct xpkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth = data;
	int rc;

	fib.ifindex = ctx->ingress_ifindex;
	fib.family = p->family;
	fib.l4_protocol = p->proto;
	fib.sport = bpf_htons(p->sport);
	fib.dport = bpf_htons(p->dport);
	if (p->family == AF_INET) {
		__builtin_memcpy(&fib.ipv4_src, p->src, 4);
		__builtin_memcpy(&fib.ipv4_dst, p->dst, 4);
	} else {
		__builtin_memcpy(fib.ipv6_src, p->src, 16);
		__builtin_memcpy(fib.ipv6_dst, p->dst, 16);
	}
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS || (void *)(eth + 1) > data_end)
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	if (fib.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib.ifindex, 0);
}

SEC("xdp")
int xdp_nodeport(struct xdp_md *ctx)
{
	struct xpkt p;
	struct lb_key key = {};
	struct lb_value *svc, *slot;
	struct lb_backend *b;
	struct snat_rev_key rk = {};
	struct snat_rev_value *rv, nrv = {};
	struct snat_fwd_key fk = {};
	struct endpoint_info *local;
	struct ip_key ik = {};
	__be16 *have, port = 0;
	__u8 node[16], client[16], baddr[16];
	__u32 id, h;

	if (xparse(ctx, &p) < 0)
		return XDP_PASS;

	/* A remote backend's reply to a client this node stands in for. */
	if (p.dport >= SNAT_PORT_MIN) {
		rk.family = p.family;
		rk.proto = p.proto;
		rk.port = bpf_htons(p.dport);
		rk.peer_port = bpf_htons(p.sport);
		__builtin_memcpy(rk.addr, p.dst, 16);
		__builtin_memcpy(rk.peer, p.src, 16);
		rv = bpf_map_lookup_elem(&lumen_snat_rev, &rk);
		if (rv && !node_sock_owns(ctx, p.family, p.proto, rk.addr, rk.port, rk.peer, rk.peer_port)) {
			struct lb_revnat *fe = bpf_map_lookup_elem(&lumen_lb_revnat, &rv->rev_nat);
			__u8 fa[16], ca[16];
			__be16 fp, cp;

			if (!fe)
				return XDP_PASS;
			rv->last_seen = bpf_ktime_get_ns();
			__builtin_memcpy(fa, fe->addr, 16);
			__builtin_memcpy(ca, rv->client, 16);
			fp = fe->port;
			cp = rv->client_port;
			if (xrewrite(ctx, &p, fa, fp, ca, cp) < 0)
				return XDP_PASS;
			return xcount(ctx, XDP_STAT_REV_TX, xforward(ctx, &p));
		}
	}

	key.family = p.family;
	key.proto = p.proto;
	key.dport = bpf_htons(p.dport);
	key.scope = LB_SCOPE_EXTERNAL;
	__builtin_memcpy(key.addr, p.dst, 16);
	svc = bpf_map_lookup_elem(&lumen_lb_services, &key);
	if (!svc || !(svc->flags & SVC_F_NODEPORT) || !svc->count)
		return XDP_PASS;

	/* Known flow: keep its backend and port. The node stands in for the
	 * client with its own address. */
	__builtin_memcpy(client, p.src, 16);
	{
		__u32 zero = 0;
		struct config *cfg = bpf_map_lookup_elem(&lumen_config, &zero);

		if (!cfg)
			return XDP_PASS;
		/* DSR (--bpf-lb-mode=dsr) is done in tc, which adds the option. */
		if (cfg->lb_flags & LB_F_DSR)
			return xcount(ctx, XDP_STAT_TO_TC, XDP_PASS);
		if (p.family == AF_INET)
			__builtin_memcpy(node, cfg->node_ip4, 16);
		else
			__builtin_memcpy(node, cfg->node_ip6, 16);
	}
	h = 2166136261u;
	{
		const __u32 *s = (const __u32 *)p.src;
#pragma unroll
		for (int i = 0; i < 4; i++)
			h = (h ^ s[i]) * 16777619u;
		h = (h ^ ((__u32)p.sport << 16 | p.dport)) * 16777619u;
		h = (h ^ p.proto) * 16777619u;
		h ^= h >> 15;
		h *= 0x2c1b3c6d;
		h ^= h >> 12;
	}
	id = 0;
	if (svc->flags & SVC_F_MAGLEV) {
		__u32 zero = 0, idx, *mid;
		struct config *cfg = bpf_map_lookup_elem(&lumen_config, &zero);
		void *table = bpf_map_lookup_elem(&lumen_lb_maglev, &svc->rev_nat);
		if (table && cfg && cfg->maglev_size) {
			idx = h % cfg->maglev_size;
			mid = bpf_map_lookup_elem(table, &idx);
			if (mid)
				id = *mid;
		}
	}
	if (!id) {
		/* Without Maglev, a flow must keep its slot: hash, not random. */
		key.slot = (h % svc->count) + 1;
		slot = bpf_map_lookup_elem(&lumen_lb_services, &key);
		if (!slot)
			return XDP_PASS;
		id = slot->backend_id;
	}
	b = bpf_map_lookup_elem(&lumen_lb_backends, &id);
	if (!b || b->family != p.family || (b->flags & BACKEND_F_TERMINATING))
		return XDP_PASS;
	/* Backends on this node: tc delivers them (conntrack, policy). */
	ik.family = p.family;
	__builtin_memcpy(ik.addr, b->addr, 16);
	local = bpf_map_lookup_elem(&lumen_endpoints, &ik);
	if (local)
		return xcount(ctx, XDP_STAT_TO_TC, XDP_PASS);

	fk.family = p.family;
	fk.proto = p.proto;
	fk.client_port = bpf_htons(p.sport);
	fk.peer_port = b->port;
	__builtin_memcpy(fk.client, client, 16);
	__builtin_memcpy(fk.peer, b->addr, 16);
	have = bpf_map_lookup_elem(&lumen_snat_fwd, &fk);
	rk.family = p.family;
	rk.proto = p.proto;
	rk.peer_port = b->port;
	__builtin_memcpy(rk.addr, node, 16);
	__builtin_memcpy(rk.peer, b->addr, 16);
	nrv.client_port = bpf_htons(p.sport);
	nrv.rev_nat = svc->rev_nat;
	nrv.last_seen = bpf_ktime_get_ns();
	__builtin_memcpy(nrv.client, client, 16);
	if (have) {
		port = *have;
		rk.port = port;
		bpf_map_update_elem(&lumen_snat_rev, &rk, &nrv, BPF_ANY);
	} else {
#pragma unroll
		for (int i = 0; i < 8; i++) {
			__be16 cand = bpf_htons(SNAT_PORT_MIN + (h + i * 7919) % SNAT_PORT_RANGE);
			rk.port = cand;
			if (node_sock_owns(ctx, p.family, p.proto, node, cand, rk.peer, rk.peer_port))
				continue;
			if (bpf_map_update_elem(&lumen_snat_rev, &rk, &nrv, BPF_NOEXIST) == 0) {
				port = cand;
				bpf_map_update_elem(&lumen_snat_fwd, &fk, &port, BPF_ANY);
				break;
			}
		}
		if (!port)
			return XDP_PASS;
	}
	__builtin_memcpy(baddr, b->addr, 16);
	if (xrewrite(ctx, &p, node, port, baddr, b->port) < 0)
		return XDP_PASS;
	return xcount(ctx, XDP_STAT_FWD_TX, xforward(ctx, &p));
}

/* An empty program for the receiving end of XDP_TX/REDIRECT on veth
 * peers, which deliver only when they have an XDP program themselves. */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char __license[] SEC("license") = "GPL";
