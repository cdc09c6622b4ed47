package podidentity

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"testing"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/kvstore/kvstoretest"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/state"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestResolveFromStore: a pod's labels come from its Pod in the store (not
// the request) and its namespace's labels join the label set.
func TestResolveFromStore(t *testing.T) {
	ctx := context.Background()
	store := kvstoretest.Client(t)
	put := func(o resource.Object) {
		t.Helper()
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Put(ctx, resource.Key(o.Kind, o.Metadata.Namespace, o.Metadata.Name), b); err != nil {
			t.Fatal(err)
		}
	}
	podLabels := map[string]string{"app": "web"}
	nsLabels := map[string]string{resource.MetadataNameLabel: "shop", "team": "t"}
	spec, _ := json.Marshal(resource.PodSpec{NodeName: "n1", Containers: []resource.Container{{Name: "c", Image: "i"}}})
	put(resource.Object{APIVersion: "v1", Kind: "Pod", Metadata: resource.Metadata{Name: "a", Namespace: "shop", Labels: podLabels}, Spec: spec})
	put(resource.Object{APIVersion: "v1", Kind: "Namespace", Metadata: resource.Metadata{Name: "shop", Labels: nsLabels}})

	r := New(store, state.NewTable(identity.EntriesSpec(), quiet), quiet)
	id, labels, err := r.Resolve(ctx, &api.EndpointRequest{PodName: "a", Namespace: "shop", Labels: map[string]string{"app": "stale"}})
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(labels, podLabels) {
		t.Errorf("labels %v, want the Pod's %v", labels, podLabels)
	}
	got, ok := r.Allocator().Lookup(identity.ID(id))
	if want := identity.PodLabels(podLabels, "shop", nsLabels); !ok || got.String() != want.String() {
		t.Errorf("identity %d has labels %s (known %v), want %s", id, got, ok, want)
	}
	if h := r.Health(); h.Name != "identity" || h.State != api.StateOK {
		t.Errorf("health %+v", h)
	}
}

// TestResolveWithoutStore: labels from the request, namespace "default"
// when none is given; Run returns once ctx ends.
func TestResolveWithoutStore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := New(nil, state.NewTable(identity.EntriesSpec(), quiet), quiet)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	req := map[string]string{"app": "db"}
	id, labels, err := r.Resolve(ctx, &api.EndpointRequest{PodName: "b", Labels: req})
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(labels, req) {
		t.Errorf("labels %v, want the request's %v", labels, req)
	}
	got, _ := r.Allocator().Lookup(identity.ID(id))
	if want := identity.PodLabels(req, "default", nil); got.String() != want.String() {
		t.Errorf("identity labels %s, want %s", got, want)
	}
	if h := r.Health(); h.State != api.StateOK || h.Message != "local allocation (no kvstore)" {
		t.Errorf("health %+v", h)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
