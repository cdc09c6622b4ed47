/* Fragments: only the first fragment of a datagram carries its L4 header.
 * It records its ports (and upper-layer protocol) in lumen_frag, keyed by
 * the fields every fragment of the datagram shares; later fragments take
 * them from there, so that conntrack, policy and load balancing treat the
 * whole datagram as its first fragment was treated. A later fragment
 * without an entry (its first fragment never seen here, or arriving after
 * it) is dropped: its ports are unknown and Lumen does not reassemble. */
#pragma once
#include "common.h"

/* pkt.frag */
#define PKT_FRAG 1       /* part of a fragmented datagram */
#define PKT_FRAG_LATER 2 /* not the first fragment: no L4 header in it */

/* Cilium's drop reasons. */
#define DROP_INVALID_EXTHDR 156 /* IPv6 extension header chain truncated, too long or not enforceable */
#define DROP_FRAG_NOSUPPORT 157 /* a fragment Lumen refuses: nested, or overlapping the L4 header */
#define DROP_FRAG_NOT_FOUND 175 /* a later fragment whose first fragment was not seen */

struct frag_key {
	__u8 family;
	__u8 proto; /* IPv4 protocol; IPv6 the fragment header's next header */
	__u16 pad;
	__u32 id;   /* IPv4: 16 bits */
	/* The device the fragments go through (skb->ifindex): a packet
	 * dropped by a source check (a pod's spoofed first fragment) still
	 * records its entry, which must not stand for the datagram of the
	 * pod whose address it forged, sent through another device. */
	__u32 ifindex;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct frag_value {
	__u16 sport; /* host order, as struct pkt */
	__u16 dport;
	__u16 l4_end; /* fragmentable part's bytes up to the end of the L4 header */
	__u8 proto;   /* upper-layer protocol */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
	__uint(max_entries, 16384);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lumen_frag SEC(".maps");

/* l4_min_len is the L4 header a first fragment must hold whole, and that a
 * later fragment may not overlap (RFC 1858's tiny and overlapping
 * fragments would otherwise rewrite ports or flags after the verdict). */
static __always_inline __u16 l4_min_len(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return 20;
	case IPPROTO_UDP:
	case IPPROTO_ICMP:
	case 58:
		return 8;
	case 132:
		return 12;
	}
	return 0;
}
