package datapath

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/vishvananda/netlink"

	"github.com/lumen-net/lumen/internal/netnsutil"
	"github.com/lumen-net/lumen/internal/tunnel"
)

// Adversarial cases of the overlay and of the host firewall (issue 11,
// items 3 and 4): forged VXLAN senders and inner sources, pods speaking
// the overlay, pods and the node reaching each other around the host
// firewall.

// Drop reasons of these checks (bpf/lib/fwd.h; 132 and 133 in
// adversarial_test.go).
const (
	reasonEncapProhibited  = 170
	reasonInvalidIdentity  = 171
	reasonUnknownSender    = 172
	markIdentity           = 0xa4000000
	obsFromOverlay         = 9
	obsToEndpoint          = 101
	testNode               = "10.99.0.1" // this node
	testPeerNode           = "10.99.0.2" // another node
	testThirdNode          = "10.99.0.3"
	testStranger           = "10.99.0.9" // on the underlay, not a node
	testOldNode            = "10.99.0.4" // a node as an older agent wrote it: remote-node, no flag
	testExtraLocal         = "10.123.0.1"
	testPeerPod            = "10.200.2.7" // a pod of testPeerNode
	testPeerPodIdentity    = 2001
	testThirdPodCIDRMember = "10.200.3.5"
)

// skbContextMark is skbContext with the mark, for runs that hand state
// from one hook to the next in skb->mark.
type skbContextMark struct {
	_              [2]uint32
	Mark           uint32
	_              [6]uint32
	IngressIfindex uint32
	Ifindex        uint32
}

// runWith runs hook on dev with an explicit input device (0: sent by the
// node itself) and mark.
func (f *fixture) runWith(h Hook, dev string, ingress int, mark uint32, pkt []byte) RunResult {
	f.t.Helper()
	prog, _, _ := f.dp.hook(h)
	out := make([]byte, len(pkt)+256)
	ctx := skbContextMark{Mark: mark, IngressIfindex: uint32(ingress), Ifindex: uint32(f.ifindex(dev))}
	var ret uint32
	err := netnsutil.Do(f.ns, func() error {
		opts := &ebpf.RunOptions{Data: pkt, DataOut: out, Context: ctx}
		var err error
		ret, err = prog.Run(opts)
		return err
	})
	if err != nil {
		f.t.Fatalf("running program: %v", err)
	}
	return RunResult{Verdict: ret}
}

// overlayCluster writes the ipcache of a node (testNode) that knows two
// other nodes and their pods.
func (f *fixture) overlayCluster() {
	f.t.Helper()
	node := func(ip string) IPCacheEntry {
		a := netip.MustParseAddr(ip)
		return IPCacheEntry{Prefix: netip.PrefixFrom(a, 32), Identity: 6, Node: true, Tunnel: a}
	}
	for _, e := range []IPCacheEntry{
		{Prefix: netip.MustParsePrefix(testNode + "/32"), Identity: 1},
		{Prefix: netip.MustParsePrefix("fd00:10:99::1/128"), Identity: 1},
		node(testPeerNode),
		{Prefix: netip.MustParsePrefix("fd00:10:99::2/128"), Identity: 6, Node: true, Tunnel: netip.MustParseAddr(testPeerNode)},
		node(testThirdNode),
		{Prefix: netip.MustParsePrefix(testOldNode + "/32"), Identity: 6},
		{Prefix: netip.MustParsePrefix("10.200.2.0/24"), Identity: 2, Tunnel: netip.MustParseAddr(testPeerNode)},
		{Prefix: netip.MustParsePrefix(testPeerPod + "/32"), Identity: testPeerPodIdentity, Tunnel: netip.MustParseAddr(testPeerNode)},
		{Prefix: netip.MustParsePrefix("fd00:10:200:2::/64"), Identity: 2, Tunnel: netip.MustParseAddr(testPeerNode)},
		{Prefix: netip.MustParsePrefix("10.200.3.0/24"), Identity: 2, Tunnel: netip.MustParseAddr(testThirdNode)},
	} {
		must(f.t, f.dp.UpsertIPCache(e))
	}
}

