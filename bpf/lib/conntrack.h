/* Connection tracking: replies and established flows skip policy. Entries
 * are directional: CT_EGRESS for connections an endpoint opened, CT_INGRESS
 * for connections it accepted, so that one node's two endpoints of a flow
 * each get their own policy decision. The agent expires idle entries. */
#pragma once
#include "maps.h"
#include "pkt.h"

static __always_inline void ct_fill(struct ct_key *k, const struct pkt *p, __u8 dir, int reverse)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->family = p->family;
	k->proto = p->proto;
	k->dir = dir;
	if (!reverse) {
		k->sport = p->sport;
		k->dport = p->dport;
		__builtin_memcpy(k->saddr, p->src.addr, 16);
		__builtin_memcpy(k->daddr, p->dst.addr, 16);
	} else {
		k->sport = p->dport;
		k->dport = p->sport;
		__builtin_memcpy(k->saddr, p->dst.addr, 16);
		__builtin_memcpy(k->daddr, p->src.addr, 16);
	}
}

static __always_inline void ct_touch(struct ct_entry *e, struct pkt *p, __u64 now, int reply)
{
	e->last_seen = now;
	e->packets++;
	e->bytes += p->len;
	e->tcp_flags |= p->tcp_flags;
	/* Per direction, what is new to it: trace aggregation reports those. */
	if (reply) {
		p->ct_new_flags = p->tcp_flags & ~e->rev_flags;
		e->rev_flags |= p->tcp_flags;
	} else {
		p->ct_new_flags = p->tcp_flags & ~e->fwd_flags;
		e->fwd_flags |= p->tcp_flags;
	}
	if (p->tcp_flags & 0x05) /* FIN or RST */
		e->flags |= CT_F_CLOSING;
}

/* ct_lookup classifies p for an endpoint at direction dir: an existing
 * connection of that direction, a reply to one of the other direction, or
 * new. Sets p->ct_status and p->ct_first. rev_nat is the service p came
 * through (0: none): an existing connection takes it, since a client port
 * reused towards a second service with the same backend has the 5-tuple of
 * the first connection, and its replies must come from the second frontend. */
static __always_inline __u8 ct_lookup(struct pkt *p, __u8 dir, __u32 rev_nat)
{
	struct ct_key key;
	struct ct_entry *e;
	__u64 now = bpf_ktime_get_ns();

	ct_fill(&key, p, dir, 0);
	e = bpf_map_lookup_elem(&lumen_ct, &key);
	/* A SYN on a closing connection opens a new one (the 5-tuple was
	 * reused): it must be evaluated like any new connection. */
	if (e && (e->flags & CT_F_CLOSING) && (p->tcp_flags & 0x12) == 0x02) {
		bpf_map_delete_elem(&lumen_ct, &key);
		e = 0;
	}
	if (e) {
		ct_touch(e, p, now, 0);
		if (rev_nat && e->rev_nat != rev_nat)
			e->rev_nat = rev_nat;
		p->ct_status = CT_ESTABLISHED;
		p->ct_first = 0;
		return p->ct_status;
	}
	p->rev_nat = 0;
	ct_fill(&key, p, dir ^ 1, 1);
	e = bpf_map_lookup_elem(&lumen_ct, &key);
	if (e) {
		p->ct_first = !(e->flags & CT_F_SEEN_REPLY);
		e->flags |= CT_F_SEEN_REPLY;
		ct_touch(e, p, now, 1);
		p->rev_nat = e->rev_nat;
		p->ct_status = CT_REPLY;
		return p->ct_status;
	}
	p->ct_status = CT_NEW;
	p->ct_first = 1;
	p->ct_new_flags = p->tcp_flags;
	return p->ct_status;
}

static __always_inline void ct_create_nat(struct pkt *p, __u8 dir, __u32 src_identity, __u32 rev_nat,
					  __u32 backend_id)
{
	struct ct_key key;
	struct ct_entry e = {};

	ct_fill(&key, p, dir, 0);
	e.last_seen = bpf_ktime_get_ns();
	e.packets = 1;
	e.bytes = p->len;
	e.src_identity = src_identity;
	e.tcp_flags = p->tcp_flags;
	e.fwd_flags = p->tcp_flags;
	e.rev_nat = rev_nat;
	e.backend_id = backend_id;
	bpf_map_update_elem(&lumen_ct, &key, &e, BPF_ANY);
}

static __always_inline void ct_create(struct pkt *p, __u8 dir, __u32 src_identity)
{
	struct ct_key key;
	struct ct_entry e = {};

	ct_fill(&key, p, dir, 0);
	e.last_seen = bpf_ktime_get_ns();
	e.packets = 1;
	e.bytes = p->len;
	e.src_identity = src_identity;
	e.tcp_flags = p->tcp_flags;
	e.fwd_flags = p->tcp_flags;
	bpf_map_update_elem(&lumen_ct, &key, &e, BPF_ANY);
}
