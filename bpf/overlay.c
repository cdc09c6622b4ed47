//go:build ignore

/* Program on the VXLAN device (TCX ingress): decapsulated packets from
 * other nodes. The VNI carries the sender's security identity. */
#include "lib/fwd.h"

SEC("tcx/ingress")
int from_overlay(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	struct endpoint_info *dst;
	struct pkt p;
	int ret;

	ret = parse(skb, &p);
	if (ret == PARSE_PASS)
		return TC_ACT_OK;
	if (ret != PARSE_OK)
		return drop(skb, &p, ret, DIR_INGRESS, 0, 0, 0);
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return drop(skb, &p, DROP_NO_TUNNEL_KEY, DIR_INGRESS, 0, 0, 0);
	if (ipv6_link_scoped(&p))
		return TC_ACT_OK;

	dst = lookup_endpoint(&p.dst);
	if (!dst)
		return TC_ACT_OK;
	trace(skb, &p, OBS_FROM_OVERLAY, DIR_INGRESS, dst->ep_id, key.tunnel_id, dst->identity);
	return deliver_local(skb, &p, dst, DIR_INGRESS, dst->ep_id, key.tunnel_id);
}

char __license[] SEC("license") = "GPL";
