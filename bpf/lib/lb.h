/* Service load balancing for packets (tc): frontend lookup, backend
 * selection (random, Maglev, client affinity) and the address/port
 * rewrites with their checksum fixes. The socket-level twin is sock.c. */
#pragma once
#include "maps.h"
#include "pkt.h"
#include "conntrack.h"

/* lb_lookup finds the service of (addr, port, proto). Internal traffic
 * tries the internal scope first (services whose traffic policies differ
 * have both); external traffic only the external one. */
static __always_inline struct lb_value *lb_lookup(struct lb_key *key, __u8 family, __u8 proto,
						  const __u8 *addr, __u16 port, int internal)
{
	struct lb_value *svc;

	__builtin_memset(key, 0, sizeof(*key));
	key->family = family;
	key->proto = proto;
	key->dport = bpf_htons(port);
	__builtin_memcpy(key->addr, addr, 16);
	if (internal) {
		key->scope = LB_SCOPE_INTERNAL;
		svc = bpf_map_lookup_elem(&lumen_lb_services, key);
		if (svc)
			return svc;
	}
	key->scope = LB_SCOPE_EXTERNAL;
	return bpf_map_lookup_elem(&lumen_lb_services, key);
}

/* flow_hash is identical on every node for the same flow (Maglev needs
 * that; the kernel's skb hash is seeded per boot). */
static __always_inline __u32 flow_hash(const struct pkt *p)
{
	__u32 h = 2166136261u;
	const __u32 *s = (const __u32 *)p->src.addr;

#pragma unroll
	for (int i = 0; i < 4; i++)
		h = (h ^ s[i]) * 16777619u;
	h = (h ^ ((__u32)p->sport << 16 | p->dport)) * 16777619u;
	h = (h ^ p->proto) * 16777619u;
	h ^= h >> 15;
	h *= 0x2c1b3c6d;
	h ^= h >> 12;
	return h;
}

static __always_inline __u32 lb_pick(struct lb_key *key, struct lb_value *svc, __u32 hash)
{
	struct lb_value *slot;

	if (svc->count == 0)
		return 0;
	if (svc->flags & SVC_F_MAGLEV) {
		struct config *cfg;
		__u32 zero = 0, idx, *id;
		void *table = bpf_map_lookup_elem(&lumen_lb_maglev, &svc->rev_nat);

		cfg = bpf_map_lookup_elem(&lumen_config, &zero);
		if (table && cfg && cfg->maglev_size) {
			idx = hash % cfg->maglev_size;
			id = bpf_map_lookup_elem(table, &idx);
			if (id && *id)
				return *id;
		}
	}
	key->slot = (bpf_get_prandom_u32() % svc->count) + 1;
	slot = bpf_map_lookup_elem(&lumen_lb_services, key);
	key->slot = 0;
	return slot ? slot->backend_id : 0;
}

/* lb_select chooses the backend of a new connection, honouring client
 * affinity. Returns 0 when the service has no active backend. */
static __always_inline __u32 lb_select(struct lb_key *key, struct lb_value *svc, const struct pkt *p)
{
	struct lb_affinity_key ak = {};
	struct lb_affinity_value *av, nv = {};
	__u64 now = bpf_ktime_get_ns();
	__u32 id;

	if (svc->flags & SVC_F_AFFINITY) {
		ak.rev_nat = svc->rev_nat;
		ak.family = p->family;
		__builtin_memcpy(ak.client, p->src.addr, 16);
		av = bpf_map_lookup_elem(&lumen_lb_affinity, &ak);
		if (av && now - av->last_used < (__u64)svc->affinity_timeout * 1000000000ull) {
			struct lb_backend *b = bpf_map_lookup_elem(&lumen_lb_backends, &av->backend_id);
			if (b && !(b->flags & BACKEND_F_TERMINATING)) {
				av->last_used = now;
				return av->backend_id;
			}
		}
	}
	id = lb_pick(key, svc, flow_hash(p));
	if (id && (svc->flags & SVC_F_AFFINITY)) {
		nv.last_used = now;
		nv.backend_id = id;
		bpf_map_update_elem(&lumen_lb_affinity, &ak, &nv, BPF_ANY);
	}
	return id;
}

static __always_inline int csum_off(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return 16;
	case IPPROTO_UDP:
		return 6;
	}
	return -1;
}

/* rewrite_addr replaces the source (is_src) or destination address and
 * port of the packet, fixing the IPv4 header and L4 checksums. A later
 * fragment has no L4 header: only its address changes (the first
 * fragment's L4 checksum, updated incrementally, covers the whole
 * datagram). */
