package filters

import (
	"errors"
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lumen-net/lumen/internal/fielderr"
)

func ep(ns, pod string, id uint32, labels ...string) *flowpb.Endpoint {
	return &flowpb.Endpoint{Namespace: ns, PodName: pod, Identity: id, Labels: labels}
}

func tcp(sport, dport uint32, flags *flowpb.TCPFlags) *flowpb.Layer4 {
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: dport, Flags: flags}}}
}

func udp(sport, dport uint32) *flowpb.Layer4 {
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: sport, DestinationPort: dport}}}
}

// corpus: named flows the cases select from.
var corpus = map[string]*flowpb.Flow{
	"syn": {
		NodeName: "n1", Verdict: flowpb.Verdict_FORWARDED, TrafficDirection: flowpb.TrafficDirection_EGRESS,
		EventType: &flowpb.CiliumEventType{Type: 4, SubType: 5},
		IP:        &flowpb.IP{Source: "10.200.1.10", Destination: "10.200.2.20", IpVersion: flowpb.IPVersion_IPv4},
		L4:        tcp(40000, 80, &flowpb.TCPFlags{SYN: true}),
		Source:    ep("shop", "frontend-1", 1000, "k8s:app=frontend", "k8s:tier=web", "k8s:io.kubernetes.pod.namespace=shop"),
		Destination: ep("shop", "catalog", 2000, "k8s:app=catalog", "k8s:tier=backend",
			"k8s:io.kubernetes.pod.namespace=shop"),
		IsReply:   wrapperspb.Bool(false),
		Interface: &flowpb.NetworkInterface{Index: 4, Name: "lxc1"},
	},
	"synack": {
		NodeName: "n2", Verdict: flowpb.Verdict_FORWARDED, TrafficDirection: flowpb.TrafficDirection_INGRESS,
		EventType: &flowpb.CiliumEventType{Type: 4, SubType: 5},
		IP:        &flowpb.IP{Source: "10.200.2.20", Destination: "10.200.1.10", IpVersion: flowpb.IPVersion_IPv4},
		L4:        tcp(80, 40000, &flowpb.TCPFlags{SYN: true, ACK: true}),
		Source: ep("shop", "catalog", 2000, "k8s:app=catalog", "k8s:tier=backend",
			"k8s:io.kubernetes.pod.namespace=shop"),
		Destination: ep("shop", "frontend-1", 1000, "k8s:app=frontend", "k8s:tier=web", "k8s:io.kubernetes.pod.namespace=shop"),
		IsReply:     wrapperspb.Bool(true),
	},
	"drop6": {
		NodeName: "n1", Verdict: flowpb.Verdict_DROPPED, DropReasonDesc: flowpb.DropReason_INVALID_SOURCE_IP,
		TrafficDirection: flowpb.TrafficDirection_EGRESS,
		EventType:        &flowpb.CiliumEventType{Type: 1, SubType: 132},
		IP:               &flowpb.IP{Source: "fd00::5", Destination: "2001:db8::1", IpVersion: flowpb.IPVersion_IPv6},
		L4:               udp(5353, 53),
		Source:           ep("", "", 3, "reserved:unmanaged"),
		Destination:      ep("", "", 2, "reserved:world"),
	},
	"dns": {
		NodeName: "n2", Verdict: flowpb.Verdict_FORWARDED, TrafficDirection: flowpb.TrafficDirection_EGRESS,
		EventType:   &flowpb.CiliumEventType{Type: 4, SubType: 11},
		IP:          &flowpb.IP{Source: "10.200.2.30", Destination: "10.0.0.53", IpVersion: flowpb.IPVersion_IPv4},
		L4:          udp(33333, 53),
		Source:      ep("tools", "toolbox", 3000, "k8s:app=toolbox", "k8s:io.kubernetes.pod.namespace=tools"),
		Destination: ep("", "", 2, "reserved:world"),
	},
	"icmp": {
		NodeName: "n1", Verdict: flowpb.Verdict_FORWARDED,
		EventType:   &flowpb.CiliumEventType{Type: 4, SubType: 101},
		IP:          &flowpb.IP{Source: "10.200.1.10", Destination: "10.200.1.11", IpVersion: flowpb.IPVersion_IPv4},
		L4:          &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: 8}}},
		Source:      ep("default", "web", 4000, "k8s:app=web"),
		Destination: ep("default", "web-2", 4000, "k8s:app=web"),
	},
}

