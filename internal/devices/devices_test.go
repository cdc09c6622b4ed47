package devices

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// lab is a node namespace with an "underlay" namespace holding veth peers.
type lab struct {
	t     *testing.T
	node  *nstest.NS
	under *nstest.NS
}

func newLab(t *testing.T) *lab {
	return &lab{t: t, node: nstest.New(t, "dev"), under: nstest.New(t, "dev")}
}

// veth adds a veth called name in the node, its peer in the underlay, with
// the given addresses.
func (l *lab) veth(name string, cidrs ...string) netlink.Link {
	l.t.Helper()
	link, _ := nstest.Veth(l.t, l.node, name, l.under, "p-"+name)
	for _, c := range cidrs {
		l.node.AddAddr(l.t, link, c)
	}
	return link
}

// bareVeth adds a veth without any address, not even an IPv6 link-local one.
func (l *lab) bareVeth(name string) netlink.Link {
	l.t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "p-" + name}
	if err := l.node.NL.LinkAdd(veth); err != nil {
		l.t.Fatalf("adding veth %s: %v", name, err)
	}
	link := l.node.MustLink(l.t, name)
	if err := l.node.NL.LinkSetIP6AddrGenMode(link, 1); err != nil { // IN6_ADDR_GEN_MODE_NONE
		l.t.Fatalf("disabling IPv6 link-local address on %s: %v", name, err)
	}
	for _, n := range []string{name, "p-" + name} {
		if err := l.node.NL.LinkSetUp(l.node.MustLink(l.t, n)); err != nil {
			l.t.Fatal(err)
		}
	}
	return l.node.WaitOperUp(l.t, name)
}

// add creates a link in the node, sets it up and adds addresses.
func (l *lab) add(link netlink.Link, cidrs ...string) netlink.Link {
	l.t.Helper()
	got, ok := l.tryAdd(link, cidrs...)
	if !ok {
		l.t.Fatalf("kernel lacks %s devices", link.Type())
	}
	return got
}

// tryAdd is add for link types the kernel may lack (built without them):
// it reports false if so.
func (l *lab) tryAdd(link netlink.Link, cidrs ...string) (netlink.Link, bool) {
	l.t.Helper()
	if err := l.node.NL.LinkAdd(link); errors.Is(err, unix.EOPNOTSUPP) {
		l.t.Logf("kernel lacks %s devices: skipping that case", link.Type())
		return nil, false
	} else if err != nil {
		l.t.Fatalf("adding %s %s: %v", link.Type(), link.Attrs().Name, err)
	}
	got := l.node.MustLink(l.t, link.Attrs().Name)
	if err := l.node.NL.LinkSetUp(got); err != nil {
		l.t.Fatalf("setting %s up: %v", link.Attrs().Name, err)
	}
	for _, c := range cidrs {
		l.node.AddAddr(l.t, got, c)
	}
	return got, true
}

func (l *lab) route(r *netlink.Route) {
	l.t.Helper()
	if err := l.node.NL.RouteAdd(r); err != nil {
		l.t.Fatalf("adding route %s: %v", r, err)
	}
}