// enableForwarding turns forwarding on in the fixture's namespace (the
// FIB helper answers only for forwarding devices) and gives its loopback
// the addresses of the test's underlay.
func (f *fixture) enableForwarding(addrs ...string) {
	f.t.Helper()
	err := netnsutil.Do(f.ns, func() error {
		for _, p := range []string{"/proc/sys/net/ipv4/conf/all/forwarding", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
				return err
			}
		}
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := h.LinkSetUp(lo); err != nil {
			return err
		}
		for _, a := range addrs {
			ip := netip.MustParseAddr(a)
			if err := h.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// waitEvent returns the first event of type typ between src and dst.
func waitEvent(t *testing.T, rd *ringbuf.Reader, typ uint8, src, dst netip.Addr) Event {
	t.Helper()
	rd.SetDeadline(time.Now().Add(5 * time.Second))
	for {
		rec, err := rd.Read()
		if err != nil {
			// Not fatal: the other cases still tell what works.
			t.Errorf("waiting for a %d event %s -> %s: %v", typ, src, dst, err)
			return Event{}
		}
		var ev Event
		must(t, ParseEvent(rec.RawSample, &ev))
		if ev.Type == typ && ev.Src == src && ev.Dst == dst {
			return ev
		}
	}
}

// TestOverlayRejectsForgedSenders sends real VXLAN packets to a real
// collect-metadata device carrying from_overlay: only a known node gets
// through, with inner sources that live behind it.
func TestOverlayRejectsForgedSenders(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	f.overlayCluster()
	f.enableForwarding(testNode, testPeerNode, testStranger, testExtraLocal, testOldNode)
	var vxIndex int
	must(t, netnsutil.Do(f.ns, func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		vx, err := tunnel.EnsureVXLAN(h, "", 0, 0)
		if err != nil {
			return err
		}
		vxIndex = vx.Attrs().Index
		return f.dp.Attach(HookFromOverlay, vxIndex)
	}))
	must(t, f.dp.SetConfig(RuntimeConfig{TraceLevel: TraceAll, VXLANIfIndex: uint32(vxIndex)}))
	rd, err := f.dp.OpenEvents()
	must(t, err)
	defer rd.Close()

	send := func(outer string, vni uint32, src, dst netip.Addr) {
		t.Helper()
		inner := Packet{SrcMAC: net.HardwareAddr{2, 0xee, 0, 0, 0, 1}, DstMAC: hostAMAC, Src: src, Dst: dst,
			Proto: 17, SrcPort: 5353, DstPort: 9999, TTL: 64, Payload: []byte("x")}.Bytes()
		frame := make([]byte, 8, 8+len(inner))
		frame[0] = 0x08
		binary.BigEndian.PutUint32(frame[4:], vni<<8)
		frame = append(frame, inner...)
		must(t, netnsutil.Do(f.ns, func() error {
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(outer), 0)),
				net.UDPAddrFromAddrPort(netip.MustParseAddrPort(testNode+":8472")))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(frame)
			return err
		}))
	}
	a := netip.MustParseAddr
	for _, c := range []struct {
		name     string
		outer    string
		vni      uint32
		src, dst netip.Addr
		reason   uint8  // 0: delivered
		srcID    uint32 // delivered with this source identity
	}{
		{"a node's pod", testPeerNode, testPeerPodIdentity, a(testPeerPod), podA4, 0, testPeerPodIdentity},
		{"a node's pod, IPv6 pod to IPv6 pod", testPeerNode, testPeerPodIdentity, a("fd00:10:200:2::7"), podA6, 0, testPeerPodIdentity},
		{"a node itself (VNI host: old senders)", testPeerNode, 1, a(testPeerNode), podA4, 0, 6},
		{"a node itself, its IPv6 address", testPeerNode, 6, a("fd00:10:99::2"), podA6, 0, 6},
		{"a node in an older agent's ipcache", testOldNode, 1, a(testOldNode), podA4, 0, 6},
		{"a node in an older agent's ipcache, another node inside", testOldNode, 6, a(testPeerNode), podA4, reasonInvalidSIP, 0},
		{"not a node", testStranger, testPeerPodIdentity, a(testPeerPod), podA4, reasonUnknownSender, 0},
		{"not a node, this node's address inside", testStranger, 1, a(testNode), podA4, reasonUnknownSender, 0},
		{"this node's address inside", testPeerNode, 1, a(testNode), podA4, reasonInvalidSIP, 0},
		{"this node's IPv6 address inside", testPeerNode, 1, a("fd00:10:99::1"), podA6, reasonInvalidSIP, 0},
		{"an address of this node the ipcache does not know", testPeerNode, 6, a(testExtraLocal), podA4, reasonInvalidSIP, 0},
		{"a local pod inside", testPeerNode, 1002, podB4, podA4, reasonInvalidSIP, 0},
		{"a third node's pod inside", testPeerNode, 2002, a(testThirdPodCIDRMember), podA4, reasonInvalidSIP, 0},
		{"a third node's address inside", testPeerNode, 6, a(testThirdNode), podA4, reasonInvalidSIP, 0},
		// No route to it: taken as this node's (nothing could answer it).
		{"this node's address IPv4-mapped inside", testPeerNode, 6, a("::ffff:" + testNode), podA6, reasonInvalidSIP, 0},
		{"this node's address IPv4-mapped inside, not a node", testStranger, 6, a("::ffff:" + testNode), podA6, reasonUnknownSender, 0},
		{"VNI 0", testPeerNode, 0, a("10.200.2.8"), podA4, reasonInvalidIdentity, 0},
		{"VNI host for a pod", testPeerNode, 1, a("10.200.2.9"), podA4, reasonInvalidIdentity, 0},
		{"VNI unmanaged", testPeerNode, 3, a("10.200.2.10"), podA4, reasonInvalidIdentity, 0},
	} {
		send(c.outer, c.vni, c.src, c.dst)
		if c.reason != 0 {
			ev := waitEvent(t, rd, EventDrop, c.src, c.dst)
			if ev.Subtype != c.reason {
				t.Errorf("%s: dropped with reason %d, want %d", c.name, ev.Subtype, c.reason)
			}
			continue
		}
		ev := waitEvent(t, rd, EventTrace, c.src, c.dst)
		if ev.Subtype != obsFromOverlay || ev.SrcIdentity != c.srcID {
			t.Errorf("%s: trace %+v, want from-overlay with source identity %d", c.name, ev, c.srcID)
		}
	}
	counters, err := f.dp.Counters()
	must(t, err)
	for _, r := range []uint8{reasonUnknownSender, reasonInvalidSIP, reasonInvalidIdentity} {
		found := false
		for _, c := range counters {
			found = found || (c.Reason == r && c.Direction == 0 && c.Packets > 0)
		}
		if !found {
			t.Errorf("no ingress drop counted with reason %d (%s)", r, ReasonName(r))
		}
	}
}

