package parser

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/datapath"
)

// fakeEnricher knows two pods and says "world" for everything else.
type fakeEnricher map[netip.Addr]*flowpb.Endpoint

func (f fakeEnricher) EndpointByIP(ip netip.Addr) *flowpb.Endpoint {
	if ep, ok := f[ip]; ok {
		return ep
	}
	return ReservedEndpoint(IdentityWorld)
}

var (
	ipA  = netip.MustParseAddr("10.200.1.10")
	ipB  = netip.MustParseAddr("10.200.2.20")
	ip6A = netip.MustParseAddr("fd00:10:200:1::10")
	ip6B = netip.MustParseAddr("fd00:10:200:2::20")
	epA  = &flowpb.Endpoint{ID: 7, Identity: 1234, Namespace: "shop", PodName: "frontend", Labels: PodLabels("shop", map[string]string{"app": "frontend"})}
	epB  = &flowpb.Endpoint{Identity: 5678, Namespace: "shop", PodName: "catalog", Labels: PodLabels("shop", map[string]string{"app": "catalog"})}
)

func testParser() *Parser {
	return New(Options{
		NodeName:   "n1",
		NodeLabels: []string{"topology.kubernetes.io/zone=zone-a"},
		Enricher:   fakeEnricher{ipA: epA, ipB: epB, ip6A: epA, ip6B: epB},
		Clock:      FixedClock(1_700_000_000 * time.Second),
		InterfaceName: func(i int) string {
			return map[int]string{4: "lxc1234"}[i]
		},
	})
}

