// Package parser turns Lumen's decoded datapath events into Hubble flows
// (github.com/cilium/cilium/api/v1/flow), the way Cilium's threefour parser
// does for its monitor events: verdicts, drop reasons and observation points
// keep Cilium's numbers, endpoints come from an Enricher.
//
// Flows share immutable sub-messages (endpoints, TCP flags, event types,
// interfaces) to keep the per-event cost low: nothing downstream may modify
// a parsed flow.
package parser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lumen-net/lumen/internal/bpfconst"
	"github.com/lumen-net/lumen/internal/datapath"
)

// Cilium monitor message types, used as flow.event_type.type.
const (
	MessageTypeDrop          = 1
	MessageTypeTrace         = 4
	MessageTypePolicyVerdict = 5
)

// Drop reasons a policy verdict event turns into (Cilium's numbers).
const (
	dropPolicy     = bpfconst.DropPolicy     // POLICY_DENIED: no rule allows it
	dropPolicyDeny = bpfconst.DropPolicyDeny // POLICY_DENY: a deny rule matched
)

// ErrUnknownType is returned for events of a type the parser does not know.
var ErrUnknownType = errors.New("unknown event type")

// Enricher resolves addresses to endpoints. Implementations must be safe for
// concurrent use and must never modify a returned message afterwards: the
// parser shares it between flows.
type Enricher interface {
	// EndpointByIP returns the endpoint (pod, node, world...) that owns ip,
	// or nil when nothing is known about it.
	EndpointByIP(ip netip.Addr) *flowpb.Endpoint
}

// Options configure a Parser.
type Options struct {
	// NodeName is reported as every flow's node_name.
	NodeName string
	// Enricher names endpoints; optional.
	Enricher Enricher
	// Clock converts event timestamps; default: NewClock().
	Clock *Clock
	// InterfaceName names an interface index of this node; optional.
	InterfaceName func(ifindex int) string
	// NodeLabels are reported as every flow's node_labels ("key=value").
	NodeLabels []string
}

// Parser converts datapath events into flows. It is not safe for concurrent
// use: the observer runs one parser in one goroutine.
type Parser struct {
	node      string
	nodeLbls  []string
	enricher  Enricher
	clock     *Clock
	ifName    func(int) string
	ifaces    map[uint32]*flowpb.NetworkInterface
	byID      map[uint32]*flowpb.Endpoint
	addrNames *[1 << addrCacheBits]addrSlot
}

// New returns a parser.
func New(o Options) *Parser {
	if o.Clock == nil {
		o.Clock = NewClock()
	}
	return &Parser{
		node: o.NodeName, nodeLbls: o.NodeLabels, enricher: o.Enricher, clock: o.Clock, ifName: o.InterfaceName,
		ifaces: map[uint32]*flowpb.NetworkInterface{}, byID: map[uint32]*flowpb.Endpoint{},
		addrNames: new([1 << addrCacheBits]addrSlot),
	}
}

// Refresh re-reads the clock offset and forgets cached interface names and
// identity-only endpoints; call it every few seconds.
func (p *Parser) Refresh() {
	p.clock.Sync()
	clear(p.ifaces)
	clear(p.byID)
}

// block holds a flow and its per-flow sub-messages: one allocation
// instead of six.
type block struct {
	flow flowpb.Flow
	ip   flowpb.IP
	ts   timestamppb.Timestamp
	l4   flowpb.Layer4
	tcp  flowpb.Layer4_TCP
	tcpv flowpb.TCP
}

