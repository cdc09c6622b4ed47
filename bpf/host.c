//go:build ignore

/* Program on the node's external devices (TCX ingress): packets from the
 * network addressed to a local pod go straight to its veth. */
#include "lib/fwd.h"

SEC("tcx/ingress")
int from_netdev(struct __sk_buff *skb)
{
	struct endpoint_info *dst;
	struct pkt p;
	int ret;

	ret = parse(skb, &p);
	if (ret == PARSE_PASS)
		return TC_ACT_OK;
	if (ret != PARSE_OK)
		return drop(skb, &p, ret, DIR_INGRESS, 0, 0, 0);
	if (ipv6_link_scoped(&p))
		return TC_ACT_OK;

	dst = lookup_endpoint(&p.dst);
	if (!dst)
		return TC_ACT_OK; /* for the node itself, or not ours */
	{
		__u32 src_id = identity_of(&p.src);

		trace(skb, &p, OBS_FROM_NETWORK, DIR_INGRESS, dst->ep_id, src_id, dst->identity);
		return deliver_local(skb, &p, dst, DIR_INGRESS, dst->ep_id, src_id);
	}
}

char __license[] SEC("license") = "GPL";