func TestFilters(t *testing.T) {
	cases := []struct {
		name        string
		allow, deny []*flowpb.FlowFilter
		want        string // space-separated names of the flows that pass, sorted
	}{
		{"none", nil, nil, "dns drop6 icmp syn synack"},
		{"source ip exact", []*flowpb.FlowFilter{{SourceIp: []string{"10.200.1.10"}}}, nil, "icmp syn"},
		{"source ip v6 exact, non-canonical", []*flowpb.FlowFilter{{SourceIp: []string{"fd00:0::5"}}}, nil, "drop6"},
		{"destination cidr", []*flowpb.FlowFilter{{DestinationIp: []string{"10.200.0.0/16"}}}, nil, "icmp syn synack"},
		{"source pod with namespace", []*flowpb.FlowFilter{{SourcePod: []string{"shop/frontend"}}}, nil, "syn"},
		{"pod without namespace means default", []*flowpb.FlowFilter{{SourcePod: []string{"web"}}}, nil, "icmp"},
		{"any namespace", []*flowpb.FlowFilter{{DestinationPod: []string{"/web-"}}}, nil, "icmp"},
		{"namespace only, either side", []*flowpb.FlowFilter{{SourcePod: []string{"tools/"}}, {DestinationPod: []string{"tools/"}}}, nil, "dns"},
		{"label", []*flowpb.FlowFilter{{SourceLabel: []string{"app=catalog"}}}, nil, "synack"},
		{"label with source", []*flowpb.FlowFilter{{DestinationLabel: []string{"reserved:world"}}}, nil, "dns drop6"},
		{"label set", []*flowpb.FlowFilter{{SourceLabel: []string{"tier in (web, backend)"}}}, nil, "syn synack"},
		{"label not", []*flowpb.FlowFilter{{SourceLabel: []string{"app!=frontend,!reserved:unmanaged"}}}, nil, "dns icmp synack"},
		{"identity", []*flowpb.FlowFilter{{SourceIdentity: []uint32{2000, 3}}}, nil, "drop6 synack"},
		{"destination identity", []*flowpb.FlowFilter{{DestinationIdentity: []uint32{2}}}, nil, "dns drop6"},
		{"verdict", []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}, nil, "drop6"},
		{"drop reason", []*flowpb.FlowFilter{{DropReasonDesc: []flowpb.DropReason{flowpb.DropReason_INVALID_SOURCE_IP}}}, nil, "drop6"},
		{"event type", []*flowpb.FlowFilter{{EventType: []*flowpb.EventTypeFilter{{Type: 4}}}}, nil, "dns icmp syn synack"},
		{"event subtype", []*flowpb.FlowFilter{{EventType: []*flowpb.EventTypeFilter{{Type: 4, MatchSubType: true, SubType: 101}}}}, nil, "icmp"},
		{"protocol", []*flowpb.FlowFilter{{Protocol: []string{"UDP", "icmp"}}}, nil, "dns drop6 icmp"},
		{"destination port", []*flowpb.FlowFilter{{DestinationPort: []string{"53"}}}, nil, "dns drop6"},
		{"source port", []*flowpb.FlowFilter{{SourcePort: []string{"80"}}}, nil, "synack"},
		{"tcp flags subset", []*flowpb.FlowFilter{{TcpFlags: []*flowpb.TCPFlags{{SYN: true}}}}, nil, "syn synack"},
		{"tcp flags both", []*flowpb.FlowFilter{{TcpFlags: []*flowpb.TCPFlags{{SYN: true, ACK: true}}}}, nil, "synack"},
		{"direction", []*flowpb.FlowFilter{{TrafficDirection: []flowpb.TrafficDirection{flowpb.TrafficDirection_INGRESS}}}, nil, "synack"},
		{"node name", []*flowpb.FlowFilter{{NodeName: []string{"n2"}}}, nil, "dns synack"},
		{"node glob with cluster", []*flowpb.FlowFilter{{NodeName: []string{"default/n*"}}}, nil, "dns drop6 icmp syn synack"},
		{"other cluster", []*flowpb.FlowFilter{{NodeName: []string{"prod/n1"}}}, nil, ""},
		{"ip version", []*flowpb.FlowFilter{{IpVersion: []flowpb.IPVersion{flowpb.IPVersion_IPv6}}}, nil, "drop6"},
		{"reply, unknown matches neither", []*flowpb.FlowFilter{{Reply: []bool{false}}}, nil, "syn"},
		{"interface", []*flowpb.FlowFilter{{Interface: []*flowpb.NetworkInterface{{Name: "lxc1"}}}}, nil, "syn"},
		{"encrypted false", []*flowpb.FlowFilter{{Encrypted: []bool{false}}}, nil, "dns drop6 icmp syn synack"},
		{"and within a filter", []*flowpb.FlowFilter{{SourcePod: []string{"shop/"}, Verdict: []flowpb.Verdict{flowpb.Verdict_FORWARDED}, DestinationPort: []string{"80"}}}, nil, "syn"},
		{"or across filters", []*flowpb.FlowFilter{{NodeName: []string{"n2"}}, {Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}, nil, "dns drop6 synack"},
		{"deny only", nil, []*flowpb.FlowFilter{{Protocol: []string{"tcp"}}}, "dns drop6 icmp"},
		{"allow minus deny", []*flowpb.FlowFilter{{NodeName: []string{"n1"}}}, []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}, "icmp syn"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs, err := New(c.allow, c.deny)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, name := range []string{"dns", "drop6", "icmp", "syn", "synack"} {
				if fs.Match(corpus[name]) {
					got = append(got, name)
				}
			}
			if g := strings.Join(got, " "); g != c.want {
				t.Errorf("matched %q, want %q", g, c.want)
			}
		})
	}
}

