package printer

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/hubble/parser"
)

func resp(reply *wrapperspb.BoolValue) *observerpb.GetFlowsResponse {
	f := &flowpb.Flow{
		Time: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.Local)), NodeName: "n1",
		Verdict: flowpb.Verdict_FORWARDED, EventType: &flowpb.CiliumEventType{Type: 4, SubType: 0},
		IP:          &flowpb.IP{Source: "10.0.0.1", Destination: "fd00::2"},
		L4:          &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40000, DestinationPort: 80}}},
		Source:      &flowpb.Endpoint{Namespace: "shop", PodName: "frontend", Identity: 1234},
		Destination: &flowpb.Endpoint{Identity: 2},
		IsReply:     reply, Summary: "TCP Flags: SYN",
	}
	return &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}, NodeName: "n1", Time: f.Time}
}

func TestFormats(t *testing.T) {
	var out, errb bytes.Buffer
	p, _ := New(&out, &errb, Compact, false)
	p.Write(resp(wrapperspb.Bool(false)))
	p.Write(resp(wrapperspb.Bool(true)))
	p.Write(resp(nil))
	p.Write(&observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
		Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: 7}}})
	want := []string{
		"Jan  2 03:04:05.006: shop/frontend:40000 (ID:1234) -> [fd00::2]:80 (world) to-endpoint FORWARDED (TCP Flags: SYN)",
		"Jan  2 03:04:05.006: [fd00::2]:80 (world) <- shop/frontend:40000 (ID:1234) to-endpoint FORWARDED (TCP Flags: SYN)",
		"Jan  2 03:04:05.006: shop/frontend:40000 (ID:1234) <> [fd00::2]:80 (world) to-endpoint FORWARDED (TCP Flags: SYN)",
	}
	if got := strings.Split(strings.TrimSpace(out.String()), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("compact:\n%s\nwant\n%s", out.String(), strings.Join(want, "\n"))
	}
	if errb.String() != "EVENTS LOST: HUBBLE_RING_BUFFER 7\n" {
		t.Errorf("stderr %q", errb.String())
	}

	out.Reset()
	p, _ = New(&out, &errb, JSON, false)
	p.Write(resp(nil))
	var back observerpb.GetFlowsResponse
	if err := protojson.Unmarshal(bytes.TrimSpace(out.Bytes()), &back); err != nil || back.GetFlow().GetSource().GetPodName() != "frontend" {
		t.Errorf("json %s: %v", out.String(), err)
	}

	out.Reset()
	p, _ = New(&out, &errb, Table, true)
	p.Write(resp(nil))
	p.Flush()
	if lines := strings.Split(out.String(), "\n"); !strings.HasPrefix(lines[0], "TIMESTAMP") || !strings.Contains(lines[0], "NODE") || !strings.Contains(lines[1], "n1") {
		t.Errorf("table:\n%s", out.String())
	}
	out.Reset()
	p, _ = New(&out, &errb, Dict, false)
	p.Write(resp(nil))
	p.Write(resp(nil))
	if !strings.Contains(out.String(), "DESTINATION: [fd00::2]:80") || !strings.Contains(out.String(), "------------") {
		t.Errorf("dict:\n%s", out.String())
	}
	if _, err := New(&out, &errb, "yaml", false); err == nil {
		t.Error("yaml accepted")
	}
}

// An ICMP flow from the parser prints its message type, as hubble does.
func TestCompactICMP(t *testing.T) {
	p := parser.New(parser.Options{NodeName: "n1", Clock: parser.FixedClock(0)})
	f, err := p.Parse(&datapath.Event{Type: datapath.EventTrace, Subtype: 5, Direction: 1, Proto: 1, ICMPType: 8,
		Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Flags: datapath.EventFlagCTKnown})
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	pr, _ := New(&out, &errb, Compact, false)
	if err := pr.Write(&observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out.String(), "10.0.0.1 (ID:0) -> 10.0.0.2 (ID:0) from-endpoint FORWARDED (ICMPv4 EchoRequest)\n") {
		t.Errorf("compact: %q", out.String())
	}
}
