package loadbalancer

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/model"
)

// ep describes an endpoint compactly for tests: "10.0.0.1@n1/a" plus flags
// r (ready), s (serving), t (terminating) and hints.
type ep struct {
	addr, node, zone string
	ready            *bool
	serving          *bool
	terminating      *bool
	hints            []string
}

func ready(addr, nodeName, zone string, hints ...string) ep {
	return ep{addr: addr, node: nodeName, zone: zone, hints: hints}
}

func terminatingEP(addr, nodeName string, serving bool) ep {
	return ep{addr: addr, node: nodeName, ready: ptr(false), serving: ptr(serving), terminating: ptr(true)}
}

func notReady(addr, nodeName string) ep {
	return ep{addr: addr, node: nodeName, ready: ptr(false), serving: ptr(false), terminating: ptr(false)}
}

func makeSlice(svc, name, fam string, port int32, eps ...ep) *EndpointSlice {
	s := &EndpointSlice{Namespace: "shop", Name: name, Labels: map[string]string{LabelServiceName: svc}, AddressType: fam,
		Ports: []EndpointPort{{Name: "http", Protocol: "TCP", Port: &port}}}
	for _, e := range eps {
		x := Endpoint{Addresses: []string{e.addr}, NodeName: e.node, Zone: e.zone,
			Conditions: EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating}}
		if len(e.hints) > 0 {
			x.Hints = &EndpointHints{}
			for _, h := range e.hints {
				x.Hints.ForZones = append(x.Hints.ForZones, ForZone{Name: h})
			}
		}
		s.Endpoints = append(s.Endpoints, x)
	}
	return s
}

func webService(mod func(*ServiceSpec)) *Service {
	s := &Service{Namespace: "shop", Name: "web", Spec: ServiceSpec{
		Type: TypeClusterIP, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}, IPFamilies: []string{IPv4},
		Ports:                 []ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: FromInt(8080)}},
		SessionAffinity:       AffinityNone,
		InternalTrafficPolicy: PolicyCluster,
	}}
	if mod != nil {
		mod(&s.Spec)
	}
	return s
}

// show renders frontends as "TYPE ADDR:PORT/PROTO scope policy [backend state ...]".
func show(fs []Frontend) []string {
	var out []string
	for _, f := range fs {
		var bs []string
		for _, b := range f.Backends {
			s := netip.AddrPortFrom(b.Addr, b.Port).String()
			if b.State != StateActive {
				s += "(" + b.State.String() + ")"
			}
			bs = append(bs, s)
		}
		out = append(out, fmt.Sprintf("%s %s %s %s [%s]", f.Type, f.Key(), f.Scope, f.TrafficPolicy, strings.Join(bs, " ")))
	}
	return out
}

func check(t *testing.T, name string, got []Frontend, want ...string) {
	t.Helper()
	if g := show(got); !reflect.DeepEqual(g, want) {
		t.Errorf("%s:\ngot  %q\nwant %q", name, g, want)
	}
}

var n1a = NodeInfo{Name: "n1", Zone: "a", IPs: []netip.Addr{netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("fd00:168::1")}}