// TestToContainerIdentityFromOverlay: to_container takes the source
// identity from_overlay handed over only from the overlay device.
func TestToContainerIdentityFromOverlay(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	f.overlayCluster()
	// Pod A accepts the peer node's pod only; the overlay device is eth0 here.
	must(t, f.dp.UpsertEndpoint(podA4, EndpointInfo{IfIndex: uint32(f.ifindex("lxca")), ID: 11, Flags: EndpointIngressEnforced, Identity: 1001, MAC: podAMAC, HostMAC: hostAMAC}))
	pm, err := f.dp.Policy()
	must(t, err)
	must(t, pm.Sync(11, []PolicyEntry{{Identity: testPeerPodIdentity, Proto: 6, Port: 80, PortBits: 16}}))
	must(t, f.dp.SetConfig(RuntimeConfig{TraceLevel: TraceControl, VXLANIfIndex: uint32(f.ifindex("eth0"))}))
	other := netip.MustParseAddr("10.200.2.99") // the ipcache: world
	syn := func(sport uint16) []byte {
		return Packet{SrcMAC: hostAMAC, DstMAC: podAMAC, Src: other, Dst: podA4, Proto: 6, SrcPort: sport, DstPort: 80, TTL: 64, TCPFlags: 0x02}.Bytes()
	}
	if res := f.runWith(HookToContainer, "lxca", f.ifindex("eth0"), markIdentity|testPeerPodIdentity, syn(41000)); res.Verdict != tcActOK {
		t.Errorf("identity from the overlay: verdict %d, want pass", res.Verdict)
	}
	// The same mark from anywhere else is not believed (a host process
	// could set it): the identity is the ipcache's, world, denied.
	if res := f.runWith(HookToContainer, "lxca", f.ifindex("lxcb"), markIdentity|testPeerPodIdentity, syn(41001)); res.Verdict != tcActShot {
		t.Errorf("identity mark from a pod's veth: verdict %d, want drop", res.Verdict)
	}
	if res := f.runWith(HookToContainer, "lxca", f.ifindex("eth0"), 0, syn(41002)); res.Verdict != tcActShot {
		t.Errorf("no identity from the overlay: verdict %d, want drop", res.Verdict)
	}
}