func TestParseTrace(t *testing.T) {
	p := testParser()
	ev := datapath.Event{
		Timestamp: 5_000_000_123, Type: datapath.EventTrace, Subtype: 5, Proto: 6, TCPFlags: 0x02,
		Direction: 1, EndpointID: 7, IfIndex: 4, SrcIdentity: 1234, DstIdentity: 5678,
		Src: ipA, Dst: ipB, SrcPort: 40000, DstPort: 80,
	}
	f, err := p.Parse(&ev)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.GetTime().AsTime(), time.Unix(1_700_000_005, 123); !got.Equal(want) {
		t.Errorf("time %v, want %v", got, want)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"verdict", f.GetVerdict(), flowpb.Verdict_FORWARDED},
		{"event type", f.GetEventType().GetType(), int32(4)},
		{"event subtype", f.GetEventType().GetSubType(), int32(5)},
		{"observation point", f.GetTraceObservationPoint(), flowpb.TraceObservationPoint_FROM_ENDPOINT},
		{"source ip", f.GetIP().GetSource(), "10.200.1.10"},
		{"destination ip", f.GetIP().GetDestination(), "10.200.2.20"},
		{"ip version", f.GetIP().GetIpVersion(), flowpb.IPVersion_IPv4},
		{"sport", f.GetL4().GetTCP().GetSourcePort(), uint32(40000)},
		{"dport", f.GetL4().GetTCP().GetDestinationPort(), uint32(80)},
		{"SYN", f.GetL4().GetTCP().GetFlags().GetSYN(), true},
		{"ACK", f.GetL4().GetTCP().GetFlags().GetACK(), false},
		{"source pod", f.GetSource().GetPodName(), "frontend"},
		{"source identity", f.GetSource().GetIdentity(), uint32(1234)},
		{"source id", f.GetSource().GetID(), uint32(7)},
		{"destination pod", f.GetDestination().GetPodName(), "catalog"},
		{"destination namespace", f.GetDestination().GetNamespace(), "shop"},
		{"node", f.GetNodeName(), "n1"},
		{"node labels", strings.Join(f.GetNodeLabels(), ","), "topology.kubernetes.io/zone=zone-a"},
		{"direction", f.GetTrafficDirection(), flowpb.TrafficDirection_EGRESS},
		{"is_reply known", f.GetIsReply() != nil, true},
		{"is_reply", f.GetIsReply().GetValue(), false},
		{"summary", f.GetSummary(), "TCP Flags: SYN"},
		{"type", f.GetType(), flowpb.FlowType_L3_L4},
		{"interface", f.GetInterface().GetName(), "lxc1234"},
		{"drop reason", f.GetDropReasonDesc(), flowpb.DropReason_DROP_REASON_UNKNOWN},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	if want := []string{"k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=shop"}; !equal(f.GetSource().GetLabels(), want) {
		t.Errorf("labels %v, want %v", f.GetSource().GetLabels(), want)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestObservationPoints(t *testing.T) {
	p := testParser()
	for _, c := range []struct {
		sub   uint8
		evSub int32
		point flowpb.TraceObservationPoint
		name  string
	}{
		{101, 0, flowpb.TraceObservationPoint_TO_ENDPOINT, "to-endpoint"},
		{5, 5, flowpb.TraceObservationPoint_FROM_ENDPOINT, "from-endpoint"},
		{10, 10, flowpb.TraceObservationPoint_FROM_NETWORK, "from-network"},
		{4, 4, flowpb.TraceObservationPoint_TO_OVERLAY, "to-overlay"},
	} {
		f, err := p.Parse(&datapath.Event{Type: datapath.EventTrace, Subtype: c.sub, Src: ipA, Dst: ipB})
		if err != nil {
			t.Fatal(err)
		}
		if f.GetEventType().GetSubType() != c.evSub || f.GetTraceObservationPoint() != c.point || TraceName(c.evSub) != c.name {
			t.Errorf("datapath point %d: subtype %d point %v name %s", c.sub, f.GetEventType().GetSubType(), f.GetTraceObservationPoint(), TraceName(c.evSub))
		}
		if sub, ok := TraceSubtype(c.name); !ok || sub != c.evSub {
			t.Errorf("TraceSubtype(%s) = %d", c.name, sub)
		}
	}
	// With the conntrack flag, a clear reply flag is known anywhere.
	f, _ := p.Parse(&datapath.Event{Type: datapath.EventTrace, Subtype: 11, Src: ipA, Dst: ipB, Flags: FlagCTKnown})
	if f.GetIsReply() == nil || f.GetIsReply().GetValue() {
		t.Errorf("to-network with conntrack: is_reply %v", f.GetIsReply())
	}
}

func TestParseReplyDirection(t *testing.T) {
	p := testParser()
	// The SYN-ACK leaves the server pod B: the packet goes egress, the
	// connection is ingress to B, and Hubble reports the connection's.
	ev := datapath.Event{Type: datapath.EventTrace, Subtype: 5, Proto: 6, TCPFlags: 0x12, Direction: 1,
		Src: ipB, Dst: ipA, SrcPort: 80, DstPort: 40000, Flags: datapath.EventFlagReply}
	f, err := p.Parse(&ev)
	if err != nil {
		t.Fatal(err)
	}
	if !f.GetIsReply().GetValue() || f.GetTrafficDirection() != flowpb.TrafficDirection_INGRESS {
		t.Errorf("reply: is_reply %v direction %v", f.GetIsReply(), f.GetTrafficDirection())
	}
	if f.GetSummary() != "TCP Flags: SYN, ACK" {
		t.Errorf("summary %q", f.GetSummary())
	}
	// Where no conntrack lookup happened, is_reply is unknown.
	ev = datapath.Event{Type: datapath.EventTrace, Subtype: 10, Proto: 17, Direction: 0, Src: ipB, Dst: ipA}
	f, _ = p.Parse(&ev)
	if f.GetIsReply() != nil || f.GetTrafficDirection() != flowpb.TrafficDirection_INGRESS {
		t.Errorf("from-network: is_reply %v direction %v", f.GetIsReply(), f.GetTrafficDirection())
	}
}

func TestParseDrop(t *testing.T) {
	p := testParser()
	// A spoofed source: the datapath says unmanaged, the address belongs
	// to pod B; the flow must not be attributed to B.
	ev := datapath.Event{Type: datapath.EventDrop, Subtype: 132, Proto: 17, Direction: 1,
		SrcIdentity: IdentityUnmanaged, Src: ipB, Dst: netip.MustParseAddr("1.1.1.1"), SrcPort: 53, DstPort: 53}
	f, err := p.Parse(&ev)
	if err != nil {
		t.Fatal(err)
	}
	if f.GetVerdict() != flowpb.Verdict_DROPPED || f.GetDropReasonDesc() != flowpb.DropReason_INVALID_SOURCE_IP || f.GetDropReason() != 132 {
		t.Errorf("verdict %v reason %v", f.GetVerdict(), f.GetDropReasonDesc())
	}
	if et := f.GetEventType(); et.GetType() != 1 || et.GetSubType() != 132 {
		t.Errorf("event type %v", et)
	}
	if f.GetSource().GetPodName() != "" || f.GetSource().GetIdentity() != IdentityUnmanaged || f.GetSource().GetLabels()[0] != "reserved:unmanaged" {
		t.Errorf("source %v", f.GetSource())
	}
	if f.GetDestination().GetIdentity() != IdentityWorld {
		t.Errorf("destination %v", f.GetDestination())
	}
	if f.GetL4().GetUDP().GetDestinationPort() != 53 || f.GetSummary() != "UDP" {
		t.Errorf("l4 %v summary %q", f.GetL4(), f.GetSummary())
	}
	if f.GetIsReply() != nil || f.GetTrafficDirection() != flowpb.TrafficDirection_EGRESS {
		t.Errorf("is_reply %v direction %v", f.GetIsReply(), f.GetTrafficDirection())
	}
}

func TestParsePolicyVerdict(t *testing.T) {
	p := testParser()
	cases := []struct {
		flags   uint32
		verdict flowpb.Verdict
		reason  flowpb.DropReason
	}{
		{0, flowpb.Verdict_FORWARDED, 0},
		{datapath.EventFlagDenied, flowpb.Verdict_DROPPED, flowpb.DropReason_POLICY_DENIED},
		{datapath.EventFlagDenied | datapath.EventFlagExplicit, flowpb.Verdict_DROPPED, flowpb.DropReason_POLICY_DENY},
		{datapath.EventFlagDenied | datapath.EventFlagAudit, flowpb.Verdict_AUDIT, 0},
	}
	for _, c := range cases {
		ev := datapath.Event{Type: datapath.EventPolicy, Subtype: datapath.MatchL3L4, Proto: 6, TCPFlags: 2, Direction: 0,
			Src: ipA, Dst: ipB, SrcIdentity: 1234, DstIdentity: 5678, Flags: c.flags}
		f, err := p.Parse(&ev)
		if err != nil {
			t.Fatal(err)
		}
		if f.GetVerdict() != c.verdict || f.GetDropReasonDesc() != c.reason {
			t.Errorf("flags %#x: verdict %v reason %v, want %v %v", c.flags, f.GetVerdict(), f.GetDropReasonDesc(), c.verdict, c.reason)
		}
		if f.GetEventType().GetType() != 5 || f.GetPolicyMatchType() != 2 || f.GetTrafficDirection() != flowpb.TrafficDirection_INGRESS {
			t.Errorf("event %v match %d direction %v", f.GetEventType(), f.GetPolicyMatchType(), f.GetTrafficDirection())
		}
		if f.GetIsReply() == nil || f.GetIsReply().GetValue() {
			t.Errorf("policy verdict is_reply %v", f.GetIsReply())
		}
	}
}

func TestParseProtocols(t *testing.T) {
	p := testParser()
	cases := []struct {
		proto   uint8
		src     netip.Addr
		summary string
		check   func(*flowpb.Layer4) bool
	}{
		{17, ip6A, "UDP", func(l *flowpb.Layer4) bool { return l.GetUDP().GetSourcePort() == 1 }},
		{132, ipA, "SCTP", func(l *flowpb.Layer4) bool { return l.GetSCTP().GetDestinationPort() == 2 }},
		{1, ipA, "ICMPv4 EchoReply", func(l *flowpb.Layer4) bool { return l.GetICMPv4() != nil }},
		{58, ip6A, "ICMPv6 0(0)", func(l *flowpb.Layer4) bool { return l.GetICMPv6() != nil }},
		{47, ip6A, "IPv6", func(l *flowpb.Layer4) bool { return l == nil }},
		{47, ipA, "IPv4", func(l *flowpb.Layer4) bool { return l == nil }},
	}
	for _, c := range cases {
		dst := ipB
		if c.src.Is6() {
			dst = ip6B
		}
		ev := datapath.Event{Type: datapath.EventTrace, Subtype: 101, Proto: c.proto, Src: c.src, Dst: dst, SrcPort: 1, DstPort: 2}
		f, err := p.Parse(&ev)
		if err != nil {
			t.Fatal(err)
		}
		if f.GetSummary() != c.summary || !c.check(f.GetL4()) {
			t.Errorf("proto %d: summary %q l4 %v", c.proto, f.GetSummary(), f.GetL4())
		}
		wantV := flowpb.IPVersion_IPv4
		if c.src.Is6() {
			wantV = flowpb.IPVersion_IPv6
		}
		if f.GetIP().GetIpVersion() != wantV {
			t.Errorf("proto %d: ip version %v", c.proto, f.GetIP().GetIpVersion())
		}
	}
}

func TestParseErrors(t *testing.T) {
	p := testParser()
	if _, err := p.Parse(&datapath.Event{Type: 9, Src: ipA, Dst: ipB}); err == nil {
		t.Error("unknown event type accepted")
	}
	if _, err := p.Parse(&datapath.Event{Type: datapath.EventTrace}); err == nil {
		t.Error("event without addresses accepted")
	}
}

func TestClock(t *testing.T) {
	c := NewClock()
	now := time.Now()
	got := c.Wall(Monotonic())
	if d := got.Sub(now); d < -time.Second || d > time.Second {
		t.Errorf("monotonic now converts to %v, wall clock says %v", got, now)
	}
}

// rawEvent encodes an event the way the datapath writes it.
func rawEvent(ev datapath.Event) []byte {
	b := make([]byte, datapath.EventSize)
	ne := binary.NativeEndian
	ne.PutUint64(b[0:], ev.Timestamp)
	b[8], b[9], b[11], b[12], b[13] = ev.Type, ev.Subtype, ev.Proto, ev.TCPFlags, ev.Direction
	b[10] = 2
	if ev.Src.Is6() {
		b[10] = 10
	}
	ne.PutUint16(b[14:], ev.EndpointID)
	ne.PutUint32(b[16:], ev.IfIndex)
	ne.PutUint32(b[20:], ev.SrcIdentity)
	ne.PutUint32(b[24:], ev.DstIdentity)
	ne.PutUint32(b[28:], ev.Length)
	ne.PutUint16(b[32:], ev.SrcPort)
	ne.PutUint16(b[34:], ev.DstPort)
	s, d := ev.Src.As16(), ev.Dst.As16()
	if ev.Src.Is4() {
		s4, d4 := ev.Src.As4(), ev.Dst.As4()
		s, d = [16]byte{}, [16]byte{}
		copy(s[:], s4[:])
		copy(d[:], d4[:])
	}
	copy(b[36:], s[:])
	copy(b[52:], d[:])
	ne.PutUint16(b[68:], uint16(ev.Flags))
	b[70], b[71] = ev.ICMPType, ev.ICMPCode
	return b
}

// ICMP messages keep their type and code, through the raw record too, and
// are summarised as Cilium does.
func TestParseICMP(t *testing.T) {
	p := testParser()
	for _, c := range []struct {
		src              netip.Addr
		proto, typ, code uint8
		summary          string
	}{
		{ipA, 1, 8, 0, "ICMPv4 EchoRequest"},
		{ipA, 1, 0, 0, "ICMPv4 EchoReply"},
		{ipA, 1, 3, 3, "ICMPv4 DestinationUnreachable(Port)"},
		{ipA, 1, 11, 7, "ICMPv4 TimeExceeded(Code: 7)"},
		{ipA, 1, 200, 1, "ICMPv4 200(1)"},
		{ip6A, 58, 128, 0, "ICMPv6 EchoRequest"},
		{ip6A, 58, 129, 0, "ICMPv6 EchoReply"},
		{ip6A, 58, 1, 4, "ICMPv6 DestinationUnreachable(PortUnreachable)"},
		{ip6A, 58, 2, 0, "ICMPv6 PacketTooBig"},
	} {
		dst := ipB
		if c.src.Is6() {
			dst = ip6B
		}
		in := datapath.Event{Type: datapath.EventTrace, Subtype: 5, Direction: 1, Proto: c.proto, Src: c.src, Dst: dst,
			SrcPort: 77, DstPort: 77, ICMPType: c.typ, ICMPCode: c.code, Flags: datapath.EventFlagCTKnown}
		var ev datapath.Event
		if err := datapath.ParseEvent(rawEvent(in), &ev); err != nil {
			t.Fatal(err)
		}
		if ev != in {
			t.Errorf("raw round trip: %+v, want %+v", ev, in)
		}
		f, err := p.Parse(&ev)
		if err != nil {
			t.Fatal(err)
		}
		var typ, code uint32
		var ok bool
		if c.proto == 1 {
			i := f.GetL4().GetICMPv4()
			typ, code, ok = i.GetType(), i.GetCode(), i != nil
		} else {
			i := f.GetL4().GetICMPv6()
			typ, code, ok = i.GetType(), i.GetCode(), i != nil
		}
		if !ok || typ != uint32(c.typ) || code != uint32(c.code) {
			t.Errorf("proto %d type %d code %d: flow L4 %v", c.proto, c.typ, c.code, f.GetL4())
		}
		if f.GetSummary() != c.summary {
			t.Errorf("proto %d type %d code %d: summary %q, want %q", c.proto, c.typ, c.code, f.GetSummary(), c.summary)
		}
	}
}

// FuzzParse feeds raw ring-buffer records through the datapath decoder and
// the parser: nothing may panic, and a parsed flow must be self-consistent.
func FuzzParse(f *testing.F) {
	f.Add(rawEvent(datapath.Event{Type: 1, Subtype: 5, Proto: 6, TCPFlags: 2, Direction: 1, Src: ipA, Dst: ipB, SrcPort: 1, DstPort: 80}))
	f.Add(rawEvent(datapath.Event{Type: 2, Subtype: 132, Proto: 17, Src: ip6A, Dst: ip6B}))
	f.Add(rawEvent(datapath.Event{Type: 3, Subtype: 2, Proto: 6, Src: ipA, Dst: ipB, Flags: 3}))
	f.Add(rawEvent(datapath.Event{Type: 1, Subtype: 101, Proto: 1, Src: ipA, Dst: ipB, ICMPType: 3, ICMPCode: 4}))
	f.Add([]byte{1, 2, 3})
	p := testParser()
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev datapath.Event
		if datapath.ParseEvent(b, &ev) != nil {
			return
		}
		fl, err := p.Parse(&ev)
		if err != nil {
			return
		}
		if fl.GetIP().GetSource() == "" || fl.GetEventType() == nil || fl.GetVerdict() == flowpb.Verdict_VERDICT_UNKNOWN {
			t.Fatalf("incomplete flow %v from %+v", fl, ev)
		}
		if (fl.GetVerdict() == flowpb.Verdict_DROPPED) != (fl.GetDropReasonDesc() != 0) && ev.Subtype != 0 {
			t.Fatalf("verdict %v with drop reason %v", fl.GetVerdict(), fl.GetDropReasonDesc())
		}
	})
}

func BenchmarkParse(b *testing.B) {
	p := testParser()
	evs := []datapath.Event{
		{Timestamp: 1, Type: datapath.EventTrace, Subtype: 5, Proto: 6, TCPFlags: 0x02, Direction: 1, EndpointID: 7, IfIndex: 4, SrcIdentity: 1234, DstIdentity: 5678, Src: ipA, Dst: ipB, SrcPort: 40000, DstPort: 80},
		{Timestamp: 2, Type: datapath.EventTrace, Subtype: 101, Proto: 17, Direction: 0, EndpointID: 7, IfIndex: 4, SrcIdentity: 5678, DstIdentity: 1234, Src: ip6B, Dst: ip6A, SrcPort: 53, DstPort: 40000},
		{Timestamp: 3, Type: datapath.EventDrop, Subtype: 132, Proto: 6, Direction: 1, SrcIdentity: 3, Src: ipB, Dst: ipA, SrcPort: 1, DstPort: 2},
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	i := 0
	for b.Loop() {
		if _, err := p.Parse(&evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	// Per CPU-second of the whole process (GC included), so that the
	// figure holds on a busy machine too.
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "events/cpu-s")
	}
}

// cpuTime is the user+system time of this process.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
