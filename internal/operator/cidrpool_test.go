package operator

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func mustPools(t testing.TB, f Family, cidrs string, mask int) []netip.Prefix {
	t.Helper()
	p, err := ParsePools(f, "cidr", strings.Split(cidrs, ","), "mask", mask)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPoolAllocatesDistinctSubnetsUntilExhausted(t *testing.T) {
	pool := NewPool(IPv4, mustPools(t, IPv4, "10.200.0.0/22,10.201.0.0/23", 24), 24)
	var got []string
	seen := map[netip.Prefix]bool{}
	for {
		p, err := pool.Allocate()
		if errors.Is(err, ErrPoolExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("%s allocated twice", p)
		}
		seen[p] = true
		got = append(got, p.String())
	}
	want := "10.200.0.0/24 10.200.1.0/24 10.200.2.0/24 10.200.3.0/24 10.201.0.0/24 10.201.1.0/24"
	if strings.Join(got, " ") != want {
		t.Fatalf("allocated %v, want %s", got, want)
	}
	if pool.Free() != 0 || pool.Allocated() != 6 {
		t.Fatalf("free %d allocated %d, want 0 and 6", pool.Free(), pool.Allocated())
	}
	// A released subnet is handed out again, and only it.
	pool.Release(netip.MustParsePrefix("10.200.2.0/24"))
	if p, err := pool.Allocate(); err != nil || p.String() != "10.200.2.0/24" {
		t.Fatalf("after release: %v %v, want 10.200.2.0/24", p, err)
	}
	if _, err := pool.Allocate(); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("want exhausted, got %v", err)
	}
}

func TestPoolOccupy(t *testing.T) {
	pool := NewPool(IPv4, mustPools(t, IPv4, "10.200.0.0/16", 24), 24)
	for _, tc := range []struct {
		cidr   string
		inPool bool
		err    string
	}{
		{"10.200.0.0/24", true, ""},
		{"10.200.0.0/24", true, "already allocated"},
		{"10.200.7.0/25", true, "not a /24 subnet"},
		{"10.200.0.0/15", false, ""}, // larger than the pool: not ours
		{"10.9.0.0/24", false, ""},
		{"fd00::/64", false, ""},
	} {
		in, err := pool.Occupy(netip.MustParsePrefix(tc.cidr))
		if in != tc.inPool || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Occupy(%s) = %v, %v; want %v, %q", tc.cidr, in, err, tc.inPool, tc.err)
		}
	}
	// Allocation skips what was occupied.
	if p, _ := pool.Allocate(); p.String() != "10.200.1.0/24" {
		t.Fatalf("allocated %s, want 10.200.1.0/24", p)
	}
}

func TestPoolIPv6AndLargeSpaces(t *testing.T) {
	pool := NewPool(IPv6, mustPools(t, IPv6, "fd00:10:200::/48", 64), 64)
	for i, want := range []string{"fd00:10:200::/64", "fd00:10:200:1::/64", "fd00:10:200:2::/64"} {
		if p, err := pool.Allocate(); err != nil || p.String() != want {
			t.Fatalf("allocation %d: %v %v, want %s", i, p, err, want)
		}
	}
	if pool.Free() != 65536-3 {
		t.Fatalf("free %d", pool.Free())
	}
	// Subnet arithmetic across the 64-bit boundary, both directions.
	base := netip.MustParsePrefix("fd00::/8")
	for _, tc := range []struct {
		mask int
		idx  uint64
		want string
	}{
		{70, 1, "fd00::400:0:0:0/70"},
		{64, 1<<56 - 1, "fdff:ffff:ffff:ffff::/64"},
		{120, 1, "fd00::100/120"},
		{66, 5, "fd00:0:0:1:4000::/66"},
	} {
		got := subnet(base, tc.mask, tc.idx)
		if got.String() != tc.want {
			t.Errorf("subnet(%s, /%d, %d) = %s, want %s", base, tc.mask, tc.idx, got, tc.want)
		}
		if back := subnetIndex(base, tc.mask, got.Addr()); back != tc.idx {
			t.Errorf("subnetIndex(%s) = %d, want %d", got, back, tc.idx)
		}
	}
	huge := NewPool(IPv6, mustPools(t, IPv6, "fd00::/8", 70), 70)
	if huge.Free() != 1<<62 {
		t.Fatalf("free %d, want 2^62", huge.Free())
	}
}

