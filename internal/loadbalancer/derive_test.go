package loadbalancer

import (
	"fmt"
	"reflect"
	"regexp"
	"testing"

	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/resource"
)

func pod(ns, name, nodeName string, labels map[string]string, ann map[string]string, ports ...resource.ContainerPort) *Pod {
	return &Pod{
		Pod: resource.Pod{Namespace: ns, Name: name, Labels: labels, Spec: resource.PodSpec{
			NodeName: nodeName, Containers: []resource.Container{{Name: "c", Ports: ports}},
		}},
		Annotations: ann,
	}
}

func podEndpoint(p *Pod, v4, v6 string) model.Endpoint {
	return model.Endpoint{Node: p.Spec.NodeName, ContainerID: "c-" + p.Name, PodName: p.Name, Namespace: p.Namespace, IPv4: v4, IPv6: v6}
}

func sliceSummary(ss []*EndpointSlice) map[string][]string {
	out := map[string][]string{}
	for _, s := range ss {
		var ports string
		for _, p := range s.Ports {
			ports += fmt.Sprintf("%s=%d/%s ", p.Name, *p.Port, p.Protocol)
		}
		for _, e := range s.Endpoints {
			c := e.Conditions
			out[s.AddressType+" "+ports] = append(out[s.AddressType+" "+ports],
				fmt.Sprintf("%s@%s/%s r=%v s=%v t=%v", e.Addresses[0], e.NodeName, e.Zone, *c.Ready, *c.Serving, *c.Terminating))
		}
	}
	return out
}

