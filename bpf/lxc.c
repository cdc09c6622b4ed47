//go:build ignore

/* Programs on the host side of a pod's veth.
 * from_container: TCX ingress, every packet the pod sends (its egress).
 * to_container:   TCX egress, every packet on its way into the pod (its ingress). */
#include "lib/fwd.h"
#include "lib/conntrack.h"
#include "lib/enforce.h"
#include "lib/lb.h"
#include "lib/dsr.h"
#include "lib/hostfw.h"

static __always_inline int is_hairpin(const struct ip_key *ip)
{
	const __u8 *h = ip->family == AF_INET ? hairpin4 : hairpin6;
	int n = ip->family == AF_INET ? 4 : 16;

	for (int i = 0; i < 16; i++)
		if (i < n && ip->addr[i] != h[i])
			return 0;
	return 1;
}

SEC("tcx/ingress")
int from_container(struct __sk_buff *skb)
{
	struct endpoint_info *src, *dst;
	struct ipcache_value *remote = 0;
	struct config *cfg;
	struct pkt p;
	__u32 src_id, dst_id;
	__u32 rev_nat, backend = 0;
	__u16 ep_id;
	__u8 drop_dir = DIR_EGRESS;
	int ret, reason = 0;

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
	if (ip_loopback(&p.dst)) {
		dst_id = 0;
		reason = DROP_INVALID;
		goto drop_egress;
	}

	/* Services the socket layer did not translate (pods with
	 * --bpf-lb-sock-hostns-only, raw packets): per-packet DNAT. */
	ret = lb_dnat(skb, &p, 1, &backend);
	if (ret < 0)
		return drop(skb, &p, -ret, DIR_EGRESS, ep_id, src_id, 0);
	rev_nat = ret;

	/* The reply of a hairpin connection: back to the pod, from the
	 * service frontend. */
	if (!rev_nat && is_hairpin(&p.dst)) {
		struct ct_key hk;
		struct ct_entry *he;
		__u8 own[16];

		ct_fill(&hk, &p, CT_EGRESS, 1);
		he = bpf_map_lookup_elem(&lumen_ct, &hk);
		if (!he)
			return drop(skb, &p, DROP_NAT_UNSUPPORTED, DIR_EGRESS, ep_id, src_id, 0);
		__builtin_memcpy(own, p.src.addr, 16);
		if (lb_rev_nat(skb, &p, he->rev_nat) < 0 || rewrite_addr(skb, &p, 0, own, bpf_htons(p.dport)) < 0)
			return drop(skb, &p, DROP_NAT_UNSUPPORTED, DIR_EGRESS, ep_id, src_id, 0);
		skb->mark = MARK_HAIRPIN;
		return deliver_local(skb, &p, src, DIR_EGRESS, ep_id, src_id);
	}

	dst = lookup_endpoint(&p.dst);
	/* A pod given itself as the backend of a service. */
	if (rev_nat && dst && dst->ifindex == src->ifindex) {
		const __u8 *hp = p.family == AF_INET ? hairpin4 : hairpin6;
		__u8 haddr[16];

		__builtin_memcpy(haddr, hp, 16);
		if (rewrite_addr(skb, &p, 1, haddr, bpf_htons(p.sport)) < 0)
			return drop(skb, &p, DROP_NAT_UNSUPPORTED, DIR_EGRESS, ep_id, src_id, 0);
		ct_create_nat(&p, CT_EGRESS, src_id, rev_nat, backend);
		skb->mark = MARK_HAIRPIN;
		return deliver_local(skb, &p, dst, DIR_EGRESS, ep_id, src_id);
	}
	if (dst) {
		dst_id = dst->identity;
	} else {
		remote = lookup_ipcache(&p.dst);
		dst_id = remote ? remote->identity : ID_WORLD;
		/* Every address of the node is the host, announced or not. */
		if (dst_id == ID_WORLD && !tunnel_of(remote) && is_local_addr(skb, &p.dst))
			dst_id = ID_HOST;
		/* Multicast and broadcast from a pod: nothing on its veth but
		 * the node receives them (its sockets bound to any address). */
		if (ip_link_wide(&p.dst))
			dst_id = ID_HOST;
		/* A pod never speaks the overlay: encapsulated packets from it
		 * would carry whatever identity it wrote in the header. */
		if (p.proto == IPPROTO_UDP && p.dport == TUNNEL_PORT && (dst_id == ID_HOST || is_node_addr(remote))) {
			reason = DROP_ENCAP_PROHIBITED;
			goto drop_egress;
		}
	}

	if (ct_lookup(&p, CT_EGRESS, rev_nat) == CT_NEW) {
		if (!enforce(skb, &p, ep_id, src->flags, 1, src_id, dst_id, &reason))
			goto drop_egress;
		ct_create_nat(&p, CT_EGRESS, src_id, rev_nat, backend);
	} else if (p.ct_status == CT_REPLY && p.rev_nat == REV_NAT_DSR) {
		/* A backend answering a client that reached it through another
		 * node's frontend (DSR): from that frontend, straight back. */
		if (dsr_reverse(skb, &p) < 0)
			return drop(skb, &p, DROP_NAT_UNSUPPORTED, DIR_EGRESS, ep_id, src_id, dst_id);
	} else if (p.ct_status == CT_REPLY && p.rev_nat) {
		/* A backend answering a client that reached it through a service
		 * frontend translated at this node's edge (NodePort). */
		if (lb_rev_nat(skb, &p, p.rev_nat) < 0)
			return drop(skb, &p, DROP_NAT_UNSUPPORTED, DIR_EGRESS, ep_id, src_id, dst_id);
	}

	if (dst) {
		trace(skb, &p, OBS_FROM_ENDPOINT, DIR_EGRESS, ep_id, src_id, dst_id);
		return deliver_local(skb, &p, dst, DIR_EGRESS, ep_id, src_id);
	}
	/* To the node itself: the host firewall's ingress policy, as for
	 * packets from the network (from_netdev). */
	if (dst_id == ID_HOST && !host_ingress(opaque_ctx(skb), &p, src_id, &reason)) {
		drop_dir = DIR_INGRESS;
		ep_id = HOST_EP_ID;
		goto drop_egress;
	}
	if (tunnel_of(remote)) {
		cfg = get_config();
		if (!cfg || !cfg->vxlan_ifindex)
			return drop(skb, &p, DROP_NO_TUNNEL_ENDPOINT, DIR_EGRESS, ep_id, src_id, dst_id);
		return encap(skb, &p, tunnel_of(remote), cfg->vxlan_ifindex, ep_id, src_id, dst_id);
	}
	return fib_forward(skb, &p, ep_id, src_id, dst_id);
drop_egress:
	/* One call site for the late drops: with one more inlined drop() the
	 * compiler keeps a ctx field's address in a register, which the
	 * verifier refuses. */
	return drop(skb, &p, reason, drop_dir, ep_id, src_id, dst_id);
}

