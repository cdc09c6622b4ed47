/* Policy enforcement: map lookups only, no rule walking. The agent computes
 * each endpoint's entries (deny precedence resolved in user space within an
 * identity group); here two longest-prefix lookups are combined: one for
 * the peer's identity, one for "any identity". Either deny wins; else
 * either allow; else default deny. */
#pragma once
#include "maps.h"
#include "pkt.h"

#define POLICY_ALLOW 0
#define POLICY_DENY_DEFAULT 1
#define POLICY_DENY_EXPLICIT 2

#define POLICY_FULL_PREFIX (64 + 16 + 16)

/* policy_port is the key's port: the destination port, or for ICMP and
 * ICMPv6 the message type (Cilium's ICMP rules; p->dport holds the echo
 * identifier there, which conntrack uses and a pod chooses freely). */
static __always_inline __u16 policy_port(const struct pkt *p)
{
	if (p->proto == IPPROTO_ICMP || p->proto == 58)
		return p->icmp_type;
	return p->dport;
}

static __always_inline struct policy_value *policy_find(__u16 ep_id, __u8 egress, __u32 identity,
							 struct pkt *p, __u32 *plen)
{
	struct policy_key key = {
		.prefixlen = POLICY_FULL_PREFIX,
		.ep_id = ep_id,
		.egress = egress,
		.identity = identity,
		.proto = p->proto,
		.dport = bpf_htons(policy_port(p)),
	};
	struct policy_value *v = bpf_map_lookup_elem(&lumen_policy, &key);

	/* LPM does not say which prefix matched; the value records nothing
	 * either, so report L3 (64) vs L4 by probing the exact L3 entry. */
	if (v) {
		struct policy_key l3 = { .prefixlen = 64, .ep_id = ep_id, .egress = egress, .identity = identity };
		struct policy_value *l3v = bpf_map_lookup_elem(&lumen_policy, &l3);
		*plen = (l3v == v) ? 64 : POLICY_FULL_PREFIX;
	}
	return v;
}

/* policy_check decides a new connection of endpoint ep_id with a peer of
 * identity, and reports the match type. */
static __always_inline int policy_check(__u16 ep_id, __u8 egress, __u32 identity, struct pkt *p,
					__u8 *match)
{
	__u32 plen_id = 0, plen_any = 0;
	struct policy_value *by_id = policy_find(ep_id, egress, identity, p, &plen_id);
	struct policy_value *by_any = policy_find(ep_id, egress, 0, p, &plen_any);

	*match = MATCH_NONE;
	if ((by_id && by_id->deny) || (by_any && by_any->deny)) {
		if (by_id && by_id->deny)
			*match = plen_id == 64 ? MATCH_L3_ONLY : MATCH_L3_L4;
		else
			*match = plen_any == 64 ? MATCH_ALL : MATCH_L4_ONLY;
		return POLICY_DENY_EXPLICIT;
	}
	if (by_id) {
		*match = plen_id == 64 ? MATCH_L3_ONLY : MATCH_L3_L4;
		return POLICY_ALLOW;
	}
	if (by_any) {
		*match = plen_any == 64 ? MATCH_ALL : MATCH_L4_ONLY;
		return POLICY_ALLOW;
	}
	return POLICY_DENY_DEFAULT;
}
