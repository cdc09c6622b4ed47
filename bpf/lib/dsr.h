/* Direct server return (--bpf-lb-mode=dsr, Cilium's semantics) for
 * NodePort, LoadBalancer and external IP traffic from outside whose backend
 * is on another node. The node that received it (A) only DNATs: the client
 * stays the source, and the service frontend travels to the backend's node
 * (B) in an IPv4 option or an IPv6 destination option, as Cilium encodes
 * them. B remembers the frontend per flow (lumen_dsr); the backend's replies
 * get it back as their source in from_container and leave B straight for
 * the client, never passing A.
 *
 * IPv4: the option stays in the packet (hosts ignore options they do not
 * know and TCP does not echo them). IPv6: B removes the extension header
 * before delivery, so that the pod side's parser finds the ports right
 * after the fixed header. TCP carries the frontend in the SYN only (B's
 * entry serves the rest of the connection), other protocols in every
 * packet. */
#pragma once
#include "lb.h"

#define DSR_OPT4_TYPE 0x9a /* copied into fragments, option 26 */
#define DSR_OPT4_LEN 8
#define DSR_OPT6_TYPE 0x1b /* top bits 00: hosts that do not know it skip it */
#define DSR_OPT6_LEN 20    /* address, port, padding */
#define DSR_EXT6_LEN 24    /* the whole destination options header */
#define NEXTHDR_DEST_ 60

/* skb->mark from from_netdev to to_container: a DSR flow's first packet;
 * its conntrack entry gets rev_nat REV_NAT_DSR. */
#define MARK_DSR 0x4c440000
#define REV_NAT_DSR 0xffffffff

/* lumen_config.lb_flags. */
#define LB_F_DSR (1 << 0) /* remote backends of NodePort traffic: DSR, not SNAT */

/* Cilium's reason: the option would make the packet exceed the MTU. */
#define DROP_FRAG_NEEDED 136

/* The reply tuple of a DSR flow, as the backend sends it. */
struct dsr_key {
	__u8 family;
	__u8 proto;
	__be16 backend_port;
	__be16 client_port;
	__u16 pad;
	__u8 backend[16];
	__u8 client[16];
};

/* The service frontend the client reached. */
struct dsr_value {
	__u8 addr[16];
	__be16 port;
	__u8 family;
	__u8 pad;
	__u32 pad2;
	__u64 last_seen;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct dsr_key);
	__type(value, struct dsr_value);
	__uint(max_entries, 131072);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lumen_dsr SEC(".maps");

/* The IPv6 destination options header A inserts. */
struct dsr_ext6 {
	__u8 nexthdr;
	__u8 hdrlen; /* 8-octet units after the first: 2 */
	__u8 opt_type;
	__u8 opt_len;
	__u8 addr[16];
	__be16 port;
	__u16 pad;
};

static __always_inline int dsr_enabled(void)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&lumen_config, &zero);

	return cfg && (cfg->lb_flags & LB_F_DSR);
}

/* dsr_add_opt puts the frontend (addr, port) into p, a packet already
 * DNATed to its backend, on node A. Returns 0 (also when the packet needs
 * no option: TCP after the SYN) or a drop reason. */
static __always_inline int dsr_add_opt(struct __sk_buff *skb, struct pkt *p, const __u8 *addr, __be16 port)
{
	__u32 mtu = 0;
	int grow = p->family == AF_INET ? DSR_OPT4_LEN : DSR_EXT6_LEN;

	if (p->proto == IPPROTO_TCP && !(p->tcp_flags & 0x02))
		return 0;
	/* Cilium answers with ICMP fragmentation needed; here the packet is
	 * dropped with that reason. Only non-TCP packets can be that large. */
	if (bpf_check_mtu(skb, 0, &mtu, grow, 0) != BPF_MTU_CHK_RET_SUCCESS)
		return DROP_FRAG_NEEDED;

	if (p->family == AF_INET) {
		__u8 opt[DSR_OPT4_LEN] = { DSR_OPT4_TYPE, DSR_OPT4_LEN };
		__u8 vihl;
		__be16 tot, old_tot;
		__u32 old_w, new_w;
		__s64 sum;

		if (bpf_skb_load_bytes(skb, p->l3_off, &vihl, 1) < 0 ||
		    bpf_skb_load_bytes(skb, p->l3_off + 2, &old_tot, 2) < 0)
			return DROP_INVALID;
		if ((vihl & 0xf) > 13)
			return DROP_INVALID; /* no room left for another option */
		__builtin_memcpy(opt + 2, &port, 2);
		__builtin_memcpy(opt + 4, addr, 4);
		tot = bpf_htons(bpf_ntohs(old_tot) + DSR_OPT4_LEN);
		/* The header checksum: the first word (version/IHL, TOS, total
		 * length) changes and the option's two words are added. */
		if (bpf_skb_load_bytes(skb, p->l3_off, &old_w, 4) < 0)
			return DROP_INVALID;
		new_w = old_w;
		((__u8 *)&new_w)[0] = vihl + (DSR_OPT4_LEN >> 2);
		__builtin_memcpy((__u8 *)&new_w + 2, &tot, 2);
		sum = bpf_csum_diff(&old_w, 4, &new_w, 4, 0);
		sum = bpf_csum_diff(0, 0, (__be32 *)opt, DSR_OPT4_LEN, sum);
		if (bpf_skb_adjust_room(skb, DSR_OPT4_LEN, BPF_ADJ_ROOM_NET, 0) < 0)
			return DROP_INVALID;
		if (bpf_skb_store_bytes(skb, p->l3_off, &new_w, 4, 0) < 0 ||
		    bpf_skb_store_bytes(skb, p->l3_off + sizeof(struct iphdr), opt, DSR_OPT4_LEN, 0) < 0)
			return DROP_WRITE_ERROR;
		if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), 0, sum, 0) < 0)
			return DROP_CSUM_L3;
	} else {
		struct dsr_ext6 ext = {
			.nexthdr = p->ip_nexthdr, /* the chain goes on after it */
			.hdrlen = DSR_EXT6_LEN / 8 - 1,
			.opt_type = DSR_OPT6_TYPE,
			.opt_len = DSR_OPT6_LEN,
			.port = port,
		};
		__u8 nh = NEXTHDR_DEST_;
		__be16 plen;

		if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_SCTP_)
			return DROP_INVALID;
		__builtin_memcpy(ext.addr, addr, 16);
		if (bpf_skb_load_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, payload_len), &plen, 2) < 0)
			return DROP_INVALID;
		plen = bpf_htons(bpf_ntohs(plen) + DSR_EXT6_LEN);
		if (bpf_skb_adjust_room(skb, DSR_EXT6_LEN, BPF_ADJ_ROOM_NET, 0) < 0)
			return DROP_INVALID;
		if (bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, payload_len), &plen, 2, 0) < 0 ||
		    bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, nexthdr), &nh, 1, 0) < 0 ||
		    bpf_skb_store_bytes(skb, p->l3_off + sizeof(struct ipv6hdr), &ext, sizeof(ext), 0) < 0)
			return DROP_WRITE_ERROR;
	}
	p->l4_off += grow;
	p->len += grow;
	if (p->family == AF_INET6)
		p->ip_nexthdr = NEXTHDR_DEST_;
	return 0;
}

