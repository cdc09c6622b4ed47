package datapath

// The second adversarial review (issue 11): what a pod with raw sockets,
// or a client outside, can still send. Each section is a hole that was
// open (its test failed before the fix next to it) or an edge that holds
// and must keep holding. The lab twin is
// internal/labtest/adversarial_review_test.go.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

const reasonUnsupportedL3 = 139

// vlanTag inserts an 802.1Q/802.1AD tag (tpid, vid) after the MAC
// addresses of an Ethernet frame.
func vlanTag(frame []byte, tpid, vid uint16) []byte {
	out := append([]byte(nil), frame[:12]...)
	out = binary.BigEndian.AppendUint16(out, tpid)
	out = binary.BigEndian.AppendUint16(out, vid)
	return append(out, frame[12:]...)
}

// A stacked VLAN tag with VID 0 (a priority tag). The kernel pops the
// outer tag of a frame into skb->vlan_tci before TCX runs, so a pod that
// sends two tags has the programs look at a frame whose ethertype is the
// inner tag's. The stack then strips the priority tag and delivers the
// inner IP packet as the device's own: if the program let it pass as
// "not IP", the packet skipped the source check, egress policy and the
// host firewall (a spoofed source then got the spoofed pod's identity at
// to_container). Such a frame must be dropped; a tag with a VLAN id is
// the stack's (a VLAN device's traffic, or dropped as for another host).
func TestReviewStackedVLANTags(t *testing.T) {
	f := newFixture(t)
	f.issuePolicy()
	world4 := netip.MustParseAddr("192.0.2.1")
	spoofed4 := tcpPort(podB4, world4, 1000, 80, 0x02)
	spoofed6 := tcpPort(podB6, podA6, 1000, 80, 0x02)
	var cases []advCase
	for _, tpid := range []uint16{0x8100, 0x88a8} {
		cases = append(cases,
			advCase{name: fmt.Sprintf("from-container-%#x", tpid), hook: HookFromContainer, dev: "lxca", steps: []advStep{
				dropped(vlanTag(spoofed4, tpid, 0), reasonUnsupportedL3),
				dropped(vlanTag(spoofed6, tpid, 0), reasonUnsupportedL3),
				// The priority bits do not make it a VLAN.
				dropped(vlanTag(spoofed4, tpid, 0xe000), reasonUnsupportedL3),
				dropped(vlanTag(vlanTag(spoofed4, 0x8100, 0), tpid, 0), reasonUnsupportedL3),
				// Truncated tag.
				dropped(vlanTag(spoofed4, tpid, 0)[:16], reasonInvalid),
			}},
			// Towards pod B: its ingress policy denies TCP/81.
			advCase{name: fmt.Sprintf("to-container-%#x", tpid), hook: HookToContainer, dev: "lxcb", steps: []advStep{
				dropped(vlanTag(tcpPort(podA4, podB4, 1001, 81, 0x02), tpid, 0), reasonUnsupportedL3),
			}},
			advCase{name: fmt.Sprintf("from-netdev-%#x", tpid), hook: HookFromNetdev, dev: "eth0", steps: []advStep{
				dropped(vlanTag(tcpPort(world4, podB4, 1002, 81, 0x02), tpid, 0), reasonUnsupportedL3),
			}},
		)
	}
	f.runCases(t, cases)
}