func TestInvalidFilters(t *testing.T) {
	cases := []struct {
		allow, deny []*flowpb.FlowFilter
		field       string
	}{
		{[]*flowpb.FlowFilter{{SourceIp: []string{"10.0.0.1", "10.0.0"}}}, nil, "whitelist[0].source_ip[1]"},
		{[]*flowpb.FlowFilter{{}, {DestinationIp: []string{"10.0.0.0/33"}}}, nil, "whitelist[1].destination_ip[0]"},
		{nil, []*flowpb.FlowFilter{{DestinationPort: []string{"http"}}}, "blacklist[0].destination_port[0]"},
		{[]*flowpb.FlowFilter{{SourcePort: []string{"70000"}}}, nil, "whitelist[0].source_port[0]"},
		{[]*flowpb.FlowFilter{{Protocol: []string{"gre"}}}, nil, "whitelist[0].protocol[0]"},
		{[]*flowpb.FlowFilter{{Protocol: []string{"http"}}}, nil, "whitelist[0].protocol[0]"},
		{[]*flowpb.FlowFilter{{SourceLabel: []string{"app in frontend"}}}, nil, "whitelist[0].source_label[0]"},
		{[]*flowpb.FlowFilter{{DestinationLabel: []string{""}}}, nil, "whitelist[0].destination_label[0]"},
		{[]*flowpb.FlowFilter{{SourcePod: []string{"a/b/c"}}}, nil, "whitelist[0].source_pod[0]"},
		{[]*flowpb.FlowFilter{{NodeName: []string{"N1!"}}}, nil, "whitelist[0].node_name[0]"},
		{[]*flowpb.FlowFilter{{TcpFlags: []*flowpb.TCPFlags{{}}}}, nil, "whitelist[0].tcp_flags[0]"},
		{[]*flowpb.FlowFilter{{HttpMethod: []string{"GET"}}}, nil, "whitelist[0].http_method"},
		{[]*flowpb.FlowFilter{{SourceFqdn: []string{"example.com"}}}, nil, "whitelist[0].source_fqdn"},
		{[]*flowpb.FlowFilter{{Experimental: &flowpb.FlowFilter_Experimental{CelExpression: []string{"true"}}}}, nil, "whitelist[0].experimental.cel_expression"},
	}
	for _, c := range cases {
		_, err := New(c.allow, c.deny)
		var fe *fielderr.Error
		if !errors.As(err, &fe) {
			t.Errorf("%s: error %v, want a FieldError", c.field, err)
			continue
		}
		if fe.Path != c.field || !strings.HasPrefix(err.Error(), c.field+": ") {
			t.Errorf("error %q names field %q, want %q", err, fe.Path, c.field)
		}
	}
}

func TestSelector(t *testing.T) {
	labels := []string{"k8s:app=frontend", "k8s:tier=web", "reserved:host", "container:app=x"}
	cases := []struct {
		sel  string
		want bool
	}{
		{"app", true},
		{"app=frontend", true},
		{"app==x", true}, // container:app=x
		{"k8s:app=x", false},
		{"any:app=frontend", true},
		{"host", true},
		{"reserved:host", true},
		{"k8s:host", false},
		{"!canary", true},
		{"!app", false},
		{"app=frontend, tier=web", true},
		{"app=frontend,tier=api", false},
		{"tier in (api, web)", true},
		{"tier notin (api,web)", false},
		{"zone notin (a)", true},
		{"zone!=a", true},
		{"k8s:app!=frontend", false},
	}
	for _, c := range cases {
		s, err := ParseSelector(c.sel)
		if err != nil {
			t.Errorf("%q: %v", c.sel, err)
			continue
		}
		if got := s.Matches(labels); got != c.want {
			t.Errorf("%q matches %v, want %v", c.sel, got, c.want)
		}
	}
	for _, bad := range []string{"", "  ", "app in web", "app in (web", "=x", "app ~ x", "app=x,,", "k8s:"} {
		if _, err := ParseSelector(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzSelector(f *testing.F) {
	for _, s := range []string{"app=frontend", "tier in (a, b),!x", "k8s:app!=y", "a notin (b)", "(", "a in ("} {
		f.Add(s)
	}
	labels := []string{"k8s:app=frontend", "reserved:host"}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			return
		}
		for _, r := range sel.reqs {
			if r.check() != nil || len(r.key) > maxKeyPrefix+1+maxKeyName {
				t.Fatalf("%q: accepted a requirement out of bounds: %+v", s, r)
			}
		}
		sel.Matches(labels)
	})
}

