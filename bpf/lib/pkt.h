/* Packet parsing: Ethernet + IPv4/IPv6 (its extension header chain) + the
 * L4 ports Lumen needs; fragments get their first fragment's (frag.h).
 * Every program parses with parse(), so policy, conntrack and load
 * balancing see the same protocol and ports the receiving stack will. */
#pragma once
#include "common.h"
#include "frag.h"

#define IPPROTO_SCTP_ 132
#define PARSE_OK 0
#define PARSE_PASS 1 /* not IP (ARP, LLDP, ...): leave it to the stack */

/* Connection tracking status of a packet (set by ct_lookup). */
#define CT_UNKNOWN 0 /* not looked up at this hook */
#define CT_NEW 1
#define CT_ESTABLISHED 2
#define CT_REPLY 3

struct pkt {
	__u8 family;
	__u8 proto;
	__u8 tcp_flags;
	__u8 ttl;
	__u8 ct_status;
	__u8 ct_first; /* first packet of this direction of the connection */
	__u8 ct_new_flags; /* TCP flags this direction of the connection had not shown before */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 frag;       /* PKT_FRAG* */
	__u8 ip_nexthdr; /* IPv6: the fixed header's next header (the first extension header) */
	__u8 pad[3];
	__u16 sport;
	__u16 dport;
	__u32 l3_off;
	__u32 l4_off;
	__u32 len;
	__u32 rev_nat; /* set by ct_lookup on replies of load-balanced connections */
	struct ip_key src;
	struct ip_key dst;
};

struct sctp_ports {
	__be16 source;
	__be16 dest;
};

static __always_inline int parse_l4(struct __sk_buff *skb, struct pkt *p, __u32 l4_off)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	p->l4_off = l4_off;
	/* Bounded for the verifier: extension headers end well before. */
	if (l4_off > 0x7fff)
		return DROP_INVALID;
	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = data + l4_off;
		if ((void *)(th + 1) > data_end)
			return DROP_INVALID;
		p->sport = bpf_ntohs(th->source);
		p->dport = bpf_ntohs(th->dest);
		/* The flags byte follows the data offset byte. */
		p->tcp_flags = ((__u8 *)th)[13];
		break;
	}
	case IPPROTO_ICMP:
	case 58: { /* ICMPv6 */
		/* Echo request/reply carry an identifier: use it as both ports so
		 * that the reply's reversed tuple matches the request's. */
		__u8 *icmp = data + l4_off;
		if ((void *)(icmp + 8) > data_end)
			return DROP_INVALID;
		p->icmp_type = icmp[0];
		p->icmp_code = icmp[1];
		if ((p->proto == IPPROTO_ICMP && (icmp[0] == 8 || icmp[0] == 0)) ||
		    (p->proto == 58 && (icmp[0] == 128 || icmp[0] == 129))) {
			p->sport = (__u16)icmp[4] << 8 | icmp[5];
			p->dport = p->sport;
		}
		break;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP_: {
		/* UDP and SCTP both start with source and destination port;
		 * the whole header (8, 12 bytes) must be there. */
		struct sctp_ports *ports = data + l4_off;
		if ((void *)(ports + 1) > data_end ||
		    data + l4_off + (p->proto == IPPROTO_UDP ? 8 : 12) > data_end)
			return DROP_INVALID;
		p->sport = bpf_ntohs(ports->source);
		p->dport = bpf_ntohs(ports->dest);
		break;
	}
	}
	return PARSE_OK;
}

/* frag_record remembers a first fragment's L4 view for the later ones.
 * l4_end: bytes of the fragmentable part up to the end of the L4 header. */
static __always_inline void frag_record(struct pkt *p, struct frag_key *k, __u32 l4_end)
{
	struct frag_value v = {
		.sport = p->sport,
		.dport = p->dport,
		.l4_end = l4_end,
		.proto = p->proto,
		.icmp_type = p->icmp_type,
		.icmp_code = p->icmp_code,
	};

	bpf_map_update_elem(&lumen_frag, k, &v, BPF_ANY);
}

/* frag_later fills a later fragment (payload at byte offset off of the
 * fragmentable part) from its first fragment's entry. */
static __always_inline int frag_later(struct pkt *p, struct frag_key *k, __u32 off)
{
	struct frag_value *v = bpf_map_lookup_elem(&lumen_frag, k);

	p->frag = PKT_FRAG | PKT_FRAG_LATER;
	if (!v)
		return DROP_FRAG_NOT_FOUND;
	/* Overlapping the first fragment's L4 header: could change what the
	 * verdict was taken on (RFC 1858). */
	if (off < v->l4_end)
		return DROP_FRAG_NOSUPPORT;
	p->proto = v->proto;
	p->sport = v->sport;
	p->dport = v->dport;
	p->icmp_type = v->icmp_type;
	p->icmp_code = v->icmp_code;
	return PARSE_OK;
}