// A pod's spoofed first fragment is dropped by the source check, but it
// must not leave its ports behind for another pod's datagram with the same
// addresses and id: that pod's later fragments would then be judged (and
// dropped) on the attacker's ports. lumen_frag entries are per device.
func TestReviewFragmentEntryPoisoning(t *testing.T) {
	for _, fam := range []struct {
		name     string
		src, dst netip.Addr
	}{{"ipv4", podA4, podB4}, {"ipv6", podA6, podB6}} {
		t.Run(fam.name, func(t *testing.T) {
			f := newFixture(t)
			// Pod A's egress allows UDP/8080 to B only.
			f.addPolicyPods(EndpointEgressEnforced, 0)
			pm, err := f.dp.Policy()
			must(t, err)
			must(t, pm.Sync(11, []PolicyEntry{{Identity: 1002, Egress: true, Proto: 17, Port: 8080, PortBits: 16}}))
			victim := fragment(udpFrame(fam.src, fam.dst, 40001, 8080, 3000), 1400, 301)
			// Pod B, as A, the same datagram id, another port.
			forged := fragment(udpFrame(fam.src, fam.dst, 40001, 9090, 3000), 1400, 301)
			f.runCases(t, []advCase{
				{name: "victim-head", hook: HookFromContainer, dev: "lxca", steps: []advStep{redirect(victim[0])}},
				{name: "forged-head", hook: HookFromContainer, dev: "lxcb", steps: []advStep{dropped(forged[0], reasonInvalidSIP)}},
				{name: "victim-rest", hook: HookFromContainer, dev: "lxca", steps: []advStep{redirect(victim[1]), redirect(victim[2])}},
				// And the forged head does not open the door for later
				// fragments sent from B's device either.
				{name: "forged-rest", hook: HookFromContainer, dev: "lxcb", steps: []advStep{dropped(forged[1], reasonInvalidSIP)}},
			})
		})
	}
}

// withIPv4Options gives an IPv4 frame n 4-byte words of options (NOPs
// ending in End of Options), fixing lengths and the header checksum.
func withIPv4Options(frame []byte, n int) []byte {
	opts := make([]byte, n*4)
	for i := range opts {
		opts[i] = 1 // NOP
	}
	if n > 0 {
		opts[len(opts)-1] = 0
	}
	out := append(append(append([]byte(nil), frame[:34]...), opts...), frame[34:]...)
	ip := out[14:]
	ip[0] = 0x40 | byte(5+n)
	binary.BigEndian.PutUint16(ip[2:], binary.BigEndian.Uint16(ip[2:])+uint16(n*4))
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], IPv4Checksum(ip[:20+n*4]))
	return out
}

// IPv4 options move the L4 header; every header length up to 60 bytes is
// followed, in whole packets and in first fragments; a header length
// below 5 or past the packet is invalid. Holds.
func TestReviewIPv4Options(t *testing.T) {
	f := newFixture(t)
	f.issuePolicy()
	var cases []advCase
	sport := uint16(50000)
	next := func() uint16 { sport++; return sport }
	for n := 0; n <= 10; n++ {
		frags := fragment(withIPv4Options(udpFrame(podA4, podB4, next(), 80, 3000), n), 1400, uint32(400+n))
		cases = append(cases, advCase{name: fmt.Sprintf("options-%d", n*4), hook: HookToContainer, dev: "lxcb", steps: []advStep{
			dropped(withIPv4Options(tcpPort(podA4, podB4, next(), 81, 0x02), n), reasonPolicyDeny),
			pass(withIPv4Options(tcpPort(podA4, podB4, next(), 80, 0x02), n)),
			dropped(frags[0], reasonPolicyDeny), dropped(frags[1], reasonPolicyDeny),
		}})
	}
	short := withIPv4Options(tcpPort(podA4, podB4, next(), 80, 0x02), 0)
	short[14] = 0x44
	// The header claims 60 bytes, the packet holds the fixed header and
	// 20 bytes of TCP.
	long := tcpPort(podA4, podB4, next(), 80, 0x02)
	long[14] = 0x4f
	cases = append(cases, advCase{name: "bad-ihl", hook: HookToContainer, dev: "lxcb", steps: []advStep{
		dropped(short, reasonInvalid), dropped(long, reasonInvalid),
	}})
	f.runCases(t, cases)
}

const markHairpin = 0x4c480000