// TestPodToTunnelPortDropped: a pod never sends to a node's VXLAN port.
func TestPodToTunnelPortDropped(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	f.overlayCluster()
	rd, err := f.dp.OpenEvents()
	must(t, err)
	defer rd.Close()
	udp := func(dst string, port uint16) []byte {
		return Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podA4, Dst: netip.MustParseAddr(dst), Proto: 17, SrcPort: 40000, DstPort: port, TTL: 64}.Bytes()
	}
	udp6 := func(dst string, port uint16) []byte {
		return Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podA6, Dst: netip.MustParseAddr(dst), Proto: 17, SrcPort: 40000, DstPort: port, TTL: 64}.Bytes()
	}
	for _, c := range []struct {
		name string
		pkt  []byte
		drop bool
	}{
		{"another node's VXLAN port", udp(testPeerNode, 8472), true},
		{"another node's VXLAN port over IPv6", udp6("fd00:10:99::2", 8472), true},
		{"its own node's VXLAN port", udp(testNode, 8472), true},
		{"another node, another port", udp(testPeerNode, 8473), false},
		{"a world address's 8472", udp("192.0.2.1", 8472), false},
	} {
		res := f.run(HookFromContainer, "lxca", c.pkt)
		if (res.Verdict == tcActShot) != c.drop {
			t.Errorf("%s: verdict %d, want drop=%v", c.name, res.Verdict, c.drop)
		}
		if c.drop {
			ev := readEvent(t, rd, EventDrop)
			if ev.Subtype != reasonEncapProhibited || ev.DstPort != 8472 {
				t.Errorf("%s: drop event %+v, want reason %d", c.name, ev, reasonEncapProhibited)
			}
		}
	}
	if ReasonName(reasonEncapProhibited) != "Encapsulation traffic is prohibited" {
		t.Errorf("reason %d is %q", reasonEncapProhibited, ReasonName(reasonEncapProhibited))
	}
}

