/* The host firewall on the paths that do not cross the node's devices
 * (from_netdev and to_netdev enforce it there): a local pod to its node
 * (from_container), the overlay to the node (from_overlay), the node to a
 * local pod (to_container). Connection tracking makes replies pass; the
 * host endpoint's entries are its own (CT_INGRESS for what it accepts,
 * CT_EGRESS for what it opens), like a pod's on the same node. */
#pragma once
#include "fwd.h"
#include "conntrack.h"
#include "enforce.h"

/* opaque_ctx returns skb as a value the compiler cannot relate to other
 * uses of skb: it then cannot keep the address of a field shared by them
 * in a register (the verifier only accepts loads at a fixed offset from
 * the unmodified context). */
static __always_inline struct __sk_buff *opaque_ctx(struct __sk_buff *skb)
{
	asm volatile("" : "+r"(skb));
	return skb;
}

static __always_inline __u32 hostfw_flags(void)
{
	struct config *cfg = get_config();

	return cfg ? cfg->host_flags : 0;
}

/* The caller's endpoint keeps its own conntrack view of the packet (traces
 * and reverse NAT use it): the host's lookup must not leave its mark. */
struct ct_state {
	__u32 rev_nat;
	__u8 status;
	__u8 first;
	__u8 new_flags;
};

static __always_inline void ct_save(const struct pkt *p, struct ct_state *s)
{
	s->rev_nat = p->rev_nat;
	s->status = p->ct_status;
	s->first = p->ct_first;
	s->new_flags = p->ct_new_flags;
}

static __always_inline void ct_restore(struct pkt *p, const struct ct_state *s)
{
	p->rev_nat = s->rev_nat;
	p->ct_status = s->status;
	p->ct_first = s->first;
	p->ct_new_flags = s->new_flags;
}

/* host_enforce applies the host endpoint's policy to p: ingress (egress 0)
 * from src_id, or egress to dst_id. Returns 1 to pass, 0 to drop (*reason). */
static __always_inline int host_enforce(struct __sk_buff *skb, struct pkt *p, __u8 egress, __u32 src_id,
					__u32 dst_id, int *reason)
{
	__u32 hflags = hostfw_flags();
	__u8 dir = egress ? CT_EGRESS : CT_INGRESS;
	struct ct_state saved;
	int ok = 1;

	if (!hflags)
		return 1;
	ct_save(p, &saved);
	if (ct_lookup(p, dir, 0) == CT_NEW) {
		ok = enforce(skb, p, HOST_EP_ID, hflags, egress, src_id, dst_id, reason);
		if (ok)
			ct_create(p, dir, egress ? ID_HOST : src_id);
	}
	ct_restore(p, &saved);
	return ok;
}

/* host_ingress: p from src_id to the node; host_egress: p from the node to
 * dst_id. Each returns 1 to let the packet pass, 0 to drop it (*reason). */
static __always_inline int host_ingress(struct __sk_buff *skb, struct pkt *p, __u32 src_id, int *reason)
{
	return host_enforce(skb, p, 0, src_id, ID_HOST, reason);
}

static __always_inline int host_egress(struct __sk_buff *skb, struct pkt *p, __u32 dst_id, int *reason)
{
	return host_enforce(skb, p, 1, ID_HOST, dst_id, reason);
}
