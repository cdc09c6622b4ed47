package ipam

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
)

func TestAllocateReleasePersist(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ipam.json")
	v4, v6 := netip.MustParsePrefix("10.200.1.0/29"), netip.MustParsePrefix("fd00:10:200:1::/125")
	m, err := New(v4, v6, file)
	if err != nil {
		t.Fatal(err)
	}
	gw4, gw6 := m.Gateways()
	if gw4.String() != "10.200.1.1" || gw6.String() != "fd00:10:200:1::1" {
		t.Fatalf("gateways %s %s", gw4, gw6)
	}
	a, err := m.Allocate("c1")
	if err != nil {
		t.Fatal(err)
	}
	if a.IPv4.String() != "10.200.1.2" || a.IPv6.String() != "fd00:10:200:1::2" {
		t.Fatalf("first allocation %+v", a)
	}
	again, _ := m.Allocate("c1")
	if again != a {
		t.Fatalf("second Allocate for the same owner gave %+v, want %+v", again, a)
	}
	// /29: .2-.6 usable (.0 network, .1 gateway, .7 broadcast).
	for i := 2; i <= 5; i++ {
		if _, err := m.Allocate(string(rune('a' + i))); err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
	}
	if _, err := m.Allocate("full"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("allocation past the end: %v, want ErrExhausted", err)
	}
	// A restarted agent sees the same allocations.
	m2, err := New(v4, v6, file)
	if err != nil {
		t.Fatal(err)
	}
	if got := m2.Owners()["c1"]; got != a {
		t.Fatalf("restored %+v, want %+v", got, a)
	}
	if ok, _ := m2.Release("c1"); !ok {
		t.Fatal("release of c1 reported nothing to release")
	}
	if ok, _ := m2.Release("c1"); ok {
		t.Fatal("second release reported success")
	}
	b, err := m2.Allocate("new")
	if err != nil || b.IPv4 != a.IPv4 {
		t.Fatalf("released address not reused: %+v %v", b, err)
	}
}

func TestBadCIDRs(t *testing.T) {
	if _, err := New(netip.MustParsePrefix("fd00::/64"), netip.Prefix{}, ""); err == nil {
		t.Error("IPv6 prefix accepted as IPv4 pod CIDR")
	}
	if _, err := New(netip.Prefix{}, netip.Prefix{}, ""); err == nil {
		t.Error("no CIDR accepted")
	}
	m, _ := New(netip.MustParsePrefix("10.0.0.0/24"), netip.Prefix{}, "")
	if _, err := m.Allocate(""); err == nil {
		t.Error("empty owner accepted")
	}
}
