/* Packet parsing: Ethernet + IPv4/IPv6 + the L4 ports Lumen needs. */
#pragma once
#include "common.h"

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
	__u8 pad;
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
		/* UDP and SCTP both start with source and destination port. */
		struct sctp_ports *ports = data + l4_off;
		if ((void *)(ports + 1) > data_end)
			return DROP_INVALID;
		p->sport = bpf_ntohs(ports->source);
		p->dport = bpf_ntohs(ports->dest);
		break;
	}
	}
	return PARSE_OK;
}

/* parse fills p from skb. Returns PARSE_OK, PARSE_PASS or a drop reason. */
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

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
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
		/* Later fragments carry no L4 header. */
		if (ip->frag_off & bpf_htons(0x1fff))
			return PARSE_OK;
		return parse_l4(skb, p, p->l3_off + ip->ihl * 4);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return DROP_INVALID;
		p->family = AF_INET6;
		p->proto = ip6->nexthdr;
		p->ttl = ip6->hop_limit;
		p->src.family = AF_INET6;
		p->dst.family = AF_INET6;
		__builtin_memcpy(p->src.addr, &ip6->saddr, 16);
		__builtin_memcpy(p->dst.addr, &ip6->daddr, 16);
		/* Extension headers are not walked yet: ports stay 0. */
		return parse_l4(skb, p, p->l3_off + sizeof(*ip6));
	}
	return PARSE_PASS;
}

/* IPv6 traffic that belongs to the link (neighbour discovery, MLD, DAD)
 * goes to the stack untouched. */
static __always_inline int ipv6_link_scoped(const struct pkt *p)
{
	const __u8 *s = p->src.addr, *d = p->dst.addr;

	if (p->family != AF_INET6)
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
