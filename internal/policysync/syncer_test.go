package policysync

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/resource"
)

// A stored policy with parts Lumen cannot enforce is kept (failing closed
// on those parts), counted and reported; fixed, it is no longer.
func TestPutFailsClosedAndReports(t *testing.T) {
	s := New(nil, nil, nil, nil, Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	key := resource.Key("CiliumNetworkPolicy", "shop", "rule1")
	l7 := `{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy","metadata":{"name":"rule1","namespace":"shop"},
"spec":{"endpointSelector":{"matchLabels":{"app":"service"}},"ingress":[{"fromEndpoints":[{"matchLabels":{"env":"prod"}}]},
{"toPorts":[{"ports":[{"port":"80","protocol":"TCP"}],"rules":{"http":[{"method":"GET","path":"/public"}]}}]}]}}`
	s.apply("CiliumNetworkPolicy", kvstore.Update{Resync: true, KVs: []kvstore.KV{{Key: key, Value: []byte(l7)}}})
	if s.policies[key] == nil {
		t.Fatal("the policy with an L7 rule was skipped: what it selects would run unprotected")
	}
	if why := s.NotEnforced()[key]; !strings.Contains(why, "spec.ingress[1].toPorts[0].rules") {
		t.Errorf("NotEnforced %q does not name the field", why)
	}
	if s.ImportErrors.Load() != 1 {
		t.Errorf("import errors %d, want 1", s.ImportErrors.Load())
	}
	if h := s.Health(); h.State != api.StateDegraded || !strings.Contains(h.Message, "1 not fully enforced") || !strings.Contains(h.Message, "CiliumNetworkPolicy/shop/rule1") {
		t.Errorf("health %+v", h)
	}

	fixed := strings.Replace(l7, `,"rules":{"http":[{"method":"GET","path":"/public"}]}`, "", 1)
	s.apply("CiliumNetworkPolicy", kvstore.Update{Events: []kvstore.Event{{Type: kvstore.EventPut, KV: kvstore.KV{Key: key, Value: []byte(fixed)}}}})
	if len(s.NotEnforced()) != 0 || s.policies[key] == nil || s.Health().State != api.StateOK {
		t.Errorf("fixed policy: not enforced %v, health %+v", s.NotEnforced(), s.Health())
	}

	// Not a policy at all: nothing to enforce, still reported.
	s.apply("CiliumNetworkPolicy", kvstore.Update{Events: []kvstore.Event{{Type: kvstore.EventPut, KV: kvstore.KV{Key: key, Value: []byte(`{"kind":"Pod"}`)}}}})
	if s.policies[key] != nil || len(s.NotEnforced()) != 1 {
		t.Errorf("garbage: policies %v, not enforced %v", s.policies, s.NotEnforced())
	}
	s.apply("CiliumNetworkPolicy", kvstore.Update{Events: []kvstore.Event{{Type: kvstore.EventDelete, KV: kvstore.KV{Key: key}}}})
	if len(s.NotEnforced()) != 0 {
		t.Errorf("deleted policy still reported: %v", s.NotEnforced())
	}
}