// to_container skips policy for MARK_HAIRPIN, which from_container sets
// on a pod's own service traffic sent back to it through its own veth. A
// pod's mark (SO_MARK) is scrubbed when the packet leaves its namespace,
// but the node's processes (a host-network pod with CAP_NET_ADMIN) and
// netfilter rules of other software can set any mark: the mark alone
// must not open a pod. Only a packet that came in on the same veth it
// leaves by is a hairpin.
func TestReviewHairpinMarkForged(t *testing.T) {
	f := newFixture(t)
	f.issuePolicy()
	// Pod B's ingress denies TCP/81 from everyone, the host included.
	for i, c := range []struct {
		name    string
		ingress string // "" the node itself
		verdict uint32
	}{
		{"from-the-node", "", tcActShot},
		{"from-pod-a", "lxca", tcActShot},
		{"from-the-network", "eth0", tcActShot},
		{"hairpin", "lxcb", tcActOK},
	} {
		ingress := 0
		if c.ingress != "" {
			ingress = f.ifindex(c.ingress)
		}
		src := podA4
		if c.ingress == "lxcb" {
			src = podB4
		}
		if res := f.runWith(HookToContainer, "lxcb", ingress, markHairpin, tcpPort(src, podB4, uint16(52000+i), 81, 0x02)); res.Verdict != c.verdict {
			t.Errorf("%s: MARK_HAIRPIN to a denied port: verdict %d, want %d", c.name, res.Verdict, c.verdict)
		}
	}
}

