package policysync

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/clusterstate"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/ipproto"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/kvstore/kvstoretest"
	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/resource"
)

// memMap is the policy map as the kernel would hold it, by endpoint id.
type memMap struct {
	mu sync.Mutex
	m  map[uint16][]datapath.PolicyEntry
}

func (p *memMap) Sync(id uint16, entries []datapath.PolicyEntry) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(entries) == 0 {
		delete(p.m, id)
		return nil
	}
	p.m[id] = slices.Clone(entries)
	return nil
}

func (p *memMap) Delete(id uint16) error { return p.Sync(id, nil) }

func (p *memMap) Endpoints() []uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []uint16
	for id := range p.m {
		out = append(out, id)
	}
	return out
}

func (p *memMap) get(id uint16) []datapath.PolicyEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.m[id])
}

type noIPCache struct{}

func (noIPCache) SetExtraIPCache(map[netip.Prefix]uint32)     {}
func (noIPCache) SetIPCacheOverrides(map[netip.Prefix]uint32) {}

// countingStore counts the Lists of the store: controllers read tables.
type countingStore struct {
	kvstore.Store
	lists atomic.Int64
}

func (c *countingStore) List(ctx context.Context, prefix string) ([]kvstore.KV, int64, error) {
	c.lists.Add(1)
	return c.Store.List(ctx, prefix)
}

// fixture is a syncer on tables fed by a real (embedded) etcd.
type fixture struct {
	t     *testing.T
	ctx   context.Context
	store *countingStore
	alloc *identity.Allocator
	pm    *memMap
	s     *Syncer
}

func newFixture(t *testing.T, pm *memMap, before func(*Syncer)) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	store := &countingStore{Store: kvstoretest.Client(t)}
	if pm == nil {
		pm = &memMap{m: map[uint16][]datapath.PolicyEntry{}}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tables := clusterstate.New(store, KindNames, log)
	alloc := identity.NewAllocator(nil)
	s := New(tables, alloc, pm, noIPCache{}, Options{}, log)
	if before != nil {
		before(s)
	}
	go tables.Run(ctx)
	go s.Run(ctx)
	return &fixture{t: t, ctx: ctx, store: store, alloc: alloc, pm: pm, s: s}
}

func (f *fixture) put(key string, v any) {
	f.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.store.Put(f.ctx, key, b); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) putRaw(key, v string) {
	f.t.Helper()
	if _, err := f.store.Put(f.ctx, key, []byte(v)); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) del(key string) {
	f.t.Helper()
	if _, err := f.store.Delete(f.ctx, key); err != nil {
		f.t.Fatal(err)
	}
}

// identity allocates the identity of a pod with labels in namespace shop.
func (f *fixture) identity(labels map[string]string) uint32 {
	f.t.Helper()
	id, err := f.alloc.Allocate(f.ctx, identity.PodLabels(labels, "shop", nil))
	if err != nil {
		f.t.Fatal(err)
	}
	return uint32(id)
}

func (f *fixture) realize(ep api.Endpoint) api.EndpointPolicy {
	f.t.Helper()
	pol, err := f.s.Realize(ep)(f.ctx)
	if err != nil {
		f.t.Fatalf("realizing endpoint %d: %v", ep.ID, err)
	}
	return pol
}

// until waits for the syncer's results to satisfy cond (nil: done), each
// time they change; the test fails when the context ends first.
func (f *fixture) until(cond func() error) {
	f.t.Helper()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-f.s.Changed():
		case <-time.After(50 * time.Millisecond): // map-only changes signal nothing
		case <-f.ctx.Done():
			f.t.Fatalf("never: %v", err)
		}
	}
}

func pod(name string, labels map[string]string, ports ...resource.ContainerPort) map[string]any {
	return map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": "shop", "labels": labels},
		"spec":     map[string]any{"nodeName": "n1", "containers": []any{map[string]any{"name": "c", "image": "x", "ports": ports}}},
	}
}

func cnp(name, spec string) string {
	return fmt.Sprintf(`{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy","metadata":{"name":%q,"namespace":"shop"},"spec":%s}`, name, spec)
}

func hasEntry(entries []datapath.PolicyEntry, id uint32, egress bool, port uint16) bool {
	return slices.ContainsFunc(entries, func(e datapath.PolicyEntry) bool {
		return e.Identity == id && e.Egress == egress && e.Port == port && !e.Deny
	})
}

