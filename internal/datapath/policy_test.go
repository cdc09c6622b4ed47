package datapath

import (
	"net/netip"
	"reflect"
	"testing"
)

// addPolicyPods registers pods A (ep 11, identity 1001) and B (ep 12,
// identity 1002) with the given flags.
func (f *fixture) addPolicyPods(flagsA, flagsB uint16) {
	f.t.Helper()
	for _, ip := range []netip.Addr{podA4, podA6} {
		must(f.t, f.dp.UpsertEndpoint(ip, EndpointInfo{IfIndex: uint32(f.ifindex("lxca")), ID: 11, Flags: flagsA, Identity: 1001, MAC: podAMAC, HostMAC: hostAMAC}))
	}
	for _, ip := range []netip.Addr{podB4, podB6} {
		must(f.t, f.dp.UpsertEndpoint(ip, EndpointInfo{IfIndex: uint32(f.ifindex("lxcb")), ID: 12, Flags: flagsB, Identity: 1002, MAC: podBMAC, HostMAC: hostBMAC}))
	}
}

func tcpPort(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	return Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: src, Dst: dst, Proto: 6, SrcPort: sport, DstPort: dport, TTL: 64, TCPFlags: flags}.Bytes()
}

func (f *fixture) dropCount(reason uint8) uint64 {
	f.t.Helper()
	cs, err := f.dp.Counters()
	must(f.t, err)
	var n uint64
	for _, c := range cs {
		if c.Reason == reason {
			n += c.Packets
		}
	}
	return n
}

func TestEgressPolicy(t *testing.T) {
	f := newFixture(t)
	f.addPolicyPods(EndpointEgressEnforced, 0)
	pm, err := f.dp.Policy()
	must(t, err)
	rd, err := f.dp.OpenEvents()
	must(t, err)
	defer rd.Close()

	// Enforced with no entries: default deny, reported.
	if res := f.run(HookFromContainer, "lxca", tcpPort(podA4, podB4, 40000, 80, 0x02)); res.Verdict != tcActShot {
		t.Fatalf("default deny: verdict %d", res.Verdict)
	}
	if n := f.dropCount(133); n != 1 {
		t.Errorf("POLICY_DENIED count %d, want 1", n)
	}
	ev := readEvent(t, rd, EventPolicy)
	if ev.Flags&EventFlagDenied == 0 || ev.Direction != 1 || ev.DstIdentity != 1002 || ev.DstPort != 80 {
		t.Errorf("policy event %+v", ev)
	}

	// Allow B on TCP 80 only.
	must(t, pm.Sync(11, []PolicyEntry{{Identity: 1002, Egress: true, Proto: 6, Port: 80, PortBits: 16}}))
	if res := f.run(HookFromContainer, "lxca", tcpPort(podA4, podB4, 40001, 80, 0x02)); res.Verdict != tcActRedirect {
		t.Errorf("allowed port: verdict %d", res.Verdict)
	}
	ev = readEvent(t, rd, EventPolicy)
	if ev.Flags&EventFlagDenied != 0 || ev.Subtype != MatchL3L4 {
		t.Errorf("allow event %+v, want L3_L4 allowed", ev)
	}
	if res := f.run(HookFromContainer, "lxca", tcpPort(podA4, podB4, 40002, 81, 0x02)); res.Verdict != tcActShot {
		t.Errorf("other port: verdict %d, want drop", res.Verdict)
	}
	// IPv6 is subject to the same entries.
	if res := f.run(HookFromContainer, "lxca", tcpPort(podA6, podB6, 40003, 81, 0x02)); res.Verdict != tcActShot {
		t.Errorf("IPv6 other port: verdict %d, want drop", res.Verdict)
	}

	// An established connection survives a policy that no longer allows it.
	must(t, pm.Sync(11, nil))
	if res := f.run(HookFromContainer, "lxca", tcpPort(podA4, podB4, 40001, 80, 0x10)); res.Verdict != tcActRedirect {
		t.Errorf("established after policy removal: verdict %d", res.Verdict)
	}
	if res := f.run(HookFromContainer, "lxca", tcpPort(podA4, podB4, 40009, 80, 0x02)); res.Verdict != tcActShot {
		t.Errorf("new connection after policy removal: verdict %d", res.Verdict)
	}
}

func TestIngressPolicyAndReplies(t *testing.T) {
	f := newFixture(t)
	// A accepts nothing; B is not enforced.
	f.addPolicyPods(EndpointIngressEnforced, 0)
	// A opens a connection to B: the reply into A passes although A's
	// ingress allows nothing.
	if res := f.run(HookFromContainer, "lxca", tcpPort(podA4, podB4, 41000, 80, 0x02)); res.Verdict != tcActRedirect {
		t.Fatalf("A to B: verdict %d", res.Verdict)
	}
	if res := f.run(HookToContainer, "lxca", tcpPort(podB4, podA4, 80, 41000, 0x12)); res.Verdict != tcActOK {
		t.Errorf("reply into A: verdict %d, want pass", res.Verdict)
	}
	// A new connection from B into A is denied.
	if res := f.run(HookToContainer, "lxca", tcpPort(podB4, podA4, 42000, 80, 0x02)); res.Verdict != tcActShot {
		t.Errorf("B to A: verdict %d, want drop", res.Verdict)
	}
	entries, err := f.dp.ListCT()
	must(t, err)
	if len(entries) != 1 || entries[0].Ingress || !entries[0].SeenReply || entries[0].DstPort != 80 {
		t.Errorf("conntrack %+v, want one egress entry with a reply seen", entries)
	}
}