func TestDetect(t *testing.T) {
	l := newLab(t)
	h := l.node.NL

	// Selected: IPv4+IPv6 veth (the lab's underlay device), IPv6-only veth,
	// a veth whose only global route is in another table, one with just a
	// default route.
	eth0 := l.veth("eth0", "10.0.0.2/24", "fd00:a::2/64")
	l.veth("eth1", "fd00:b::1/64")
	eth2 := l.veth("eth2", "169.254.2.1/16")
	l.route(&netlink.Route{Dst: mustCIDR(t, "192.0.2.0/24"), LinkIndex: eth2.Attrs().Index, Table: 100})
	eth3 := l.veth("eth3", "169.254.3.1/16")
	l.route(&netlink.Route{LinkIndex: eth3.Attrs().Index, Gw: net.ParseIP("169.254.0.1")})

	// Not selected.
	l.bareVeth("eth4")               // no addresses
	l.veth("eth5", "169.254.5.1/16") // only link-local routes
	l.veth("lxc0123", "10.9.0.1/24") // Lumen's pod veth
	l.veth("lumen_x", "10.9.1.1/24") // Lumen's prefix
	down := l.veth("eth6", "10.6.0.1/24")
	if err := h.LinkSetDown(down); err != nil {
		t.Fatal(err)
	}
	br := l.add(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}, "10.7.0.1/24")
	member := l.veth("eth7", "10.7.1.1/24")
	if err := h.LinkSetMaster(member, br); err != nil {
		t.Fatal(err)
	}
	l.add(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vxl0"}, VxlanId: 42, Port: 4789}, "10.8.0.1/24")
	l.add(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: "ifb0"}}, "10.13.0.1/24")
	wantReasons := map[string]string{
		"lo":      "loopback",
		"eth4":    "no addresses",
		"eth5":    "no global unicast route",
		"lxc0123": `excluded prefix "lxc"`,
		"lumen_x": `excluded prefix "lumen_"`,
		"eth6":    "down",
		"br0":     "bridge-like device (bridge)",
		"eth7":    "member of ifindex",
		"vxl0":    "overlay device (vxlan)",
		"ifb0":    "virtual device (ifb)",
	}
	// Kernels built without some link types: test those that exist.
	if _, ok := l.tryAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "dummy0"}}, "10.5.0.1/24"); ok {
		wantReasons["dummy0"] = "virtual device (dummy)"
	}
	if _, ok := l.tryAdd(&netlink.IPVlan{LinkAttrs: netlink.LinkAttrs{Name: "ipvl0", ParentIndex: eth0.Attrs().Index}, Mode: netlink.IPVLAN_MODE_L3}, "10.10.0.1/24"); ok {
		wantReasons["ipvl0"] = "virtual device (ipvlan)"
	}
	if addTun(t, l, "tun0", "10.11.0.1/24") {
		wantReasons["tun0"] = "virtual device (tuntap)"
	}

	// A bond is an uplink: selected, its members not. Some kernels lack bonding.
	bondOK := true
	if bond, ok := l.tryAdd(netlink.NewLinkBond(netlink.LinkAttrs{Name: "bond0"}), "10.12.0.1/24"); ok {
		slave := l.veth("eth8")
		if err := h.LinkSetDown(slave); err != nil { // bonding wants members down
			t.Fatal(err)
		}
		if err := h.LinkSetMaster(slave, bond); err != nil {
			t.Fatalf("enslaving eth8: %v", err)
		}
		wantReasons["eth8"] = "member of ifindex"
	} else {
		bondOK = false
	}

	devs, reasons, err := detect(h, Filter{}, discard())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"eth0", "eth1", "eth2", "eth3"}
	if bondOK {
		want = append([]string{"bond0"}, want...)
	}
	if got := Names(devs); !slices.Equal(got, want) {
		t.Errorf("selected %v, want %v (reasons %v)", got, want, reasons)
	}
	for name, reason := range wantReasons {
		if !strings.Contains(reasons[name], reason) {
			t.Errorf("%s: not selected because %q, want %q", name, reasons[name], reason)
		}
	}

	// The device carries ifindex, MAC and addresses.
	d := devs[slices.IndexFunc(devs, func(d Device) bool { return d.Name == "eth0" })]
	if d.Index != eth0.Attrs().Index || d.Type != "veth" {
		t.Errorf("eth0: index %d type %s, want %d veth", d.Index, d.Type, eth0.Attrs().Index)
	}
	if !slices.Equal(d.MAC, eth0.Attrs().HardwareAddr) || len(d.MAC) != 6 {
		t.Errorf("eth0: MAC %s, want %s", d.MAC, eth0.Attrs().HardwareAddr)
	}
	for _, p := range []string{"10.0.0.2/24", "fd00:a::2/64"} {
		if !slices.Contains(d.Addrs, netip.MustParsePrefix(p)) {
			t.Errorf("eth0: addresses %v lack %s", d.Addrs, p)
		}
	}
	if ga := d.GlobalAddrs(); len(ga) != 2 || ga[0] != netip.MustParseAddr("10.0.0.2") {
		t.Errorf("eth0: global addresses %v, want [10.0.0.2 fd00:a::2]", ga)
	}
}

func TestDetectOverride(t *testing.T) {
	l := newLab(t)
	l.veth("eth0", "10.0.0.2/24")
	l.veth("eth4")                                                  // no addresses: selected anyway when listed
	l.add(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: "ifb0"}}) // a type detection excludes
	l.add(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: "ifb1"}})
	down := l.add(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: "ifb2"}})
	if err := l.node.NL.LinkSetDown(down); err != nil {
		t.Fatal(err)
	}
	f, err := ParseFilter([]string{"eth4,ifb+", "missing0"})
	if err != nil {
		t.Fatal(err)
	}
	devs, err := Detect(l.node.NL, f)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Names(devs), []string{"eth4", "ifb0", "ifb1"}; !slices.Equal(got, want) {
		t.Errorf("override selected %v, want %v", got, want)
	}
}