// TestPolicyAddedAndRemoved: a policy selecting an endpoint fills its map
// and turns enforcement on; removed, the map empties and enforcement goes.
// No Pod is listed from the store for any of it.
func TestPolicyAddedAndRemoved(t *testing.T) {
	f := newFixture(t, nil, nil)
	web, client := f.identity(map[string]string{"app": "web"}), f.identity(map[string]string{"app": "client"})
	ep := api.Endpoint{ID: 7, ContainerID: "c7", Namespace: "shop", PodName: "web", Identity: web}
	if pol := f.realize(ep); pol.IngressEnforced || len(f.pm.get(7)) != 0 {
		t.Fatalf("no policy: %+v, entries %v", pol, f.pm.get(7))
	}
	lists := f.store.lists.Load()

	key := resource.Key("CiliumNetworkPolicy", "shop", "allow-client")
	f.putRaw(key, cnp("allow-client", `{"endpointSelector":{"matchLabels":{"app":"web"}},
"ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}],"toPorts":[{"ports":[{"port":"80","protocol":"TCP"}]}]}]}`))
	f.until(func() error {
		pol, id, ok := f.s.Realized("c7")
		if !ok || id != web || !pol.IngressEnforced || !hasEntry(f.pm.get(7), client, false, 80) {
			return fmt.Errorf("policy %+v (identity %d), entries %+v", pol, id, f.pm.get(7))
		}
		return nil
	})

	f.del(key)
	f.until(func() error {
		pol, _, _ := f.s.Realized("c7")
		if pol.IngressEnforced || len(f.pm.get(7)) != 0 {
			return fmt.Errorf("policy %+v, entries %+v after the policy went", pol, f.pm.get(7))
		}
		return nil
	})
	if n := f.store.lists.Load() - lists; n != 0 {
		t.Errorf("%d store LISTs for two policy changes, want 0 (tables are read)", n)
	}

	// Forgotten: its entries go.
	f.putRaw(key, cnp("allow-client", `{"endpointSelector":{"matchLabels":{"app":"web"}},"ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}]}]}`))
	f.until(func() error {
		if !hasEntry(f.pm.get(7), client, false, 0) {
			return fmt.Errorf("entries %+v", f.pm.get(7))
		}
		return nil
	})
	f.s.Forget("c7")
	f.until(func() error {
		if _, _, ok := f.s.Realized("c7"); ok || len(f.pm.get(7)) != 0 {
			return fmt.Errorf("forgotten endpoint: entries %+v", f.pm.get(7))
		}
		return nil
	})
}

// TestIdentityChange: realized again at another identity, the endpoint's
// map holds the policy of that identity only.
func TestIdentityChange(t *testing.T) {
	f := newFixture(t, nil, nil)
	web, db, client := f.identity(map[string]string{"app": "web"}), f.identity(map[string]string{"app": "db"}), f.identity(map[string]string{"app": "client"})
	f.putRaw(resource.Key("CiliumNetworkPolicy", "shop", "web"), cnp("web", `{"endpointSelector":{"matchLabels":{"app":"web"}},
"ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}],"toPorts":[{"ports":[{"port":"80","protocol":"TCP"}]}]}]}`))
	f.putRaw(resource.Key("CiliumNetworkPolicy", "shop", "db"), cnp("db", `{"endpointSelector":{"matchLabels":{"app":"db"}},
"ingress":[{"fromEndpoints":[{"matchLabels":{"app":"web"}}],"toPorts":[{"ports":[{"port":"5432","protocol":"TCP"}]}]}]}`))
	ep := api.Endpoint{ID: 3, ContainerID: "c3", Namespace: "shop", PodName: "p", Identity: web}
	f.until(func() error {
		if pol := f.realize(ep); !pol.IngressEnforced || !hasEntry(f.pm.get(3), client, false, 80) {
			return fmt.Errorf("as web: %+v, entries %+v", pol, f.pm.get(3))
		}
		return nil
	})
	ep.Identity = db
	f.until(func() error {
		pol := f.realize(ep)
		entries := f.pm.get(3)
		if !pol.IngressEnforced || !hasEntry(entries, web, false, 5432) || hasEntry(entries, client, false, 80) {
			return fmt.Errorf("as db: %+v, entries %+v", pol, entries)
		}
		return nil
	})
	if _, id, _ := f.s.Realized("c3"); id != db {
		t.Errorf("realized for identity %d, want %d", id, db)
	}
}