func TestDesiredClusterIP(t *testing.T) {
	svc := webService(nil)
	sl := makeSlice("web", "web-1", IPv4, 8080,
		ready("10.200.2.1", "n2", "b"), ready("10.200.1.1", "n1", "a"), notReady("10.200.1.2", "n1"),
		terminatingEP("10.200.2.3", "n2", true))
	other := makeSlice("db", "db-1", IPv4, 5432, ready("10.200.9.9", "n1", "a"))
	got := Desired([]*Service{svc}, []*EndpointSlice{sl, other}, n1a)
	check(t, "cluster policy", got,
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080 10.200.2.1:8080 10.200.2.3:8080(terminating)]")
	f := got[0]
	if f.Service != "shop/web" || f.PortName != "http" || !f.HasEndpoints || f.AffinityTimeout != 0 {
		t.Errorf("frontend %+v", f)
	}
	if b := f.Backends[2]; b.Weight != 0 || b.NodeName != "n2" {
		t.Errorf("terminating backend %+v, want weight 0", b)
	}
	if b := f.Backends[0]; b.Weight != DefaultWeight || b.NodeName != "n1" || b.Zone != "a" || b.Proto != TCP {
		t.Errorf("active backend %+v", b)
	}
	if len(f.Active()) != 2 {
		t.Errorf("active = %v", f.Active())
	}

	// Every endpoint terminating: the serving ones take new connections.
	sl = makeSlice("web", "web-1", IPv4, 8080, terminatingEP("10.200.2.3", "n2", true), terminatingEP("10.200.2.4", "n2", false), notReady("10.200.1.2", "n1"))
	check(t, "all terminating", Desired([]*Service{svc}, []*EndpointSlice{sl}, n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.2.3:8080 10.200.2.4:8080(terminating)]")

	// Nothing usable: no backends, and HasEndpoints false (reject).
	sl = makeSlice("web", "web-1", IPv4, 8080, notReady("10.200.1.2", "n1"), terminatingEP("10.200.2.4", "n2", false))
	got = Desired([]*Service{svc}, []*EndpointSlice{sl}, n1a)
	check(t, "nothing usable", got, "ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.2.4:8080(terminating)]")
	if got[0].HasEndpoints {
		t.Error("HasEndpoints with no usable endpoint")
	}

	// Affinity; headless services and other ports' slices.
	svc = webService(func(s *ServiceSpec) {
		s.SessionAffinity = AffinityClientIP
		s.SessionAffinityConfig = &SessionAffinityConfig{ClientIP: &ClientIPConfig{TimeoutSeconds: ptr(int32(60))}}
	})
	if got := Desired([]*Service{svc}, nil, n1a); got[0].AffinityTimeout != 60 || got[0].Backends != nil {
		t.Errorf("affinity: %+v", got[0])
	}
	headless := webService(func(s *ServiceSpec) {
		s.ClusterIP, s.ClusterIPs, s.IPFamilies = ClusterIPNone, []string{ClusterIPNone}, nil
	})
	if got := Desired([]*Service{headless}, nil, n1a); len(got) != 0 {
		t.Errorf("headless service has frontends %v", show(got))
	}
	// a service labelled for another proxy or headless (any value, even
	// empty) is not ours
	for _, l := range []map[string]string{{LabelServiceProxyName: "foo-bar"}, {LabelServiceProxyName: ""}, {LabelHeadless: ""}} {
		v := fmt.Sprint(l)
		other := webService(nil)
		other.Labels = l
		sl := makeSlice("web", "web-1", IPv4, 8080, ready("10.200.1.1", "n1", "a"))
		if got := Desired([]*Service{other}, []*EndpointSlice{sl}, n1a); len(got) != 0 {
			t.Errorf("labels %s: frontends %v", v, show(got))
		}
		if got := ServiceFrontends(other, []*EndpointSlice{sl}, n1a); len(got) != 0 {
			t.Errorf("labels %s: ServiceFrontends %v", v, show(got))
		}
	}
	// so is an endpoint slice labelled so: its endpoints are not backends
	for _, l := range []string{LabelHeadless, LabelServiceProxyName} {
		ok := makeSlice("web", "web-1", IPv4, 8080, ready("10.200.1.1", "n1", "a"))
		labelled := makeSlice("web", "web-2", IPv4, 8080, ready("10.200.2.1", "n2", "b"))
		labelled.Labels[l] = ""
		check(t, "slice labelled "+l, ServiceFrontends(webService(nil), []*EndpointSlice{ok, labelled}, n1a),
			"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080]")
	}
	wrongPort := makeSlice("web", "web-1", IPv4, 8080, ready("10.200.1.1", "n1", "a"))
	wrongPort.Ports[0].Name = "metrics"
	udp := makeSlice("web", "web-2", IPv4, 8080, ready("10.200.1.2", "n1", "a"))
	udp.Ports[0].Protocol = "UDP"
	noPort := makeSlice("web", "web-3", IPv4, 8080, ready("10.200.1.3", "n1", "a"))
	noPort.Ports[0].Port = nil
	check(t, "slices of other ports", Desired([]*Service{webService(nil)}, []*EndpointSlice{wrongPort, udp, noPort}, n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster []")
}

func TestDesiredDuplicateEndpoints(t *testing.T) {
	// The same address in two slices (a rewrite in progress): the better
	// conditions win.
	a := makeSlice("web", "web-1", IPv4, 8080, notReady("10.200.1.1", "n1"))
	b := makeSlice("web", "web-2", IPv4, 8080, ready("10.200.1.1", "n1", "a"))
	check(t, "duplicates", Desired([]*Service{webService(nil)}, []*EndpointSlice{a, b}, n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080]")
}

func TestDesiredTopology(t *testing.T) {
	svc := webService(nil)
	hinted := makeSlice("web", "web-1", IPv4, 8080,
		ready("10.200.1.1", "n1", "a", "a"), ready("10.200.2.1", "n2", "b", "b"), ready("10.200.3.1", "n3", "b", "a"),
		terminatingEP("10.200.2.9", "n2", true), notReady("10.200.2.8", "n2"))
	check(t, "zone a", Desired([]*Service{svc}, []*EndpointSlice{hinted}, n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080 10.200.2.9:8080(terminating) 10.200.3.1:8080]")
	check(t, "zone b", Desired([]*Service{svc}, []*EndpointSlice{hinted}, NodeInfo{Name: "n2", Zone: "b"}),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.2.1:8080 10.200.2.9:8080(terminating)]")
	check(t, "zone c: no hints for it, all", Desired([]*Service{svc}, []*EndpointSlice{hinted}, NodeInfo{Name: "n9", Zone: "c"}),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080 10.200.2.1:8080 10.200.2.9:8080(terminating) 10.200.3.1:8080]")
	check(t, "node without zone: all", Desired([]*Service{svc}, []*EndpointSlice{hinted}, NodeInfo{Name: "n9"}),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080 10.200.2.1:8080 10.200.2.9:8080(terminating) 10.200.3.1:8080]")
	partly := makeSlice("web", "web-1", IPv4, 8080, ready("10.200.1.1", "n1", "a", "a"), ready("10.200.2.1", "n2", "b"))
	check(t, "a ready endpoint without hints: all", Desired([]*Service{svc}, []*EndpointSlice{partly}, n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080 10.200.2.1:8080]")
	// Hints never narrow Local policies.
	local := webService(func(s *ServiceSpec) { s.InternalTrafficPolicy = PolicyLocal })
	check(t, "local ignores hints", Desired([]*Service{local}, []*EndpointSlice{hinted}, NodeInfo{Name: "n3", Zone: "b"}),
		"ClusterIP 10.96.0.10:80/TCP internal Local [10.200.3.1:8080]")
}

func TestDesiredTrafficPolicies(t *testing.T) {
	sl := makeSlice("web", "web-1", IPv4, 8080, ready("10.200.1.1", "n1", "a"), ready("10.200.2.1", "n2", "b"), terminatingEP("10.200.1.9", "n1", true))

	local := webService(func(s *ServiceSpec) { s.InternalTrafficPolicy = PolicyLocal })
	check(t, "internal Local", Desired([]*Service{local}, []*EndpointSlice{sl}, n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Local [10.200.1.1:8080 10.200.1.9:8080(terminating)]")
	got := Desired([]*Service{local}, []*EndpointSlice{sl}, NodeInfo{Name: "n3"})
	check(t, "internal Local, nothing here", got, "ClusterIP 10.96.0.10:80/TCP internal Local []")
	if !got[0].HasEndpoints {
		t.Error("HasEndpoints false although n1 and n2 have endpoints (traffic must be dropped, not rejected)")
	}
	onlyTerm := makeSlice("web", "web-1", IPv4, 8080, ready("10.200.2.1", "n2", "b"), terminatingEP("10.200.1.9", "n1", true), terminatingEP("10.200.1.8", "n1", false))
	check(t, "internal Local, only terminating here", Desired([]*Service{local}, []*EndpointSlice{onlyTerm}, n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Local [10.200.1.8:8080(terminating) 10.200.1.9:8080]")

	np := webService(func(s *ServiceSpec) {
		s.Type, s.ExternalTrafficPolicy = TypeNodePort, PolicyLocal
		s.Ports[0].NodePort = 30080
	})
	got = Desired([]*Service{np}, []*EndpointSlice{sl}, NodeInfo{Name: "n2", Zone: "b", IPs: n1a.IPs})
	check(t, "NodePort Local", got,
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080 10.200.1.9:8080(terminating) 10.200.2.1:8080]",
		"NodePort 192.168.0.1:30080/TCP external Local [10.200.2.1:8080]",
		"NodePort 192.168.0.1:30080/TCP internal Cluster [10.200.1.1:8080 10.200.1.9:8080(terminating) 10.200.2.1:8080]")
	if got[0].TwoScopes || !got[1].TwoScopes || !got[2].TwoScopes {
		t.Errorf("TwoScopes: %v %v %v", got[0].TwoScopes, got[1].TwoScopes, got[2].TwoScopes)
	}
	check(t, "NodePort Local on a node without endpoints", Desired([]*Service{np}, []*EndpointSlice{sl}, NodeInfo{Name: "n3", IPs: n1a.IPs[:1]})[1:2],
		"NodePort 192.168.0.1:30080/TCP external Local []")

	lb := webService(func(s *ServiceSpec) {
		s.Type, s.ExternalTrafficPolicy, s.LoadBalancerIP = TypeLoadBalancer, PolicyCluster, "192.0.2.10"
		s.ExternalIPs = []string{"198.51.100.7", "2001:db8::7"} // the IPv6 one is not of the service's family
		s.Ports[0].NodePort = 30080
	})
	check(t, "LoadBalancer Cluster", Desired([]*Service{lb}, []*EndpointSlice{sl}, n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080 10.200.1.9:8080(terminating) 10.200.2.1:8080]",
		"ExternalIP 198.51.100.7:80/TCP external Cluster [10.200.1.1:8080 10.200.1.9:8080(terminating) 10.200.2.1:8080]",
		"LoadBalancer 192.0.2.10:80/TCP external Cluster [10.200.1.1:8080 10.200.1.9:8080(terminating) 10.200.2.1:8080]",
		"NodePort 192.168.0.1:30080/TCP external Cluster [10.200.1.1:8080 10.200.1.9:8080(terminating) 10.200.2.1:8080]")

	// Both policies Local: external frontends still short-circuit in-cluster
	// traffic to all (cluster) backends, the ClusterIP stays local.
	both := webService(func(s *ServiceSpec) {
		s.ExternalIPs, s.ExternalTrafficPolicy, s.InternalTrafficPolicy = []string{"198.51.100.7"}, PolicyLocal, PolicyLocal
	})
	check(t, "both Local", Desired([]*Service{both}, []*EndpointSlice{sl}, NodeInfo{Name: "n2"}),
		"ClusterIP 10.96.0.10:80/TCP internal Local [10.200.2.1:8080]",
		"ExternalIP 198.51.100.7:80/TCP external Local [10.200.2.1:8080]",
		"ExternalIP 198.51.100.7:80/TCP internal Cluster [10.200.1.1:8080 10.200.1.9:8080(terminating) 10.200.2.1:8080]")
}

func TestDesiredDualStack(t *testing.T) {
	svc := webService(func(s *ServiceSpec) {
		s.Type = TypeNodePort
		s.ClusterIPs, s.IPFamilies, s.IPFamilyPolicy = []string{"10.96.0.10", "fd00:96::10"}, []string{IPv4, IPv6}, RequireDualStack
		s.Ports[0].NodePort = 30080
	})
	v4 := makeSlice("web", "web-v4", IPv4, 8080, ready("10.200.1.1", "n1", "a"))
	v6 := makeSlice("web", "web-v6", IPv6, 8080, ready("fd00:200:1::1", "n1", "a"))
	bad := makeSlice("web", "web-bad", IPv6, 8080, ready("10.200.1.7", "n1", "a")) // wrong family inside: ignored
	check(t, "dual stack", Desired([]*Service{svc}, []*EndpointSlice{v4, v6, bad}, n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080]",
		"ClusterIP [fd00:96::10]:80/TCP internal Cluster [[fd00:200:1::1]:8080]",
		"NodePort 192.168.0.1:30080/TCP external Cluster [10.200.1.1:8080]",
		"NodePort [fd00:168::1]:30080/TCP external Cluster [[fd00:200:1::1]:8080]")
	// A single-stack IPv4 service listens on IPv4 node addresses only.
	single := webService(func(s *ServiceSpec) { s.Type = TypeNodePort; s.Ports[0].NodePort = 30080 })
	check(t, "single stack NodePort", Desired([]*Service{single}, []*EndpointSlice{v4, v6}, n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080]",
		"NodePort 192.168.0.1:30080/TCP external Cluster [10.200.1.1:8080]")
}

// More than 64K backends in one service: nothing in the model limits it.
func TestDesiredManyBackends(t *testing.T) {
	const n = 70000
	var ss []*EndpointSlice
	var eps []ep
	for i := range n {
		eps = append(eps, ready(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String(), "n1", "a"))
		if len(eps) == MaxEndpointsPerSlice {
			ss = append(ss, makeSlice("web", fmt.Sprintf("web-%d", len(ss)), IPv4, 8080, eps...))
			eps = nil
		}
	}
	got := Desired([]*Service{webService(nil)}, ss, n1a)
	if len(got) != 1 || len(got[0].Backends) != n {
		t.Fatalf("got %d frontends, %d backends", len(got), len(got[0].Backends))
	}
	if !slices.IsSortedFunc(got[0].Backends, func(a, b Backend) int { return a.Addr.Compare(b.Addr) }) {
		t.Error("backends not sorted")
	}
}

// The standalone pipeline: pods and endpoints -> slices -> frontends,
// including graceful termination through the pod marker.
func TestSlicesThenDesired(t *testing.T) {
	svc := webService(func(s *ServiceSpec) {
		s.Selector = map[string]string{"app": "web"}
		s.Ports[0].TargetPort = FromString("http")
	})
	mk := func(name, nodeName string, ann map[string]string) *Pod {
		return pod("shop", name, nodeName, map[string]string{"app": "web"}, ann, resourcePort("http", 8080))
	}
	p1, p2 := mk("web-1", "n1", nil), mk("web-2", "n2", nil)
	pods := map[string]*Pod{"shop/web-1": p1, "shop/web-2": p2}
	eps := []model.Endpoint{podEndpoint(p1, "10.200.1.1", ""), podEndpoint(p2, "10.200.2.1", "")}
	nodes := []model.Node{{Name: "n1", Zone: "a"}, {Name: "n2", Zone: "b"}}
	check(t, "both serving", Desired([]*Service{svc}, SlicesFor(svc, eps, pods, nodes), n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080 10.200.2.1:8080]")
	p2.Annotations = map[string]string{AnnotationTerminating: "true"}
	check(t, "web-2 terminating", Desired([]*Service{svc}, SlicesFor(svc, eps, pods, nodes), n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080 10.200.2.1:8080(terminating)]")
	p1.Annotations = map[string]string{AnnotationTerminating: "true"}
	check(t, "both terminating: fallback", Desired([]*Service{svc}, SlicesFor(svc, eps, pods, nodes), n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080 10.200.2.1:8080]")
	delete(pods, "shop/web-2")
	check(t, "web-2 deleted", Desired([]*Service{svc}, SlicesFor(svc, eps, pods, nodes), n1a),
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:8080]")
}

func TestDesiredUnallocatedAndJSON(t *testing.T) {
	// A service that never went through the Allocator has no cluster IP,
	// but its node ports work in both families.
	svc := webService(func(s *ServiceSpec) {
		s.Type, s.ClusterIP, s.ClusterIPs, s.IPFamilies = TypeNodePort, "", nil, nil
		s.Ports[0].NodePort = 30080
	})
	v4 := makeSlice("web", "web-v4", IPv4, 8080, ready("10.200.1.1", "n1", "a"))
	got := Desired([]*Service{svc}, []*EndpointSlice{v4}, n1a)
	check(t, "unallocated", got,
		"NodePort 192.168.0.1:30080/TCP external Cluster [10.200.1.1:8080]",
		"NodePort [fd00:168::1]:30080/TCP external Cluster []")
	b, err := json.Marshal(got[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Proto":"TCP"`, `"Scope":"external"`, `"State":"active"`, `"Addr":"192.168.0.1"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s lacks %s", b, want)
		}
	}
}
