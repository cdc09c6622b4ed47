package clusterstate_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/controlplane/cptest"

	"github.com/lumen-net/lumen/internal/kinds"

	"k8s.io/client-go/rest"

	"github.com/lumen-net/lumen/internal/bgp"
	"github.com/lumen-net/lumen/internal/clusterstate"
	"github.com/lumen-net/lumen/internal/hubble/peer"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/lbsync"
	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/policysync"
	"github.com/lumen-net/lumen/internal/resource"
)

// watchCounter tracks the watches open through it, by URL path (one
// path per resource kind): how many are open, the most ever open at once,
// and their field selectors. A watch the server refused (a CRD just
// created, not served yet) was never held and is not counted.
type watchCounter struct {
	next http.RoundTripper
	mu   sync.Mutex
	open map[string]int
	peak map[string]int
	sel  map[string][]string
}

func (w *watchCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	q := r.URL.Query()
	if q.Get("watch") != "true" && q.Get("watch") != "1" {
		return w.next.RoundTrip(r)
	}
	resp, err := w.next.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	path := r.URL.Path
	w.mu.Lock()
	w.open[path]++
	w.peak[path] = max(w.peak[path], w.open[path])
	w.sel[path] = append(w.sel[path], q.Get("fieldSelector"))
	w.mu.Unlock()
	resp.Body = &watchBody{ReadCloser: resp.Body, done: func() {
		w.mu.Lock()
		w.open[path]--
		w.mu.Unlock()
	}}
	return resp, nil
}

type watchBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *watchBody) Close() error {
	b.once.Do(b.done)
	return b.ReadCloser.Close()
}

// In Kubernetes mode an agent holds one watch per resource kind, however
// many of its subsystems read that kind, and watches Pods with its node's
// field selector. This builds the agent's state layer as the agent does
// (its tables for every kind its controllers read), plus a second
// ListAndWatch of those prefixes (what the identity allocator's Run and the
// pod CIDR wait still do directly: a second reader must share the informer)
// and the store's own identity lookups, then counts the watches open on
// the API server.
func TestOneWatchPerKind(t *testing.T) {
	cp := cptest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	wc := &watchCounter{open: map[string]int{}, peak: map[string]int{}, sel: map[string][]string{}}
	cfg := rest.CopyConfig(cp.RESTConfig())
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { wc.next = rt; return wc })
	c, err := k8s.NewClientsFor(cfg)
	if err != nil {
		t.Fatal(err)
	}

	const nodeName = "watch-count-node"
	store := k8s.NewStore(ctx, c, k8s.StoreOptions{NodeName: nodeName, NodeIP: "10.77.0.1", Kinds: kinds.Registry()})
	kinds := slices.Concat(policysync.KindNames, lbsync.Kinds, []string{bgp.PolicyKind})
	tables := clusterstate.New(store, kinds, nil)
	go tables.Run(ctx)
	if err := tables.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	// Second readers of the same prefixes.
	prefixes := []string{model.NodesPrefix, model.EndpointsPrefix, identity.IDsPrefix, peer.StorePrefix,
		resource.KindPrefix("Pod"), resource.KindPrefix("Namespace")}
	for _, k := range policysync.KindNames {
		prefixes = append(prefixes, resource.KindPrefix(k))
	}
	for _, p := range prefixes {
		if u, ok := <-store.ListAndWatch(ctx, p); !ok || !u.Resync {
			t.Fatalf("ListAndWatch(%s): no listing", p)
		}
	}
	if _, _, err := store.Get(ctx, identity.LabelsPrefix+"k8s:app=x"); err != nil {
		t.Fatal(err)
	}

	wc.mu.Lock()
	defer wc.mu.Unlock()
	want := map[string]bool{
		"/api/v1/pods": true, "/api/v1/namespaces": true, "/api/v1/services": true,
		"/apis/discovery.k8s.io/v1/endpointslices": true, "/apis/networking.k8s.io/v1/networkpolicies": true,
		"/apis/cilium.io/v2/ciliumnodes": true, "/apis/cilium.io/v2/ciliumendpoints": true,
		"/apis/cilium.io/v2/ciliumidentities": true, "/apis/cilium.io/v2/ciliumnetworkpolicies": true,
		"/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies": true, "/apis/cilium.io/v2alpha1/ciliumbgppeeringpolicies": true,
	}
	for path, n := range wc.peak {
		if n != 1 || wc.open[path] != 1 {
			t.Errorf("watches of %s: %d open, at most %d at once; want 1", path, wc.open[path], n)
		}
		if !want[path] {
			t.Errorf("unexpected watch of %s", path)
		}
		delete(want, path)
	}
	for path := range want {
		t.Errorf("no watch of %s", path)
	}
	if sel := slices.Compact(wc.sel["/api/v1/pods"]); len(sel) != 1 || sel[0] != "spec.nodeName="+nodeName {
		t.Errorf("Pods watched with field selectors %q, want only spec.nodeName=%s", sel, nodeName)
	}
	t.Logf("watches open: %v", wc.open)
}