/* dsr_record looks for the frontend A put into a packet for a local pod
 * (node B) and remembers it for the flow's replies. IPv6's extension
 * header is removed and p parsed again. Returns 1 when the packet was a
 * DSR one, 0 when not, or a negative drop reason. */
static __always_inline int dsr_record(struct __sk_buff *skb, struct pkt *p)
{
	struct dsr_key k = {};
	struct dsr_value v = {};

	if (p->family == AF_INET) {
		__u8 opt[DSR_OPT4_LEN];
		__u8 vihl;

		if (bpf_skb_load_bytes(skb, p->l3_off, &vihl, 1) < 0 || (vihl & 0xf) < 5 + (DSR_OPT4_LEN >> 2))
			return 0;
		if (bpf_skb_load_bytes(skb, p->l3_off + sizeof(struct iphdr), opt, DSR_OPT4_LEN) < 0)
			return 0;
		if (opt[0] != DSR_OPT4_TYPE || opt[1] != DSR_OPT4_LEN)
			return 0;
		__builtin_memcpy(&v.port, opt + 2, 2);
		__builtin_memcpy(v.addr, opt + 4, 4);
	} else {
		struct dsr_ext6 ext;
		__be16 plen;
		int ret;

		if (p->ip_nexthdr != NEXTHDR_DEST_)
			return 0;
		if (bpf_skb_load_bytes(skb, p->l3_off + sizeof(struct ipv6hdr), &ext, sizeof(ext)) < 0)
			return 0;
		if (ext.hdrlen != DSR_EXT6_LEN / 8 - 1 || ext.opt_type != DSR_OPT6_TYPE || ext.opt_len != DSR_OPT6_LEN)
			return 0;
		if (bpf_skb_load_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, payload_len), &plen, 2) < 0)
			return -DROP_INVALID;
		plen = bpf_htons(bpf_ntohs(plen) - DSR_EXT6_LEN);
		if (bpf_skb_adjust_room(skb, -DSR_EXT6_LEN, BPF_ADJ_ROOM_NET, 0) < 0)
			return -DROP_INVALID;
		if (bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, payload_len), &plen, 2, 0) < 0 ||
		    bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, nexthdr), &ext.nexthdr, 1, 0) < 0)
			return -DROP_WRITE_ERROR;
		ret = parse(skb, p);
		if (ret != PARSE_OK)
			return -DROP_INVALID;
		__builtin_memcpy(v.addr, ext.addr, 16);
		v.port = ext.port;
	}
	v.family = p->family;
	v.last_seen = bpf_ktime_get_ns();
	k.family = p->family;
	k.proto = p->proto;
	k.backend_port = bpf_htons(p->dport);
	k.client_port = bpf_htons(p->sport);
	__builtin_memcpy(k.backend, p->dst.addr, 16);
	__builtin_memcpy(k.client, p->src.addr, 16);
	bpf_map_update_elem(&lumen_dsr, &k, &v, BPF_ANY);
	return 1;
}

/* dsr_reverse gives a backend's reply of a DSR flow the frontend as its
 * source (node B, from_container). Returns 0 (also when the flow is no
 * longer known: the reply leaves as it is) or -1 on a rewrite failure. */
static __always_inline int dsr_reverse(struct __sk_buff *skb, struct pkt *p)
{
	struct dsr_key k = {};
	struct dsr_value *v;
	__u8 addr[16];

	k.family = p->family;
	k.proto = p->proto;
	k.backend_port = bpf_htons(p->sport);
	k.client_port = bpf_htons(p->dport);
	__builtin_memcpy(k.backend, p->src.addr, 16);
	__builtin_memcpy(k.client, p->dst.addr, 16);
	v = bpf_map_lookup_elem(&lumen_dsr, &k);
	if (!v)
		return 0;
	v->last_seen = bpf_ktime_get_ns();
	__builtin_memcpy(addr, v->addr, 16);
	return rewrite_addr(skb, p, 1, addr, v->port);
}