static __always_inline int rewrite_addr(struct __sk_buff *skb, struct pkt *p, int is_src, const __u8 *addr,
					__be16 port)
{
	__u8 *old = is_src ? p->src.addr : p->dst.addr;
	__be16 old_port = bpf_htons(is_src ? p->sport : p->dport);
	int coff = csum_off(p->proto);
	__u32 l4 = p->l4_off;
	__u32 csum_flags = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	int has_l4 = !(p->frag & PKT_FRAG_LATER);

	if (coff < 0 && old_port != port)
		return -1; /* SCTP's CRC covers the ports: not rewritable here */
	if (!has_l4)
		coff = -1;
	if (p->family == AF_INET) {
		__be32 o, n;
		__u32 off = p->l3_off + (is_src ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr));

		__builtin_memcpy(&o, old, 4);
		__builtin_memcpy(&n, addr, 4);
		if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), o, n, 4) < 0)
			return -1;
		if (coff >= 0 && bpf_l4_csum_replace(skb, l4 + coff, o, n, csum_flags | BPF_F_PSEUDO_HDR | 4) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, off, &n, 4, 0) < 0)
			return -1;
	} else {
		__u32 off = p->l3_off + (is_src ? offsetof(struct ipv6hdr, saddr) : offsetof(struct ipv6hdr, daddr));
		__s64 diff = bpf_csum_diff((__be32 *)old, 16, (__be32 *)addr, 16, 0);

		if (coff >= 0 && bpf_l4_csum_replace(skb, l4 + coff, 0, diff, csum_flags | BPF_F_PSEUDO_HDR) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, off, addr, 16, 0) < 0)
			return -1;
	}
	if (old_port != port && has_l4) {
		__u32 poff = l4 + (is_src ? 0 : 2);

		if (bpf_l4_csum_replace(skb, l4 + coff, old_port, port, csum_flags | 2) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, poff, &port, 2, 0) < 0)
			return -1;
	}
	if (is_src) {
		__builtin_memcpy(p->src.addr, addr, 16);
		p->sport = bpf_ntohs(port);
	} else {
		__builtin_memcpy(p->dst.addr, addr, 16);
		p->dport = bpf_ntohs(port);
	}
	return 0;
}

/* lb_dnat translates a packet to a service frontend: the backend of an
 * existing connection (CT_SERVICE entry) or a newly selected one. Returns
 * the service id (rev_nat) once translated, 0 when the packet is not for a
 * service, or a negative drop reason. */
static __always_inline int lb_dnat(struct __sk_buff *skb, struct pkt *p, int internal, __u32 *backend_out)
{
	struct lb_key key;
	struct lb_value *svc;
	struct lb_backend *b = 0;
	struct ct_key ck;
	struct ct_entry *ce;
	__u32 id = 0;
	__u8 addr[16] = {};

	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_SCTP_)
		return 0;
	svc = lb_lookup(&key, p->family, p->proto, p->dst.addr, p->dport, internal);
	if (!svc)
		return 0;

	/* An established connection keeps its backend while it exists, even
	 * when it is terminating. */
	ct_fill(&ck, p, CT_SERVICE, 0);
	ce = bpf_map_lookup_elem(&lumen_ct, &ck);
	if (ce) {
		b = bpf_map_lookup_elem(&lumen_lb_backends, &ce->backend_id);
		if (b) {
			id = ce->backend_id;
			ce->last_seen = bpf_ktime_get_ns();
			ce->tcp_flags |= p->tcp_flags;
			if (p->tcp_flags & 0x05)
				ce->flags |= CT_F_CLOSING;
		}
	}
	/* A later fragment goes where its first fragment went, or nowhere:
	 * a new backend would get a datagram without its head. */
	if (!b && (p->frag & PKT_FRAG_LATER))
		return -DROP_FRAG_NOT_FOUND;
	if (!b) {
		id = lb_select(&key, svc, p);
		if (!id)
			return -DROP_SERVICE_NO_BACKEND;
		b = bpf_map_lookup_elem(&lumen_lb_backends, &id);
		if (!b)
			return -DROP_SERVICE_NO_BACKEND;
		ct_create_nat(p, CT_SERVICE, 0, svc->rev_nat, id);
	}
	__builtin_memcpy(addr, b->addr, 16);
	if (rewrite_addr(skb, p, 0, addr, b->port) < 0)
		return -DROP_NAT_UNSUPPORTED;
	*backend_out = id;
	return svc->rev_nat;
}

/* lb_rev_nat gives a reply of a load-balanced connection the service's
 * address as its source again. */
static __always_inline int lb_rev_nat(struct __sk_buff *skb, struct pkt *p, __u32 rev_nat)
{
	struct lb_revnat *r = bpf_map_lookup_elem(&lumen_lb_revnat, &rev_nat);
	__u8 addr[16] = {};

	if (!r)
		return 0;
	__builtin_memcpy(addr, r->addr, 16);
	return rewrite_addr(skb, p, 1, addr, r->port);
}
