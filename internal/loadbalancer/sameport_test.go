package loadbalancer

import (
	"testing"

	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/resource"
)

// A service with the same port number over TCP and UDP (Kubernetes
// conformance: "should serve endpoints on same port and different
// protocols") gets one frontend per protocol, each with backends of its
// own protocol, whether the slices are derived or Kubernetes' own.
func TestDesiredSamePortTwoProtocols(t *testing.T) {
	svc := webService(func(s *ServiceSpec) {
		s.Selector = map[string]string{"app": "web"}
		s.Ports = []ServicePort{
			{Name: "tcp-port", Protocol: "TCP", Port: 80, TargetPort: FromInt(100)},
			{Name: "udp-port", Protocol: "UDP", Port: 80, TargetPort: FromInt(100)},
		}
	})
	var el errs
	validateServicePorts(&svc.Spec, &el)
	if len(el) != 0 {
		t.Fatalf("validate: %v", resource.ErrorList(el))
	}
	p1 := pod("shop", "web-1", "n1", map[string]string{"app": "web"}, nil)
	pods := map[string]*Pod{"shop/web-1": p1}
	eps := []model.Endpoint{podEndpoint(p1, "10.200.1.1", "")}
	slices := SlicesFor(svc, eps, pods, []model.Node{{Name: "n1", Zone: "a"}})
	got := Desired([]*Service{svc}, slices, n1a)
	check(t, "derived", got,
		"ClusterIP 10.96.0.10:80/TCP internal Cluster [10.200.1.1:100]",
		"ClusterIP 10.96.0.10:80/UDP internal Cluster [10.200.1.1:100]")
	for _, f := range got {
		for _, b := range f.Backends {
			if b.Proto != f.Proto {
				t.Errorf("%s: backend %v has protocol %v", f.Key(), b.Key(), b.Proto)
			}
		}
	}
}
