package neighbor

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/nstest"
	"github.com/vishvananda/netlink"
)

// pair is two namespaces joined by a veth: "node" (eth0) and "peer" (eth0).
type pair struct {
	node, peer         *nstest.NS
	nodeLink, peerLink netlink.Link
}

func newPair(t *testing.T) *pair {
	p := &pair{node: nstest.New(t, "nb"), peer: nstest.New(t, "nb")}
	p.nodeLink, p.peerLink = nstest.Veth(t, p.node, "eth0", p.peer, "eth0")
	p.node.AddAddr(t, p.nodeLink, "10.1.0.1/24")
	p.node.AddAddr(t, p.nodeLink, "fd00:1::1/64")
	p.peer.AddAddr(t, p.peerLink, "10.1.0.2/24")
	p.peer.AddAddr(t, p.peerLink, "fd00:1::2/64")
	return p
}

func (p *pair) idx() int { return p.nodeLink.Attrs().Index }

// get returns the node's entry for ip on eth0, or nil.
func (p *pair) get(t *testing.T, ip string) *netlink.Neigh {
	t.Helper()
	n, err := lookup(p.node.NL, Entry{LinkIndex: p.idx(), IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitReachable polls until the entry for ip is managed, ext-learned,
// REACHABLE and carries the peer's MAC.
func (p *pair) waitReachable(t *testing.T, ip string) {
	t.Helper()
	want := p.peerLink.Attrs().HardwareAddr
	nstest.Eventually(t, 60*time.Second, func() error {
		n := p.get(t, ip)
		switch {
		case n == nil:
			return fmt.Errorf("no entry for %s", ip)
		case n.Flags&netlink.NTF_EXT_LEARNED == 0 || n.FlagsExt&netlink.NTF_EXT_MANAGED == 0:
			return fmt.Errorf("%s: flags %#x ext %#x, want extern_learn managed", ip, n.Flags, n.FlagsExt)
		case n.State != netlink.NUD_REACHABLE:
			return fmt.Errorf("%s: state %s, want REACHABLE", ip, fmt.Sprintf("%#x", n.State))
		case n.HardwareAddr.String() != want.String():
			return fmt.Errorf("%s: lladdr %s, want %s", ip, n.HardwareAddr, want)
		}
		return nil
	})
}

func TestEnsureResolves(t *testing.T) {
	p := newPair(t)
	for _, ip := range []string{"10.1.0.2", "fd00:1::2"} {
		if err := Ensure(p.node.NL, p.idx(), net.ParseIP(ip)); err != nil {
			t.Fatalf("Ensure(%s): %v", ip, err)
		}
		// Idempotent.
		if err := Ensure(p.node.NL, p.idx(), net.ParseIP(ip)); err != nil {
			t.Fatalf("second Ensure(%s): %v", ip, err)
		}
	}
	for _, ip := range []string{"10.1.0.2", "fd00:1::2"} {
		p.waitReachable(t, ip)
	}
	owned, err := Owned(p.node.NL)
	if err != nil {
		t.Fatal(err)
	}
	if got := entryStrings(owned); !slices.Equal(got, []string{"10.1.0.2", "fd00:1::2"}) {
		t.Errorf("owned entries %v, want 10.1.0.2 and fd00:1::2", got)
	}

	for _, ip := range []string{"10.1.0.2", "fd00:1::2"} {
		if err := Remove(p.node.NL, p.idx(), net.ParseIP(ip)); err != nil {
			t.Fatalf("Remove(%s): %v", ip, err)
		}
		if n := p.get(t, ip); n != nil && IsOwned(n) {
			t.Errorf("%s still owned after Remove: %+v", ip, n)
		}
		if err := Remove(p.node.NL, p.idx(), net.ParseIP(ip)); err != nil {
			t.Errorf("Remove(%s) of a missing entry: %v", ip, err)
		}
	}
}

func TestMigratePermanent(t *testing.T) {
	p := newPair(t)
	fake, _ := net.ParseMAC("02:00:00:00:00:99")
	for _, ip := range []string{"10.1.0.2", "fd00:1::2"} {
		perm := &netlink.Neigh{LinkIndex: p.idx(), IP: net.ParseIP(ip), State: netlink.NUD_PERMANENT, HardwareAddr: fake}
		if err := p.node.NL.NeighAdd(perm); err != nil {
			t.Fatalf("adding permanent %s: %v", ip, err)
		}
	}
	// Through Sync, as the agent does it.
	err := Sync(p.node.NL, []Entry{
		{LinkIndex: p.idx(), IP: net.ParseIP("10.1.0.2")},
		{LinkIndex: p.idx(), IP: net.ParseIP("fd00:1::2")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"10.1.0.2", "fd00:1::2"} {
		p.waitReachable(t, ip) // the fake MAC is gone
	}
}

func TestSync(t *testing.T) {
	p := newPair(t)
	idx := p.idx()
	// Lumen's entries from before; one of them is no longer wanted.
	for _, ip := range []string{"10.1.0.2", "10.1.0.77", "fd00:1::77"} {
		if err := Ensure(p.node.NL, idx, net.ParseIP(ip)); err != nil {
			t.Fatal(err)
		}
	}
	// Entries of others: must survive.
	mac, _ := net.ParseMAC("02:00:00:00:00:55")
	foreign := []*netlink.Neigh{
		{LinkIndex: idx, IP: net.ParseIP("10.1.0.55"), State: netlink.NUD_PERMANENT, HardwareAddr: mac},
		{LinkIndex: idx, IP: net.ParseIP("10.1.0.56"), State: netlink.NUD_REACHABLE, HardwareAddr: mac, Flags: netlink.NTF_EXT_LEARNED},
		{LinkIndex: idx, IP: net.ParseIP("fd00:1::55"), State: netlink.NUD_STALE, HardwareAddr: mac},
	}
	for _, n := range foreign {
		if err := p.node.NL.NeighAdd(n); err != nil {
			t.Fatalf("adding foreign %s: %v", n.IP, err)
		}
	}

	desired := []Entry{{LinkIndex: idx, IP: net.ParseIP("10.1.0.2")}, {LinkIndex: idx, IP: net.ParseIP("fd00:1::2")}}
	if err := Sync(p.node.NL, desired); err != nil {
		t.Fatal(err)
	}
	owned, err := Owned(p.node.NL)
	if err != nil {
		t.Fatal(err)
	}
	if got := entryStrings(owned); !slices.Equal(got, []string{"10.1.0.2", "fd00:1::2"}) {
		t.Errorf("owned after Sync %v, want [10.1.0.2 fd00:1::2]", got)
	}
	for _, n := range foreign {
		got := p.get(t, n.IP.String())
		if got == nil || got.HardwareAddr.String() != mac.String() {
			t.Errorf("foreign entry %s touched by Sync: %+v", n.IP, got)
		}
	}
	p.waitReachable(t, "fd00:1::2")

	// Sync to nothing removes Lumen's entries only.
	if err := Sync(p.node.NL, nil); err != nil {
		t.Fatal(err)
	}
	if owned, _ := Owned(p.node.NL); len(owned) != 0 {
		t.Errorf("owned after Sync(nil): %v", owned)
	}
	if p.get(t, "10.1.0.55") == nil {
		t.Error("permanent foreign entry removed by Sync(nil)")
	}
}

func TestBadInput(t *testing.T) {
	p := newPair(t)
	h := p.node.NL
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"nil handle", Ensure(nil, 1, net.ParseIP("10.1.0.2")), "handle"},
		{"nil IP", Ensure(h, p.idx(), nil), "IP is nil"},
		{"multicast", Ensure(h, p.idx(), net.ParseIP("224.0.0.1")), "224.0.0.1"},
		{"unspecified", Ensure(h, p.idx(), net.ParseIP("::")), "::"},
		{"zero index", Ensure(h, 0, net.ParseIP("10.1.0.2")), "link index 0"},
		{"missing link", Ensure(h, 4242, net.ParseIP("10.1.0.2")), "link index 4242 not found"},
		{"short IP", Remove(h, p.idx(), net.IP{1, 2}), "invalid length 2"},
		{"sync bad entry", Sync(h, []Entry{{LinkIndex: 4242, IP: net.ParseIP("10.1.0.9")}}), "link index 4242 not found"},
	}
	for _, c := range cases {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, c.err, c.want)
		}
	}
}

func entryStrings(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.IP.String())
	}
	slices.Sort(out)
	return out
}