// linkLocal6 returns dev's IPv6 link-local address in the fixture's
// namespace (the kernel gives every veth one).
func (f *fixture) linkLocal6(dev string) netip.Addr {
	f.t.Helper()
	h, err := netlink.NewHandleAt(f.ns)
	must(f.t, err)
	defer h.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		addrs, err := h.AddrList(f.devs[dev], netlink.FAMILY_V6)
		must(f.t, err)
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.IsLinkLocalUnicast() {
				return ip
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s has no IPv6 link-local address", dev)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Link-scoped IPv6 went to the stack untouched, whatever it carried: a pod
// (or a machine on the node's link) reached any TCP or UDP service of the
// node through its link-local address, or a link-local source, or an
// all-nodes multicast, around the host firewall and the pod's egress
// policy. Only the link's own protocol (ICMPv6: neighbour discovery,
// router discovery, MLD) passes untouched now; everything else is policy's.
// IPv4 broadcast and multicast from a pod have no receiver on the veth but
// the node: the host firewall's too.
func TestReviewLinkScopedBypass(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	f.overlayCluster()
	f.enableForwarding(testExtraLocal)
	pm, err := f.dp.Policy()
	must(t, err)
	// The host accepts pod A on TCP/UDP 9998 only.
	must(t, pm.Sync(HostEndpointID, []PolicyEntry{
		{Identity: 1001, Proto: 6, Port: 9998, PortBits: 16},
		{Identity: 1001, Proto: 17, Port: 9998, PortBits: 16},
	}))
	must(t, f.dp.SetHostFlags(EndpointIngressEnforced))
	podLL := netip.MustParseAddr("fe80::a:1")
	hostLL, netLL := f.linkLocal6("lxca"), f.linkLocal6("eth0")
	neighbour := netip.MustParseAddr("fe80::99")
	node6 := netip.MustParseAddr("fd00:10:99::1")
	allNodes, bcast, mcast4 := netip.MustParseAddr("ff02::1"), netip.MustParseAddr("255.255.255.255"), netip.MustParseAddr("224.0.0.251")
	tcp := func(src, dst netip.Addr, sport, dport uint16) []byte { return tcpPort(src, dst, sport, dport, 0x02) }
	udp := func(src, dst netip.Addr, sport, dport uint16) []byte { return udpFrame(src, dst, sport, dport, 32) }
	icmp6 := func(src, dst netip.Addr, typ uint8) []byte {
		b := Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: src, Dst: dst, Proto: 58, TTL: 255, Payload: make([]byte, 24)}.Bytes()
		b[54] = typ
		return b
	}
	notPassed := func(c string, h Hook, dev string, frame []byte) {
		t.Helper()
		if got := f.send(h, dev, frame); got.Verdict != tcActShot {
			t.Errorf("%s: verdict %d, want drop", c, got.Verdict)
		}
	}
	notPassed("pod LL to the node's LL, TCP/22", HookFromContainer, "lxca", tcp(podLL, hostLL, 40000, 22))
	notPassed("pod LL to the node's global address, TCP/22", HookFromContainer, "lxca", tcp(podLL, node6, 40001, 22))
	notPassed("pod LL to all nodes, UDP/9999", HookFromContainer, "lxca", udp(podLL, allNodes, 40002, 9999))
	notPassed("pod to all nodes from its own address, UDP/9999", HookFromContainer, "lxca", udp(podA6, allNodes, 40003, 9999))
	notPassed("pod to the IPv4 broadcast, UDP/9999", HookFromContainer, "lxca", udp(podA4, bcast, 40004, 9999))
	notPassed("pod to an IPv4 multicast group, UDP/9999", HookFromContainer, "lxca", udp(podA4, mcast4, 40005, 9999))
	notPassed("a neighbour to the node's LL, TCP/22", HookFromNetdev, "eth0", tcp(neighbour, netLL, 40006, 22))
	notPassed("a neighbour's LL to the node's global address, TCP/22", HookFromNetdev, "eth0", tcp(neighbour, node6, 40007, 22))

	// What the host firewall allows still passes; the link's own ICMPv6
	// is untouched.
	if got := f.send(HookFromContainer, "lxca", udp(podA4, bcast, 40008, 9998)); got.Verdict == tcActShot {
		t.Errorf("pod to the IPv4 broadcast, UDP/9998 (allowed): dropped, reason %d", got.reason)
	}
	if got := f.send(HookFromNetdev, "eth0", tcp(neighbour, netLL, 40009, 9998)); got.Verdict == tcActShot && got.reason != reasonPolicy {
		t.Errorf("a neighbour to the node's LL: reason %d, want policy (world is not allowed)", got.reason)
	}
	for _, typ := range []uint8{133, 134, 135, 136, 143} {
		if got := f.send(HookFromContainer, "lxca", icmp6(podLL, allNodes, typ)); got.Verdict != tcActOK {
			t.Errorf("ICMPv6 type %d from the pod's LL: verdict %d (reason %d), want pass", typ, got.Verdict, got.reason)
		}
		if got := f.send(HookFromNetdev, "eth0", icmp6(neighbour, netLL, typ)); got.Verdict != tcActOK {
			t.Errorf("ICMPv6 type %d from a neighbour: verdict %d (reason %d), want pass", typ, got.Verdict, got.reason)
		}
	}
}

// In tunnel mode another node's pods reach this node only through the
// overlay, where from_overlay checks the sender. The same source sent
// plain to the node's device (a machine on the underlay that routes the
// pod CIDR to the node) got the remote pod's identity from the ipcache at
// to_container: a pod trusting it was open to anyone on the underlay. A
// node's own addresses still come plain.
func TestReviewPlainTunnelSource(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	f.overlayCluster()
	// Pod A accepts the peer node's pod (and the nodes) on TCP/80.
	must(t, f.dp.UpsertEndpoint(podA4, EndpointInfo{IfIndex: uint32(f.ifindex("lxca")), ID: 11, Flags: EndpointIngressEnforced, Identity: 1001, MAC: podAMAC, HostMAC: hostAMAC}))
	pm, err := f.dp.Policy()
	must(t, err)
	must(t, pm.Sync(11, []PolicyEntry{{Identity: testPeerPodIdentity, Proto: 6, Port: 80, PortBits: 16}, {Identity: 6, Proto: 6, Port: 80, PortBits: 16}}))
	// The overlay device is lxcb here: eth0 is the underlay.
	must(t, f.dp.SetConfig(RuntimeConfig{VXLANIfIndex: uint32(f.ifindex("lxcb"))}))
	syn := func(src netip.Addr, sport uint16) []byte {
		return Packet{SrcMAC: hostAMAC, DstMAC: podAMAC, Src: src, Dst: podA4, Proto: 6, SrcPort: sport, DstPort: 80, TTL: 64, TCPFlags: 0x02}.Bytes()
	}
	peerPod, cidrMember, peerNode := netip.MustParseAddr(testPeerPod), netip.MustParseAddr(testThirdPodCIDRMember), netip.MustParseAddr(testPeerNode)
	for _, c := range []struct {
		name string
		src  netip.Addr
	}{{"remote-pod", peerPod}, {"remote-pod-cidr", cidrMember}} {
		if got := f.send(HookFromNetdev, "eth0", syn(c.src, 42000)); got.Verdict != tcActShot || got.reason != reasonInvalidSIP {
			t.Errorf("%s plain on the underlay, from_netdev: verdict %d reason %d, want drop 132", c.name, got.Verdict, got.reason)
		}
		if res := f.runWith(HookToContainer, "lxca", f.ifindex("eth0"), 0, syn(c.src, 42001)); res.Verdict != tcActShot {
			t.Errorf("%s plain on the underlay, to_container: verdict %d, want drop", c.name, res.Verdict)
		}
	}
	if got := f.send(HookFromNetdev, "eth0", syn(peerNode, 42002)); got.Verdict == tcActShot {
		t.Errorf("the peer node's own address, plain: dropped, reason %d", got.reason)
	}
	if res := f.runWith(HookToContainer, "lxca", f.ifindex("eth0"), 0, syn(peerNode, 42003)); res.Verdict != tcActOK {
		t.Errorf("the peer node's own address, plain, to_container: verdict %d, want pass", res.Verdict)
	}
	// Through the overlay, with from_overlay's identity: as before.
	if res := f.runWith(HookToContainer, "lxca", f.ifindex("lxcb"), markIdentity|testPeerPodIdentity, syn(peerPod, 42004)); res.Verdict != tcActOK {
		t.Errorf("the remote pod through the overlay: verdict %d, want pass", res.Verdict)
	}
}

// A NodePort client may be another node's pod (routed plain to the node's
// address, translated by from_netdev): to_container keeps its identity.
func TestReviewPlainTunnelSourceNodePort(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	f.overlayCluster()
	must(t, f.dp.UpsertEndpoint(podA4, EndpointInfo{IfIndex: uint32(f.ifindex("lxca")), ID: 11, Flags: EndpointIngressEnforced, Identity: 1001, MAC: podAMAC, HostMAC: hostAMAC}))
	pm, err := f.dp.Policy()
	must(t, err)
	must(t, pm.Sync(11, []PolicyEntry{{Identity: testPeerPodIdentity, Proto: 6, Port: 80, PortBits: 16}}))
	must(t, f.dp.SetConfig(RuntimeConfig{VXLANIfIndex: uint32(f.ifindex("lxcb"))}))
	syn := Packet{SrcMAC: hostAMAC, DstMAC: podAMAC, Src: netip.MustParseAddr(testPeerPod), Dst: podA4, Proto: 6, SrcPort: 42100, DstPort: 80, TTL: 64, TCPFlags: 0x02}.Bytes()
	const markRevNat = 0x4c4e0000
	if res := f.runWith(HookToContainer, "lxca", f.ifindex("eth0"), markRevNat|9, syn); res.Verdict != tcActOK {
		t.Errorf("a remote pod through NodePort: verdict %d, want pass", res.Verdict)
	}
}

// A packet to a loopback address from a pod or from the network: with
// route_localnet=1 on the node (kube-proxy sets it; CVE-2020-8558) the
// stack delivers it to services bound to 127.0.0.1 only, which nothing
// outside the node may reach. Lumen drops it whatever the sysctl says.
func TestReviewLoopbackDestination(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	lo4, lo4b, lo6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.1.2.3"), netip.MustParseAddr("::1")
	world := netip.MustParseAddr("192.0.2.1")
	f.runCases(t, []advCase{
		{name: "from-container", hook: HookFromContainer, dev: "lxca", steps: []advStep{
			dropped(tcpPort(podA4, lo4, 43000, 10248, 0x02), reasonInvalid),
			dropped(tcpPort(podA4, lo4b, 43001, 10248, 0x02), reasonInvalid),
			dropped(tcpPort(podA6, lo6, 43002, 10248, 0x02), reasonInvalid),
		}},
		{name: "from-netdev", hook: HookFromNetdev, dev: "eth0", steps: []advStep{
			dropped(tcpPort(world, lo4, 43003, 10248, 0x02), reasonInvalid),
		}},
	})
}
