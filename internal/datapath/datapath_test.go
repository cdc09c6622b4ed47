package datapath

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/netnsutil"
	"github.com/lumen-net/lumen/internal/testutil"
)

const (
	tcActOK       = 0
	tcActShot     = 2
	tcActRedirect = 7
)

type fixture struct {
	t    testing.TB
	dp   *Datapath
	ns   netns.NsHandle
	dir  string
	devs map[string]netlink.Link
}

// newFixture loads the datapath into a private bpffs and makes a network
// namespace holding veths whose ifindexes stand for pod and host devices.
func newFixture(t testing.TB) *fixture {
	testutil.RequirePrivileged(t)
	ns, _ := testutil.NewNetNS(t, "dp")
	f := &fixture{t: t, ns: ns, dir: filepath.Join(t.TempDir(), "bpf"), devs: map[string]netlink.Link{}}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, name := range []string{"lxca", "lxcb", "eth0"} {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
		if err := h.LinkAdd(veth); err != nil {
			t.Fatalf("adding %s: %v", name, err)
		}
		l, _ := h.LinkByName(name)
		_ = h.LinkSetUp(l)
		p, _ := h.LinkByName(name + "p")
		_ = h.LinkSetUp(p)
		f.devs[name] = l
	}
	dp, err := Load(Options{BPFFS: f.dir})
	if err != nil {
		t.Fatalf("loading datapath: %v", err)
	}
	t.Cleanup(func() {
		dp.Close()
		_ = unix.Unmount(f.dir, 0)
	})
	f.dp = dp
	return f
}

func (f *fixture) ifindex(name string) int { return f.devs[name].Attrs().Index }

func (f *fixture) run(h Hook, dev string, pkt []byte) RunResult {
	f.t.Helper()
	var res RunResult
	err := netnsutil.Do(f.ns, func() error {
		var err error
		res, err = f.dp.RunProgram(h, f.ifindex(dev), pkt)
		return err
	})
	if err != nil {
		f.t.Fatalf("running program: %v", err)
	}
	return res
}

var (
	podAMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0xa, 1}
	hostAMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xa, 2}
	podBMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0xb, 1}
	hostBMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xb, 2}
	podA4    = netip.MustParseAddr("10.200.1.10")
	podB4    = netip.MustParseAddr("10.200.1.11")
	podA6    = netip.MustParseAddr("fd00:10:200:1::10")
	podB6    = netip.MustParseAddr("fd00:10:200:1::11")
)

