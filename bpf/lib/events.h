/* Metrics and events: every packet is counted by {reason, direction};
 * drops always produce an event, traces depend on the trace level. */
#pragma once
#include "maps.h"
#include "pkt.h"

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&lumen_config, &zero);
}

static __always_inline void account(struct pkt *p, __u8 reason, __u8 dir)
{
	__u32 key = (__u32)reason << 1 | (dir & 1);
	struct metrics_value *v = bpf_map_lookup_elem(&lumen_metrics, &key);

	if (!v)
		return;
	v->packets++;
	v->bytes += p->len;
}

static __always_inline void emit_flags(struct __sk_buff *skb, struct pkt *p, __u8 type, __u8 subtype,
				       __u8 dir, __u16 ep_id, __u32 src_id, __u32 dst_id, __u32 flags)
{
	struct event *e = bpf_ringbuf_reserve(&lumen_events, sizeof(*e), 0);

	if (!e) {
		/* Counted, so that user space can report the loss. */
		__u32 key = (__u32)REASON_EVENTS_LOST << 1;
		struct metrics_value *v = bpf_map_lookup_elem(&lumen_metrics, &key);
		if (v)
			v->packets++;
		return;
	}
	e->ts = bpf_ktime_get_ns();
	e->type = type;
	e->subtype = subtype;
	e->family = p->family;
	e->proto = p->proto;
	e->tcp_flags = p->tcp_flags;
	e->dir = dir;
	e->ep_id = ep_id;
	e->ifindex = skb->ifindex;
	e->src_identity = src_id;
	e->dst_identity = dst_id;
	e->len = p->len;
	e->sport = p->sport;
	e->dport = p->dport;
	__builtin_memcpy(e->saddr, p->src.addr, 16);
	__builtin_memcpy(e->daddr, p->dst.addr, 16);
	e->flags = flags;
	e->icmp_type = p->icmp_type;
	e->icmp_code = p->icmp_code;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline void emit(struct __sk_buff *skb, struct pkt *p, __u8 type, __u8 subtype,
				 __u8 dir, __u16 ep_id, __u32 src_id, __u32 dst_id)
{
	__u32 flags = 0;

	if (p->ct_status != CT_UNKNOWN)
		flags |= EV_F_CT_KNOWN;
	if (p->ct_status == CT_REPLY)
		flags |= EV_F_REPLY;
	emit_flags(skb, p, type, subtype, dir, ep_id, src_id, dst_id, flags);
}

static __always_inline int obs_is_from(__u8 obs)
{
	return obs == OBS_FROM_ENDPOINT || obs == OBS_FROM_NETWORK || obs == OBS_FROM_OVERLAY;
}

/* want_trace applies the trace level (monitor aggregation) to a forwarded
 * packet seen at observation point obs. Hooks without a conntrack lookup
 * (ct_status CT_UNKNOWN) only know a packet's TCP flags. */
static __always_inline int want_trace(struct pkt *p, __u8 obs)
{
	struct config *cfg = get_config();
	__u32 level = cfg ? cfg->trace_level : TRACE_CONTROL;
	int tcp = p->proto == IPPROTO_TCP;

	switch (level) {
	case TRACE_ALL:
		return 1;
	case TRACE_NONE:
		return 0;
	case TRACE_LOW:
		return !obs_is_from(obs);
	case TRACE_MAX:
		/* A connection's start and end: the SYN (not the SYN-ACK), FIN,
		 * RST; for other protocols the packet that opens it. */
		if (tcp)
			return (p->tcp_flags & 0x05) || (p->tcp_flags & 0x12) == 0x02;
		return p->ct_status == CT_NEW;
	}
	/* Per connection: its first packet each way, TCP control packets
	 * (SYN, FIN, RST: retransmissions too), and a packet that shows TCP
	 * flags its direction had not shown yet. */
	if (tcp && (p->tcp_flags & 0x07))
		return 1;
	if (p->ct_status == CT_UNKNOWN)
		return 0;
	return p->ct_first || (tcp && p->ct_new_flags);
}

/* trace counts a forwarded packet and maybe reports it. */
static __always_inline void trace(struct __sk_buff *skb, struct pkt *p, __u8 obs, __u8 dir,
				  __u16 ep_id, __u32 src_id, __u32 dst_id)
{
	account(p, REASON_FORWARDED, dir);
	if (want_trace(p, obs))
		emit(skb, p, EVENT_TRACE, obs, dir, ep_id, src_id, dst_id);
}

/* drop counts, reports and drops the packet. */
static __always_inline int drop(struct __sk_buff *skb, struct pkt *p, __u8 reason, __u8 dir,
				__u16 ep_id, __u32 src_id, __u32 dst_id)
{
	account(p, reason, dir);
	emit(skb, p, EVENT_DROP, reason, dir, ep_id, src_id, dst_id);
	return TC_ACT_SHOT;
}
