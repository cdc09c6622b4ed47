package node

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/kvstore/kvstoretest"
	"github.com/lumen-net/lumen/internal/state"
)

// memIPCache keeps ipcache entries in memory (the manager's output is not
// what these tests look at).
type memIPCache struct {
	mu sync.Mutex
	m  map[netip.Prefix]datapath.IPCacheEntry
}

func (c *memIPCache) UpsertIPCache(e datapath.IPCacheEntry) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[e.Prefix] = e
	return nil
}

func (c *memIPCache) DeleteIPCache(p netip.Prefix) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, p)
	return nil
}

func (c *memIPCache) ListIPCache() ([]datapath.IPCacheEntry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []datapath.IPCacheEntry
	for _, e := range c.m {
		out = append(out, e)
	}
	return out, nil
}

var localEndpoints = []api.Endpoint{
	{ContainerID: "c1", PodName: "cart", Namespace: "shop", IPv4: "10.200.1.10", Identity: 256, Labels: map[string]string{"app": "cart"}},
	{ContainerID: "c2", PodName: "db", Namespace: "shop", IPv4: "10.200.1.11", Identity: 257},
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRepublishLocalEndpoints: local endpoints the store lacks (never
// announced: restored while it was down; or deleted, the store wiped) are
// announced at every listing and when one of them is deleted.
func TestRepublishLocalEndpoints(t *testing.T) {
	c := kvstoretest.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ts := state.New(c, nil)
	tables := Tables{Nodes: state.Register(ts, NodesSpec()), Endpoints: state.Register(ts, EndpointsSpec())}
	go ts.Run(ctx)
	m := New(Node{Name: "n1", IPv4: "10.99.0.1"}, c, tables, &memIPCache{m: map[netip.Prefix]datapath.IPCacheEntry{}}, nil, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.SetLocalEndpoints(func() []api.Endpoint { return localEndpoints })
	go m.Run(ctx)

	announced := func(cid string, want uint32) bool {
		kv, ok, err := c.Get(ctx, EndpointsPrefix+"n1/"+cid)
		if err != nil || !ok {
			return false
		}
		var ep Endpoint
		return json.Unmarshal(kv.Value, &ep) == nil && ep.Identity == want && ep.Node == "n1"
	}
	waitFor(t, "endpoints announced at the first listing", func() bool { return announced("c1", 256) && announced("c2", 257) })
	waitFor(t, "health ok", func() bool { return m.Health().State == api.StateOK })

	if _, err := c.Delete(ctx, EndpointsPrefix+"n1/c1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a deleted announcement of a live endpoint back", func() bool { return announced("c1", 256) })
	// A wrong announcement (another identity) is not what the node holds:
	// the next listing corrects it.
	b, _ := json.Marshal(Endpoint{Node: "n1", ContainerID: "c2", IPv4: "10.200.1.11", Identity: 999})
	if _, err := c.Put(ctx, EndpointsPrefix+"n1/c2", b); err != nil {
		t.Fatal(err)
	}
	// A listing holds the wrong announcement: wait until the table does.
	waitFor(t, "the wrong announcement in the table", func() bool {
		ep, ok := tables.Endpoints.Get(EndpointsPrefix + "n1/c2")
		return ok && ep.Identity == 999
	})
	m.republish(ctx) // what a listing does
	waitFor(t, "a wrong announcement corrected", func() bool { return announced("c2", 257) })
}

// TestHealthWithStoreDown: endpoints not announced because the store never
// answered make the cluster subsystem degraded, saying so.
func TestHealthWithStoreDown(t *testing.T) {
	c, err := kvstore.New("unix://" + filepath.Join(t.TempDir(), "nothing.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Timeout = time.Second
	tables := Tables{Nodes: state.NewTable(NodesSpec(), nil), Endpoints: state.NewTable(EndpointsSpec(), nil)}
	m := New(Node{Name: "n1"}, c, tables, &memIPCache{m: map[netip.Prefix]datapath.IPCacheEntry{}}, nil, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.SetLocalEndpoints(func() []api.Endpoint { return localEndpoints })
	h := m.Health()
	if h.State != api.StateDegraded || !strings.Contains(h.Message, "2 local endpoints not announced yet") {
		t.Errorf("health before any listing: %+v", h)
	}
	if err := m.Publish(context.Background(), localEndpoints[0]); err == nil {
		t.Fatal("publishing to a store that is not there succeeded")
	}
	tables.Endpoints.Apply(kvstore.Update{Resync: true}) // as if listed once before the store went away
	h = m.Health()
	if h.State != api.StateDegraded || !strings.Contains(h.Message, "1 local endpoints not announced: c1: kvstore unix://") {
		t.Errorf("health after a failed announcement: %+v", h)
	}
}

// TestHealthForgetsDeletedEndpoints: a failed announcement of an endpoint
// deleted since (the pod's namespace terminating, a republish racing the
// deletion) does not keep the subsystem degraded: in Kubernetes mode that
// made the agent unready for good.
func TestHealthForgetsDeletedEndpoints(t *testing.T) {
	c, err := kvstore.New("unix://" + filepath.Join(t.TempDir(), "nothing.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Timeout = time.Second
	tables := Tables{Nodes: state.NewTable(NodesSpec(), nil), Endpoints: state.NewTable(EndpointsSpec(), nil)}
	m := New(Node{Name: "n1"}, c, tables, &memIPCache{m: map[netip.Prefix]datapath.IPCacheEntry{}}, nil, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	local := localEndpoints
	m.SetLocalEndpoints(func() []api.Endpoint { return local })
	tables.Endpoints.Apply(kvstore.Update{Resync: true})
	if err := m.Publish(context.Background(), localEndpoints[0]); err == nil {
		t.Fatal("publishing to a store that is not there succeeded")
	}
	if h := m.Health(); !strings.Contains(h.Message, "local endpoints not announced: c1") {
		t.Fatalf("health with c1 unannounced: %+v", h)
	}
	local = localEndpoints[1:] // c1 deleted
	if h := m.Health(); strings.Contains(h.Message, "not announced") {
		t.Errorf("health after c1 was deleted still names it: %+v", h)
	}
}
