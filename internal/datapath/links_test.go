package datapath

import "testing"

// TestWantedLinks: each program is kept on the kind of device that carries
// it, and only there.
func TestWantedLinks(t *testing.T) {
	w := WantedLinks{
		Endpoint: func(i int) bool { return i == 10 },
		Device:   func(i int) bool { return i == 2 },
		Overlay:  5,
	}
	cases := []struct {
		ifindex int
		prog    string
		xdp     bool
		want    bool
	}{
		{10, "from_container", false, true},
		{10, "to_container", false, true},
		{11, "from_container", false, false},
		{10, "from_netdev", false, false},
		{2, "from_netdev", false, true},
		{2, "to_netdev", false, true},
		{2, "xdp_nodeport", false, false},
		{2, "xdp_nodeport", true, true},
		{10, "xdp_nodeport", true, false},
		{5, "from_overlay", false, true},
		{2, "from_overlay", false, false},
		{2, "connect4", false, false},
		{2, "unknown", true, false},
	}
	for _, c := range cases {
		w.XDP = c.xdp
		if got := w.wants(c.ifindex, c.prog); got != c.want {
			t.Errorf("wants(%d, %q) with XDP=%v = %v, want %v", c.ifindex, c.prog, c.xdp, got, c.want)
		}
	}
	if (WantedLinks{}).wants(0, "from_overlay") {
		t.Error("from_overlay kept on ifindex 0 without an overlay")
	}
}