func TestSlicesFor(t *testing.T) {
	svc := &Service{Namespace: "shop", Name: "web", Spec: ServiceSpec{
		Selector:   map[string]string{"app": "web"},
		IPFamilies: []string{IPv4, IPv6},
		Ports: []ServicePort{
			{Name: "http", Protocol: "TCP", Port: 80, TargetPort: FromString("http")},
			{Name: "dns", Protocol: "UDP", Port: 53, TargetPort: FromInt(5353)},
		},
	}}
	web := map[string]string{"app": "web"}
	httpPort := func(n int32) resource.ContainerPort {
		return resource.ContainerPort{Name: "http", ContainerPort: n, Protocol: "TCP"}
	}
	p1 := pod("shop", "web-1", "n1", web, nil, httpPort(8080))
	p2 := pod("shop", "web-2", "n2", web, map[string]string{AnnotationTerminating: "true"}, httpPort(8080))
	p3 := pod("shop", "web-3", "n2", web, map[string]string{AnnotationReady: "false"}, httpPort(9090))
	p4 := pod("shop", "web-4", "n1", web, nil, resource.ContainerPort{Name: "http", ContainerPort: 7070, Protocol: "UDP"}) // wrong protocol: only dns resolves
	other := pod("shop", "db-1", "n1", map[string]string{"app": "db"}, nil, httpPort(8080))
	elsewhere := pod("prod", "web-1", "n1", web, nil, httpPort(8080))
	pods := map[string]*Pod{}
	for _, p := range []*Pod{p1, p2, p3, p4, other, elsewhere} {
		pods[p.Namespace+"/"+p.Name] = p
	}
	eps := []model.Endpoint{
		podEndpoint(p1, "10.200.1.1", "fd00:200:1::1"),
		podEndpoint(p2, "10.200.2.2", ""),
		podEndpoint(p3, "10.200.2.3", "fd00:200:2::3"),
		podEndpoint(p4, "10.200.1.4", ""),
		podEndpoint(other, "10.200.1.9", ""),
		podEndpoint(elsewhere, "10.200.1.8", ""),
		{Node: "n1", ContainerID: "x", PodName: "web-9", Namespace: "shop", IPv4: "10.200.1.99"}, // no stored pod
	}
	nodes := []model.Node{{Name: "n1", Zone: "a"}, {Name: "n2", Zone: "b"}}

	got := sliceSummary(SlicesFor(svc, eps, pods, nodes))
	want := map[string][]string{
		"IPv4 http=8080/TCP dns=5353/UDP ": {
			"10.200.1.1@n1/a r=true s=true t=false",
			"10.200.2.2@n2/b r=false s=true t=true",
		},
		"IPv4 http=9090/TCP dns=5353/UDP ": {"10.200.2.3@n2/b r=false s=false t=false"},
		"IPv4 dns=5353/UDP ":               {"10.200.1.4@n1/a r=true s=true t=false"},
		"IPv6 http=8080/TCP dns=5353/UDP ": {"fd00:200:1::1@n1/a r=true s=true t=false"},
		"IPv6 http=9090/TCP dns=5353/UDP ": {"fd00:200:2::3@n2/b r=false s=false t=false"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("slices =\n%v\nwant\n%v", got, want)
	}
	for _, s := range SlicesFor(svc, eps, pods, nodes) {
		if s.Labels[LabelServiceName] != "web" || s.Namespace != "shop" || s.Endpoints[0].TargetRef == nil || s.Endpoints[0].Hints != nil {
			t.Errorf("slice %s: labels %v, endpoint %+v", s.Name, s.Labels, s.Endpoints[0])
		}
		// What SlicesFor makes validates as a stored object.
		obj, err := s.Object()
		if err != nil {
			t.Fatal(err)
		}
		if err := testKinds.Validate(obj); err != nil {
			t.Errorf("derived slice does not validate: %v", err)
		}
	}

	// publishNotReadyAddresses: everything ready and serving.
	svc.Spec.PublishNotReadyAddresses = true
	for _, s := range SlicesFor(svc, eps, pods, nodes) {
		for _, e := range s.Endpoints {
			if !*e.Conditions.Ready || !*e.Conditions.Serving {
				t.Errorf("publishNotReadyAddresses: %s %+v", e.Addresses[0], e.Conditions)
			}
		}
	}

	// No selector: no slices.
	if got := SlicesFor(&Service{Namespace: "shop", Name: "manual", Spec: ServiceSpec{Ports: svc.Spec.Ports}}, eps, pods, nodes); got != nil {
		t.Errorf("service without selector got slices %v", got)
	}
}

func TestSlicesForChunksAndNames(t *testing.T) {
	svc := &Service{Namespace: "shop", Name: "big", Spec: ServiceSpec{
		Selector: map[string]string{"app": "big"}, IPFamilies: []string{IPv4},
		Ports: []ServicePort{{Name: "", Protocol: "TCP", Port: 80, TargetPort: FromInt(8080)}},
	}}
	pods := map[string]*Pod{}
	var eps []model.Endpoint
	for i := range 250 {
		p := pod("shop", fmt.Sprintf("big-%d", i), "n1", map[string]string{"app": "big"}, nil)
		pods["shop/"+p.Name] = p
		eps = append(eps, podEndpoint(p, fmt.Sprintf("10.200.%d.%d", i/200, i%200+1), ""))
	}
	ss := SlicesFor(svc, eps, pods, nil)
	if len(ss) != 3 || len(ss[0].Endpoints) != 100 || len(ss[1].Endpoints) != 100 || len(ss[2].Endpoints) != 50 {
		t.Fatalf("got %d slices", len(ss))
	}
	// Names are stable, and a reordered input gives the same slices.
	for i, j := 0, len(eps)-1; i < j; i, j = i+1, j-1 {
		eps[i], eps[j] = eps[j], eps[i]
	}
	again := SlicesFor(svc, eps, pods, nil)
	if !reflect.DeepEqual(ss, again) {
		t.Error("the order of the endpoints changed the slices")
	}
	for i, s := range ss {
		if !regexp.MustCompile(fmt.Sprintf(`^big-ipv4-[0-9a-f]{8}-%d$`, i)).MatchString(s.Name) {
			t.Errorf("slice %d is named %q", i, s.Name)
		}
	}
}

// hintsOf derives the slices of a topology-aware service with n[zone]
// ready endpoints per zone and returns, per endpoint zone, the hinted zones.
func hintsOf(t *testing.T, endpointsPerZone map[string]int, nodes []model.Node) map[string][]string {
	t.Helper()
	svc := &Service{Namespace: "shop", Name: "topo", Annotations: map[string]string{AnnotationTopologyMode: "Auto"}, Spec: ServiceSpec{
		Selector: map[string]string{"app": "topo"}, IPFamilies: []string{IPv4},
		Ports: []ServicePort{{Protocol: "TCP", Port: 80, TargetPort: FromInt(80)}},
	}}
	nodeOfZone := map[string]string{}
	for _, n := range nodes {
		if _, ok := nodeOfZone[n.Zone]; !ok {
			nodeOfZone[n.Zone] = n.Name
		}
	}
	pods := map[string]*Pod{}
	var eps []model.Endpoint
	i := 0
	for _, z := range sortedKeys(endpointsPerZone) {
		for range endpointsPerZone[z] {
			i++
			p := pod("shop", fmt.Sprintf("p%d", i), nodeOfZone[z], map[string]string{"app": "topo"}, nil)
			pods["shop/"+p.Name] = p
			eps = append(eps, podEndpoint(p, fmt.Sprintf("10.0.0.%d", i), ""))
		}
	}
	// One not-ready endpoint: it never gets hints.
	nr := pod("shop", "not-ready", nodes[0].Name, map[string]string{"app": "topo"}, map[string]string{AnnotationReady: "false"})
	pods["shop/not-ready"] = nr
	eps = append(eps, podEndpoint(nr, "10.0.0.250", ""))
	out := map[string][]string{}
	for _, s := range SlicesFor(svc, eps, pods, nodes) {
		for _, e := range s.Endpoints {
			if !*e.Conditions.Ready {
				if e.Hints != nil {
					t.Errorf("not-ready endpoint has hints %+v", e.Hints)
				}
				continue
			}
			h := "none"
			if e.Hints != nil {
				h = e.Hints.ForZones[0].Name
			}
			out[e.Zone] = append(out[e.Zone], h)
		}
	}
	return out
}

func TestSlicesForTopologyHints(t *testing.T) {
	twoZones := []model.Node{{Name: "a1", Zone: "a"}, {Name: "b1", Zone: "b"}}
	for _, tc := range []struct {
		name  string
		eps   map[string]int
		nodes []model.Node
		want  map[string][]string
	}{
		{"even: own zone", map[string]int{"a": 2, "b": 2}, twoZones,
			map[string][]string{"a": {"a", "a"}, "b": {"b", "b"}}},
		{"3:1 over two equal zones: one endpoint of a serves b", map[string]int{"a": 3, "b": 1}, twoZones,
			map[string][]string{"a": {"b", "a", "a"}, "b": {"b"}}},
		{"a zone without endpoints gets some", map[string]int{"a": 3, "b": 3},
			[]model.Node{{Name: "a1", Zone: "a"}, {Name: "b1", Zone: "b"}, {Name: "c1", Zone: "c"}},
			map[string][]string{"a": {"c", "a", "a"}, "b": {"c", "b", "b"}}},
		{"fewer endpoints than zones: none", map[string]int{"a": 1},
			twoZones, map[string][]string{"a": {"none"}}},
		{"over the overload threshold: none", map[string]int{"a": 2, "b": 2},
			[]model.Node{{Name: "a1", Zone: "a"}, {Name: "b1", Zone: "b"}, {Name: "c1", Zone: "c"}},
			map[string][]string{"a": {"none", "none"}, "b": {"none", "none"}}},
		{"a node without zone: none", map[string]int{"a": 2, "b": 2},
			append(twoZones, model.Node{Name: "x"}), map[string][]string{"a": {"none", "none"}, "b": {"none", "none"}}},
		{"control-plane nodes do not count", map[string]int{"a": 2, "b": 2},
			append(twoZones, model.Node{Name: "cp", Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}}),
			map[string][]string{"a": {"a", "a"}, "b": {"b", "b"}}},
		{"one zone: none", map[string]int{"a": 2}, []model.Node{{Name: "a1", Zone: "a"}, {Name: "a2", Zone: "a"}},
			map[string][]string{"a": {"none", "none"}}},
	} {
		if got := hintsOf(t, tc.eps, tc.nodes); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: hints %v, want %v", tc.name, got, tc.want)
		}
	}
	// Without the annotation there are no hints.
	svc := &Service{Namespace: "shop", Name: "x", Spec: ServiceSpec{Selector: map[string]string{"app": "x"}, IPFamilies: []string{IPv4},
		Ports: []ServicePort{{Protocol: "TCP", Port: 80, TargetPort: FromInt(80)}}}}
	pa := pod("shop", "pa", "a1", map[string]string{"app": "x"}, nil)
	pb := pod("shop", "pb", "b1", map[string]string{"app": "x"}, nil)
	ss := SlicesFor(svc, []model.Endpoint{podEndpoint(pa, "10.0.0.1", ""), podEndpoint(pb, "10.0.0.2", "")},
		map[string]*Pod{"shop/pa": pa, "shop/pb": pb}, twoZones)
	for _, e := range ss[0].Endpoints {
		if e.Hints != nil {
			t.Errorf("hints without the annotation: %+v", e)
		}
	}
}

func resourcePort(name string, n int32) resource.ContainerPort {
	return resource.ContainerPort{Name: name, ContainerPort: n, Protocol: "TCP"}
}