static __always_inline void frag_key_fill(struct __sk_buff *skb, struct frag_key *k, const struct pkt *p, __u8 proto,
					  __u32 id)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->ifindex = skb->ifindex;
	k->family = p->family;
	k->proto = proto;
	k->id = id;
	__builtin_memcpy(k->saddr, p->src.addr, 16);
	__builtin_memcpy(k->daddr, p->dst.addr, 16);
}

/* IPv6 extension headers (RFC 8200, 4302). ESP (50) and No Next Header
 * (59) end the walk like an upper-layer protocol: nothing to read after. */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
/* Longest chain walked; longer ones are dropped (DROP_INVALID_EXTHDR).
 * Real traffic has at most a few (hop-by-hop, routing, fragment, AH,
 * destination options twice). */
#define IPV6_MAX_EXT 8

static __always_inline int ipv6_is_ext(__u8 nh)
{
	return nh == NEXTHDR_HOP || nh == NEXTHDR_ROUTING || nh == NEXTHDR_FRAGMENT || nh == NEXTHDR_AUTH ||
	       nh == NEXTHDR_DEST;
}

/* parse_ipv6 walks the extension header chain after the fixed header to
 * the upper-layer header. A truncated chain, one longer than IPV6_MAX_EXT,
 * or a routing header with segments left (the final destination is not the
 * one policy looked at) is dropped. */
static __always_inline int parse_ipv6(struct __sk_buff *skb, struct pkt *p, __u8 nh, __u32 ip_end)
{
	struct frag_key fk = {};
	__u32 off = p->l3_off + sizeof(struct ipv6hdr);
	__u32 frag_start = 0;
	int ret;

#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT; i++) {
		__u8 h[8];
		__u16 fo;
		__u32 id;

		if (!ipv6_is_ext(nh))
			break;
		/* Every extension header is at least 8 bytes long. */
		if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
			return DROP_INVALID_EXTHDR;
		switch (nh) {
		case NEXTHDR_FRAGMENT:
			fo = (__u16)h[2] << 8 | h[3];
			__builtin_memcpy(&id, h + 4, 4);
			off += 8;
			/* An atomic fragment (offset 0, no more fragments) is a
			 * whole datagram (RFC 6946). */
			if (!(fo & 0xfff9))
				break;
			if (p->frag)
				return DROP_FRAG_NOSUPPORT; /* a fragment inside a fragment */
			p->frag = PKT_FRAG;
			frag_key_fill(skb, &fk, p, h[0], id);
			frag_start = off;
			if (fo & 0xfff8)
				return frag_later(p, &fk, fo & 0xfff8);
			break;
		case NEXTHDR_AUTH:
			off += ((__u32)h[1] + 2) * 4;
			break;
		case NEXTHDR_ROUTING:
			if (h[3])
				return DROP_INVALID_EXTHDR;
			/* fall through */
		default:
			off += ((__u32)h[1] + 1) * 8;
		}
		nh = h[0];
	}
	/* Longer than the bound, or the last header runs past the packet. */
	if (ipv6_is_ext(nh) || off > skb->len)
		return DROP_INVALID_EXTHDR;
	p->proto = nh;
	ret = parse_l4(skb, p, off);
	if (ret != PARSE_OK)
		return ret;
	if (p->frag) {
		/* The L4 header must be the fragment's own, not link padding. */
		if (off + l4_min_len(nh) > ip_end)
			return DROP_INVALID;
		frag_record(p, &fk, off - frag_start + l4_min_len(nh));
	}
	return PARSE_OK;
}

