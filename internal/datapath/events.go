package datapath

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/lumen-net/lumen/internal/bpfconst"
)

// Trace levels beyond TraceNone, TraceControl and TraceAll: Cilium's
// monitor aggregation "low" and "maximum" (see bpf/lib/common.h).
const (
	TraceLow = bpfconst.TraceLow // every packet, at to-* observation points only
	TraceMax = bpfconst.TraceMax // connection start (first packet, TCP SYN) and end (FIN, RST)
)

// Event types.
const (
	EventTrace  = bpfconst.EventTrace
	EventDrop   = bpfconst.EventDrop
	EventPolicy = bpfconst.EventPolicy // a policy decision on a new connection; Subtype is the match type
)

// Event flags.
const (
	EventFlagReply    = bpfconst.EventFlagReply    // reply of a tracked connection
	EventFlagDenied   = bpfconst.EventFlagDenied   // policy verdict: denied
	EventFlagAudit    = bpfconst.EventFlagAudit    // denied but let through (audit mode)
	EventFlagExplicit = bpfconst.EventFlagExplicit // denied by a deny rule
	EventFlagCTKnown  = bpfconst.EventFlagCTKnown  // connection tracking ran: EventFlagReply is meaningful
)

// ReasonEventsLost is the pseudo drop reason under which the datapath
// counts events it could not put in the ring buffer (packets are not
// dropped for it).
const ReasonEventsLost = bpfconst.ReasonEventsLost

// Policy match types (EventPolicy's Subtype), as Cilium's monitor API.
const (
	MatchNone   = bpfconst.MatchNone
	MatchL3Only = bpfconst.MatchL3Only
	MatchL3L4   = bpfconst.MatchL3L4
	MatchL4Only = bpfconst.MatchL4Only
	MatchAll    = bpfconst.MatchAll
)

// Event is one datapath event, decoded.
type Event struct {
	Timestamp   uint64 // CLOCK_MONOTONIC ns
	Type        uint8  // EventTrace or EventDrop
	Subtype     uint8  // observation point (trace) or drop reason (drop)
	Proto       uint8
	TCPFlags    uint8
	Direction   uint8
	EndpointID  uint16
	IfIndex     uint32
	SrcIdentity uint32
	DstIdentity uint32
	Length      uint32
	Src, Dst    netip.Addr
	SrcPort     uint16
	DstPort     uint16
	Flags       uint32
	ICMPType    uint8 // ICMP and ICMPv6 (Proto 1, 58)
	ICMPCode    uint8
}

// EventSize is the size of one raw event record.
const EventSize = int(unsafe.Sizeof(lxcEvent{}))

// ParseEvent decodes a raw ring-buffer record.
func ParseEvent(b []byte, e *Event) error {
	if len(b) < EventSize {
		return fmt.Errorf("event record of %d bytes, want %d", len(b), EventSize)
	}
	ne := binary.NativeEndian
	e.Timestamp = ne.Uint64(b[0:])
	e.Type, e.Subtype, e.Proto, e.TCPFlags, e.Direction = b[8], b[9], b[11], b[12], b[13]
	family := b[10]
	e.EndpointID = ne.Uint16(b[14:])
	e.IfIndex = ne.Uint32(b[16:])
	e.SrcIdentity = ne.Uint32(b[20:])
	e.DstIdentity = ne.Uint32(b[24:])
	e.Length = ne.Uint32(b[28:])
	e.SrcPort = ne.Uint16(b[32:])
	e.DstPort = ne.Uint16(b[34:])
	e.Src = addrOf(family, [16]byte(b[36:52]))
	e.Dst = addrOf(family, [16]byte(b[52:68]))
	e.Flags = uint32(ne.Uint16(b[68:]))
	e.ICMPType, e.ICMPCode = b[70], b[71]
	return nil
}

// EventsLost is the number of events the datapath could not put in the
// ring buffer (full) since the pinned map was created.
func (d *Datapath) EventsLost() (uint64, error) {
	var vs []lxcMetricsValue
	if err := d.Metrics.Lookup(uint32(ReasonEventsLost)<<1, &vs); err != nil {
		return 0, fmt.Errorf("reading the lost events counter: %w", err)
	}
	var n uint64
	for _, v := range vs {
		n += v.Packets
	}
	return n, nil
}

// OpenEvents opens a reader on the events ring buffer.
func (d *Datapath) OpenEvents() (*ringbuf.Reader, error) {
	r, err := ringbuf.NewReader(d.Events)
	if err != nil {
		return nil, fmt.Errorf("opening events ring buffer: %w", err)
	}
	return r, nil
}