// Parse converts one event into a new flow.
func (p *Parser) Parse(ev *datapath.Event) (*flowpb.Flow, error) {
	if !ev.Src.IsValid() || !ev.Dst.IsValid() {
		return nil, fmt.Errorf("event without addresses (type %d)", ev.Type)
	}
	b := &block{}
	f := &b.flow
	reply := replyOf(ev)
	switch ev.Type {
	case datapath.EventTrace:
		f.Verdict = flowpb.Verdict_FORWARDED
		// The datapath reports Hubble's observation point numbers; the event
		// subtype is Cilium's monitor number, where to-endpoint is 0.
		f.TraceObservationPoint = flowpb.TraceObservationPoint(ev.Subtype)
		sub := ev.Subtype
		switch sub {
		case obsToEndpoint:
			sub = 0
		case 0:
			f.TraceObservationPoint = flowpb.TraceObservationPoint_TO_ENDPOINT
		}
		f.EventType = traceTypes[sub]
	case datapath.EventDrop:
		f.Verdict = flowpb.Verdict_DROPPED
		f.DropReason = uint32(ev.Subtype)
		f.DropReasonDesc = flowpb.DropReason(ev.Subtype)
		f.EventType = dropTypes[ev.Subtype]
	case datapath.EventPolicy:
		f.EventType = policyType
		f.PolicyMatchType = uint32(ev.Subtype)
		switch {
		case ev.Flags&datapath.EventFlagDenied == 0:
			f.Verdict = flowpb.Verdict_FORWARDED
		case ev.Flags&datapath.EventFlagAudit != 0:
			f.Verdict = flowpb.Verdict_AUDIT
		default:
			f.Verdict = flowpb.Verdict_DROPPED
			f.DropReason = dropPolicy
			if ev.Flags&datapath.EventFlagExplicit != 0 {
				f.DropReason = dropPolicyDeny
			}
			f.DropReasonDesc = flowpb.DropReason(f.DropReason)
		}
	default:
		return nil, fmt.Errorf("%w %d", ErrUnknownType, ev.Type)
	}

	b.ts.Seconds, b.ts.Nanos = p.clock.split(ev.Timestamp)
	f.Time = &b.ts
	f.Type = flowpb.FlowType_L3_L4
	f.NodeName = p.node
	f.NodeLabels = p.nodeLbls
	b.ip = flowpb.IP{Source: p.addrString(ev.Src), Destination: p.addrString(ev.Dst), IpVersion: flowpb.IPVersion_IPv4}
	if ev.Src.Is6() && !ev.Src.Is4In6() {
		b.ip.IpVersion = flowpb.IPVersion_IPv6
	}
	f.IP = &b.ip
	if ev.Proto == protoTCP {
		b.tcpv = flowpb.TCP{SourcePort: uint32(ev.SrcPort), DestinationPort: uint32(ev.DstPort), Flags: tcpFlags[ev.TCPFlags]}
		b.tcp.TCP = &b.tcpv
		b.l4.Protocol = &b.tcp
		f.L4, f.Summary = &b.l4, tcpSummaries[ev.TCPFlags]
	} else {
		f.L4, f.Summary = l4Of(ev, b.ip.IpVersion)
	}
	f.Source = p.endpoint(ev.Src, ev.SrcIdentity)
	f.Destination = p.endpoint(ev.Dst, ev.DstIdentity)
	f.IsReply = reply
	f.Reply = reply.GetValue()
	f.TrafficDirection = direction(ev, reply)
	if ev.IfIndex != 0 {
		f.Interface = p.iface(ev.IfIndex)
	}
	return f, nil
}

// replyOf tells whether the packet is a reply, or nil when unknown. The
// datapath sets EventFlagReply after a conntrack lookup; at the pod's veth
// (from-endpoint, to-endpoint) every packet is looked up, so a clear flag
// there means "not a reply", as it does with FlagCTKnown anywhere. Policy
// verdicts are for new connections.
func replyOf(ev *datapath.Event) *wrapperspb.BoolValue {
	if ev.Flags&datapath.EventFlagReply != 0 {
		return isReply
	}
	if ev.Flags&FlagCTKnown != 0 {
		return notReply
	}
	switch {
	case ev.Type == datapath.EventPolicy:
		return notReply
	case ev.Type == datapath.EventTrace && (ev.Subtype == obsFromEndpoint || ev.Subtype == obsToEndpoint):
		return notReply
	}
	return nil
}

// FlagCTKnown in an event's flags says a conntrack lookup happened, so a
// clear EventFlagReply means "not a reply" (proposed to the datapath as
// EV_F_CT_KNOWN; without it only the observation points below are known).
const FlagCTKnown = 1 << 4

// Observation points whose events follow a conntrack lookup.
const (
	obsFromEndpoint = 5
	obsToEndpoint   = 101
)

var (
	isReply  = wrapperspb.Bool(true)
	notReply = wrapperspb.Bool(false)
)

// direction is the direction of the connection relative to the local
// endpoint, as Hubble reports it: the event's direction is the packet's, so
// a reply of a connection the pod opened (egress) travels ingress.
func direction(ev *datapath.Event, reply *wrapperspb.BoolValue) flowpb.TrafficDirection {
	egress := ev.Direction != 0
	if reply.GetValue() {
		egress = !egress
	}
	if egress {
		return flowpb.TrafficDirection_EGRESS
	}
	return flowpb.TrafficDirection_INGRESS
}

// endpoint resolves one side of the flow. The datapath's identity wins over
// the enricher's when they disagree (e.g. a spoofed source is "unmanaged").
func (p *Parser) endpoint(ip netip.Addr, id uint32) *flowpb.Endpoint {
	var ep *flowpb.Endpoint
	if p.enricher != nil {
		ep = p.enricher.EndpointByIP(ip)
	}
	if ep != nil && (id == 0 || id == ep.Identity) {
		return ep
	}
	if id == 0 {
		return unknownEndpoint
	}
	if r := reservedEndpoint(id); r != nil {
		return r
	}
	if ep != nil {
		// A pod whose identity changed under us: keep its names.
		c := &flowpb.Endpoint{ID: ep.ID, Identity: id, ClusterName: ep.ClusterName, Namespace: ep.Namespace, Labels: ep.Labels, PodName: ep.PodName}
		return c
	}
	if e, ok := p.byID[id]; ok {
		return e
	}
	e := &flowpb.Endpoint{Identity: id}
	if len(p.byID) < 4096 {
		p.byID[id] = e
	}
	return e
}

