/* Forwarding: local delivery, native routing through the FIB, VXLAN. */
#pragma once
#include "events.h"

static __always_inline struct endpoint_info *lookup_endpoint(struct ip_key *ip)
{
	return bpf_map_lookup_elem(&lumen_endpoints, ip);
}

static __always_inline struct ipcache_value *lookup_ipcache(struct ip_key *ip)
{
	struct ipcache_key key = {
		.prefixlen = 32 + (ip->family == AF_INET ? 32 : 128),
		.family = ip->family,
	};

	__builtin_memcpy(key.addr, ip->addr, 16);
	return bpf_map_lookup_elem(&lumen_ipcache, &key);
}

/* identity_of returns the security identity of a remote address. */
static __always_inline __u32 identity_of(struct ip_key *ip)
{
	struct endpoint_info *ep = lookup_endpoint(ip);
	struct ipcache_value *v;

	if (ep)
		return ep->identity;
	v = lookup_ipcache(ip);
	return v ? v->identity : ID_WORLD;
}

/* dec_ttl decrements the IPv4 TTL or IPv6 hop limit as a router does.
 * Returns -1 when the packet must not be forwarded (the stack then answers
 * with ICMP time exceeded), or a negative errno on write failure. */
static __always_inline int dec_ttl(struct __sk_buff *skb, struct pkt *p)
{
	__u8 ttl = p->ttl;
	__u8 next = ttl - 1;

	if (ttl <= 1)
		return -1;
	if (p->family == AF_INET) {
		__u32 off = p->l3_off + offsetof(struct iphdr, ttl);
		if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check),
					bpf_htons(ttl << 8), bpf_htons(next << 8), 2) < 0)
			return -2;
		if (bpf_skb_store_bytes(skb, off, &next, 1, 0) < 0)
			return -2;
	} else {
		__u32 off = p->l3_off + offsetof(struct ipv6hdr, hop_limit);
		if (bpf_skb_store_bytes(skb, off, &next, 1, 0) < 0)
			return -2;
	}
	p->ttl = next;
	return 0;
}

static __always_inline int set_macs(struct __sk_buff *skb, const __u8 *dst, const __u8 *src)
{
	if (bpf_skb_store_bytes(skb, 0, dst, ETH_ALEN, 0) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, ETH_ALEN, src, ETH_ALEN, 0);
}

/* deliver_local hands the packet to a pod on this node through its
 * host-side veth, whose egress program (to_container) is the last hop. */
static __always_inline int deliver_local(struct __sk_buff *skb, struct pkt *p,
					 struct endpoint_info *dst, __u8 dir, __u16 ep_id,
					 __u32 src_id)
{
	int ret = dec_ttl(skb, p);

	if (ret == -1)
		return TC_ACT_OK;
	if (ret < 0 || set_macs(skb, dst->mac, dst->node_mac) < 0)
		return drop(skb, p, DROP_WRITE_ERROR, dir, ep_id, src_id, dst->identity);
	return bpf_redirect(dst->ifindex, 0);
}

/* encap sends the packet to another node through the collect-metadata
 * VXLAN device; the VNI carries the source identity, as in Cilium. */
static __always_inline int encap(struct __sk_buff *skb, struct pkt *p, __u32 tunnel_ip4,
				 __u32 ifindex, __u16 ep_id, __u32 src_id, __u32 dst_id)
{
	struct bpf_tunnel_key key = {
		.remote_ipv4 = bpf_ntohl(tunnel_ip4),
		.tunnel_id = src_id,
		.tunnel_ttl = 64,
	};

	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return drop(skb, p, DROP_WRITE_ERROR, DIR_EGRESS, ep_id, src_id, dst_id);
	trace(skb, p, OBS_TO_OVERLAY, DIR_EGRESS, ep_id, src_id, dst_id);
	return bpf_redirect(ifindex, 0);
}

/* fib_forward routes the packet as the kernel would, without the trip
 * through the stack: FIB lookup, then redirect with the resolved MACs or
 * let the kernel's neighbour subsystem fill them in. Anything the FIB
 * cannot forward (local addresses, no route) goes to the stack. */
static __always_inline int fib_forward(struct __sk_buff *skb, struct pkt *p, __u16 ep_id,
				       __u32 src_id, __u32 dst_id)
{
	struct bpf_fib_lookup fib = {};
	int rc, ret;

	fib.ifindex = skb->ingress_ifindex;
	fib.l4_protocol = p->proto;
	fib.sport = bpf_htons(p->sport);
	fib.dport = bpf_htons(p->dport);
	fib.tot_len = p->len - p->l3_off;
	if (p->family == AF_INET) {
		fib.family = AF_INET;
		__builtin_memcpy(&fib.ipv4_src, p->src.addr, 4);
		__builtin_memcpy(&fib.ipv4_dst, p->dst.addr, 4);
	} else {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, p->src.addr, 16);
		__builtin_memcpy(fib.ipv6_dst, p->dst.addr, 16);
	}

	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) {
		trace(skb, p, OBS_TO_STACK, DIR_EGRESS, ep_id, src_id, dst_id);
		return TC_ACT_OK;
	}
	ret = dec_ttl(skb, p);
	if (ret == -1)
		return TC_ACT_OK;
	if (ret < 0)
		return drop(skb, p, DROP_WRITE_ERROR, DIR_EGRESS, ep_id, src_id, dst_id);
	trace(skb, p, OBS_TO_NETWORK, DIR_EGRESS, ep_id, src_id, dst_id);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (set_macs(skb, fib.dmac, fib.smac) < 0)
			return drop(skb, p, DROP_WRITE_ERROR, DIR_EGRESS, ep_id, src_id, dst_id);
		return bpf_redirect(fib.ifindex, 0);
	}
	{
		struct bpf_redir_neigh nh = {};

		if (fib.family == AF_INET) {
			nh.nh_family = AF_INET;
			nh.ipv4_nh = fib.ipv4_dst;
		} else {
			nh.nh_family = AF_INET6;
			__builtin_memcpy(nh.ipv6_nh, fib.ipv6_dst, 16);
		}
		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	}
}