func BenchmarkFilters(b *testing.B) {
	fs, err := New([]*flowpb.FlowFilter{
		{SourcePod: []string{"shop/"}, Verdict: []flowpb.Verdict{flowpb.Verdict_FORWARDED}},
		{DestinationLabel: []string{"app=catalog"}, DestinationPort: []string{"80"}},
	}, []*flowpb.FlowFilter{{Protocol: []string{"icmp"}}})
	if err != nil {
		b.Fatal(err)
	}
	fl := corpus["synack"]
	for b.Loop() {
		fs.Match(fl)
	}
}

// FuzzCompile feeds arbitrary strings into every string-valued filter field:
// compiling either fails with a FieldError or yields a filter that runs.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "10.0.0.0/8", "shop/frontend", "app=x", "80", "tcp", "n*", "default/n1", "/", "a/b/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ff := &flowpb.FlowFilter{
			SourceIp: []string{s}, DestinationPod: []string{s}, SourceLabel: []string{s}, DestinationPort: []string{s},
			Protocol: []string{s}, NodeName: []string{s},
		}
		for _, one := range []*flowpb.FlowFilter{ff, {SourceIp: []string{s}}, {SourcePod: []string{s}}, {NodeName: []string{s}},
			{SourceLabel: []string{s}}, {SourcePort: []string{s}}, {Protocol: []string{s}}} {
			fs, err := New([]*flowpb.FlowFilter{one}, nil)
			if err != nil {
				var fe *fielderr.Error
				if !errors.As(err, &fe) || !strings.HasPrefix(fe.Path, "whitelist[0].") {
					t.Fatalf("%q: error %v is not a FieldError naming the field", s, err)
				}
				continue
			}
			for _, fl := range corpus {
				fs.Match(fl)
			}
		}
	})
}

// TestSelectorBounds: label keys and values are bounded as Kubernetes
// bounds them (63 name / 253 prefix / 63 value); a client sending more
// (the real hubble CLI sends anything) gets an error naming the field, with
// the value shortened.
func TestSelectorBounds(t *testing.T) {
	n := func(c string, k int) string { return strings.Repeat(c, k) }
	ok := []string{
		n("a", 63) + "=" + n("v", 63),
		n("p", 253) + "/" + n("a", 63),
		"k8s:" + n("a", 63) + " in (" + n("v", 63) + ", x)",
		"cidr:10.0.0.0/8",
		"app=web,\ttier=front",
	}
	for _, s := range ok {
		if _, err := ParseSelector(s); err != nil {
			t.Errorf("%.80q: %v", s, err)
		}
	}
	bad := map[string]string{
		n("a", 64):                       "name part of 64 characters",
		n("a", 100000):                   "selector of 100000 characters",
		n("a", 8000):                     "name part of 8000 characters",
		n("p", 254) + "/a":               "prefix of 254 characters",
		"app=" + n("v", 64):              "64 characters: at most 63",
		"app in (x, " + n("v", 64) + ")": "64 characters: at most 63",
		n("s", 64) + ":app":              "label source of 64 characters",
		"app/=x":                         "name part of 0 characters",
		"app=x\x00":                      "control character",
		"app\n=x":                        "control character",
	}
	for s, want := range bad {
		_, err := ParseSelector(s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.80q: error %v, want %q", s, err, want)
		}
	}
	_, err := New([]*flowpb.FlowFilter{{SourceLabel: []string{n("k", 100000)}}}, nil)
	var fe *fielderr.Error
	if !errors.As(err, &fe) || fe.Path != "whitelist[0].source_label[0]" || len(err.Error()) > 400 ||
		!strings.Contains(err.Error(), "(100000 characters)") {
		t.Fatalf("100k-character key: %v", err)
	}
}
