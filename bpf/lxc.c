//go:build ignore

/* Programs on the host side of a pod's veth.
 * from_container: TCX ingress, every packet the pod sends.
 * to_container:   TCX egress, every packet on its way into the pod. */
#include "lib/fwd.h"

SEC("tcx/ingress")
int from_container(struct __sk_buff *skb)
{
	struct endpoint_info *src, *dst;
	struct ipcache_value *remote;
	struct config *cfg;
	struct pkt p;
	__u32 src_id, dst_id;
	__u16 ep_id;
	int ret;

	ret = parse(skb, &p);
	if (ret == PARSE_PASS)
		return TC_ACT_OK;
	if (ret != PARSE_OK)
		return drop(skb, &p, ret, DIR_EGRESS, 0, 0, 0);
	if (ipv6_link_scoped(&p))
		return TC_ACT_OK;

	/* A pod may only send from its own addresses. */
	src = lookup_endpoint(&p.src);
	if (!src || src->ifindex != skb->ifindex)
		return drop(skb, &p, DROP_INVALID_SIP, DIR_EGRESS, 0, ID_UNMANAGED, 0);
	src_id = src->identity;
	ep_id = src->ep_id;

	dst = lookup_endpoint(&p.dst);
	if (dst) {
		trace(skb, &p, OBS_FROM_ENDPOINT, DIR_EGRESS, ep_id, src_id, dst->identity);
		return deliver_local(skb, &p, dst, DIR_EGRESS, ep_id, src_id);
	}

	remote = lookup_ipcache(&p.dst);
	dst_id = remote ? remote->identity : ID_WORLD;
	if (remote && remote->tunnel_ip4) {
		cfg = get_config();
		if (!cfg || !cfg->vxlan_ifindex)
			return drop(skb, &p, DROP_NO_TUNNEL_ENDPOINT, DIR_EGRESS, ep_id, src_id, dst_id);
		return encap(skb, &p, remote->tunnel_ip4, cfg->vxlan_ifindex, ep_id, src_id, dst_id);
	}
	return fib_forward(skb, &p, ep_id, src_id, dst_id);
}

SEC("tcx/egress")
int to_container(struct __sk_buff *skb)
{
	struct endpoint_info *ep;
	struct pkt p;
	int ret;

	ret = parse(skb, &p);
	if (ret == PARSE_PASS)
		return TC_ACT_OK;
	if (ret != PARSE_OK)
		return drop(skb, &p, ret, DIR_INGRESS, 0, 0, 0);
	if (ipv6_link_scoped(&p))
		return TC_ACT_OK;

	ep = lookup_endpoint(&p.dst);
	/* Policy is enforced here once it exists; for now, count and trace. */
	trace(skb, &p, OBS_TO_ENDPOINT, DIR_INGRESS, ep ? ep->ep_id : 0, identity_of(&p.src),
	      ep ? ep->identity : 0);
	return TC_ACT_OK;
}

char __license[] SEC("license") = "GPL";