// TestHostFirewallLocalPods: the host endpoint's policy on the paths that
// do not cross a device: pod to node (ingress) and node to pod (egress),
// replies through conntrack, audit mode, every address of the node.
func TestHostFirewallLocalPods(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	f.overlayCluster()
	f.enableForwarding(testExtraLocal)
	rd, err := f.dp.OpenEvents()
	must(t, err)
	defer rd.Close()
	node := netip.MustParseAddr(testNode)
	pkt := func(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
		return Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: src, Dst: dst, Proto: 6, SrcPort: sport, DstPort: dport, TTL: 64, TCPFlags: flags}.Bytes()
	}
	pm, err := f.dp.Policy()
	must(t, err)
	// The host accepts pod A on 9998; it may open connections to pod B's 80 only.
	must(t, pm.Sync(HostEndpointID, []PolicyEntry{
		{Identity: 1001, Proto: 6, Port: 9998, PortBits: 16},
		{Identity: 1002, Egress: true, Proto: 6, Port: 80, PortBits: 16},
	}))
	// Off: the pod reaches any port.
	if res := f.run(HookFromContainer, "lxca", pkt(podA4, node, 50000, 9999, 0x02)); res.Verdict == tcActShot {
		t.Fatalf("host firewall off: pod to node dropped")
	}
	must(t, f.dp.SetHostFlags(EndpointIngressEnforced|EndpointEgressEnforced))

	if res := f.run(HookFromContainer, "lxca", pkt(podA4, node, 50001, 9999, 0x02)); res.Verdict != tcActShot {
		t.Errorf("pod to node:9999: verdict %d, want drop", res.Verdict)
	}
	ev := waitEvent(t, rd, EventDrop, podA4, node)
	if ev.Subtype != reasonPolicy || ev.EndpointID != HostEndpointID || ev.Direction != 0 || ev.DstIdentity != 1 || ev.SrcIdentity != 1001 {
		t.Errorf("drop event %+v, want policy denied at the host endpoint's ingress", ev)
	}
	for _, dst := range []string{"fd00:10:99::1", testExtraLocal} {
		src := podA4
		if netip.MustParseAddr(dst).Is6() {
			src = podA6
		}
		if res := f.run(HookFromContainer, "lxca", pkt(src, netip.MustParseAddr(dst), 50002, 9999, 0x02)); res.Verdict != tcActShot {
			t.Errorf("pod to %s:9999 (the node): verdict %d, want drop", dst, res.Verdict)
		}
	}
	// From the network too, an address the ipcache does not know is the node's.
	if res := f.run(HookFromNetdev, "eth0", pkt(netip.MustParseAddr(testPeerNode), netip.MustParseAddr(testExtraLocal), 50009, 9999, 0x02)); res.Verdict != tcActShot {
		t.Errorf("remote node to %s:9999 (the node): verdict %d, want drop", testExtraLocal, res.Verdict)
	}
	// Allowed, and the node's replies come back through to_container
	// (sent by the node: no input device).
	if res := f.run(HookFromContainer, "lxca", pkt(podA4, node, 50003, 9998, 0x02)); res.Verdict == tcActShot {
		t.Errorf("pod to node:9998: dropped, the policy allows it")
	}
	if res := f.runWith(HookToContainer, "lxca", 0, 0, pkt(node, podA4, 9998, 50003, 0x12)); res.Verdict != tcActOK {
		t.Errorf("the node's reply to pod A: verdict %d, want pass", res.Verdict)
	}
	// The node opening connections to its pods: egress policy.
	if res := f.runWith(HookToContainer, "lxca", 0, 0, pkt(node, podA4, 50004, 80, 0x02)); res.Verdict != tcActShot {
		t.Errorf("node to pod A:80: verdict %d, want drop (host egress allows pod B only)", res.Verdict)
	}
	ev = waitEvent(t, rd, EventDrop, node, podA4)
	if ev.Subtype != reasonPolicy || ev.EndpointID != HostEndpointID || ev.Direction != 1 {
		t.Errorf("drop event %+v, want policy denied at the host endpoint's egress", ev)
	}
	// From another of its addresses it is still the node.
	if res := f.runWith(HookToContainer, "lxca", 0, 0, pkt(netip.MustParseAddr(testExtraLocal), podA4, 50005, 80, 0x02)); res.Verdict != tcActShot {
		t.Errorf("node (other address) to pod A:80: verdict %d, want drop", res.Verdict)
	}
	if res := f.runWith(HookToContainer, "lxcb", 0, 0, pkt(node, podB4, 50006, 80, 0x02)); res.Verdict != tcActOK {
		t.Errorf("node to pod B:80: verdict %d, want pass", res.Verdict)
	}
	// ... and pod B's reply is not a new connection to the node.
	if res := f.run(HookFromContainer, "lxcb", pkt(podB4, node, 80, 50006, 0x12)); res.Verdict == tcActShot {
		t.Errorf("pod B's reply to the node: dropped")
	}
	// A packet another node sent (it has an input device) is not the
	// node's egress.
	if res := f.runWith(HookToContainer, "lxca", f.ifindex("eth0"), 0, pkt(netip.MustParseAddr(testPeerNode), podA4, 50007, 80, 0x02)); res.Verdict != tcActOK {
		t.Errorf("remote node to pod A: verdict %d, want pass", res.Verdict)
	}

	// Audit mode: reported, not dropped.
	must(t, f.dp.SetHostFlags(EndpointIngressEnforced|EndpointAudit))
	if res := f.run(HookFromContainer, "lxca", pkt(podA4, node, 50008, 9999, 0x02)); res.Verdict == tcActShot {
		t.Errorf("audit mode: pod to node:9999 dropped")
	}
	for {
		ev = waitEvent(t, rd, EventPolicy, podA4, node)
		if ev.SrcPort == 50008 || ev.Type == 0 {
			break
		}
	}
	if ev.Flags&(EventFlagDenied|EventFlagAudit) != EventFlagDenied|EventFlagAudit || ev.EndpointID != HostEndpointID {
		t.Errorf("audit verdict %+v, want denied+audit at the host endpoint", ev)
	}
}