func (f *fixture) addPods() {
	f.t.Helper()
	for _, ip := range []netip.Addr{podA4, podA6} {
		must(f.t, f.dp.UpsertEndpoint(ip, EndpointInfo{IfIndex: uint32(f.ifindex("lxca")), ID: 11, Identity: 1001, MAC: podAMAC, HostMAC: hostAMAC}))
	}
	for _, ip := range []netip.Addr{podB4, podB6} {
		must(f.t, f.dp.UpsertEndpoint(ip, EndpointInfo{IfIndex: uint32(f.ifindex("lxcb")), ID: 12, Identity: 1002, MAC: podBMAC, HostMAC: hostBMAC}))
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func tcp(src, dst netip.Addr, flags uint8) []byte {
	return Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: src, Dst: dst, Proto: 6, SrcPort: 40000, DstPort: 80, TTL: 64, TCPFlags: flags}.Bytes()
}

func TestLocalDelivery(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	for _, c := range []struct {
		name     string
		src, dst netip.Addr
	}{{"ipv4", podA4, podB4}, {"ipv6", podA6, podB6}} {
		t.Run(c.name, func(t *testing.T) {
			res := f.run(HookFromContainer, "lxca", tcp(c.src, c.dst, 0x02))
			if res.Verdict != tcActRedirect {
				t.Fatalf("verdict %d, want redirect", res.Verdict)
			}
			if !bytes.Equal(res.Data[0:6], podBMAC) || !bytes.Equal(res.Data[6:12], hostBMAC) {
				t.Errorf("MACs %x -> %x, want %s -> %s", res.Data[6:12], res.Data[0:6], hostBMAC, podBMAC)
			}
			if c.src.Is4() {
				ip := res.Data[14:34]
				if ip[8] != 63 {
					t.Errorf("TTL %d, want 63", ip[8])
				}
				if sum := IPv4Checksum(ip); sum != uint16(ip[10])<<8|uint16(ip[11]) {
					t.Errorf("IPv4 checksum %#x after TTL rewrite, want %#x", uint16(ip[10])<<8|uint16(ip[11]), sum)
				}
			} else if hl := res.Data[14+7]; hl != 63 {
				t.Errorf("hop limit %d, want 63", hl)
			}
		})
	}
	// The same packet arriving through the node's device is delivered too.
	res := f.run(HookFromNetdev, "eth0", tcp(netip.MustParseAddr("10.200.2.5"), podB4, 0x02))
	if res.Verdict != tcActRedirect || !bytes.Equal(res.Data[0:6], podBMAC) {
		t.Fatalf("from_netdev to local pod: verdict %d dst MAC %x", res.Verdict, res.Data[0:6])
	}
	// Traffic for the node itself is left to the stack.
	res = f.run(HookFromNetdev, "eth0", tcp(netip.MustParseAddr("10.200.2.5"), netip.MustParseAddr("10.99.0.1"), 0x02))
	if res.Verdict != tcActOK {
		t.Fatalf("from_netdev to the node: verdict %d, want pass", res.Verdict)
	}
}

func TestSpoofedSourceDropped(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	rd, err := f.dp.OpenEvents()
	must(t, err)
	defer rd.Close()

	// Pod A's address sent from pod B's veth.
	res := f.run(HookFromContainer, "lxcb", tcp(podA4, podB4, 0x02))
	if res.Verdict != tcActShot {
		t.Fatalf("verdict %d, want drop", res.Verdict)
	}
	counters, err := f.dp.Counters()
	must(t, err)
	found := false
	for _, c := range counters {
		if c.Reason == 132 && c.Direction == 1 && c.Packets == 1 {
			found = true
		}
	}
	if !found {
		t.Errorf("no INVALID_SOURCE_IP egress count in %+v", counters)
	}
	ev := readEvent(t, rd, EventDrop)
	if ev.Subtype != 132 || ev.Src != podA4 || ev.Dst != podB4 || ev.DstPort != 80 || ev.Proto != 6 {
		t.Errorf("drop event %+v", ev)
	}
}

func readEvent(t *testing.T, rd *ringbuf.Reader, typ uint8) Event {
	t.Helper()
	rd.SetDeadline(time.Now().Add(5 * time.Second))
	for {
		rec, err := rd.Read()
		if err != nil {
			t.Fatalf("reading event: %v", err)
		}
		var ev Event
		must(t, ParseEvent(rec.RawSample, &ev))
		if ev.Type == typ {
			return ev
		}
	}
}

func TestTunnelEncap(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	must(t, f.dp.UpsertIPCache(IPCacheEntry{Prefix: netip.MustParsePrefix("10.200.2.0/24"), Identity: 6, Tunnel: netip.MustParseAddr("10.99.0.2")}))
	remote := netip.MustParseAddr("10.200.2.7")

	// Without a tunnel device configured the packet cannot be encapsulated.
	res := f.run(HookFromContainer, "lxca", tcp(podA4, remote, 0x02))
	if res.Verdict != tcActShot {
		t.Fatalf("no vxlan device: verdict %d, want drop", res.Verdict)
	}
	must(t, f.dp.SetConfig(RuntimeConfig{TraceLevel: TraceControl, VXLANIfIndex: uint32(f.ifindex("eth0"))}))
	rd, err := f.dp.OpenEvents()
	must(t, err)
	defer rd.Close()
	res = f.run(HookFromContainer, "lxca", tcp(podA4, remote, 0x02))
	if res.Verdict != tcActRedirect {
		t.Fatalf("verdict %d, want redirect to the vxlan device", res.Verdict)
	}
	ev := readEvent(t, rd, EventTrace)
	if ev.Subtype != 4 || ev.SrcIdentity != 1001 || ev.DstIdentity != 6 {
		t.Errorf("trace event %+v, want TO_OVERLAY from 1001 to 6", ev)
	}
	entries, err := f.dp.ListIPCache()
	must(t, err)
	if len(entries) != 1 || entries[0].Tunnel != netip.MustParseAddr("10.99.0.2") || entries[0].Prefix.Bits() != 24 {
		t.Errorf("ipcache round trip: %+v", entries)
	}
}

func TestNativeRouting(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	nodeMAC := net.HardwareAddr{0x02, 0, 0, 0, 0xc, 1}
	h, err := netlink.NewHandleAt(f.ns)
	must(t, err)
	defer h.Close()
	eth0 := f.devs["eth0"]
	must(t, h.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.99.0.1"), Mask: net.CIDRMask(24, 32)}}))
	must(t, h.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.ParseIP("10.200.2.0"), Mask: net.CIDRMask(24, 32)}, Gw: net.ParseIP("10.99.0.2"), LinkIndex: eth0.Attrs().Index}))
	must(t, netnsutil.Do(f.ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}))
	remote := netip.MustParseAddr("10.200.2.7")

	// Next hop not resolved yet: the kernel's neighbour code finishes the job.
	res := f.run(HookFromContainer, "lxca", tcp(podA4, remote, 0x02))
	if res.Verdict != tcActRedirect {
		t.Fatalf("unresolved next hop: verdict %d, want redirect", res.Verdict)
	}
	must(t, h.NeighAdd(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, IP: net.ParseIP("10.99.0.2"), HardwareAddr: nodeMAC, State: netlink.NUD_PERMANENT}))
	res = f.run(HookFromContainer, "lxca", tcp(podA4, remote, 0x02))
	if res.Verdict != tcActRedirect {
		t.Fatalf("verdict %d, want redirect", res.Verdict)
	}
	if !bytes.Equal(res.Data[0:6], nodeMAC) || !bytes.Equal(res.Data[6:12], eth0.Attrs().HardwareAddr) {
		t.Errorf("MACs %x -> %x, want eth0 -> next hop %s", res.Data[6:12], res.Data[0:6], nodeMAC)
	}
	// No route at all: the stack decides (and answers with ICMP).
	res = f.run(HookFromContainer, "lxca", tcp(podA4, netip.MustParseAddr("192.0.2.1"), 0x02))
	if res.Verdict != tcActOK {
		t.Errorf("unroutable: verdict %d, want pass to stack", res.Verdict)
	}
}

