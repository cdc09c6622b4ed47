/* SNAT for NodePort traffic from outside to a backend on another node: the
 * backend answers to this node, which restores the client and the
 * frontend on the way back. */
#pragma once
#include "lb.h"

/* snat_port returns the node port standing in for the client of p (its
 * source) towards its backend (its destination), allocating one if the
 * flow has none. 0 when no port is free. A port one of the node's own
 * connections to the same backend uses is never picked (see
 * node_sock_owns). */
static __always_inline __be16 snat_port(struct __sk_buff *skb, struct pkt *p, const __u8 *node, __u32 rev_nat, const __u8 *client,
					__be16 client_port)
{
	struct snat_fwd_key fk = {};
	struct snat_rev_key rk = {};
	struct snat_rev_value rv = {};
	__be16 *have, port;
	__u32 h;

	fk.family = p->family;
	fk.proto = p->proto;
	fk.client_port = client_port;
	fk.peer_port = bpf_htons(p->dport);
	__builtin_memcpy(fk.client, client, 16);
	__builtin_memcpy(fk.peer, p->dst.addr, 16);
	have = bpf_map_lookup_elem(&lumen_snat_fwd, &fk);

	rk.family = p->family;
	rk.proto = p->proto;
	rk.peer_port = fk.peer_port;
	__builtin_memcpy(rk.addr, node, 16);
	__builtin_memcpy(rk.peer, p->dst.addr, 16);
	rv.client_port = client_port;
	rv.rev_nat = rev_nat;
	rv.last_seen = bpf_ktime_get_ns();
	__builtin_memcpy(rv.client, client, 16);
	if (have) {
		rk.port = *have;
		bpf_map_update_elem(&lumen_snat_rev, &rk, &rv, BPF_ANY);
		return *have;
	}
	h = flow_hash(p);
#pragma unroll
	for (int i = 0; i < 8; i++) {
		port = bpf_htons(SNAT_PORT_MIN + (h + i * 7919) % SNAT_PORT_RANGE);
		rk.port = port;
		if (node_sock_owns(skb, p->family, p->proto, node, port, p->dst.addr, fk.peer_port))
			continue;
		if (bpf_map_update_elem(&lumen_snat_rev, &rk, &rv, BPF_NOEXIST) == 0) {
			bpf_map_update_elem(&lumen_snat_fwd, &fk, &port, BPF_ANY);
			return port;
		}
	}
	return 0;
}

/* snat_reverse restores a backend's reply: the client as destination and
 * the frontend as source. Returns 1 when p was such a reply, 0 when not
 * (also when one of the node's own sockets holds the tuple: the reply is
 * its), negative on a rewrite failure. */
static __always_inline int snat_reverse(struct __sk_buff *skb, struct pkt *p)
{
	struct snat_rev_key rk = {};
	struct snat_rev_value *rv;
	__u8 client[16];
	__be16 client_port;

	if (p->dport < SNAT_PORT_MIN)
		return 0;
	rk.family = p->family;
	rk.proto = p->proto;
	rk.port = bpf_htons(p->dport);
	rk.peer_port = bpf_htons(p->sport);
	__builtin_memcpy(rk.addr, p->dst.addr, 16);
	__builtin_memcpy(rk.peer, p->src.addr, 16);
	rv = bpf_map_lookup_elem(&lumen_snat_rev, &rk);
	if (!rv)
		return 0;
	if (node_sock_owns(skb, p->family, p->proto, rk.addr, rk.port, rk.peer, rk.peer_port))
		return 0;
	rv->last_seen = bpf_ktime_get_ns();
	__builtin_memcpy(client, rv->client, 16);
	client_port = rv->client_port;
	if (rewrite_addr(skb, p, 0, client, client_port) < 0)
		return -1;
	if (lb_rev_nat(skb, p, rv->rev_nat) < 0)
		return -1;
	return 1;
}
