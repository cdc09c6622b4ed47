package bgp

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	lb "github.com/lumen-net/lumen/internal/loadbalancer"
)

func lbService(ns, name, addr, etp string, labels map[string]string) *lb.Service {
	return &lb.Service{Namespace: ns, Name: name, Labels: labels, Spec: lb.ServiceSpec{
		Type: lb.TypeLoadBalancer, LoadBalancerIP: addr, ExternalTrafficPolicy: etp,
	}}
}

func frontend(svc, addr string, active bool) api.Service {
	state := lb.StateTerminating.String()
	if active {
		state = lb.StateActive.String()
	}
	return api.Service{Service: svc, Type: string(lb.FrontendLoadBalancer), Scope: lb.ScopeExternal.String(), Frontend: addr,
		Backends: []api.ServiceBackend{{Address: "10.200.1.2:80", State: state}}}
}

func TestDesired(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("fd00:10:99::1")
	c := &Controller{
		src: Sources{
			NodeIPs:  func() (netip.Addr, netip.Addr) { return v4, v6 },
			PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.200.1.0/24"), netip.MustParsePrefix("fd00:10:200:1::/64")},
			Frontends: func() []api.Service {
				return []api.Service{
					frontend("shop/web", "10.50.0.1:80", true),
					frontend("shop/web", "10.50.0.1:81", false),
					frontend("shop/local", "10.50.0.2:80", false), // Local, no active local backend
					frontend("shop/local-ok", "10.50.0.3:80", true),
					frontend("shop/v6", "[fd00:50::1]:80", true),
					frontend("shop/outside", "10.60.0.1:80", true),
					frontend("shop/unlabelled", "10.50.0.5:80", true),
					// not programmed: shop/pending
				}
			},
		},
		services: map[string]*lb.Service{
			"a": lbService("shop", "web", "10.50.0.1", "", map[string]string{"bgp": "yes"}),
			"b": lbService("shop", "local", "10.50.0.2", lb.PolicyLocal, map[string]string{"bgp": "yes"}),
			"c": lbService("shop", "local-ok", "10.50.0.3", lb.PolicyLocal, map[string]string{"bgp": "yes"}),
			"d": lbService("shop", "v6", "fd00:50::1", "", map[string]string{"bgp": "yes"}),
			"e": lbService("shop", "outside", "10.60.0.1", "", map[string]string{"bgp": "yes"}),
			"f": lbService("shop", "unlabelled", "10.50.0.5", "", nil),
			"g": lbService("shop", "pending", "10.50.0.6", "", map[string]string{"bgp": "yes"}),
		},
	}
	c.services["h"] = &lb.Service{Namespace: "shop", Name: "cluster", Labels: map[string]string{"bgp": "yes"}, Spec: lb.ServiceSpec{Type: lb.TypeClusterIP, ClusterIP: "10.96.0.1"}}
	sel := &Selector{MatchLabels: map[string]string{"bgp": "yes"}}
	pools := []netip.Prefix{netip.MustParsePrefix("10.50.0.0/24"), netip.MustParsePrefix("fd00:50::/64")}
	nb := Neighbor{Address: netip.MustParseAddr("10.99.0.251"), ASN: 65000}
	specs, notes := c.desired([]VirtualRouter{
		{LocalASN: 65001, ExportPodCIDR: true, ServiceSelector: sel, Pools: pools, Neighbors: []Neighbor{nb}, Source: "s1"},
		{LocalASN: 65002, RouterID: netip.MustParseAddr("192.0.2.9"), ServiceSelector: &Selector{MatchLabels: map[string]string{"io.kubernetes.service.name": "unlabelled"}}},
	})
	if len(specs) != 2 {
		t.Fatalf("specs: %+v", specs)
	}
	want := []Route{
		{netip.MustParsePrefix("10.200.1.0/24"), v4, "pod-cidr"},
		{netip.MustParsePrefix("fd00:10:200:1::/64"), v6, "pod-cidr"},
		{netip.MustParsePrefix("10.50.0.1/32"), v4, "service shop/web"},
		{netip.MustParsePrefix("10.50.0.3/32"), v4, "service shop/local-ok"},
		{netip.MustParsePrefix("fd00:50::1/128"), v6, "service shop/v6"},
	}
	if specs[0].ASN != 65001 || specs[0].RouterID != v4 || specs[0].Source != "s1" || !reflect.DeepEqual(specs[0].Neighbors, []Neighbor{nb}) {
		t.Errorf("router 1: %+v", specs[0])
	}
	if !reflect.DeepEqual(specs[0].Routes, want) {
		t.Errorf("router 1 routes:\n got %v\nwant %v", specs[0].Routes, want)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "10.60.0.1 of service shop/outside not announced: outside the bgp address pools") {
		t.Errorf("notes: %q", notes)
	}
	// The pseudo-label io.kubernetes.service.name selects; no pools: no limit.
	want2 := []Route{{netip.MustParsePrefix("10.50.0.5/32"), v4, "service shop/unlabelled"}}
	if specs[1].RouterID != netip.MustParseAddr("192.0.2.9") || !reflect.DeepEqual(specs[1].Routes, want2) {
		t.Errorf("router 2: %+v", specs[1])
	}

	// A node without IPv6: the IPv6 prefixes are left out, and said so.
	c.src.NodeIPs = func() (netip.Addr, netip.Addr) { return v4, netip.Addr{} }
	specs, notes = c.desired([]VirtualRouter{{LocalASN: 65001, ExportPodCIDR: true}})
	if len(specs[0].Routes) != 1 || len(notes) != 1 || !strings.Contains(notes[0], "fd00:10:200:1::/64 not announced: the node has no address of its family") {
		t.Errorf("without IPv6: %+v %q", specs[0].Routes, notes)
	}
}

func TestControllerFileReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bgp.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("peers: [{peer-address: 10.0.0.1, peer-asn: 65000, my-asn: 65001}]")
	log := slog.New(slog.DiscardHandler)
	if _, err := NewController(Options{ConfigFile: path, ControlPlane: true}, Sources{}, log, nil); err == nil {
		t.Error("ConfigFile and ControlPlane together: want an error")
	}
	c, err := NewController(Options{ConfigFile: path}, Sources{}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	vrs, _ := c.routers()
	if len(vrs) != 1 || vrs[0].Neighbors[0].ASN != 65000 {
		t.Fatalf("routers: %+v", vrs)
	}
	// A bad new version is reported and the last good one stays.
	write("peers: [{peer-address: 10.0.0.1, peer-asn: 0, my-asn: 65001}]")
	bump(t, path)
	c.reloadFile()
	if h := c.Health(); h.State != api.StateDegraded || !strings.Contains(h.Message, "peers[0].peer-asn: invalid value \"0\"") {
		t.Errorf("health after a bad file: %+v", h)
	}
	if vrs, _ := c.routers(); vrs[0].Neighbors[0].ASN != 65000 {
		t.Errorf("the last good configuration was dropped: %+v", vrs)
	}
	// A good one replaces it.
	write("peers: [{peer-address: 10.0.0.1, peer-asn: 65100, my-asn: 65001}]")
	bump(t, path)
	c.reloadFile()
	if vrs, _ := c.routers(); vrs[0].Neighbors[0].ASN != 65100 {
		t.Errorf("not reloaded: %+v", vrs)
	}
	if h := c.Health(); h.State != api.StateOK {
		t.Errorf("health after a good file: %+v", h)
	}
	// Bad at start: NewController names the field.
	write("peers: [{peer-address: 10.0.0.1, peer-asn: 65000, my-asn: 65001, hold-time: 1s}]")
	if _, err := NewController(Options{ConfigFile: path}, Sources{}, log, nil); err == nil || !strings.Contains(err.Error(), path+": peers[0].hold-time: invalid value \"1s\"") {
		t.Errorf("bad file at start: %v", err)
	}
}

// bump moves a file's modification time so that a rewrite within the
// same clock tick is seen.
func bump(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	mt := fi.ModTime().Add(time.Second)
	if err := os.Chtimes(path, mt, mt); err != nil {
		t.Fatal(err)
	}
}
