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

static __always_inline int want_trace(struct pkt *p)
{
	struct config *cfg = get_config();
	__u32 level = cfg ? cfg->trace_level : TRACE_CONTROL;

	if (level == TRACE_ALL)
		return 1;
	if (level == TRACE_NONE)
		return 0;
	/* Per connection: its first packet each way, and TCP control packets. */
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & 0x07)) /* FIN, SYN, RST */
		return 1;
	return p->ct_status != CT_UNKNOWN && p->ct_first;
}

/* trace counts a forwarded packet and maybe reports it. */
static __always_inline void trace(struct __sk_buff *skb, struct pkt *p, __u8 obs, __u8 dir,
				  __u16 ep_id, __u32 src_id, __u32 dst_id)
{
	account(p, REASON_FORWARDED, dir);
	if (want_trace(p))
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
