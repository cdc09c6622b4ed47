//go:build ignore

/* Programs on the node's external devices.
 * from_netdev (TCX ingress): packets from the network addressed to a local
 *   pod go straight to its veth (a DSR flow's frontend is remembered on the
 *   way, see lib/dsr.h); NodePort traffic is translated to its backend;
 *   packets for the node itself pass the host firewall when it is on.
 * to_netdev (TCX egress): the node's own outgoing connections pass the host
 *   firewall's egress policy, and in tunnel mode its packets to other nodes'
 *   pods are encapsulated. */
#include "lib/fwd.h"
#include "lib/conntrack.h"
#include "lib/enforce.h"
#include "lib/nat.h"
#include "lib/dsr.h"

/* forward_remote sends a translated packet to another node: through the
 * tunnel when the destination's ipcache entry names one, else routed. */
static __always_inline int forward_remote(struct __sk_buff *skb, struct pkt *p)
{
	struct ipcache_value *remote = lookup_ipcache(&p->dst);
	__u32 dst_id = remote ? remote->identity : ID_WORLD;
	struct config *cfg;

	if (tunnel_of(remote)) {
		cfg = get_config();
		if (!cfg || !cfg->vxlan_ifindex)
			return drop(skb, p, DROP_NO_TUNNEL_ENDPOINT, DIR_EGRESS, 0, ID_HOST, dst_id);
		return encap(skb, p, tunnel_of(remote), cfg->vxlan_ifindex, 0, ID_HOST, dst_id);
	}
	return fib_forward(skb, p, 0, ID_HOST, dst_id);
}

/* node_addr copies the node's address of family into addr. */
static __always_inline int node_addr(__u8 family, __u8 *addr)
{
	struct config *cfg = get_config();
	const __u8 *a;
	int i, set = 0;

	if (!cfg)
		return -1;
	a = family == AF_INET ? cfg->node_ip4 : cfg->node_ip6;
	__builtin_memcpy(addr, a, 16);
	for (i = 0; i < 16; i++)
		set |= a[i];
	return set ? 0 : -1;
}

static __always_inline __u32 host_flags(void)
{
	struct config *cfg = get_config();

	return cfg ? cfg->host_flags : 0;
}

SEC("tcx/ingress")
int from_netdev(struct __sk_buff *skb)
{
	struct endpoint_info *dst;
	struct pkt p;
	__u32 src_id, hflags;
	int ret, reason = 0;

	ret = parse(skb, &p);
	if (ret == PARSE_PASS)
		return TC_ACT_OK;
	/* A later fragment whose head went by unseen, for the node itself
	 * while no host policy applies: the stack reassembles (or not) as
	 * without Lumen (the first fragment of a NodePort datagram was
	 * translated: the rest never completes). For a pod or the host
	 * firewall, dropped. */
	if (ret == DROP_FRAG_NOT_FOUND && !host_flags() && !lookup_endpoint(&p.dst))
		return TC_ACT_OK;
	if (ret != PARSE_OK)
		return drop(skb, &p, ret, DIR_INGRESS, 0, 0, 0);
	if (ipv6_link_scoped(&p))
		return TC_ACT_OK;

	src_id = identity_of(&p.src);
	if (ip_loopback(&p.dst))
		return drop(skb, &p, DROP_INVALID, DIR_INGRESS, 0, src_id, 0);

	/* A backend on another node answering a client this node translated. */
	ret = snat_reverse(skb, &p);
	if (ret < 0)
		return drop(skb, &p, DROP_WRITE_ERROR, DIR_INGRESS, 0, src_id, 0);
	if (ret > 0)
		return fib_forward(skb, &p, 0, src_id, identity_of(&p.dst));

	/* NodePort, LoadBalancer and external IPs, from outside. */
	{
		__u32 backend = 0;
		__u8 node[16], client[16], frontend[16];
		__be16 client_port = bpf_htons(p.sport), frontend_port = bpf_htons(p.dport), port;
		int svc;

		__builtin_memcpy(client, p.src.addr, 16);
		__builtin_memcpy(frontend, p.dst.addr, 16);
		svc = lb_dnat(skb, &p, 0, &backend);
		if (svc < 0)
			return drop(skb, &p, -svc, DIR_INGRESS, 0, src_id, 0);
		if (svc > 0) {
			struct ipcache_value *remote;

			/* A service whose backend is a node's VXLAN port would let
			 * its clients speak the overlay from this node's address. */
			if (p.proto == IPPROTO_UDP && p.dport == TUNNEL_PORT &&
			    (is_node_addr(lookup_ipcache(&p.dst)) || identity_of(&p.dst) == ID_HOST))
				return drop(skb, &p, DROP_ENCAP_PROHIBITED, DIR_INGRESS, 0, src_id, 0);
			dst = lookup_endpoint(&p.dst);
			if (dst) {
				skb->mark = MARK_REVNAT | (svc & ~MARK_REVNAT_MASK);
				trace(skb, &p, OBS_FROM_NETWORK, DIR_INGRESS, dst->ep_id, src_id, dst->identity);
				return deliver_local(skb, &p, dst, DIR_INGRESS, dst->ep_id, src_id);
			}
			/* DSR: the client stays the source, the frontend travels in
			 * an option, the backend's node answers the client itself.
			 * Native routing only (the agent refuses DSR with a tunnel;
			 * a tunnelled backend gets SNAT). */
			remote = lookup_ipcache(&p.dst);
			if (dsr_enabled() && !tunnel_of(remote)) {
				__u32 dst_id = remote ? remote->identity : ID_WORLD;

				ret = dsr_add_opt(skb, &p, frontend, frontend_port);
				if (ret)
					return drop(skb, &p, ret, DIR_INGRESS, 0, src_id, dst_id);
				return fib_forward(skb, &p, 0, src_id, dst_id);
			}
			/* On another node: this node stands in for the client, with
			 * its own address (the frontend may be a LoadBalancer address
			 * that other nodes announce too). */
			if (node_addr(p.family, node) < 0)
				return drop(skb, &p, DROP_NAT_UNSUPPORTED, DIR_INGRESS, 0, src_id, 0);
			port = snat_port(skb, &p, node, svc, client, client_port);
			if (!port)
				return drop(skb, &p, DROP_NAT_UNSUPPORTED, DIR_INGRESS, 0, src_id, 0);
			if (rewrite_addr(skb, &p, 1, node, port) < 0)
				return drop(skb, &p, DROP_NAT_UNSUPPORTED, DIR_INGRESS, 0, src_id, 0);
			return forward_remote(skb, &p);
		}
	}

	dst = lookup_endpoint(&p.dst);
	if (dst) {
		if (plain_tunnel_src(&p))
			return drop(skb, &p, DROP_INVALID_SIP, DIR_INGRESS, dst->ep_id, src_id, dst->identity);
		/* Another node's DSR flow: remember its frontend for the
		 * replies; to_container marks the connection as such. */
		ret = dsr_record(skb, &p);
		if (ret < 0)
			return drop(skb, &p, -ret, DIR_INGRESS, dst->ep_id, src_id, dst->identity);
		if (ret > 0)
			skb->mark = MARK_DSR;
		trace(skb, &p, OBS_FROM_NETWORK, DIR_INGRESS, dst->ep_id, src_id, dst->identity);
		return deliver_local(skb, &p, dst, DIR_INGRESS, dst->ep_id, src_id);
	}

	/* For the node itself: the host firewall. */
	hflags = host_flags();
	if (hflags && (identity_of(&p.dst) == ID_HOST || is_local_addr(skb, &p.dst))) {
		if (ct_lookup(&p, CT_INGRESS, 0) == CT_NEW) {
			if (!enforce(skb, &p, HOST_EP_ID, hflags, 0, src_id, ID_HOST, &reason))
				return drop(skb, &p, reason, DIR_INGRESS, HOST_EP_ID, src_id, ID_HOST);
			ct_create(&p, CT_INGRESS, src_id);
		}
	}
	return TC_ACT_OK;
}

