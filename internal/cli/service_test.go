package cli

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kinds"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/kvstore/kvstoretest"
	lb "github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/resource"
)

const lbService = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80}]
status:
  loadBalancer:
    ingress: [{ip: 192.0.2.30}]
`

// TestApplyServices: apply allocates through the index, keeps a status
// set before when the manifest has none, and delete releases what the
// service held.
func TestApplyServices(t *testing.T) {
	ep := kvstoretest.Start(t)
	t.Setenv("LUMEN_KVSTORE", ep)
	ctx := context.Background()
	c, err := kvstore.Dial(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	index := func() map[string]string {
		kvs, _, err := c.List(ctx, lb.AllocationsPrefix)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, kv := range kvs {
			owner, _, _ := strings.Cut(string(kv.Value), " ")
			out[strings.TrimPrefix(kv.Key, lb.AllocationsPrefix)] = owner
		}
		return out
	}
	stored := func() *lb.Service {
		kind, _ := kinds.Registry().ResolveKind("Service")
		obj, err := resource.Get(ctx, c, kind, "shop", "web")
		if err != nil {
			t.Fatal(err)
		}
		svc, err := lb.ServiceOf(obj)
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}

	if out, _, err := runLumen(t, lbService, "apply", "-f", "-"); err != nil || out != "service/web created\n" {
		t.Fatalf("apply: %q %v", out, err)
	}
	svc := stored()
	if len(svc.Spec.ClusterIPs) != 1 || svc.Spec.Ports[0].NodePort == 0 {
		t.Fatalf("not allocated: %+v", svc.Spec)
	}
	if got := svc.LoadBalancerAddrs(); len(got) != 1 || got[0].String() != "192.0.2.30" {
		t.Errorf("status not stored: %v", got)
	}
	idx := index()
	if idx["clusterips/"+svc.Spec.ClusterIP] != "shop/web" || idx["nodeports/"+itoa(svc.Spec.Ports[0].NodePort)] != "shop/web" || idx["indexed"] == "" {
		t.Errorf("index = %v", idx)
	}
	out, _, err := runLumen(t, "", "get", "svc", "-n", "shop")
	if err != nil || !strings.Contains(out, "192.0.2.30") {
		t.Errorf("get: %q %v", out, err)
	}

	// Without status, the stored one stays; the allocation too.
	noStatus, _, _ := strings.Cut(lbService, "status:")
	if out, _, err := runLumen(t, noStatus, "apply", "-f", "-"); err != nil || out != "service/web unchanged\n" {
		t.Errorf("re-apply without status: %q %v", out, err)
	}
	if again := stored(); again.Spec.ClusterIP != svc.Spec.ClusterIP || len(again.LoadBalancerAddrs()) != 1 {
		t.Errorf("re-apply changed the service: %+v %+v", again.Spec, again.Status)
	}

	// Another service asking for the same cluster IP is refused, naming it.
	clash := "apiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: shop}\nspec: {clusterIP: " + svc.Spec.ClusterIP + ", ports: [{port: 80}]}\n"
	if _, _, err := runLumen(t, clash, "apply", "-f", "-"); err == nil || !strings.Contains(err.Error(), "provided IP is already allocated (to service shop/web)") {
		t.Errorf("clash: %v", err)
	}
	if got := index(); len(got) != 3 {
		t.Errorf("the refused apply left entries: %v", got)
	}

	if _, _, err := runLumen(t, "", "delete", "svc", "web", "-n", "shop"); err != nil {
		t.Fatal(err)
	}
	if got := index(); len(got) != 1 {
		t.Errorf("after delete the index holds %v, want only the marker", got)
	}
	// The address is free again.
	if out, _, err := runLumen(t, clash, "apply", "-f", "-"); err != nil || out != "service/other created\n" {
		t.Errorf("apply after delete: %q %v", out, err)
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }

func TestBackendsColumn(t *testing.T) {
	for _, c := range []struct {
		s    api.Service
		want string
	}{
		{api.Service{Backends: []api.ServiceBackend{{Address: "10.0.0.1:80", State: "active", Zone: "a", Node: "n1"}}}, "10.0.0.1:80 (active, zone a, node n1)"},
		{api.Service{NoBackends: "no endpoints", NewConnections: "drop"}, "NO BACKEND: no endpoints, new connections dropped"},
		{api.Service{NoBackends: "no endpoints", NewConnections: "reject"}, "NO BACKEND: no endpoints, new connections rejected"},
		{api.Service{NoBackends: "no local endpoints", NewConnections: "drop", Backends: []api.ServiceBackend{{Address: "10.0.0.2:80", State: "terminating"}}},
			"NO BACKEND: no local endpoints, new connections dropped; 10.0.0.2:80 (terminating)"},
	} {
		if got := backendsColumn(c.s); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}
