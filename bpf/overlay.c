//go:build ignore

/* Program on the VXLAN device (TCX ingress): decapsulated packets from
 * other nodes. Anyone who can send UDP to the node's VXLAN port can put
 * anything in the tunnel header and the inner packet, so nothing of it is
 * believed before the outer source is known to be a node: only then does
 * the VNI carry the sender's security identity (as in Cilium), and only
 * inner sources that may live behind that node are accepted. */
#include "lib/fwd.h"
#include "lib/hostfw.h"

/* overlay_source checks an encapsulated packet's sender and inner source
 * and sets *src_id to the inner source's identity; returns 0 or a drop
 * reason:
 * - the outer source must be a known node's address (DROP_UNKNOWN_SENDER;
 *   an unflagged remote-node entry is one too: an older agent's ipcache);
 * - the inner source must not be this node's: one of its endpoints or
 *   addresses (DROP_INVALID_SIP);
 * - an inner source the ipcache places behind a node (a pod, a pod CIDR, a
 *   node's address) must be behind the sender (DROP_INVALID_SIP);
 * - the VNI must be an identity a node sends: not 0, unmanaged, nor the
 *   host, which a node's own addresses get from the ipcache instead (a
 *   remote node that is the kube-apiserver has a more specific one)
 *   (DROP_INVALID_IDENTITY). */
static __always_inline int overlay_source(struct __sk_buff *skb, struct pkt *p, const struct bpf_tunnel_key *key,
					  __u32 *src_id)
{
	struct ipcache_key ok = { .prefixlen = 32 + 32, .family = AF_INET };
	__u32 outer_ip = bpf_htonl(key->remote_ipv4);
	struct ipcache_value *outer, *inner;
	__u32 vni = key->tunnel_id;

	__builtin_memcpy(ok.addr, &outer_ip, 4);
	outer = bpf_map_lookup_elem(&lumen_ipcache, &ok);
	if (!outer)
		return DROP_UNKNOWN_SENDER;
	if (is_node_addr(outer) ? outer->tunnel_ip4 != outer_ip : outer->identity != ID_REMOTE_NODE)
		return DROP_UNKNOWN_SENDER;

	if (lookup_endpoint(&p->src))
		return DROP_INVALID_SIP;
	inner = lookup_ipcache(&p->src);
	if (inner && inner->identity == ID_HOST)
		return DROP_INVALID_SIP;
	if (is_node_addr(inner)) {
		if (inner->tunnel_ip4 != outer_ip)
			return DROP_INVALID_SIP;
		*src_id = inner->identity;
		return 0;
	}
	if (inner && inner->identity == ID_REMOTE_NODE) {
		/* A node's address in an ipcache an older agent wrote (no
		 * owner recorded, until the new agent's first pass): a node
		 * sends from its own underlay address only. */
		if (p->family != AF_INET || __builtin_memcmp(p->src.addr, &outer_ip, 4))
			return DROP_INVALID_SIP;
		*src_id = ID_REMOTE_NODE;
		return 0;
	}
	if (inner && inner->tunnel_ip4) {
		if (inner->tunnel_ip4 != outer_ip)
			return DROP_INVALID_SIP;
	} else if (is_local_addr(skb, &p->src)) {
		return DROP_INVALID_SIP;
	}
	if (vni == 0 || vni == ID_UNMANAGED || vni == ID_HOST)
		return DROP_INVALID_IDENTITY;
	*src_id = vni;
	return 0;
}

SEC("tcx/ingress")
int from_overlay(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	struct endpoint_info *dst;
	struct pkt p;
	__u32 src_id = 0;
	int ret, reason = 0;

	ret = parse(skb, &p);
	if (ret == PARSE_PASS)
		return TC_ACT_OK;
	if (ret != PARSE_OK)
		return drop(skb, &p, ret, DIR_INGRESS, 0, 0, 0);
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return drop(skb, &p, DROP_NO_TUNNEL_KEY, DIR_INGRESS, 0, 0, 0);
	ret = overlay_source(skb, &p, &key, &src_id);
	if (ret)
		return drop(skb, &p, ret, DIR_INGRESS, 0, key.tunnel_id, identity_of(&p.dst));
	if (ipv6_link_scoped(&p))
		return TC_ACT_OK;

	dst = lookup_endpoint(&p.dst);
	if (!dst) {
		/* For the node itself: the host firewall, as from_netdev. */
		if (identity_of(&p.dst) == ID_HOST || is_local_addr(skb, &p.dst)) {
			if (!host_ingress(skb, &p, src_id, &reason))
				return drop(skb, &p, reason, DIR_INGRESS, HOST_EP_ID, src_id, ID_HOST);
		}
		return TC_ACT_OK;
	}
	trace(skb, &p, OBS_FROM_OVERLAY, DIR_INGRESS, dst->ep_id, src_id, dst->identity);
	/* to_container takes the identity from here, not from the inner
	 * source address. */
	skb->mark = MARK_IDENTITY | (src_id & ~MARK_IDENTITY_MASK);
	return deliver_local(skb, &p, dst, DIR_INGRESS, dst->ep_id, src_id);
}

char __license[] SEC("license") = "GPL";