func TestDenyPrecedenceAndPortRanges(t *testing.T) {
	f := newFixture(t)
	f.addPolicyPods(EndpointEgressEnforced, 0)
	pm, err := f.dp.Policy()
	must(t, err)
	must(t, pm.Sync(11, []PolicyEntry{
		{Identity: 1002, Egress: true},                                            // B, any port
		{Identity: 0, Egress: true, Proto: 6, Port: 80, PortBits: 16, Deny: true}, // nobody on TCP 80
		{Identity: 0, Egress: true, Proto: 17, Port: 8080, PortBits: 13},          // anybody on UDP 8080-8087
	}))
	cases := []struct {
		dst     netip.Addr
		proto   uint8
		port    uint16
		verdict uint32
	}{
		{podB4, 6, 80, tcActShot},
		{podB4, 6, 81, tcActRedirect},
		{netip.MustParseAddr("192.0.2.1"), 17, 8087, tcActOK},
		{netip.MustParseAddr("192.0.2.1"), 17, 8088, tcActShot},
		{netip.MustParseAddr("192.0.2.1"), 17, 8079, tcActShot},
	}
	for i, c := range cases {
		pkt := Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podA4, Dst: c.dst, Proto: c.proto, SrcPort: uint16(43000 + i), DstPort: c.port, TTL: 64, TCPFlags: 0x02}.Bytes()
		if res := f.run(HookFromContainer, "lxca", pkt); res.Verdict != c.verdict {
			t.Errorf("%s proto %d port %d: verdict %d, want %d", c.dst, c.proto, c.port, res.Verdict, c.verdict)
		}
	}
	if n := f.dropCount(181); n != 1 {
		t.Errorf("explicit deny drops %d, want 1", n)
	}
	got, err := pm.Dump(11)
	must(t, err)
	want := []PolicyEntry{
		{Identity: 0, Egress: true, Proto: 6, Port: 80, PortBits: 16, Deny: true},
		{Identity: 0, Egress: true, Proto: 17, Port: 8080, PortBits: 13},
		{Identity: 1002, Egress: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("dump:\n got %v\nwant %v", got, want)
	}
	must(t, pm.Delete(11))
	if got, _ := pm.Dump(11); len(got) != 0 {
		t.Errorf("after delete: %v", got)
	}
}

func TestAuditMode(t *testing.T) {
	f := newFixture(t)
	f.addPolicyPods(EndpointEgressEnforced|EndpointAudit, 0)
	rd, err := f.dp.OpenEvents()
	must(t, err)
	defer rd.Close()
	if res := f.run(HookFromContainer, "lxca", tcpPort(podA4, podB4, 44000, 80, 0x02)); res.Verdict != tcActRedirect {
		t.Fatalf("audit mode: verdict %d, want the packet through", res.Verdict)
	}
	ev := readEvent(t, rd, EventPolicy)
	if ev.Flags&(EventFlagDenied|EventFlagAudit) != EventFlagDenied|EventFlagAudit {
		t.Errorf("audit event flags %#x, want denied+audit", ev.Flags)
	}
}