// TestNodePortToTunnelPortDropped: a service whose backend is another
// node's VXLAN port would let outside clients speak the overlay with this
// node's address as the sender (SNAT): from_netdev refuses it; a regular
// UDP backend on a node address still works.
func TestNodePortToTunnelPortDropped(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	f.overlayCluster()
	node := netip.MustParseAddr(testNode)
	peer := netip.MustParseAddr(testPeerNode)
	must(t, f.dp.SetConfig(RuntimeConfig{NodeIPv4: node}))
	rd, err := f.dp.OpenEvents()
	must(t, err)
	defer rd.Close()
	must(t, f.dp.UpsertBackend(1, Backend{Addr: peer, Port: 8472, Proto: 17}))
	must(t, f.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: node, Port: 30472, Proto: 17}, RevNat: 1, Flags: ServiceNodePort, Backends: []uint32{1}}, 0))
	must(t, f.dp.UpsertRevNat(1, node, 30472))
	must(t, f.dp.UpsertBackend(2, Backend{Addr: peer, Port: 53, Proto: 17}))
	must(t, f.dp.UpsertService(ServiceEntry{Frontend: Frontend{Addr: node, Port: 30053, Proto: 17}, RevNat: 2, Flags: ServiceNodePort, Backends: []uint32{2}}, 0))
	must(t, f.dp.UpsertRevNat(2, node, 30053))
	client := netip.MustParseAddr("10.99.0.200")
	in := func(port uint16) []byte {
		return Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: client, Dst: node, Proto: 17, SrcPort: 5555, DstPort: port, TTL: 64, Payload: []byte("x")}.Bytes()
	}
	if res := f.run(HookFromNetdev, "eth0", in(30472)); res.Verdict != tcActShot {
		t.Errorf("NodePort to a node's VXLAN port: verdict %d, want drop", res.Verdict)
	}
	ev := waitEvent(t, rd, EventDrop, client, peer)
	if ev.Subtype != reasonEncapProhibited {
		t.Errorf("drop event %+v, want reason %d", ev, reasonEncapProhibited)
	}
	if res := f.run(HookFromNetdev, "eth0", in(30053)); res.Verdict == tcActShot {
		t.Errorf("NodePort to a node's UDP 53: dropped")
	}
}