// TestNamedPorts: an ingress named port resolves on the endpoint's own
// pod, an egress one on the destination pods (Pods table, named-port
// index), and both follow the pods' changes.
func TestNamedPorts(t *testing.T) {
	f := newFixture(t, nil, nil)
	web, db := f.identity(map[string]string{"app": "web"}), f.identity(map[string]string{"app": "db"})
	client := f.identity(map[string]string{"app": "client"})
	f.put(resource.Key("Pod", "shop", "web"), pod("web", map[string]string{"app": "web"}, resource.ContainerPort{Name: "http", ContainerPort: 8080}))
	f.put(resource.Key("Pod", "shop", "db"), pod("db", map[string]string{"app": "db"}, resource.ContainerPort{Name: "pg", ContainerPort: 5432}))
	f.put(model.EndpointsPrefix+"n2/cdb", model.Endpoint{Node: "n2", ContainerID: "cdb", Namespace: "shop", PodName: "db", IPv4: "10.0.2.5", Identity: db})
	f.putRaw(resource.Key("CiliumNetworkPolicy", "shop", "web"), cnp("web", `{"endpointSelector":{"matchLabels":{"app":"web"}},
"ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}],"toPorts":[{"ports":[{"port":"http","protocol":"TCP"}]}]}],
"egress":[{"toEndpoints":[{"matchLabels":{"app":"db"}}],"toPorts":[{"ports":[{"port":"pg","protocol":"TCP"}]}]}]}`))
	lists := f.store.lists.Load()
	f.realize(api.Endpoint{ID: 4, ContainerID: "c4", Namespace: "shop", PodName: "web", Identity: web})
	f.until(func() error {
		e := f.pm.get(4)
		if !hasEntry(e, client, false, 8080) || !hasEntry(e, db, true, 5432) {
			return fmt.Errorf("entries %+v", e)
		}
		return nil
	})
	// The destination's port moves: the egress entry follows.
	f.put(resource.Key("Pod", "shop", "db"), pod("db", map[string]string{"app": "db"}, resource.ContainerPort{Name: "pg", ContainerPort: 6432}))
	f.until(func() error {
		e := f.pm.get(4)
		if !hasEntry(e, db, true, 6432) || hasEntry(e, db, true, 5432) {
			return fmt.Errorf("entries %+v after the port moved", e)
		}
		return nil
	})
	if n := f.store.lists.Load() - lists; n != 0 {
		t.Errorf("%d store LISTs resolving named ports, want 0", n)
	}
}

// TestRemoteNamedPorts: an egress named port resolves on a destination on
// another node whose Pod this node does not hold (Kubernetes mode watches
// this node's Pods only) from the named ports its endpoint announces, and
// follows the announcement.
func TestRemoteNamedPorts(t *testing.T) {
	f := newFixture(t, nil, nil)
	web, db := f.identity(map[string]string{"app": "web"}), f.identity(map[string]string{"app": "db"})
	f.put(resource.Key("Pod", "shop", "web"), pod("web", map[string]string{"app": "web"}))
	remote := model.Endpoint{Node: "n2", ContainerID: "cdb", Namespace: "shop", PodName: "db", IPv4: "10.0.2.5", Identity: db,
		NamedPorts: []model.NamedPort{{Name: "pg", Port: 5432, Protocol: "TCP"}, {Name: "dns", Port: 53, Protocol: "UDP"}}}
	f.put(model.EndpointsPrefix+"n2/cdb", remote)
	f.putRaw(resource.Key("CiliumNetworkPolicy", "shop", "web"), cnp("web", `{"endpointSelector":{"matchLabels":{"app":"web"}},
"egress":[{"toEndpoints":[{"matchLabels":{"app":"db"}}],"toPorts":[{"ports":[{"port":"pg","protocol":"TCP"},{"port":"dns","protocol":"UDP"}]}]}]}`))
	f.realize(api.Endpoint{ID: 5, ContainerID: "c5", Namespace: "shop", PodName: "web", Identity: web})
	f.until(func() error {
		e := f.pm.get(5)
		udp := slices.ContainsFunc(e, func(x datapath.PolicyEntry) bool {
			return x.Identity == db && x.Egress && x.Port == 53 && x.Proto == ipproto.UDP
		})
		if !hasEntry(e, db, true, 5432) || !udp {
			return fmt.Errorf("entries %+v", e)
		}
		return nil
	})
	remote.NamedPorts = []model.NamedPort{{Name: "pg", Port: 6432, Protocol: "TCP"}}
	f.put(model.EndpointsPrefix+"n2/cdb", remote)
	f.until(func() error {
		e := f.pm.get(5)
		if !hasEntry(e, db, true, 6432) || hasEntry(e, db, true, 5432) || hasEntry(e, db, true, 53) {
			return fmt.Errorf("entries %+v after the announcement changed", e)
		}
		return nil
	})
}

