package metrics

import (
	"strconv"
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
	"sort"
)

func TestMetrics(t *testing.T) {
	m, err := New(Default)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)
	syn := &flowpb.TCPFlags{SYN: true}
	synack := &flowpb.TCPFlags{SYN: true, ACK: true}
	tcp := func(f *flowpb.TCPFlags) *flowpb.Layer4 {
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{DestinationPort: 80, Flags: f}}}
	}
	for range 3 {
		m.OnFlow(&flowpb.Flow{Verdict: flowpb.Verdict_FORWARDED, EventType: &flowpb.CiliumEventType{Type: 4, SubType: 0},
			IP: &flowpb.IP{IpVersion: flowpb.IPVersion_IPv4}, L4: tcp(syn)})
	}
	for range 2 { // the second time from the cache
		m.OnFlow(&flowpb.Flow{Verdict: flowpb.Verdict_FORWARDED, EventType: &flowpb.CiliumEventType{Type: 4, SubType: 5},
			IP: &flowpb.IP{IpVersion: flowpb.IPVersion_IPv6}, L4: tcp(synack)})
	}
	m.OnFlow(&flowpb.Flow{Verdict: flowpb.Verdict_DROPPED, DropReasonDesc: flowpb.DropReason_POLICY_DENIED,
		TrafficDirection: flowpb.TrafficDirection_INGRESS, EventType: &flowpb.CiliumEventType{Type: 5}, PolicyMatchType: 0,
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{DestinationPort: 53}}}})
	m.OnLost(LostQueue, 4)
	want := `lumen_hubble_drop_total{direction="INGRESS",protocol="UDP",reason="POLICY_DENIED"} 1
lumen_hubble_flows_processed_total{subtype="from-endpoint",type="Trace",verdict="FORWARDED"} 2
lumen_hubble_flows_processed_total{subtype="none",type="PolicyVerdict",verdict="DROPPED"} 1
lumen_hubble_flows_processed_total{subtype="to-endpoint",type="Trace",verdict="FORWARDED"} 3
lumen_hubble_lost_events_total{source="observer_events_queue"} 4
lumen_hubble_tcp_flags_total{family="IPv4",flag="SYN"} 3
lumen_hubble_tcp_flags_total{family="IPv6",flag="ACK"} 2
lumen_hubble_tcp_flags_total{family="IPv6",flag="SYN"} 2`
	if got := dump(t, reg); got != want {
		t.Errorf("metrics:\n%s\nwant\n%s", got, want)
	}
	if gs, err := Parse("flow, port-distribution,flow"); err != nil || strings.Join(gs, " ") != "flow port-distribution" {
		t.Errorf("Parse: %v %v", gs, err)
	}
	if _, err := Parse("flow,dns"); err == nil || !strings.Contains(err.Error(), `"dns"`) {
		t.Errorf("Parse(dns): %v", err)
	}
	// No groups: nothing registered, nothing counted, no panic.
	none, _ := New(nil)
	none.OnFlow(&flowpb.Flow{})
	none.OnLost(LostQueue, 1)
	if len(none.Collectors()) != 0 {
		t.Error("collectors without groups")
	}
}

// dump renders every counter as name{label="value",...} value, sorted.
func dump(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			lines = append(lines, mf.GetName()+"{"+strings.Join(ls, ",")+"} "+strconv.FormatFloat(m.GetCounter().GetValue(), 'f', -1, 64))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
