package policy

import (
	"net/netip"
	"slices"
	"strings"
)

// parseCIDRLabel reads the key of a cidr: label: "10.0.0.0/8", "fd00::/64",
// or Cilium's colon-free IPv6 form "fd00--/64"; a bare address is a host
// prefix.
func parseCIDRLabel(key string) (netip.Prefix, bool) {
	try := func(s string) (netip.Prefix, bool) {
		if p, err := netip.ParsePrefix(s); err == nil {
			return p.Masked(), true
		}
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			return netip.PrefixFrom(a, a.BitLen()), true
		}
		return netip.Prefix{}, false
	}
	if p, ok := try(key); ok {
		return p, true
	}
	if strings.Contains(key, "-") {
		return try(strings.ReplaceAll(key, "-", ":"))
	}
	return netip.Prefix{}, false
}

// within reports whether inner is inside outer (same family, outer no longer).
func within(inner, outer netip.Prefix) bool {
	return inner.Addr().Is4() == outer.Addr().Is4() && outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// selectCIDR returns the identities a CIDR rule selects: the CIDR identities
// whose prefix is inside p (they carry a cidr: label for a prefix inside p)
// and none of whose prefixes is inside an except prefix. A /0 also selects
// the world identities without a cidr: label (reserved:world), as Cilium
// maps 0.0.0.0/0 and ::/0 to world.
func (ix *identityIndex) selectCIDR(p netip.Prefix, except []netip.Prefix) bitset {
	out := newBitset(len(ix.ids))
	if p.Bits() == 0 {
		// The world identity itself (no cidr: label); CIDR identities of the
		// prefix's family follow from the loop below.
		out.or(ix.world)
		for _, c := range ix.cidrs {
			out[c.idx/64] &^= 1 << (c.idx % 64)
		}
	}
	for _, c := range ix.cidrs {
		if within(c.prefix, p) {
			out.set(c.idx)
		}
	}
	if len(except) > 0 {
		for _, c := range ix.cidrs {
			if !out.has(c.idx) {
				continue
			}
			for _, e := range except {
				if within(c.prefix, e) {
					out[c.idx/64] &^= 1 << (c.idx % 64)
					break
				}
			}
		}
	}
	return out
}

// CIDRPrefixes returns every prefix that the CIDR rules and ipBlocks of the
// policies mention, except prefixes included, sorted and deduplicated. The
// caller allocates one local CIDR identity per prefix, labelled
// cidr:<every returned prefix that contains it> plus reserved:world, and
// maps the prefix to it in the ipcache. 0.0.0.0/0 and ::/0 are left out:
// they are the world identity.
func CIDRPrefixes(policies []*Policy) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range policies {
		if p == nil {
			continue
		}
		for _, r := range p.rules {
			for _, s := range r.sections {
				for _, pe := range s.peers {
					if pe.kind != peerCIDR {
						continue
					}
					if pe.prefix.Bits() > 0 {
						out = append(out, pe.prefix)
					}
					out = append(out, pe.except...)
				}
			}
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
