/* Shared definitions of Lumen's datapath: constants, wire structs and
 * small helpers. Every struct here is mirrored in Go by bpf2go. */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* Reserved identities, Cilium's numbers (internal/bpfconst mirrors every
 * constant here; its test compares them). */
#define ID_UNKNOWN 0
#define ID_HOST 1
#define ID_WORLD 2
#define ID_UNMANAGED 3
#define ID_HEALTH 4
#define ID_INIT 5
#define ID_REMOTE_NODE 6
#define ID_KUBE_APISERVER 7
#define ID_INGRESS 8
#define ID_WORLD_IPV4 9
#define ID_WORLD_IPV6 10

/* Traffic direction, from the endpoint's point of view (as Hubble). */
#define DIR_INGRESS 0
#define DIR_EGRESS 1

/* Drop reasons share Cilium's numbering so flows decode as Hubble does. */
#define REASON_FORWARDED 0
#define DROP_INVALID_SIP 132
#define DROP_POLICY 133
#define DROP_POLICY_DENY 181
#define DROP_INVALID 134
#define DROP_UNSUPPORTED_L3 139
#define DROP_WRITE_ERROR 141
#define DROP_NO_TUNNEL_KEY 147
#define DROP_CSUM_L3 153
#define DROP_FRAG_NOT_SUPPORTED 157
#define DROP_SERVICE_NO_BACKEND 158
#define DROP_NO_TUNNEL_ENDPOINT 160
#define DROP_NAT_UNSUPPORTED 168
#define DROP_FIB_LOOKUP 169

/* Trace observation points, numbered as Hubble's TraceObservationPoint. */
#define OBS_TO_STACK 3
#define OBS_TO_OVERLAY 4
#define OBS_FROM_ENDPOINT 5
#define OBS_FROM_OVERLAY 9
#define OBS_FROM_NETWORK 10
#define OBS_TO_NETWORK 11
#define OBS_TO_ENDPOINT 101

/* Event types in the ring buffer. */
#define EVENT_TRACE 1
#define EVENT_DROP 2
#define EVENT_POLICY 3 /* a policy decision on a new connection */

/* Event flags. */
#define EV_F_REPLY (1 << 0)    /* the packet is a reply of a tracked connection */
#define EV_F_DENIED (1 << 1)   /* policy verdict: denied */
#define EV_F_AUDIT (1 << 2)    /* denied, but let through (audit mode) */
#define EV_F_EXPLICIT (1 << 3) /* denied by a deny rule, not by default */
#define EV_F_CT_KNOWN (1 << 4) /* the hook looked the connection up: EV_F_REPLY is meaningful */

/* Policy match types, numbered as Cilium's monitor API. */
#define MATCH_NONE 0
#define MATCH_L3_ONLY 1
#define MATCH_L3_L4 2
#define MATCH_L4_ONLY 3
#define MATCH_ALL 4

/* Endpoint flags (endpoint_info.flags). */
#define EP_F_INGRESS_ENFORCED (1 << 0)
#define EP_F_EGRESS_ENFORCED (1 << 1)
#define EP_F_AUDIT (1 << 2)
#define EP_F_HOST (1 << 3) /* the node itself (host firewall) */

/* Pseudo reason under which ring buffer overflows are counted. */
#define REASON_EVENTS_LOST 255

/* Trace levels (lumen_config.trace_level), after Cilium's monitor
 * aggregation levels. Drops and policy verdicts are always reported. */
#define TRACE_NONE 0    /* no traces */
#define TRACE_CONTROL 1 /* "medium": per connection, its first packet each way and TCP flag changes */
#define TRACE_ALL 2     /* "none": every packet at every observation point */
#define TRACE_LOW 3     /* "low": every packet, at to-* observation points only */
#define TRACE_MAX 4     /* "maximum": connection start (first packet, TCP SYN) and end (FIN, RST) */

/* An IP address of either family; IPv4 uses the first 4 bytes. */
struct ip_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