// TestUnparsablePolicyFailsClosed: a policy with a part Lumen cannot
// enforce still selects its endpoints, which then deny what that part
// would have allowed, and the policy is reported.
func TestUnparsablePolicyFailsClosed(t *testing.T) {
	f := newFixture(t, nil, nil)
	web, client := f.identity(map[string]string{"app": "web"}), f.identity(map[string]string{"app": "client"})
	key := resource.Key("CiliumNetworkPolicy", "shop", "l7")
	f.putRaw(key, cnp("l7", `{"endpointSelector":{"matchLabels":{"app":"web"}},
"ingress":[{"fromEndpoints":[{"matchLabels":{"app":"client"}}],"toPorts":[{"ports":[{"port":"80","protocol":"TCP"}],"rules":{"http":[{"method":"GET","path":"/"}]}}]}]}`))
	f.realize(api.Endpoint{ID: 5, ContainerID: "c5", Namespace: "shop", PodName: "web", Identity: web})
	f.until(func() error {
		pol, _, _ := f.s.Realized("c5")
		if !pol.IngressEnforced {
			return fmt.Errorf("endpoint not enforced under a policy it cannot fully apply: %+v", pol)
		}
		if hasEntry(f.pm.get(5), client, false, 80) {
			return fmt.Errorf("the part that cannot be enforced allows: %+v", f.pm.get(5))
		}
		if why := f.s.NotEnforced()[key]; !strings.Contains(why, "rules") {
			return fmt.Errorf("not reported: %q", why)
		}
		return nil
	})
	if h := f.s.Health(); h.State != api.StateDegraded || !strings.Contains(h.Message, "not fully enforced") {
		t.Errorf("health %+v", h)
	}
}

// TestRestartAdoptsMap: what the previous agent wrote stays until the
// tables have synced; then endpoints asked for are rewritten and the
// entries of the others pruned.
func TestRestartAdoptsMap(t *testing.T) {
	pm := &memMap{m: map[uint16][]datapath.PolicyEntry{
		7: {{Identity: 1234, Port: 80, Proto: 6}},
		9: {{Identity: 1234, Port: 80, Proto: 6}}, // its pod went while the agent was down
	}}
	var queued func(context.Context) (api.EndpointPolicy, error)
	f := newFixture(t, pm, func(s *Syncer) {
		// Restored before the syncer runs, as the endpoint manager does.
		queued = s.Realize(api.Endpoint{ID: 7, ContainerID: "c7", Namespace: "shop", PodName: "web", Identity: uint32(identity.World)})
	})
	if _, err := queued(f.ctx); err != nil {
		t.Fatal(err)
	}
	f.until(func() error {
		if e := pm.get(9); len(e) != 0 {
			return fmt.Errorf("entries of a gone endpoint kept: %+v", e)
		}
		if e := pm.get(7); len(e) != 0 {
			return fmt.Errorf("entries of endpoint 7 not rewritten: %+v", e)
		}
		return nil
	})
}

// TestRealizeBoundedWait: before policies are known a request waits, and
// fails with a clear error when they do not come in time; it is then
// never served.
func TestRealizeBoundedWait(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pm := &memMap{m: map[uint16][]datapath.PolicyEntry{}}
	tables := clusterstate.New(&countingStore{Store: kvstoretest.Client(t)}, KindNames, log) // never run: never synced
	s := New(tables, identity.NewAllocator(nil), pm, noIPCache{}, Options{RealizeTimeout: 100 * time.Millisecond}, log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	_, err := s.Realize(api.Endpoint{ID: 2, ContainerID: "c2"})(ctx)
	if err == nil || !strings.Contains(err.Error(), "not synchronised") {
		t.Fatalf("Realize before sync: %v", err)
	}
	s.qmu.Lock()
	n := len(s.queue)
	s.qmu.Unlock()
	if n != 0 {
		t.Errorf("%d requests left queued after the caller gave up", n)
	}
}
