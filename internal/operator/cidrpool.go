package operator

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"strings"
)

// Family is an address family of a pod CIDR pool.
type Family string

// The two families.
const (
	IPv4 Family = "ipv4"
	IPv6 Family = "ipv6"
)

// ErrPoolExhausted is returned when no pool of a family has a free subnet.
var ErrPoolExhausted = errors.New("pod CIDR pool exhausted")

// maxSubnetBits bounds how many subnets one pool prefix may describe (2^62):
// more cannot be counted in a uint64 and nobody runs that many nodes.
const maxSubnetBits = 62

// ParsePools validates one family's pool flags: cidrs (comma-separated in
// the flag, already split here) and the per-node mask size. flagCIDR and
// flagMask name the flags in errors. No CIDRs gives no pools (the family is
// not allocated).
func ParsePools(family Family, flagCIDR string, cidrs []string, flagMask string, mask int) ([]netip.Prefix, error) {
	maxMask := 30 // a pod CIDR holds at least the gateway and one pod
	if family == IPv6 {
		maxMask = 126
	}
	var pools []netip.Prefix
	for _, s := range cidrs {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s: invalid value %q: not a CIDR", flagCIDR, s)
		}
		if p.Addr().Zone() != "" {
			return nil, fmt.Errorf("%s: invalid value %q: zones are not allowed", flagCIDR, s)
		}
		if (family == IPv4) != p.Addr().Is4() || p.Addr().Is4In6() {
			return nil, fmt.Errorf("%s: invalid value %q: not an %s CIDR", flagCIDR, s, family)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("%s: invalid value %q: host bits are set (did you mean %s?)", flagCIDR, s, p.Masked())
		}
		for _, q := range pools {
			if q.Overlaps(p) {
				return nil, fmt.Errorf("%s: invalid value %q: overlaps %s", flagCIDR, s, q)
			}
		}
		pools = append(pools, p)
	}
	if len(pools) == 0 {
		return nil, nil
	}
	if mask < 1 || mask > maxMask {
		return nil, fmt.Errorf("%s: invalid value %d: want 1..%d for %s", flagMask, mask, maxMask, family)
	}
	for _, p := range pools {
		if mask < p.Bits() {
			return nil, fmt.Errorf("%s: invalid value %d: shorter than the pool %s (%s)", flagMask, mask, p, flagCIDR)
		}
		if mask-p.Bits() > maxSubnetBits {
			return nil, fmt.Errorf("%s: invalid value %d: pool %s would hold 2^%d subnets (at most 2^%d)", flagMask, mask, p, mask-p.Bits(), maxSubnetBits)
		}
	}
	return pools, nil
}

// Pool allocates fixed-size subnets (pod CIDRs) from one or more prefixes
// of one family, first pool first. It is not safe for concurrent use.
type Pool struct {
	family Family
	mask   int
	ranges []*subnetRange
}

type subnetRange struct {
	prefix netip.Prefix
	size   uint64 // number of subnets
	used   map[uint64]struct{}
	next   uint64 // where the search for a free subnet starts
}

// NewPool returns a pool handing out /mask subnets of prefixes (validated
// with ParsePools).
func NewPool(family Family, prefixes []netip.Prefix, mask int) *Pool {
	p := &Pool{family: family, mask: mask}
	for _, pr := range prefixes {
		p.ranges = append(p.ranges, &subnetRange{prefix: pr, size: 1 << uint(mask-pr.Bits()), used: map[uint64]struct{}{}})
	}
	return p
}

// Family is the pool's address family.
func (p *Pool) Family() Family { return p.family }

// Allocate returns a free subnet, or ErrPoolExhausted.
func (p *Pool) Allocate() (netip.Prefix, error) {
	for _, r := range p.ranges {
		if uint64(len(r.used)) >= r.size {
			continue
		}
		// Searching from the last allocation makes a sequence of
		// allocations linear; freed subnets are found after a wrap.
		for i := uint64(0); i < r.size; i++ {
			idx := (r.next + i) % r.size
			if _, taken := r.used[idx]; !taken {
				r.used[idx] = struct{}{}
				r.next = (idx + 1) % r.size
				return subnet(r.prefix, p.mask, idx), nil
			}
		}
	}
	return netip.Prefix{}, fmt.Errorf("%s (%s, /%d): %w", p.describe(), p.family, p.mask, ErrPoolExhausted)
}

