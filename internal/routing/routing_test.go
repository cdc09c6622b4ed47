package routing

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// node is a namespace with two underlay veths (eth0, eth1) and a pod-side
// veth pair (lxc0/lxc1) to route endpoints to.
type node struct {
	ns               *nstest.NS
	eth0, eth1, lxc0 int
	lxc1             int
}

func newNode(t *testing.T) *node {
	ns := nstest.New(t, "rt")
	peer := nstest.New(t, "rt")
	e0, _ := nstest.Veth(t, ns, "eth0", peer, "eth0")
	e1, _ := nstest.Veth(t, ns, "eth1", peer, "eth1")
	ns.AddAddr(t, e0, "10.0.0.1/24")
	ns.AddAddr(t, e0, "fd00::1/64")
	ns.AddAddr(t, e1, "10.0.1.1/24")
	ns.AddAddr(t, e1, "fd00:1::1/64")
	l0, l1 := nstest.Veth(t, ns, "lxc0", ns, "lxc1")
	return &node{ns: ns, eth0: e0.Attrs().Index, eth1: e1.Attrs().Index, lxc0: l0.Attrs().Index, lxc1: l1.Attrs().Index}
}

func cidr(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// table renders the main table's routes with the given protocol as
// "dst via gw dev ifindex scope N", sorted.
func (n *node) table(t *testing.T, proto netlink.RouteProtocol) []string {
	t.Helper()
	var out []string
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := n.ns.NL.RouteListFiltered(fam, &netlink.Route{Protocol: proto}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			s := r.Dst.String()
			if r.Gw != nil {
				s += " via " + r.Gw.String()
			}
			s += fmt.Sprintf(" dev %d", r.LinkIndex)
			if r.Scope == netlink.SCOPE_LINK {
				s += " scope link"
			}
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

func (n *node) addForeign(t *testing.T, dst, gw string) {
	t.Helper()
	r := &netlink.Route{Dst: cidr(t, dst), Gw: net.ParseIP(gw), Protocol: unix.RTPROT_STATIC}
	if err := n.ns.NL.RouteAdd(r); err != nil {
		t.Fatalf("adding foreign route %s: %v", dst, err)
	}
}

func expectTable(t *testing.T, got []string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("routes with protocol lumen:\n got  %q\n want %q", got, want)
	}
}

func TestSyncNodeRoutes(t *testing.T) {
	n := newNode(t)
	h := n.ns.NL
	n.addForeign(t, "10.250.0.0/24", "10.0.0.9")
	n.addForeign(t, "fd00:250::/64", "fd00::9")
	if err := EnsureEndpointRoute(h, net.ParseIP("10.200.1.5"), n.lxc0); err != nil {
		t.Fatal(err)
	}

	desired := []Route{
		{Dst: cidr(t, "10.200.2.0/24"), Gw: net.ParseIP("10.0.0.2")},
		{Dst: cidr(t, "10.200.3.0/24"), Gw: net.ParseIP("10.0.0.3"), LinkIndex: n.eth0},
		{Dst: cidr(t, "fd00:10:200:2::/64"), Gw: net.ParseIP("fd00::2")},
	}
	if err := SyncNodeRoutes(h, desired); err != nil {
		t.Fatal(err)
	}
	ep := fmt.Sprintf("10.200.1.5/32 dev %d scope link", n.lxc0)
	expectTable(t, n.table(t, Protocol),
		fmt.Sprintf("10.200.2.0/24 via 10.0.0.2 dev %d", n.eth0),
		fmt.Sprintf("10.200.3.0/24 via 10.0.0.3 dev %d", n.eth0),
		fmt.Sprintf("fd00:10:200:2::/64 via fd00::2 dev %d", n.eth0),
		ep,
	)
	if err := SyncNodeRoutes(h, desired); err != nil { // idempotent
		t.Fatal(err)
	}

	// Next hop moves to eth1 for one node, another node leaves, one joins.
	desired = []Route{
		{Dst: cidr(t, "10.200.2.0/24"), Gw: net.ParseIP("10.0.1.2")},
		{Dst: cidr(t, "fd00:10:200:2::/64"), Gw: net.ParseIP("fd00:1::2"), LinkIndex: n.eth1},
		{Dst: cidr(t, "fd00:10:200:4::/64"), Gw: net.ParseIP("fd00::4")},
	}
	if err := SyncNodeRoutes(h, desired); err != nil {
		t.Fatal(err)
	}
	expectTable(t, n.table(t, Protocol),
		fmt.Sprintf("10.200.2.0/24 via 10.0.1.2 dev %d", n.eth1),
		fmt.Sprintf("fd00:10:200:2::/64 via fd00:1::2 dev %d", n.eth1),
		fmt.Sprintf("fd00:10:200:4::/64 via fd00::4 dev %d", n.eth0),
		ep,
	)
	got, err := NodeRoutes(h)
	if err != nil || len(got) != 3 {
		t.Errorf("NodeRoutes = %v, %v; want 3 routes", got, err)
	}

	// Everything gone: endpoint and foreign routes stay.
	if err := SyncNodeRoutes(h, nil); err != nil {
		t.Fatal(err)
	}
	expectTable(t, n.table(t, Protocol), ep)
	expectTable(t, n.table(t, unix.RTPROT_STATIC),
		fmt.Sprintf("10.250.0.0/24 via 10.0.0.9 dev %d", n.eth0),
		fmt.Sprintf("fd00:250::/64 via fd00::9 dev %d", n.eth0))
}

func TestSyncNodeRoutesConflicts(t *testing.T) {
	n := newNode(t)
	h := n.ns.NL
	n.addForeign(t, "10.200.9.0/24", "10.0.0.9")
	n.addForeign(t, "fd00:10:200:9::/64", "fd00::9")
	err := SyncNodeRoutes(h, []Route{
		{Dst: cidr(t, "10.200.9.0/24"), Gw: net.ParseIP("10.0.0.2")},
		{Dst: cidr(t, "fd00:10:200:9::/64"), Gw: net.ParseIP("fd00::2")},
		{Dst: cidr(t, "10.200.2.0/24"), Gw: net.ParseIP("10.0.0.2")},
	})
	if err == nil || !strings.Contains(err.Error(), "10.200.9.0/24") || !strings.Contains(err.Error(), "fd00:10:200:9::/64") {
		t.Errorf("error %v, want conflicts on 10.200.9.0/24 and fd00:10:200:9::/64", err)
	}
	// The foreign routes are untouched and the valid route installed anyway.
	expectTable(t, n.table(t, unix.RTPROT_STATIC),
		fmt.Sprintf("10.200.9.0/24 via 10.0.0.9 dev %d", n.eth0),
		fmt.Sprintf("fd00:10:200:9::/64 via fd00::9 dev %d", n.eth0))
	expectTable(t, n.table(t, Protocol), fmt.Sprintf("10.200.2.0/24 via 10.0.0.2 dev %d", n.eth0))
}

func TestEndpointRoutes(t *testing.T) {
	n := newNode(t)
	h := n.ns.NL
	v4, v6 := net.ParseIP("10.200.1.5"), net.ParseIP("fd00:10:200:1::5")
	for _, ip := range []net.IP{v4, v6} {
		for range 2 { // idempotent
			if err := EnsureEndpointRoute(h, ip, n.lxc0); err != nil {
				t.Fatalf("EnsureEndpointRoute(%s): %v", ip, err)
			}
		}
	}
	expectTable(t, n.table(t, Protocol),
		fmt.Sprintf("10.200.1.5/32 dev %d scope link", n.lxc0),
		fmt.Sprintf("fd00:10:200:1::5/128 dev %d", n.lxc0)) // IPv6 routes report scope universe

	// The kernel uses them.
	for _, ip := range []net.IP{v4, v6} {
		rs, err := h.RouteGet(ip)
		if err != nil || len(rs) != 1 || rs[0].LinkIndex != n.lxc0 {
			t.Errorf("route lookup of %s: %v, %v; want dev %d", ip, rs, err, n.lxc0)
		}
	}

	// A new veth for the same IP replaces the route; deleting the old
	// endpoint's route then spares it.
	if err := EnsureEndpointRoute(h, v4, n.lxc1); err != nil {
		t.Fatal(err)
	}
	if err := DeleteEndpointRoute(h, v4, n.lxc0); err != nil {
		t.Fatal(err)
	}
	expectTable(t, n.table(t, Protocol),
		fmt.Sprintf("10.200.1.5/32 dev %d scope link", n.lxc1),
		fmt.Sprintf("fd00:10:200:1::5/128 dev %d", n.lxc0))
	eps, err := EndpointRoutes(h)
	if err != nil || len(eps) != 2 {
		t.Errorf("EndpointRoutes = %v, %v; want 2", eps, err)
	}

	for _, ip := range []net.IP{v4, v6} {
		if err := DeleteEndpointRoute(h, ip, 0); err != nil {
			t.Fatal(err)
		}
		if err := DeleteEndpointRoute(h, ip, 0); err != nil {
			t.Errorf("deleting a missing endpoint route: %v", err)
		}
	}
	expectTable(t, n.table(t, Protocol))

	// Someone else's host route is not overwritten.
	r := &netlink.Route{Dst: cidr(t, "10.200.1.6/32"), LinkIndex: n.lxc1, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC}
	if err := h.RouteAdd(r); err != nil {
		t.Fatal(err)
	}
	if err := EnsureEndpointRoute(h, net.ParseIP("10.200.1.6"), n.lxc0); err == nil || !strings.Contains(err.Error(), "10.200.1.6") {
		t.Errorf("EnsureEndpointRoute over a static route: error %v, want a conflict naming 10.200.1.6", err)
	}
	expectTable(t, n.table(t, unix.RTPROT_STATIC), fmt.Sprintf("10.200.1.6/32 dev %d scope link", n.lxc1))
}

func TestBadInput(t *testing.T) {
	n := newNode(t)
	h := n.ns.NL
	weird := &net.IPNet{IP: net.ParseIP("10.0.0.0").To4(), Mask: net.IPMask{255, 0, 255, 0}}
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"nil handle", SyncNodeRoutes(nil, nil), "handle"},
		{"nil dst", SyncNodeRoutes(h, []Route{{Gw: net.ParseIP("10.0.0.2")}}), "destination is nil"},
		{"nil gw", SyncNodeRoutes(h, []Route{{Dst: cidr(t, "10.200.2.0/24")}}), "10.200.2.0/24: gateway is nil"},
		{"host bits", SyncNodeRoutes(h, []Route{{Dst: &net.IPNet{IP: net.ParseIP("10.200.2.7").To4(), Mask: net.CIDRMask(24, 32)}, Gw: net.ParseIP("10.0.0.2")}}), "10.200.2.7/24 has host bits"},
		{"bad mask", SyncNodeRoutes(h, []Route{{Dst: weird, Gw: net.ParseIP("10.0.0.2")}}), "invalid mask"},
		{"family", SyncNodeRoutes(h, []Route{{Dst: cidr(t, "10.200.2.0/24"), Gw: net.ParseIP("fd00::2")}}), "gateway fd00::2 is of the other IP family"},
		{"default", SyncNodeRoutes(h, []Route{{Dst: cidr(t, "0.0.0.0/0"), Gw: net.ParseIP("10.0.0.2")}}), "default route"},
		{"multicast gw", SyncNodeRoutes(h, []Route{{Dst: cidr(t, "10.200.2.0/24"), Gw: net.ParseIP("224.0.0.1")}}), "224.0.0.1 is not a unicast"},
		{"duplicate", SyncNodeRoutes(h, []Route{
			{Dst: cidr(t, "10.200.5.0/24"), Gw: net.ParseIP("10.0.0.2")},
			{Dst: cidr(t, "10.200.5.0/24"), Gw: net.ParseIP("10.0.0.3")},
		}), "10.200.5.0/24 via 10.0.0.3 conflicts"},
		{"unreachable gw", SyncNodeRoutes(h, []Route{{Dst: cidr(t, "10.200.6.0/24"), Gw: net.ParseIP("192.0.2.1")}}), "10.200.6.0/24 via 192.0.2.1"},
		{"ep nil ip", EnsureEndpointRoute(h, nil, n.lxc0), "pod IP is nil"},
		{"ep zero index", EnsureEndpointRoute(h, net.ParseIP("10.200.1.5"), 0), "host link index 0"},
		{"ep missing link", EnsureEndpointRoute(h, net.ParseIP("10.200.1.5"), 4242), "host link index 4242 not found"},
		{"ep delete negative", DeleteEndpointRoute(h, net.ParseIP("10.200.1.5"), -3), "host link index -3"},
		{"ep delete nil", DeleteEndpointRoute(h, nil, 0), "pod IP is nil"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, c.err, c.want)
		}
	}
	// The last Sync desired only an invalid route: nothing is left installed.
	expectTable(t, n.table(t, Protocol))
}