func TestHostFirewall(t *testing.T) {
	f := newFixture(t)
	f.addPods()
	node := netip.MustParseAddr("10.99.0.1")
	peer := netip.MustParseAddr("10.99.0.2")
	must(t, f.dp.UpsertIPCache(IPCacheEntry{Prefix: netip.PrefixFrom(node, 32), Identity: 1}))
	must(t, f.dp.UpsertIPCache(IPCacheEntry{Prefix: netip.PrefixFrom(peer, 32), Identity: 6}))
	pkt := func(src, dst netip.Addr, sport, dport uint16) []byte {
		return Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: src, Dst: dst, Proto: 6, SrcPort: sport, DstPort: dport, TTL: 64, TCPFlags: 0x02}.Bytes()
	}
	// Off: everything passes.
	if res := f.run(HookFromNetdev, "eth0", pkt(peer, node, 50000, 22)); res.Verdict != tcActOK {
		t.Fatalf("host firewall off: verdict %d", res.Verdict)
	}
	pm, err := f.dp.Policy()
	must(t, err)
	must(t, pm.Sync(HostEndpointID, []PolicyEntry{{Identity: 6, Proto: 6, Port: 22, PortBits: 16}}))
	must(t, f.dp.SetHostFlags(EndpointIngressEnforced))
	// A restarted agent's SetConfig keeps the host flags.
	must(t, f.dp.SetConfig(RuntimeConfig{TraceLevel: TraceControl}))
	if f.dp.HostFlags() != EndpointIngressEnforced {
		t.Fatalf("SetConfig reset the host flags to %d", f.dp.HostFlags())
	}
	if res := f.run(HookFromNetdev, "eth0", pkt(peer, node, 50001, 22)); res.Verdict != tcActOK {
		t.Errorf("allowed ssh from remote node: verdict %d", res.Verdict)
	}
	if res := f.run(HookFromNetdev, "eth0", pkt(peer, node, 50002, 23)); res.Verdict != tcActShot {
		t.Errorf("port 23 to host: verdict %d, want drop", res.Verdict)
	}
	// The node's own connection out: its reply comes back in.
	if res := f.run(HookToNetdev, "eth0", pkt(node, peer, 50003, 443)); res.Verdict != tcActOK {
		t.Errorf("host egress (not enforced): verdict %d", res.Verdict)
	}
	if res := f.run(HookFromNetdev, "eth0", pkt(peer, node, 443, 50003)); res.Verdict != tcActOK {
		t.Errorf("reply to the host's own connection: verdict %d, want pass", res.Verdict)
	}
	// Audit mode reports but does not drop.
	must(t, f.dp.SetHostFlags(EndpointIngressEnforced|EndpointAudit))
	if res := f.run(HookFromNetdev, "eth0", pkt(peer, node, 50004, 23)); res.Verdict != tcActOK {
		t.Errorf("audit mode: verdict %d, want pass", res.Verdict)
	}
	// Traffic to a pod is not the host's business.
	must(t, f.dp.SetHostFlags(EndpointIngressEnforced))
	if res := f.run(HookFromNetdev, "eth0", pkt(peer, podB4, 50005, 23)); res.Verdict != tcActRedirect {
		t.Errorf("to a pod with host firewall on: verdict %d, want redirect", res.Verdict)
	}
}

// ICMP rules key on the message type (Cilium's icmps), not on the echo
// identifier the parser keeps in the ports for conntrack: a pod picks the
// identifier, so keying on it would let any ICMP type through an entry.
func TestICMPTypePolicyKey(t *testing.T) {
	f := newFixture(t)
	f.addPolicyPods(EndpointEgressEnforced, 0)
	pm, err := f.dp.Policy()
	must(t, err)
	must(t, pm.Sync(11, []PolicyEntry{
		{Identity: 1002, Egress: true, Proto: 1, Port: 8, PortBits: 16},    // ICMP echo request to B
		{Identity: 1002, Egress: true, Proto: 58, Port: 128, PortBits: 16}, // ICMPv6 echo request to B
	}))
	icmp := func(src, dst netip.Addr, proto, typ uint8, id uint16) []byte {
		return Packet{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: src, Dst: dst, Proto: proto, ICMPType: typ, SrcPort: id, TTL: 64}.Bytes()
	}
	cases := []struct {
		name    string
		pkt     []byte
		verdict uint32
	}{
		{"echo request, identifier 4660", icmp(podA4, podB4, 1, 8, 4660), tcActRedirect},
		{"echo reply with identifier 8 (unsolicited)", icmp(podA4, podB4, 1, 0, 8), tcActShot},
		{"timestamp request, identifier 8", icmp(podA4, podB4, 1, 13, 8), tcActShot},
		{"destination unreachable", icmp(podA4, podB4, 1, 3, 0), tcActShot},
		{"ICMPv6 echo request, identifier 999", icmp(podA6, podB6, 58, 128, 999), tcActRedirect},
		{"ICMPv6 echo reply with identifier 128", icmp(podA6, podB6, 58, 129, 128), tcActShot},
		{"ICMPv4 type 128 (the IPv6 entry's type)", icmp(podA4, podB4, 1, 128, 5), tcActShot},
	}
	for _, c := range cases {
		if res := f.run(HookFromContainer, "lxca", c.pkt); res.Verdict != c.verdict {
			t.Errorf("%s: verdict %d, want %d", c.name, res.Verdict, c.verdict)
		}
	}
	// The reply to the allowed echo request comes back through conntrack
	// (keyed by the identifier), although A's ingress is not what allows it.
	f.addPolicyPods(EndpointEgressEnforced|EndpointIngressEnforced, 0)
	reply := Packet{SrcMAC: hostAMAC, DstMAC: podAMAC, Src: podB4, Dst: podA4, Proto: 1, ICMPType: 0, SrcPort: 4660, TTL: 64}.Bytes()
	if res := f.run(HookToContainer, "lxca", reply); res.Verdict != tcActOK {
		t.Errorf("echo reply into A: verdict %d, want pass", res.Verdict)
	}
	stray := Packet{SrcMAC: hostAMAC, DstMAC: podAMAC, Src: podB4, Dst: podA4, Proto: 1, ICMPType: 0, SrcPort: 4661, TTL: 64}.Bytes()
	if res := f.run(HookToContainer, "lxca", stray); res.Verdict != tcActShot {
		t.Errorf("echo reply into A with an unknown identifier: verdict %d, want drop", res.Verdict)
	}
}
