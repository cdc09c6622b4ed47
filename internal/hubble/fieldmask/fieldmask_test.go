package fieldmask

import (
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestApply(t *testing.T) {
	f := &flowpb.Flow{
		Time:     timestamppb.New(timestamppb.Now().AsTime()),
		Verdict:  flowpb.Verdict_DROPPED,
		NodeName: "n1",
		IP:       &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2"},
		Source:   &flowpb.Endpoint{ID: 3, Identity: 1000, PodName: "a", Namespace: "ns", Labels: []string{"k8s:app=a"}},
		L4:       &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 1, DestinationPort: 2}}},
		Summary:  "TCP Flags: SYN",
	}
	before := proto.Clone(f)
	m, err := New(&fieldmaskpb.FieldMask{Paths: []string{"time", "IP", "source.pod_name", "source.identity", "l4", "Summary"}})
	if err != nil {
		t.Fatal(err)
	}
	got := m.Apply(f)
	want := &flowpb.Flow{
		Time: f.Time, IP: f.IP, Source: &flowpb.Endpoint{Identity: 1000, PodName: "a"}, L4: f.L4, Summary: f.Summary,
	}
	if !proto.Equal(got, want) {
		t.Errorf("masked flow\n%v\nwant\n%v", got, want)
	}
	if !proto.Equal(f, before) {
		t.Error("Apply modified its input")
	}
	// A parent path wins over its children, in either order.
	m, _ = New(&fieldmaskpb.FieldMask{Paths: []string{"source.pod_name", "source", "source.identity"}})
	if got := m.Apply(f); !proto.Equal(got.GetSource(), f.GetSource()) {
		t.Errorf("source: %v", got.GetSource())
	}
	if (&Mask{}).Apply(f) != f {
		t.Error("an empty mask must return the flow itself")
	}
}

func TestInvalid(t *testing.T) {
	for _, p := range []string{"", "nope", "source.nope", "verdict.x", "source.labels.x"} {
		if _, err := New(&fieldmaskpb.FieldMask{Paths: []string{p}}); err == nil {
			t.Errorf("path %q accepted", p)
		}
	}
}

// FuzzMask: any path list compiles or fails cleanly; a compiled mask never
// modifies its input.
func FuzzMask(f *testing.F) {
	for _, s := range []string{"time", "source.pod_name", "l4.TCP.flags", "IP,source", "a.b", ""} {
		f.Add(s)
	}
	fl := &flowpb.Flow{NodeName: "n1", Source: &flowpb.Endpoint{PodName: "a", Labels: []string{"x"}},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{Flags: &flowpb.TCPFlags{SYN: true}}}}}
	before := proto.Clone(fl)
	f.Fuzz(func(t *testing.T, s string) {
		m, err := New(&fieldmaskpb.FieldMask{Paths: strings.Split(s, ",")})
		if err != nil {
			return
		}
		m.Apply(fl)
		if !proto.Equal(fl, before) {
			t.Fatalf("mask %q modified the flow", s)
		}
	})
}