var unknownEndpoint = &flowpb.Endpoint{}

func (p *Parser) iface(ifindex uint32) *flowpb.NetworkInterface {
	if i, ok := p.ifaces[ifindex]; ok {
		return i
	}
	i := &flowpb.NetworkInterface{Index: ifindex}
	if p.ifName != nil {
		i.Name = p.ifName(int(ifindex))
	}
	if len(p.ifaces) < 4096 {
		p.ifaces[ifindex] = i
	}
	return i
}

// addrString formats an address through a direct-mapped cache: pods talk
// to few peers, and a map lookup would cost more than the hashing here.
func (p *Parser) addrString(a netip.Addr) string {
	b := a.As16()
	h := (binary.LittleEndian.Uint64(b[:8])*0x9E3779B97F4A7C15 ^ binary.LittleEndian.Uint64(b[8:])) * 0xBF58476D1CE4E5B9
	slot := &p.addrNames[h>>(64-addrCacheBits)]
	if slot.s != "" && slot.a == a {
		return slot.s
	}
	slot.a, slot.s = a, a.Unmap().String()
	return slot.s
}

const addrCacheBits = 10

type addrSlot struct {
	a netip.Addr
	s string
}

// Shared event types: one message per (type, subtype).
var (
	traceTypes [256]*flowpb.CiliumEventType
	dropTypes  [256]*flowpb.CiliumEventType
	policyType = &flowpb.CiliumEventType{Type: MessageTypePolicyVerdict}
)

func init() {
	for i := range 256 {
		traceTypes[i] = &flowpb.CiliumEventType{Type: MessageTypeTrace, SubType: int32(i)}
		dropTypes[i] = &flowpb.CiliumEventType{Type: MessageTypeDrop, SubType: int32(i)}
		tcpFlags[i] = flagsOf(uint8(i))
		tcpSummaries[i] = "TCP Flags: " + FlagsString(tcpFlags[i])
	}
}

// TCP flags of the flags byte (offset 13 of the TCP header), shared.
var (
	tcpFlags     [256]*flowpb.TCPFlags
	tcpSummaries [256]string
)

func flagsOf(b uint8) *flowpb.TCPFlags {
	return &flowpb.TCPFlags{
		FIN: b&0x01 != 0, SYN: b&0x02 != 0, RST: b&0x04 != 0, PSH: b&0x08 != 0,
		ACK: b&0x10 != 0, URG: b&0x20 != 0, ECE: b&0x40 != 0, CWR: b&0x80 != 0,
	}
}

// FlagsString names the set flags in Cilium's order ("SYN, ACK").
func FlagsString(f *flowpb.TCPFlags) string {
	var s []string
	for _, x := range []struct {
		on   bool
		name string
	}{{f.GetSYN(), "SYN"}, {f.GetACK(), "ACK"}, {f.GetRST(), "RST"}, {f.GetFIN(), "FIN"}, {f.GetPSH(), "PSH"},
		{f.GetURG(), "URG"}, {f.GetECE(), "ECE"}, {f.GetCWR(), "CWR"}, {f.GetNS(), "NS"}} {
		if x.on {
			s = append(s, x.name)
		}
	}
	return strings.Join(s, ", ")
}

// IP protocol numbers.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoSCTP   = 132
)

// l4Of builds the transport layer and the flow's summary. ICMP messages
// carry their type and code (the ports hold an echo's identifier: Hubble
// has no place for it).
func l4Of(ev *datapath.Event, v flowpb.IPVersion) (*flowpb.Layer4, string) {
	switch ev.Proto {
	case protoTCP:
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort: uint32(ev.SrcPort), DestinationPort: uint32(ev.DstPort), Flags: tcpFlags[ev.TCPFlags],
		}}}, tcpSummaries[ev.TCPFlags]
	case protoUDP:
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{
			SourcePort: uint32(ev.SrcPort), DestinationPort: uint32(ev.DstPort),
		}}}, "UDP"
	case protoSCTP:
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_SCTP{SCTP: &flowpb.SCTP{
			SourcePort: uint32(ev.SrcPort), DestinationPort: uint32(ev.DstPort),
		}}}, "SCTP"
	case protoICMP:
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{
			Type: uint32(ev.ICMPType), Code: uint32(ev.ICMPCode),
		}}}, icmpSummary(false, ev.ICMPType, ev.ICMPCode)
	case protoICMPv6:
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{
			Type: uint32(ev.ICMPType), Code: uint32(ev.ICMPCode),
		}}}, icmpSummary(true, ev.ICMPType, ev.ICMPCode)
	}
	if v == flowpb.IPVersion_IPv6 {
		return nil, "IPv6"
	}
	return nil, "IPv4"
}
