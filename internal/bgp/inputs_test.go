package bgp

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/state"
)

func objectTable(kind string) *state.Table[*resource.Object] {
	return state.NewTable(state.Spec[*resource.Object]{Name: kind, Prefix: resource.KindPrefix(kind),
		Decode: func(kv kvstore.KV) (*resource.Object, error) { return resource.Unmarshal(kv.Value) }}, nil)
}

func put(t *state.Table[*resource.Object], key, v string, resync bool) {
	kv := kvstore.KV{Key: key, Value: []byte(v)}
	if resync {
		t.Apply(kvstore.Update{Resync: true, KVs: []kvstore.KV{kv}})
		return
	}
	t.Apply(kvstore.Update{Events: []kvstore.Event{{Type: kvstore.EventPut, KV: kv}}})
}

// The controller decodes services and peering policies from its tables
// when they change; a service whose spec no longer decodes keeps its
// previous version, a bad policy is reported.
func TestControllerReadsTables(t *testing.T) {
	svcs, pols := objectTable("Service"), objectTable(PolicyKind)
	c, err := NewController(Options{ControlPlane: true}, Sources{Services: svcs, Policies: pols}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.ready() {
		t.Fatal("ready before the tables listed the store")
	}
	key := resource.Key("Service", "shop", "web")
	put(svcs, key, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"shop"},"spec":{"type":"LoadBalancer","loadBalancerIP":"10.50.0.1"}}`, true)
	put(pols, resource.Key(PolicyKind, "", "bad"), `{"apiVersion":"cilium.io/v2alpha1","kind":"`+PolicyKind+`","metadata":{"name":"bad"},"spec":{"virtualRouters":"nope"}}`, true)
	if !c.ready() {
		t.Fatal("not ready after both tables listed the store")
	}
	c.decodeInputs()
	if svc := c.services[key]; svc == nil || svc.Spec.LoadBalancerIP != "10.50.0.1" {
		t.Fatalf("service = %+v", svc)
	}
	if len(c.policyErrs) != 1 || len(c.policies) != 0 {
		t.Fatalf("policies %v, errors %v: want the bad policy reported", c.policies, c.policyErrs)
	}
	put(svcs, key, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"shop"},"spec":{"type":7}}`, false)
	c.decodeInputs()
	if svc := c.services[key]; svc == nil || svc.Spec.LoadBalancerIP != "10.50.0.1" {
		t.Fatalf("service after an update that does not decode = %+v, want the previous one", svc)
	}
	if h := c.Health(); h.State != api.StateDegraded || !strings.Contains(h.Message, "virtualRouters") {
		t.Fatalf("health does not report the bad policy: %+v", h)
	}
}