/* parse fills p from skb. Returns PARSE_OK, PARSE_PASS or a drop reason;
 * on a drop reason, the addresses (and what was parsed) are filled in for
 * the drop event. */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	__builtin_memset(p, 0, sizeof(*p));
	p->len = skb->len;
	if ((void *)(eth + 1) > data_end)
		return DROP_INVALID;
	p->l3_off = sizeof(*eth);

	/* A VLAN tag still in the frame: the kernel pops one tag into
	 * skb->vlan_tci before TCX, so this is a second, stacked one. A
	 * priority tag (VID 0) on a device's own traffic is stripped by the
	 * stack, which then takes the inner packet as the device's own: let
	 * through as "not IP", it would skip every check here. A tag with a
	 * VLAN id is a VLAN device's (or dropped as for another host). */
	if (eth->h_proto == bpf_htons(ETH_P_8021Q) || eth->h_proto == bpf_htons(ETH_P_8021AD)) {
		__be16 *tci = (void *)(eth + 1);

		if ((void *)(tci + 2) > data_end)
			return DROP_INVALID;
		if (!(bpf_ntohs(*tci) & 0xfff) && !(skb->vlan_present && (skb->vlan_tci & 0xfff)))
			return DROP_UNSUPPORTED_L3;
		return PARSE_PASS;
	}

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		struct frag_key fk;
		__u16 fo;
		int ret;

		if ((void *)(ip + 1) > data_end)
			return DROP_INVALID;
		if (ip->ihl < 5)
			return DROP_INVALID;
		p->family = AF_INET;
		p->proto = ip->protocol;
		p->ttl = ip->ttl;
		p->src.family = AF_INET;
		p->dst.family = AF_INET;
		__builtin_memcpy(p->src.addr, &ip->saddr, 4);
		__builtin_memcpy(p->dst.addr, &ip->daddr, 4);
		fo = bpf_ntohs(ip->frag_off);
		if (!(fo & 0x3fff)) /* neither an offset nor more fragments */
			return parse_l4(skb, p, p->l3_off + ip->ihl * 4);
		frag_key_fill(skb, &fk, p, ip->protocol, ip->id);
		if (fo & 0x1fff)
			return frag_later(p, &fk, (__u32)(fo & 0x1fff) * 8);
		p->frag = PKT_FRAG;
		ret = parse_l4(skb, p, p->l3_off + ip->ihl * 4);
		if (ret != PARSE_OK)
			return ret;
		/* The L4 header must be the fragment's own, not link padding. */
		if (p->l4_off + l4_min_len(p->proto) > p->l3_off + bpf_ntohs(ip->tot_len))
			return DROP_INVALID;
		frag_record(p, &fk, l4_min_len(p->proto));
		return PARSE_OK;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return DROP_INVALID;
		p->family = AF_INET6;
		p->proto = ip6->nexthdr;
		p->ip_nexthdr = ip6->nexthdr;
		p->ttl = ip6->hop_limit;
		p->src.family = AF_INET6;
		p->dst.family = AF_INET6;
		__builtin_memcpy(p->src.addr, &ip6->saddr, 16);
		__builtin_memcpy(p->dst.addr, &ip6->daddr, 16);
		return parse_ipv6(skb, p, ip6->nexthdr, p->l3_off + sizeof(*ip6) + bpf_ntohs(ip6->payload_len));
	}
	return PARSE_PASS;
}

/* IPv6 traffic that belongs to the link (neighbour and router discovery,
 * redirects, MLD, DAD: ICMPv6 130-143) goes to the stack untouched. Any
 * other protocol to or from a link-scoped address is policy's like the
 * rest: untouched, TCP or UDP to the node's link-local address, or from a
 * link-local source, or to all nodes (ff02::1) reached every service of
 * the node around the host firewall. */
static __always_inline int ipv6_link_scoped(const struct pkt *p)
{
	const __u8 *s = p->src.addr, *d = p->dst.addr;

	if (p->family != AF_INET6 || p->proto != 58 || p->icmp_type < 130 || p->icmp_type > 143)
		return 0;
	if (d[0] == 0xff || s[0] == 0xff)
		return 1;
	if ((d[0] == 0xfe && (d[1] & 0xc0) == 0x80) || (s[0] == 0xfe && (s[1] & 0xc0) == 0x80))
		return 1;
	/* Unspecified source (DAD). */
	for (int i = 0; i < 16; i++)
		if (s[i])
			return 0;
	return 1;
}

/* ip_link_wide: a multicast or broadcast destination (IPv4 224/3 with the
 * limited broadcast, IPv6 ff00::/8). */
static __always_inline int ip_link_wide(const struct ip_key *ip)
{
	return ip->family == AF_INET ? ip->addr[0] >= 224 : ip->addr[0] == 0xff;
}

/* ip_loopback: 127/8 or ::1. Nothing from outside the node may reach them:
 * with route_localnet=1 (kube-proxy sets it, CVE-2020-8558) the stack would
 * deliver such a packet to services bound to the node's loopback. */
static __always_inline int ip_loopback(const struct ip_key *ip)
{
	if (ip->family == AF_INET)
		return ip->addr[0] == 127;
	for (int i = 0; i < 15; i++)
		if (ip->addr[i])
			return 0;
	return ip->addr[15] == 1;
}