func TestParsePoolsErrorsNameFlagAndValue(t *testing.T) {
	for _, tc := range []struct {
		f     Family
		cidrs string
		mask  int
		want  string
	}{
		{IPv4, "10.200.0.0", 24, `cluster-pool-ipv4-cidr: invalid value "10.200.0.0": not a CIDR`},
		{IPv4, "10.200.1.0/16", 24, `host bits are set (did you mean 10.200.0.0/16?)`},
		{IPv4, "fd00::/48", 24, `not an ipv4 CIDR`},
		{IPv6, "10.0.0.0/8", 64, `not an ipv6 CIDR`},
		{IPv4, "10.0.0.0/8,10.200.0.0/16", 24, `"10.200.0.0/16": overlaps 10.0.0.0/8`},
		{IPv4, "10.200.0.0/16", 31, `cluster-pool-ipv4-mask-size: invalid value 31: want 1..30`},
		{IPv4, "10.200.0.0/16", 8, `cluster-pool-ipv4-mask-size: invalid value 8: shorter than the pool 10.200.0.0/16`},
		{IPv6, "fd00::/8", 120, `would hold 2^112 subnets`},
	} {
		flagC, flagM := "cluster-pool-"+string(tc.f)+"-cidr", "cluster-pool-"+string(tc.f)+"-mask-size"
		_, err := ParsePools(tc.f, flagC, strings.Split(tc.cidrs, ","), flagM, tc.mask)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePools(%s, %q, %d) = %v, want error containing %q", tc.f, tc.cidrs, tc.mask, err, tc.want)
		}
	}
	if p, err := ParsePools(IPv4, "c", nil, "m", 0); err != nil || p != nil {
		t.Fatalf("no CIDRs: %v %v, want no pools and no error", p, err)
	}
}

// FuzzParsePools: whatever the flags say, parsing never panics, and a pool
// it accepts allocates aligned subnets inside itself, never twice.
func FuzzParsePools(f *testing.F) {
	for _, s := range []struct {
		cidrs string
		mask  int
		v6    bool
	}{
		{"10.200.0.0/16", 24, false}, {"10.0.0.0/8,192.168.0.0/16", 26, false}, {"fd00:10:200::/48", 64, true},
		{"fd00::/104", 120, true}, {"0.0.0.0/0", 30, false}, {"::/0", 62, true}, {"10.1.2.3/33", 24, false},
		{"", 24, false}, {" 10.0.0.0/30 ", 30, false}, {"::ffff:10.0.0.0/104", 120, true}, {"fe80::%eth0/64", 64, true},
	} {
		f.Add(s.cidrs, s.mask, s.v6)
	}
	f.Fuzz(func(t *testing.T, cidrs string, mask int, v6 bool) {
		fam := IPv4
		if v6 {
			fam = IPv6
		}
		pools, err := ParsePools(fam, "cidr", strings.Split(cidrs, ","), "mask", mask)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "cidr: ") && !strings.HasPrefix(err.Error(), "mask: ") {
				t.Fatalf("error does not name the flag: %v", err)
			}
			return
		}
		pool := NewPool(fam, pools, mask)
		seen := map[netip.Prefix]bool{}
		for range 64 {
			p, err := pool.Allocate()
			if errors.Is(err, ErrPoolExhausted) {
				break
			}
			if err != nil || seen[p] || p.Bits() != mask || p.Masked() != p || !pool.Contains(p) || familyOf(p) != fam {
				t.Fatalf("bad allocation %s (err %v) from %v /%d", p, err, pools, mask)
			}
			if in, err := pool.Occupy(p); !in || err == nil {
				t.Fatalf("Occupy(%s) of an allocated subnet = %v, %v", p, in, err)
			}
			seen[p] = true
		}
	})
}
