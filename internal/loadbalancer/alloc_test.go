package loadbalancer

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/resource"
)

func svcObj(t *testing.T, name, spec string) resource.Object {
	t.Helper()
	return *decodeOne(t, fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: shop}\nspec: %s\n", name, spec))
}

func assigned(t *testing.T, obj *resource.Object) *Service {
	t.Helper()
	s, err := ServiceOf(obj)
	if err != nil {
		t.Fatal(err)
	}
	if err := testKinds.Validate(obj); err != nil {
		t.Fatalf("assigned object no longer validates: %v", err)
	}
	return s
}

func TestAllocatorClusterIPs(t *testing.T) {
	a := &Allocator{ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/24"), netip.MustParsePrefix("fd00:96::/112")}}
	objs := []resource.Object{
		svcObj(t, "a", `{ports: [{port: 80}]}`),
		svcObj(t, "b", `{ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}`),
		svcObj(t, "c", `{ipFamilies: [IPv6], ports: [{port: 80}]}`),
		svcObj(t, "d", `{clusterIP: 10.96.0.77, ports: [{port: 80}]}`),
		svcObj(t, "h", `{clusterIP: None}`),
	}
	if err := a.AssignAll(objs, nil); err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for i := range objs {
		s := assigned(t, &objs[i])
		for _, ip := range s.Spec.ClusterIPs {
			if other, dup := seen[ip]; dup {
				t.Errorf("%s and %s share %s", other, s.Name, ip)
			}
			seen[ip] = s.Name
		}
		switch s.Name {
		case "a":
			if len(s.Spec.ClusterIPs) != 1 || !a.ServiceCIDRs[0].Contains(netip.MustParseAddr(s.Spec.ClusterIP)) || s.Spec.IPFamilies[0] != IPv4 {
				t.Errorf("a: %v %v", s.Spec.ClusterIPs, s.Spec.IPFamilies)
			}
		case "b":
			if len(s.Spec.ClusterIPs) != 2 || s.Spec.IPFamilies[1] != IPv6 || !a.ServiceCIDRs[1].Contains(netip.MustParseAddr(s.Spec.ClusterIPs[1])) {
				t.Errorf("b: %v %v", s.Spec.ClusterIPs, s.Spec.IPFamilies)
			}
		case "c":
			if len(s.Spec.ClusterIPs) != 1 || !netip.MustParseAddr(s.Spec.ClusterIP).Is6() {
				t.Errorf("c: %v", s.Spec.ClusterIPs)
			}
		case "d":
			if s.Spec.ClusterIP != "10.96.0.77" {
				t.Errorf("d: %v", s.Spec.ClusterIPs)
			}
		case "h":
			if s.Spec.ClusterIP != ClusterIPNone {
				t.Errorf("h: %v", s.Spec.ClusterIPs)
			}
		}
	}

	// Deterministic: the same input gives the same addresses.
	again := []resource.Object{svcObj(t, "a", `{ports: [{port: 80}]}`)}
	if err := a.AssignAll(again, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := assigned(t, &again[0]).Spec.ClusterIP, assigned(t, &objs[0]).Spec.ClusterIP; got != want {
		t.Errorf("a again got %s, first time %s", got, want)
	}

	// An update without clusterIP keeps the stored one; changing it fails.
	stored := []*resource.Object{&objs[0], &objs[1]}
	upd := svcObj(t, "a", `{ports: [{port: 81}]}`)
	if err := a.Assign(&upd, stored); err != nil {
		t.Fatal(err)
	}
	if got, want := assigned(t, &upd).Spec.ClusterIP, assigned(t, &objs[0]).Spec.ClusterIP; got != want {
		t.Errorf("update got %s, stored %s", got, want)
	}
	bad := svcObj(t, "a", `{clusterIP: 10.96.0.99, ports: [{port: 80}]}`)
	if err := a.Assign(&bad, stored); err == nil || !strings.Contains(err.Error(), `Service shop/a: spec.clusterIPs[0]: invalid value "10.96.0.99": field is immutable`) {
		t.Errorf("changing the cluster IP: %v", err)
	}
	taken := svcObj(t, "z", fmt.Sprintf(`{clusterIP: %s, ports: [{port: 80}]}`, assigned(t, &objs[1]).Spec.ClusterIP))
	if err := a.Assign(&taken, stored); err == nil || !strings.Contains(err.Error(), "provided IP is already allocated (to service shop/b)") {
		t.Errorf("taking another service's IP: %v", err)
	}
	outside := svcObj(t, "z", `{clusterIP: 10.97.0.1, ports: [{port: 80}]}`)
	if err := a.Assign(&outside, nil); err == nil || !strings.Contains(err.Error(), "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/24") {
		t.Errorf("IP outside the CIDR: %v", err)
	}
	single := &Allocator{ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/24")}}
	req := svcObj(t, "z", `{ipFamilyPolicy: RequireDualStack, ports: [{port: 80}]}`)
	if err := single.Assign(&req, nil); err == nil || !strings.Contains(err.Error(), "spec.ipFamilyPolicy: invalid value \"RequireDualStack\": this cluster is not configured for dual-stack") {
		t.Errorf("dual stack on a single-stack cluster: %v", err)
	}
	pref := svcObj(t, "z", `{ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}`)
	if err := single.Assign(&pref, nil); err != nil || len(assigned(t, &pref).Spec.ClusterIPs) != 1 {
		t.Errorf("PreferDualStack on a single-stack cluster: %v", err)
	}
}

func TestAllocatorFillsSmallCIDR(t *testing.T) {
	// A /29 has 6 usable addresses (not the network, not the broadcast).
	a := &Allocator{ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/29")}}
	var objs []resource.Object
	for i := range 7 {
		objs = append(objs, svcObj(t, fmt.Sprintf("s%d", i), `{ports: [{port: 80}]}`))
	}
	err := a.AssignAll(objs, nil)
	if err == nil || !strings.Contains(err.Error(), "Service shop/s6: spec.clusterIPs[0]: no free address left in the service CIDR 10.96.0.0/29") {
		t.Fatalf("7 services in a /29: %v", err)
	}
	seen := map[string]bool{}
	for i := range 6 {
		ip := assigned(t, &objs[i]).Spec.ClusterIP
		if ip == "10.96.0.0" || ip == "10.96.0.7" || seen[ip] {
			t.Errorf("s%d got %s", i, ip)
		}
		seen[ip] = true
	}
}

func TestAllocatorNodePorts(t *testing.T) {
	a := &Allocator{NodePortMin: 30000, NodePortMax: 30002}
	objs := []resource.Object{
		svcObj(t, "np", `{type: NodePort, ports: [{name: a, port: 80}, {name: b, port: 81}]}`),
		svcObj(t, "lb", `{type: LoadBalancer, ports: [{port: 80}]}`),
		svcObj(t, "lbno", `{type: LoadBalancer, allocateLoadBalancerNodePorts: false, ports: [{port: 80}]}`),
		svcObj(t, "cip", `{ports: [{port: 80}]}`),
	}
	if err := a.AssignAll(objs, nil); err != nil {
		t.Fatal(err)
	}
	ports := map[int32]string{}
	for i := range objs {
		s := assigned(t, &objs[i])
		for _, p := range s.Spec.Ports {
			if p.NodePort == 0 {
				if s.Name == "np" || s.Name == "lb" {
					t.Errorf("%s port %d got no node port", s.Name, p.Port)
				}
				continue
			}
			if s.Name == "lbno" || s.Name == "cip" {
				t.Errorf("%s got node port %d", s.Name, p.NodePort)
			}
			if other, dup := ports[p.NodePort]; dup {
				t.Errorf("node port %d given to %s and %s", p.NodePort, other, s.Name)
			}
			ports[p.NodePort] = s.Name
		}
	}
	if len(ports) != 3 {
		t.Errorf("node ports = %v, want all 3 of the range used", ports)
	}
	// The range is full now.
	more := svcObj(t, "more", `{type: NodePort, ports: [{port: 80}]}`)
	var stored []*resource.Object
	for i := range objs {
		stored = append(stored, &objs[i])
	}
	if err := a.Assign(&more, stored); err == nil || !strings.Contains(err.Error(), "spec.ports[0].nodePort: no free node port left in 30000-30002") {
		t.Errorf("full range: %v", err)
	}
	// An update keeps its node ports, a conflicting explicit one fails.
	upd := svcObj(t, "np", `{type: NodePort, ports: [{name: a, port: 80}, {name: b, port: 81}]}`)
	if err := a.Assign(&upd, stored); err != nil {
		t.Fatal(err)
	}
	for i, p := range assigned(t, &upd).Spec.Ports {
		if want := assigned(t, &objs[0]).Spec.Ports[i].NodePort; p.NodePort != want {
			t.Errorf("update: port %d got node port %d, had %d", p.Port, p.NodePort, want)
		}
	}
	lbPort := assigned(t, &objs[1]).Spec.Ports[0].NodePort
	clash := svcObj(t, "clash", fmt.Sprintf(`{type: NodePort, ports: [{port: 80, nodePort: %d}]}`, lbPort))
	if err := a.Assign(&clash, stored); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("spec.ports[0].nodePort: invalid value %d: provided port is already allocated (to service shop/lb)", lbPort)) {
		t.Errorf("taken node port: %v", err)
	}
}