/* node_src: a packet leaving by a device from the node itself: its
 * addresses, and a link-local source (the kernel never forwards one). */
static __always_inline int node_src(struct pkt *p)
{
	return identity_of(&p->src) == ID_HOST ||
	       (p->family == AF_INET6 && p->src.addr[0] == 0xfe && (p->src.addr[1] & 0xc0) == 0x80);
}

SEC("tcx/egress")
int to_netdev(struct __sk_buff *skb)
{
	struct ipcache_value *remote;
	struct config *cfg = get_config();
	struct pkt p;
	__u32 dst_id, hflags, vxlan;
	int ret, reason = 0;

	hflags = cfg ? cfg->host_flags : 0;
	vxlan = cfg ? cfg->vxlan_ifindex : 0;
	if (!hflags && !vxlan)
		return TC_ACT_OK;
	ret = parse(skb, &p);
	/* The node's own packets the host firewall cannot classify (an
	 * extension header chain it cannot walk, a fragment without its
	 * head) are not let out unchecked. */
	if (ret != PARSE_OK && ret != PARSE_PASS && hflags && !lookup_endpoint(&p.src) &&
	    node_src(&p))
		return drop(skb, &p, ret, DIR_EGRESS, HOST_EP_ID, ID_HOST, identity_of(&p.dst));
	if (ret != PARSE_OK || ipv6_link_scoped(&p))
		return TC_ACT_OK;
	dst_id = identity_of(&p.dst);

	/* The node's own traffic passes the host firewall's egress policy;
	 * forwarded pod traffic has pod sources. */
	if (hflags && !lookup_endpoint(&p.src) && node_src(&p)) {
		if (ct_lookup(&p, CT_EGRESS, 0) == CT_NEW) {
			if (!enforce(skb, &p, HOST_EP_ID, hflags, 1, ID_HOST, dst_id, &reason))
				return drop(skb, &p, reason, DIR_EGRESS, HOST_EP_ID, ID_HOST, dst_id);
			ct_create(&p, CT_EGRESS, ID_HOST);
		}
	}

	/* In tunnel mode the node reaches other nodes' pods through the
	 * overlay too: its packets, routed here towards the pod CIDR's node,
	 * are encapsulated instead. */
	if (vxlan) {
		remote = lookup_ipcache(&p.dst);
		if (tunnel_of(remote))
			return encap(skb, &p, tunnel_of(remote), vxlan, 0, identity_of(&p.src), dst_id);
	}
	return TC_ACT_OK;
}

char __license[] SEC("license") = "GPL";
