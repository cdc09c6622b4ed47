package tunnel

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/nstest"
	"github.com/vishvananda/netlink"
)

func TestOverlayMTU(t *testing.T) {
	for _, c := range []struct {
		underlay int
		v6       bool
		want     int
	}{
		{1500, false, 1450},
		{1500, true, 1430},
		{9000, false, 8950},
	} {
		got, err := OverlayMTU(c.underlay, c.v6)
		if err != nil || got != c.want {
			t.Errorf("OverlayMTU(%d, %v) = %d, %v; want %d", c.underlay, c.v6, got, err, c.want)
		}
	}
	for _, bad := range []int{0, -1, 1300, 70000} {
		if _, err := OverlayMTU(bad, false); err == nil || !strings.Contains(err.Error(), "MTU "+strconv.Itoa(bad)) {
			t.Errorf("OverlayMTU(%d) error %v, want one naming %d", bad, err, bad)
		}
	}
	if Overhead(false) != 50 || Overhead(true) != 70 {
		t.Errorf("Overhead = %d/%d, want 50/70", Overhead(false), Overhead(true))
	}
}

// check verifies the device in the kernel.
func check(t *testing.T, ns *nstest.NS, name string, port, mtu int) *netlink.Vxlan {
	t.Helper()
	link := ns.MustLink(t, name)
	vx, ok := link.(*netlink.Vxlan)
	if !ok {
		t.Fatalf("%s is a %s, want vxlan", name, link.Type())
	}
	if !vx.FlowBased {
		t.Errorf("%s not in external (collect metadata) mode", name)
	}
	if vx.Port != port {
		t.Errorf("%s port %d, want %d", name, vx.Port, port)
	}
	if mtu != 0 && vx.MTU != mtu {
		t.Errorf("%s MTU %d, want %d", name, vx.MTU, mtu)
	}
	if vx.Flags&net.FlagUp == 0 {
		t.Errorf("%s is not up", name)
	}
	return vx
}

func TestEnsureVXLAN(t *testing.T) {
	ns := nstest.New(t, "tun")
	h := ns.NL

	vx, err := EnsureVXLAN(h, "", 0, 1450)
	if err != nil {
		t.Fatal(err)
	}
	got := check(t, ns, DefaultVXLANName, DefaultVXLANPort, 1450)
	if vx.Index != got.Index {
		t.Errorf("returned ifindex %d, kernel has %d", vx.Index, got.Index)
	}

	// Idempotent: same device.
	if _, err := EnsureVXLAN(h, DefaultVXLANName, DefaultVXLANPort, 1450); err != nil {
		t.Fatal(err)
	}
	if again := check(t, ns, DefaultVXLANName, DefaultVXLANPort, 1450); again.Index != got.Index {
		t.Errorf("device recreated (ifindex %d -> %d) although settings were right", got.Index, again.Index)
	}

	// MTU change and down device: fixed in place.
	if err := h.LinkSetDown(got); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureVXLAN(h, "", 0, 1400); err != nil {
		t.Fatal(err)
	}
	if again := check(t, ns, DefaultVXLANName, DefaultVXLANPort, 1400); again.Index != got.Index {
		t.Errorf("device recreated for an MTU change")
	}

	// Other port: recreated.
	if _, err := EnsureVXLAN(h, "", 4789, 0); err != nil {
		t.Fatal(err)
	}
	check(t, ns, DefaultVXLANName, 4789, 0)

	// Delete, then delete again.
	if err := DeleteVXLAN(h, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName(DefaultVXLANName); err == nil {
		t.Error("device still exists after DeleteVXLAN")
	}
	if err := DeleteVXLAN(h, ""); err != nil {
		t.Errorf("DeleteVXLAN of a missing device: %v", err)
	}
}

func TestEnsureVXLANReplacesWrongDevice(t *testing.T) {
	ns := nstest.New(t, "tun")
	h := ns.NL
	// A classic (non-external) vxlan with a VNI.
	if err := h.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "lumen_vxlan"}, VxlanId: 42, Port: 8472}); err != nil {
		t.Fatal(err)
	}
	old := ns.MustLink(t, "lumen_vxlan")
	if _, err := EnsureVXLAN(h, "lumen_vxlan", 8472, 0); err != nil {
		t.Fatal(err)
	}
	if vx := check(t, ns, "lumen_vxlan", 8472, 0); vx.Index == old.Attrs().Index {
		t.Error("non-external vxlan device was kept")
	}
}

func TestEnsureVXLANLeavesOtherTypes(t *testing.T) {
	ns := nstest.New(t, "tun")
	h := ns.NL
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "lumen_vxlan"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureVXLAN(h, "", 0, 0); err == nil || !strings.Contains(err.Error(), "bridge") {
		t.Errorf("EnsureVXLAN over a bridge: error %v, want one naming the bridge", err)
	}
	if err := DeleteVXLAN(h, ""); err == nil {
		t.Error("DeleteVXLAN deleted a bridge")
	}
	if l := ns.MustLink(t, "lumen_vxlan"); l.Type() != "bridge" {
		t.Errorf("bridge replaced by %s", l.Type())
	}
}

func TestEnsureVXLANBadInput(t *testing.T) {
	ns := nstest.New(t, "tun")
	for _, c := range []struct {
		name      string
		port, mtu int
		wantInErr string
		deleteToo bool
	}{
		{name: "a/b", wantInErr: `"a/b"`, deleteToo: true},
		{name: "abcdefghijklmnopq", wantInErr: `"abcdefghijklmnopq"`, deleteToo: true},
		{name: "ok0", port: 70000, wantInErr: "port 70000"},
		{name: "ok0", port: -1, wantInErr: "port -1"},
		{name: "ok0", mtu: 100, wantInErr: "MTU 100"},
	} {
		_, err := EnsureVXLAN(ns.NL, c.name, c.port, c.mtu)
		if err == nil || !strings.Contains(err.Error(), c.wantInErr) {
			t.Errorf("EnsureVXLAN(%q, %d, %d) error %v, want one containing %s", c.name, c.port, c.mtu, err, c.wantInErr)
		}
		if c.deleteToo {
			if err := DeleteVXLAN(ns.NL, c.name); err == nil || !strings.Contains(err.Error(), c.wantInErr) {
				t.Errorf("DeleteVXLAN(%q) error %v, want one containing %s", c.name, err, c.wantInErr)
			}
		}
	}
	if _, err := EnsureVXLAN(nil, "", 0, 0); err == nil {
		t.Error("EnsureVXLAN(nil handle) succeeded")
	}
	if _, err := ns.NL.LinkByName("ok0"); err == nil {
		t.Error("a device was created despite bad input")
	}
}
