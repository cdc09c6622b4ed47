/* enforce applies an endpoint's policy to a new connection, reports the
 * verdict and tells whether the packet may pass. Replies and established
 * connections are not re-evaluated (ct_lookup ran before). */
#pragma once
#include "events.h"
#include "policy.h"

static __always_inline int enforce(struct __sk_buff *skb, struct pkt *p, __u16 ep_id, __u16 ep_flags,
				   __u8 egress, __u32 src_id, __u32 dst_id, int *reason)
{
	__u16 enforced = egress ? EP_F_EGRESS_ENFORCED : EP_F_INGRESS_ENFORCED;
	__u32 peer = egress ? dst_id : src_id;
	__u32 flags = 0;
	__u8 match = MATCH_NONE;
	int verdict;

	if (p->ct_status != CT_NEW || !(ep_flags & enforced))
		return 1;
	verdict = policy_check(ep_id, egress, peer, p, &match);
	if (verdict != POLICY_ALLOW) {
		flags |= EV_F_DENIED;
		if (verdict == POLICY_DENY_EXPLICIT)
			flags |= EV_F_EXPLICIT;
		if (ep_flags & EP_F_AUDIT)
			flags |= EV_F_AUDIT;
	}
	emit_flags(skb, p, EVENT_POLICY, match, egress ? DIR_EGRESS : DIR_INGRESS, ep_id, src_id, dst_id, flags);
	if (verdict == POLICY_ALLOW || (ep_flags & EP_F_AUDIT))
		return 1;
	*reason = verdict == POLICY_DENY_EXPLICIT ? DROP_POLICY_DENY : DROP_POLICY;
	return 0;
}