SEC("tcx/egress")
int to_container(struct __sk_buff *skb)
{
	struct endpoint_info *ep;
	struct config *cfg;
	struct pkt p;
	__u32 src_id, rev_nat = 0;
	int ret, reason = 0;

	ret = parse(skb, &p);
	if (ret == PARSE_PASS)
		return TC_ACT_OK;
	if (ret != PARSE_OK)
		return drop(skb, &p, ret, DIR_INGRESS, 0, 0, 0);
	if (ipv6_link_scoped(&p))
		return TC_ACT_OK;

	ep = lookup_endpoint(&p.dst);
	if (!ep)
		return TC_ACT_OK; /* not addressed to the pod: the pod decides */
	/* A hairpin came in on this very veth (from_container delivered the
	 * pod's service traffic back to it). The mark alone is not proof: the
	 * node's processes and netfilter can set any mark. */
	if (skb->mark == MARK_HAIRPIN && skb->ingress_ifindex == skb->ifindex) {
		skb->mark = 0;
		trace(skb, &p, OBS_TO_ENDPOINT, DIR_INGRESS, ep->ep_id, ep->identity, ep->identity);
		return TC_ACT_OK;
	}
	cfg = get_config();
	if ((skb->mark & MARK_IDENTITY_MASK) == MARK_IDENTITY && cfg && cfg->vxlan_ifindex &&
	    skb->ingress_ifindex == cfg->vxlan_ifindex) {
		/* From another node: the identity from_overlay took from the
		 * tunnel header of a known node. */
		src_id = skb->mark & ~MARK_IDENTITY_MASK;
		skb->mark = 0;
	} else if (!skb->ingress_ifindex) {
		/* Sent by the node itself (no input device), from whichever of
		 * its addresses: the host, through its egress policy. */
		src_id = ID_HOST;
		if (!host_egress(skb, &p, ep->identity, &reason))
			return drop(skb, &p, reason, DIR_EGRESS, HOST_EP_ID, ID_HOST, ep->identity);
	} else {
		src_id = identity_of(&p.src);
		/* Another node's pod, not through the overlay, nor a service
		 * from_netdev translated (a NodePort client may be one). */
		if ((skb->mark & MARK_REVNAT_MASK) != MARK_REVNAT && plain_tunnel_src(&p))
			return drop(skb, &p, DROP_INVALID_SIP, DIR_INGRESS, ep->ep_id, src_id, ep->identity);
	}
	/* A service id handed over by from_netdev (NodePort to a local pod). */
	if ((skb->mark & MARK_REVNAT_MASK) == MARK_REVNAT) {
		rev_nat = skb->mark & ~MARK_REVNAT_MASK;
		skb->mark = 0;
	} else if (skb->mark == MARK_DSR) {
		/* Another node's DSR flow (from_netdev kept its frontend). */
		rev_nat = REV_NAT_DSR;
		skb->mark = 0;
	}
	if (ct_lookup(&p, CT_INGRESS, rev_nat) == CT_NEW) {
		if (!enforce(skb, &p, ep->ep_id, ep->flags, 0, src_id, ep->identity, &reason))
			return drop(skb, &p, reason, DIR_INGRESS, ep->ep_id, src_id, ep->identity);
		ct_create_nat(&p, CT_INGRESS, src_id, rev_nat, 0);
	} else if (p.ct_status == CT_REPLY && p.rev_nat) {
		/* The reply of a service connection this pod opened: the source
		 * becomes the service frontend again. */
		if (lb_rev_nat(skb, &p, p.rev_nat) < 0)
			return drop(skb, &p, DROP_NAT_UNSUPPORTED, DIR_INGRESS, ep->ep_id, src_id, ep->identity);
	}
	trace(skb, &p, OBS_TO_ENDPOINT, DIR_INGRESS, ep->ep_id, src_id, ep->identity);
	return TC_ACT_OK;
}

char __license[] SEC("license") = "GPL";