func TestDetectBadInput(t *testing.T) {
	_, err := Detect(nil, Filter{})
	if err == nil || !strings.Contains(err.Error(), "handle") {
		t.Errorf("Detect(nil) error = %v, want one about the handle", err)
	}
	_, err = Watch(context.Background(), WatchConfig{Debounce: -time.Second})
	if err == nil || !strings.Contains(err.Error(), "-1s") {
		t.Errorf("Watch with negative debounce: error = %v, want one naming -1s", err)
	}
}

// expectDevices reads ch until the device names equal want.
func expectDevices(t *testing.T, ch <-chan []Device, want ...string) []Device {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case devs, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed while waiting for %v", want)
			}
			if slices.Equal(Names(devs), want) {
				return devs
			}
			t.Logf("devices %v, waiting for %v", Names(devs), want)
		case <-timeout:
			t.Fatalf("devices never became %v", want)
		}
	}
}

func TestWatch(t *testing.T) {
	l := newLab(t)
	l.veth("eth0", "10.0.0.2/24")

	ctx, cancel := context.WithCancel(context.Background())
	ch, err := Watch(ctx, WatchConfig{NS: l.node.Handle, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		// The channel is closed once the watcher has released everything.
		for range ch {
		}
	})
	expectDevices(t, ch, "eth0")

	// A new device with a global route appears, with its addresses.
	l.veth("eth1", "fd00:b::1/64")
	devs := expectDevices(t, ch, "eth0", "eth1")
	if !slices.Contains(devs[1].Addrs, netip.MustParsePrefix("fd00:b::1/64")) {
		t.Errorf("eth1 addresses %v lack fd00:b::1/64", devs[1].Addrs)
	}

	// A device that only gains a global route later appears then.
	eth2 := l.veth("eth2", "169.254.2.1/16")
	l.route(&netlink.Route{Dst: mustCIDR(t, "192.0.2.0/24"), LinkIndex: eth2.Attrs().Index, Table: 100})
	expectDevices(t, ch, "eth0", "eth1", "eth2")

	// Removing the route, then the device, makes them go away.
	if err := l.node.NL.RouteDel(&netlink.Route{Dst: mustCIDR(t, "192.0.2.0/24"), LinkIndex: eth2.Attrs().Index, Table: 100}); err != nil {
		t.Fatal(err)
	}
	expectDevices(t, ch, "eth0", "eth1")
	if err := l.node.NL.LinkDel(l.node.MustLink(t, "eth1")); err != nil {
		t.Fatal(err)
	}
	expectDevices(t, ch, "eth0")

	// Cancelling closes the channel.
	cancel()
	select {
	case _, ok := <-ch:
		for ok {
			_, ok = <-ch
		}
	case <-time.After(30 * time.Second):
		t.Fatal("channel not closed after cancel")
	}
}

// TestWatchCallerNamespace checks that a zero NS means the namespace of the
// calling thread, also for the subscriptions, after the thread moved on.
func TestWatchCallerNamespace(t *testing.T) {
	l := newLab(t)
	l.veth("lmnw0", "10.0.0.2/24")
	ctx, cancel := context.WithCancel(context.Background())
	var ch <-chan []Device
	err := l.node.Do(func() error {
		var err error
		ch, err = Watch(ctx, WatchConfig{Logger: discard()})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		for range ch {
		}
	})
	expectDevices(t, ch, "lmnw0")
	l.veth("lmnw1", "10.0.1.2/24")
	expectDevices(t, ch, "lmnw0", "lmnw1")
}

// addTun creates a persistent tun device. Tun devices are created through
// /dev/net/tun in the calling thread's namespace, hence the switch.
func addTun(t *testing.T, l *lab, name, cidr string) bool {
	t.Helper()
	err := l.node.Do(func() error {
		tun := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_DEFAULTS}
		if err := netlink.LinkAdd(tun); err != nil {
			return err
		}
		for _, fd := range tun.Fds {
			fd.Close()
		}
		return nil
	})
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
		t.Logf("no tun support (%v): skipping the tun case", err)
		return false
	}
	if err != nil {
		t.Fatalf("adding tun %s: %v", name, err)
	}
	link := l.node.MustLink(t, name)
	if err := l.node.NL.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	l.node.AddAddr(t, link, cidr)
	return true
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