// Occupy marks sub as taken (an allocation found on a node). It reports
// whether sub belongs to the pool; an error means it does but is already
// taken or is not one of the pool's subnets (wrong size or alignment).
func (p *Pool) Occupy(sub netip.Prefix) (bool, error) {
	r, idx, ok, err := p.locate(sub)
	if !ok || err != nil {
		return ok, err
	}
	if _, taken := r.used[idx]; taken {
		return true, fmt.Errorf("%s is already allocated", sub)
	}
	r.used[idx] = struct{}{}
	return true, nil
}

// Release frees sub; subnets outside the pool are ignored.
func (p *Pool) Release(sub netip.Prefix) {
	if r, idx, ok, err := p.locate(sub); ok && err == nil {
		delete(r.used, idx)
	}
}

// Contains reports whether sub lies within one of the pool's prefixes.
func (p *Pool) Contains(sub netip.Prefix) bool {
	_, _, ok, _ := p.locate(sub)
	return ok
}

// Allocated is the number of subnets in use.
func (p *Pool) Allocated() int {
	n := 0
	for _, r := range p.ranges {
		n += len(r.used)
	}
	return n
}

// Free is the number of subnets still available (saturating).
func (p *Pool) Free() uint64 {
	var n uint64
	for _, r := range p.ranges {
		sum, carry := bits.Add64(n, r.size-uint64(len(r.used)), 0)
		if carry != 0 {
			return ^uint64(0)
		}
		n = sum
	}
	return n
}

func (p *Pool) describe() string {
	s := make([]string, len(p.ranges))
	for i, r := range p.ranges {
		s[i] = r.prefix.String()
	}
	return strings.Join(s, ",")
}

func (p *Pool) locate(sub netip.Prefix) (*subnetRange, uint64, bool, error) {
	for _, r := range p.ranges {
		if !r.prefix.Overlaps(sub) || sub.Bits() < r.prefix.Bits() {
			continue
		}
		if sub.Bits() != p.mask || sub.Masked() != sub {
			return nil, 0, true, fmt.Errorf("%s is not a /%d subnet of pool %s", sub, p.mask, r.prefix)
		}
		return r, subnetIndex(r.prefix, p.mask, sub.Addr()), true, nil
	}
	return nil, 0, false, nil
}

// subnet is the idx-th /mask subnet of base.
func subnet(base netip.Prefix, mask int, idx uint64) netip.Prefix {
	a := base.Addr().As16()
	hi, lo := be64(a[:8]), be64(a[8:])
	shift := uint(128 - mask)
	if base.Addr().Is4() {
		shift = uint(32 - mask)
	}
	// idx << shift as a 128-bit number, added to the address.
	var addHi, addLo uint64
	switch {
	case shift >= 64:
		addHi = idx << (shift - 64)
	case shift == 0:
		addLo = idx
	default:
		addLo = idx << shift
		addHi = idx >> (64 - shift)
	}
	var c uint64
	lo, c = bits.Add64(lo, addLo, 0)
	hi, _ = bits.Add64(hi, addHi, c)
	putBE64(a[:8], hi)
	putBE64(a[8:], lo)
	addr := netip.AddrFrom16(a)
	if base.Addr().Is4() {
		addr = addr.Unmap()
	}
	return netip.PrefixFrom(addr, mask)
}

// subnetIndex is the index of the /mask subnet holding addr within base.
func subnetIndex(base netip.Prefix, mask int, addr netip.Addr) uint64 {
	a, b := addr.As16(), base.Addr().As16()
	hi, lo := be64(a[:8]), be64(a[8:])
	bhi, blo := be64(b[:8]), be64(b[8:])
	lo, borrow := bits.Sub64(lo, blo, 0)
	hi, _ = bits.Sub64(hi, bhi, borrow)
	shift := uint(128 - mask)
	if base.Addr().Is4() {
		shift = uint(32 - mask)
	}
	switch {
	case shift >= 64:
		return hi >> (shift - 64)
	case shift == 0:
		return lo
	default:
		return lo>>shift | hi<<(64-shift)
	}
}

func be64(b []byte) uint64 {
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}

func putBE64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}
