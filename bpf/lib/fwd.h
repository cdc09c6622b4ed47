/* Forwarding: local delivery, native routing through the FIB, VXLAN. */
#pragma once
#include "events.h"

/* The VXLAN port (internal/tunnel.DefaultVXLANPort). */
#define TUNNEL_PORT 8472

/* ipcache_value.flags */
#define IPCACHE_F_NODE (1 << 0) /* a cluster node's address: tunnel_ip4 names that node
				 * (who may send from it through the overlay), it is not
				 * a tunnel to encapsulate to */

/* Drop reasons of the overlay's and the pods' tunnel checks (Cilium's
 * numbers; Go names in internal/datapath/reasons.go). */
#define DROP_ENCAP_PROHIBITED 170 /* a pod sending to a node's VXLAN port */
#define DROP_INVALID_IDENTITY 171 /* a VNI that is no sender's identity */
#define DROP_UNKNOWN_SENDER 172   /* encapsulated traffic from an address that is no node */

/* skb->mark carrying the source identity that from_overlay took from the
 * tunnel header to to_container (25 bits: local identities are 1 << 24 | n). */
#define MARK_IDENTITY 0xa4000000
#define MARK_IDENTITY_MASK 0xfe000000

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

/* tunnel_of returns the node to encapsulate to for an ipcache entry (network
 * order), 0 for none. A node's own addresses are reached by routing: their
 * tunnel_ip4 only says who owns them. */
static __always_inline __u32 tunnel_of(const struct ipcache_value *v)
{
	if (!v || (v->flags & IPCACHE_F_NODE))
		return 0;
	return v->tunnel_ip4;
}

/* plain_tunnel_src: in tunnel mode, p's source is another node's pod (or in
 * its pod CIDR), yet p did not come through the overlay. A pod-to-pod packet
 * between nodes is always encapsulated (and from_overlay checks its sender),
 * so such a packet to a pod's own address is forged, by anyone who can route
 * to the node: the ipcache would give it that pod's identity. (To a node
 * address, a remote pod's packets are routed plain: NodePort, host
 * services.) */
static __always_inline int plain_tunnel_src(struct pkt *p)
{
	struct config *cfg = get_config();

	return cfg && cfg->vxlan_ifindex && tunnel_of(lookup_ipcache(&p->src));
}

/* is_node_addr tells whether the ipcache knows v as a cluster node's address. */
static __always_inline int is_node_addr(const struct ipcache_value *v)
{
	return v && (v->flags & IPCACHE_F_NODE);
}

/* is_local_addr tells whether the node owns ip (a local route), whatever the
 * ipcache knows: every address of the node is the host, not only the ones
 * the agent announces. Broadcast and multicast destinations are not the
 * host's own. The FIB helper answers "not forwarded" for an address
 * without any route too, which then counts as local: a packet to it goes
 * nowhere but the stack, and nothing could answer a packet from it. A subprogram: inlined, it tips from_container over the
 * verifier's limits on the compiler's ctx pointer arithmetic. */
static __attribute__((noinline, unused)) int is_local_addr(struct __sk_buff *skb, const struct ip_key *ip)
{
	struct bpf_fib_lookup fib = {};

	fib.ifindex = skb->ingress_ifindex; /* tc ingress hooks only */
	if (ip->family == AF_INET) {
		if (ip->addr[0] >= 224)
			return 0;
		fib.family = AF_INET;
		__builtin_memcpy(&fib.ipv4_dst, ip->addr, 4);
	} else {
		if (ip->addr[0] == 0xff)
			return 0;
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_dst, ip->addr, 16);
	}
	return bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH) == BPF_FIB_LKUP_RET_NOT_FWDED;
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

/* csum_replace16 updates a 16-bit ones' complement checksum for one
 * changed 16-bit word (RFC 1624: HC' = ~(~HC + ~m + m')). */
static __always_inline __u16 csum_replace16(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* dec_ttl decrements the IPv4 TTL or IPv6 hop limit as a router does, by
 * direct packet access (cheaper than bpf_skb_store_bytes). Returns -1 when
 * the packet must not be forwarded (the stack then answers with ICMP time
 * exceeded), -2 when the header is out of reach. */
static __always_inline int dec_ttl(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (p->ttl <= 1)
		return -1;
	if (p->family == AF_INET) {
		struct iphdr *ip = data + sizeof(struct ethhdr);
		__u16 old, new;

		if ((void *)(ip + 1) > data_end)
			return -2;
		old = bpf_htons((__u16)ip->ttl << 8 | ip->protocol);
		ip->ttl--;
		new = bpf_htons((__u16)ip->ttl << 8 | ip->protocol);
		ip->check = csum_replace16(ip->check, old, new);
	} else {
		struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);

		if ((void *)(ip6 + 1) > data_end)
			return -2;
		ip6->hop_limit--;
	}
	p->ttl--;
	return 0;
}

static __always_inline int set_macs(struct __sk_buff *skb, const __u8 *dst, const __u8 *src)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	return 0;
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
 * VXLAN device; the VNI carries the source identity, as in Cilium
 * (from_overlay trusts it only from a known node). */
static __always_inline int encap(struct __sk_buff *skb, struct pkt *p, __u32 tunnel_ip4,
				 __u32 ifindex, __u16 ep_id, __u32 src_id, __u32 dst_id)
{
	struct bpf_tunnel_key key = {
		.remote_ipv4 = bpf_ntohl(tunnel_ip4),
		/* The sender's host is a remote node for the receiver, which
		 * accepts the host identity only from a node's own address. */
		.tunnel_id = src_id == ID_HOST ? ID_REMOTE_NODE : src_id,
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