/* Value of lumen_endpoints: a local pod. */
struct endpoint_info {
	__u32 ifindex;   /* host side of the pod's veth */
	__u16 ep_id;
	__u16 flags;
	__u32 identity;
	__u8 mac[6];      /* pod side MAC */
	__u8 node_mac[6]; /* host side MAC */
};

/* LPM key of lumen_ipcache: prefixlen counts the family and pad bits too. */
struct ipcache_key {
	__u32 prefixlen;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct ipcache_value {
	__u32 identity;
	__u32 tunnel_ip4; /* node to encapsulate to, network order; 0: none */
	__u8 flags;
	__u8 pad[3];
};

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

/* Key of lumen_policy (LPM): ep_id, direction and identity are always
 * matched in full (64 bits); protocol (with pad) and port bits follow. */
struct policy_key {
	__u32 prefixlen;
	__u16 ep_id;
	__u8 egress;
	__u8 pad;
	__u32 identity; /* 0: any identity */
	__u8 proto;     /* 0 (with prefixlen 64): any protocol */
	__u8 pad2;
	__be16 dport;
};

struct policy_value {
	__u8 deny;
	__u8 pad[3];
};

#define CT_EGRESS 0  /* opened by the endpoint (from_container) */
#define CT_INGRESS 1 /* accepted by the endpoint (to_container) */
#define CT_SERVICE 2 /* client -> service frontend: remembers the backend */

struct ct_key {
	__u8 family;
	__u8 proto;
	__u8 dir;
	__u8 pad;
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

#define CT_F_SEEN_REPLY (1 << 0)
#define CT_F_CLOSING (1 << 1)

struct ct_entry {
	__u64 last_seen; /* bpf_ktime_get_ns */
	__u64 packets;
	__u64 bytes;
	__u32 src_identity;
	__u8 flags;
	__u8 tcp_flags; /* union of the flags seen */
	__u8 fwd_flags; /* flags seen in the original direction (trace aggregation) */
	__u8 rev_flags; /* flags seen in the reply direction */
	__u32 rev_nat;    /* service of a load-balanced connection (0: none) */
	__u32 backend_id; /* CT_SERVICE entries: the chosen backend */
};

/* Load balancing. A service frontend is {address, port, protocol, scope};
 * slot 0 holds the service, slots 1..count its active backends. */
#define LB_SCOPE_EXTERNAL 0
#define LB_SCOPE_INTERNAL 1

#define SVC_F_MAGLEV (1 << 0)
#define SVC_F_AFFINITY (1 << 1)
#define SVC_F_NODEPORT (1 << 2) /* NodePort, LoadBalancer or externalIP */

struct lb_key {
	__u8 family;
	__u8 proto;
	__be16 dport;
	__u32 slot;
	__u8 addr[16];
	__u8 scope;
	__u8 pad[3];
};

struct lb_value {
	__u32 backend_id; /* slots > 0 */
	__u32 count;      /* slot 0: number of active backends */
	__u32 rev_nat;    /* slot 0: service id, for reverse NAT and maglev */
	__u32 flags;      /* slot 0: SVC_F_* */
	__u32 affinity_timeout; /* seconds */
};

#define BACKEND_F_TERMINATING (1 << 0)

struct lb_backend {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 family;
	__u32 flags;
};

struct lb_revnat {
	__u8 addr[16];
	__be16 port;
	__u8 family;
	__u8 pad;
};

struct lb_affinity_key {
	__u32 rev_nat;
	__u8 family;
	__u8 pad[3];
	__u8 client[16];
};

struct lb_affinity_value {
	__u64 last_used;
	__u32 backend_id;
	__u32 pad;
};

/* Socket-LB reverse translation: what a connected socket's peer really is. */
struct lb_sock_key {
	__u64 cookie;
	__u8 addr[16];
	__be16 port;
	__u8 family;
	__u8 pad[5];
};

/* SNAT of NodePort traffic to backends on other nodes: the node's address
 * and a port it picks stand in for the client. */
#define SNAT_PORT_MIN 32768
#define SNAT_PORT_RANGE 28232 /* up to 60999 */

/* node_sock_owns tells whether one of the node's own sockets holds the
 * 4-tuple node:port <-> peer:peer_port (ports in network order). The SNAT
 * ports are the kernel's ephemeral ports too: a port that a local
 * connection to the same backend uses must not be picked, and replies on
 * such a tuple are that connection's, even when a (stale) SNAT entry names
 * it, or they would be diverted to another client and the node's
 * connection would hang. ctx is the program's context (skb or xdp_md). */
static __always_inline int node_sock_owns(void *ctx, __u8 family, __u8 proto, const __u8 *node, __be16 port,
					  const __u8 *peer, __be16 peer_port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 size;

	if (family == AF_INET) {
		__builtin_memcpy(&t.ipv4.saddr, peer, 4);
		__builtin_memcpy(&t.ipv4.daddr, node, 4);
		t.ipv4.sport = peer_port;
		t.ipv4.dport = port;
		size = sizeof(t.ipv4);
	} else {
		__builtin_memcpy(t.ipv6.saddr, peer, 16);
		__builtin_memcpy(t.ipv6.daddr, node, 16);
		t.ipv6.sport = peer_port;
		t.ipv6.dport = port;
		size = sizeof(t.ipv6);
	}
	if (proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
	else if (proto == IPPROTO_UDP)
		sk = bpf_sk_lookup_udp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
	else
		return 0;
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

struct snat_rev_key {
	__u8 family;
	__u8 proto;
	__be16 port;      /* picked by the node */
	__be16 peer_port; /* backend */
	__u16 pad;
	__u8 addr[16];    /* the node */
	__u8 peer[16];    /* backend */
};

struct snat_rev_value {
	__u8 client[16];
	__be16 client_port;
	__u16 pad;
	__u32 rev_nat;
	__u64 last_seen;
};

struct snat_fwd_key {
	__u8 family;
	__u8 proto;
	__be16 client_port;
	__be16 peer_port;
	__u16 pad;
	__u8 client[16];
	__u8 peer[16];
};

/* Hairpin: a pod reaching itself through a service gets this source
 * address (a packet from its own address would be dropped by its kernel);
 * skb->mark tells to_container to let both directions through. */
#define MARK_HAIRPIN 0x4c480000
static const __u8 hairpin4[16] = { 169, 254, 42, 1 };
static const __u8 hairpin6[16] = { 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xa9, 0xfe, 0x2a, 0x01 };

/* skb->mark carrying a service id from from_netdev to to_container. */
#define MARK_REVNAT 0x4c4e0000
#define MARK_REVNAT_MASK 0xffff0000

struct config {
	__u32 trace_level;
	__u32 vxlan_ifindex; /* 0: no tunnel */
	__u32 host_flags;    /* EP_F_* of the host endpoint (host firewall) */
	__u32 maglev_size;   /* entries of each maglev table (prime) */
	__u64 host_netns_cookie; /* socket LB only for this netns when sock_hostns_only */
	__u32 sock_hostns_only;
	__u32 lb_flags;    /* LB_F_* (lib/dsr.h); was padding: the layout is unchanged */
	__u8 node_ip4[16]; /* the node's addresses: SNAT source for frontends */
	__u8 node_ip6[16]; /* that are not the node's own (LoadBalancer, externalIPs) */
};

/* Policy map endpoint id of the host endpoint. */
#define HOST_EP_ID 0xffff

/* One record in lumen_events: headers already parsed, so user space reads
 * fixed fields instead of packet bytes. */
struct event {
	__u64 ts;
	__u8 type;
	__u8 subtype; /* observation point or drop reason */
	__u8 family;
	__u8 proto;
	__u8 tcp_flags;
	__u8 dir;
	__u16 ep_id;
	__u32 ifindex;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 len;
	__u16 sport; /* host order */
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 flags;
	__u8 icmp_type; /* ICMP and ICMPv6 */
	__u8 icmp_code;
};