func TestMalformedAndNonIP(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	arp := make([]byte, 42)
	copy(arp[0:6], hostAMAC)
	copy(arp[6:12], podAMAC)
	arp[12], arp[13] = 0x08, 0x06
	if res := f.run(HookFromContainer, "lxca", arp); res.Verdict != tcActOK {
		t.Errorf("ARP: verdict %d, want pass", res.Verdict)
	}
	// The IPv4 header is whole but the TCP header is cut short.
	short := tcp(podA4, podB4, 0x02)[:14+20+10]
	if res := f.run(HookFromContainer, "lxca", short); res.Verdict != tcActShot {
		t.Errorf("truncated TCP: verdict %d, want drop", res.Verdict)
	}
	counters, err := f.dp.Counters()
	must(t, err)
	var invalid uint64
	for _, c := range counters {
		if c.Reason == 134 {
			invalid += c.Packets
		}
	}
	if invalid != 1 {
		t.Errorf("INVALID_PACKET count %d, want 1", invalid)
	}
}

func TestAttachSurvivesReload(t *testing.T) {
	f := newFixture(t)
	idx := f.ifindex("lxca")
	err := netnsutil.Do(f.ns, func() error { return f.dp.Attach(HookFromContainer, idx) })
	must(t, err)
	first := attachedIDs(t, f, idx)
	if len(first) != 1 {
		t.Fatalf("after attach: programs %v, want one", first)
	}
	// A second agent loads fresh programs and re-attaches: the link is
	// updated in place, never detached, and the maps are the pinned ones.
	must(t, f.dp.UpsertEndpoint(podA4, EndpointInfo{IfIndex: uint32(idx), ID: 1, MAC: podAMAC, HostMAC: hostAMAC}))
	f.dp.Close()
	dp2, err := Load(Options{BPFFS: f.dir})
	must(t, err)
	f.dp = dp2
	eps, err := dp2.ListEndpoints()
	must(t, err)
	if _, ok := eps[podA4]; !ok {
		t.Fatalf("pinned endpoint map lost across reload: %v", eps)
	}
	must(t, netnsutil.Do(f.ns, func() error { return dp2.Attach(HookFromContainer, idx) }))
	second := attachedIDs(t, f, idx)
	if len(second) != 1 || second[0] == first[0] {
		t.Fatalf("after reload: programs %v (before %v), want one new program", second, first)
	}
	must(t, netnsutil.Do(f.ns, func() error { return dp2.Detach(HookFromContainer, idx) }))
	if left := attachedIDs(t, f, idx); len(left) != 0 {
		t.Fatalf("after detach: programs %v", left)
	}
}

func attachedIDs(t *testing.T, f *fixture, ifindex int) []uint32 {
	t.Helper()
	var ids []uint32
	err := netnsutil.Do(f.ns, func() error {
		res, err := queryTCX(ifindex)
		ids = res
		return err
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return ids
}
