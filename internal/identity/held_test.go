package identity

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/lumen-net/lumen/internal/kvstore"
)

// etcdAt runs an embedded etcd with its data in dataDir on endpoint ep; stop
// ends it. Stopping one and starting another with an empty data dir on the
// same endpoint is a store that restarted empty.
type etcdAt struct {
	cancel context.CancelFunc
	done   chan error
}

func startEtcdAt(t *testing.T, ep, dataDir string) *etcdAt {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	s := &etcdAt{cancel: cancel, done: make(chan error, 1)}
	go func() {
		s.done <- kvstore.Serve(ctx, kvstore.ServerConfig{DataDir: dataDir, ClientURL: ep, OnReady: func() { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-s.done:
		cancel()
		t.Fatalf("starting etcd: %v", err)
	}
	t.Cleanup(func() { s.stop(t) })
	return s
}

func (s *etcdAt) stop(t *testing.T) {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	if err := <-s.done; err != nil {
		t.Errorf("etcd: %v", err)
	}
}

// wipeableStore is an etcd that can be restarted empty on the same socket.
type wipeableStore struct {
	t    *testing.T
	dir  string
	ep   string
	cur  *etcdAt
	runs int
}

func newWipeableStore(t *testing.T) *wipeableStore {
	dir := t.TempDir()
	s := &wipeableStore{t: t, dir: dir, ep: "unix://" + filepath.Join(dir, "etcd.sock")}
	s.cur = startEtcdAt(t, s.ep, filepath.Join(dir, "data0"))
	return s
}

// restartEmpty stops the store and starts it again without its data.
func (s *wipeableStore) restartEmpty() {
	s.cur.stop(s.t)
	_ = os.Remove(filepath.Join(s.dir, "etcd.sock"))
	s.runs++
	s.cur = startEtcdAt(s.t, s.ep, filepath.Join(s.dir, fmt.Sprintf("data%d", s.runs)))
}

// endpointsHolding is a node's endpoints as InUse.Local sees them.
type endpointsHolding struct {
	mu  sync.Mutex
	ids []ID
}

func (e *endpointsHolding) set(ids ...ID) { e.mu.Lock(); e.ids = ids; e.mu.Unlock() }
func (e *endpointsHolding) get() []ID     { e.mu.Lock(); defer e.mu.Unlock(); return slices.Clone(e.ids) }

func storedLabels(t *testing.T, c kvstore.Store, id ID) (string, bool) {
	t.Helper()
	kv, ok, err := c.Get(context.Background(), IDsPrefix+fmt.Sprint(id))
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return "", false
	}
	_, ls, err := parseIDEntry(kv)
	if err != nil {
		t.Fatal(err)
	}
	return ls.String(), true
}

var (
	cartLabels     = PodLabels(map[string]string{"app": "cart"}, "shop", nil)
	dbLabels       = PodLabels(map[string]string{"app": "db"}, "shop", nil)
	intruderLabels = PodLabels(map[string]string{"app": "intruder2"}, "shop", nil)
)

// TestAllocatorSkipsHeldIdentities: an empty store does not make the
// allocator hand out numbers this node's endpoints hold, nor numbers
// announced for other nodes' endpoints.
func TestAllocatorSkipsHeldIdentities(t *testing.T) {
	c := newClient(t, newWipeableStore(t).ep)
	a := NewAllocator(c)
	a.SetInUse(InUse{
		Local:     func() []ID { return []ID{MinCluster, MinCluster + 1, 5, MinLocal} },
		Announced: func() []ID { return []ID{MinCluster + 2} },
	})
	id, err := a.Allocate(context.Background(), intruderLabels)
	if err != nil {
		t.Fatal(err)
	}
	if id != MinCluster+3 {
		t.Fatalf("new label set got %d; want %d (256, 257 held locally, 258 announced)", id, MinCluster+3)
	}
}

// TestStoreRestartedEmptyGetsHeldIdentitiesBack: a running allocator whose
// store restarts empty creates the identities its endpoints hold again
// (same number, same labels); another running node, and the node itself,
// then give a new label set a new number.
func TestStoreRestartedEmptyGetsHeldIdentitiesBack(t *testing.T) {
	s := newWipeableStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	eps := &endpointsHolding{}
	a := NewAllocator(newClient(t, s.ep))
	a.SetInUse(InUse{Local: eps.get})
	if err := a.SetStateFile(filepath.Join(t.TempDir(), "identities.json")); err != nil {
		t.Fatal(err)
	}
	go a.Run(ctx)
	other := NewAllocator(newClient(t, s.ep)) // a node that holds nothing
	go other.Run(ctx)
	cart, err := a.Allocate(ctx, cartLabels)
	if err != nil {
		t.Fatal(err)
	}
	db, err := a.Allocate(ctx, dbLabels)
	if err != nil {
		t.Fatal(err)
	}
	eps.set(cart) // db's endpoint went away: not re-published
	// The other node learns both before the wipe (db after cart: waiting
	// for cart alone let it allocate db's number, which it never knew).
	waitFor(t, func() bool { _, c := other.Lookup(cart); _, d := other.Lookup(db); return c && d })

	s.restartEmpty()
	check := newClient(t, s.ep)
	waitFor(t, func() bool { ls, ok := storedLabels(t, check, cart); return ok && ls == cartLabels.String() })
	if kv, ok, err := check.Get(ctx, LabelsPrefix+cartLabels.String()); err != nil || !ok || string(kv.Value) != fmt.Sprintf(`{"id":%d}`, cart) {
		t.Fatalf("labels entry of cart after re-publishing: %s %v %v", kv.Value, ok, err)
	}
	if _, ok := storedLabels(t, check, db); ok {
		t.Errorf("identity %d, held by no endpoint, was re-published", db)
	}
	for name, al := range map[string]*Allocator{"holder": a, "other node": other} {
		id, err := al.Allocate(ctx, intruderLabels)
		if err != nil {
			t.Fatal(err)
		}
		if id == cart || id == db {
			t.Errorf("%s gave the new label set %d, an identity in use before the store restarted (cart %d, db %d)", name, id, cart, db)
		}
	}
	if p := a.Problems(); p != "" {
		t.Errorf("Problems() = %q", p)
	}
}

// TestRestartedAgentRepublishesFromStateFile: an agent restarted while the
// store is empty knows what its endpoints hold from its state file.
func TestRestartedAgentRepublishesFromStateFile(t *testing.T) {
	s := newWipeableStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	state := filepath.Join(t.TempDir(), "identities.json")
	first := NewAllocator(newClient(t, s.ep))
	if err := first.SetStateFile(state); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Allocate(ctx, dbLabels); err != nil {
		t.Fatal(err)
	}
	cart, err := first.Allocate(ctx, cartLabels)
	if err != nil {
		t.Fatal(err)
	}

	s.restartEmpty()
	a := NewAllocator(newClient(t, s.ep))
	a.SetInUse(InUse{Local: func() []ID { return []ID{cart} }})
	if err := a.SetStateFile(state); err != nil {
		t.Fatal(err)
	}
	if ls, ok := a.Lookup(cart); !ok || ls.String() != cartLabels.String() {
		t.Fatalf("before listing the store, Lookup(%d) = %s %v", cart, ls, ok)
	}
	go a.Run(ctx)
	check := newClient(t, s.ep)
	waitFor(t, func() bool { ls, ok := storedLabels(t, check, cart); return ok && ls == cartLabels.String() })
	if id, err := a.Allocate(ctx, cartLabels); err != nil || id != cart {
		t.Errorf("cart's labels again: %d %v, want %d", id, err, cart)
	}
	fresh := NewAllocator(newClient(t, s.ep))
	if id, err := fresh.Allocate(ctx, intruderLabels); err != nil || id == cart {
		t.Errorf("new label set got %d (%v); cart holds %d", id, err, cart)
	}
}

// TestDeletedHeldIdentityIsRecreated: an identity deleted from the store
// (garbage collection racing an endpoint, a user) while a local endpoint
// holds it comes back with the same number and labels.
func TestDeletedHeldIdentityIsRecreated(t *testing.T) {
	s := newWipeableStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newClient(t, s.ep)
	eps := &endpointsHolding{}
	a := NewAllocator(c)
	a.SetInUse(InUse{Local: eps.get})
	go a.Run(ctx)
	cart, err := a.Allocate(ctx, cartLabels)
	if err != nil {
		t.Fatal(err)
	}
	db, err := a.Allocate(ctx, dbLabels)
	if err != nil {
		t.Fatal(err)
	}
	eps.set(cart)
	waitFor(t, a.Synced)
	for _, k := range []string{IDsPrefix + fmt.Sprint(cart), LabelsPrefix + cartLabels.String(), IDsPrefix + fmt.Sprint(db), LabelsPrefix + dbLabels.String()} {
		if _, err := c.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { ls, ok := storedLabels(t, c, cart); return ok && ls == cartLabels.String() })
	waitFor(t, func() bool { _, ok := a.Lookup(db); return !ok }) // not held: forgotten
	if ls, ok := a.Lookup(cart); !ok || ls.String() != cartLabels.String() {
		t.Errorf("Lookup(%d) = %s %v after re-creating it", cart, ls, ok)
	}
}

// TestHeldIdentityConflict: another node that knew nothing allocated a
// held number to other labels before the holder re-published it. The
// store's binding wins; the holder reports it and is told to move its
// endpoints, and its labels get another number.
func TestHeldIdentityConflict(t *testing.T) {
	s := newWipeableStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	state := filepath.Join(t.TempDir(), "identities.json")
	first := NewAllocator(newClient(t, s.ep))
	if err := first.SetStateFile(state); err != nil {
		t.Fatal(err)
	}
	cart, err := first.Allocate(ctx, cartLabels)
	if err != nil {
		t.Fatal(err)
	}
	s.restartEmpty()
	// A node restarted meanwhile: its cache is empty, it cannot know.
	stranger := NewAllocator(newClient(t, s.ep))
	taken, err := stranger.Allocate(ctx, intruderLabels)
	if err != nil || taken != cart {
		t.Fatalf("stranger got %d %v; the test needs it to take %d", taken, err, cart)
	}

	a := NewAllocator(newClient(t, s.ep))
	a.SetInUse(InUse{Local: func() []ID { return []ID{cart} }})
	if err := a.SetStateFile(state); err != nil {
		t.Fatal(err)
	}
	type conflict struct {
		id ID
		ls string
	}
	got := make(chan conflict, 4)
	a.OnConflict(func(id ID, ls Labels) { got <- conflict{id, ls.String()} })
	go a.Run(ctx)
	c := <-got
	if c.id != cart || c.ls != cartLabels.String() {
		t.Fatalf("conflict %+v, want %d %s", c, cart, cartLabels)
	}
	if p := a.Problems(); !strings.Contains(p, fmt.Sprintf("identity %d held by local endpoints", cart)) || !strings.Contains(p, intruderLabels.String()) {
		t.Errorf("Problems() = %q", p)
	}
	if ls, _ := storedLabels(t, newClient(t, s.ep), cart); ls != intruderLabels.String() {
		t.Errorf("store's binding of %d changed to %s", cart, ls)
	}
	moved, err := a.Allocate(ctx, cartLabels)
	if err != nil || moved == cart || moved == Unknown {
		t.Fatalf("cart's labels after the conflict: %d %v", moved, err)
	}
	if ls, _ := storedLabels(t, newClient(t, s.ep), moved); ls != cartLabels.String() {
		t.Errorf("store binds %d to %s", moved, ls)
	}
}

func TestHeldStateFileValidation(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"not json":     `{`,
		"reserved id":  `{"identities":{"1":["k8s:app=a"]}}`,
		"local id":     `{"identities":{"16777216":["k8s:app=a"]}}`,
		"bad number":   `{"identities":{"x1":["k8s:app=a"]}}`,
		"bad label":    `{"identities":{"300":["app=a"]}}`,
		"nul in label": `{"identities":{"300":["k8s:app=a\u0000b"]}}`,
		"empty labels": `{"identities":{"300":[]}}`,
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		a := NewAllocator(newFakeKV())
		err := a.SetStateFile(p)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: SetStateFile = %v, want an error naming the file", name, err)
		}
	}
	a := NewAllocator(newFakeKV())
	if err := a.SetStateFile(filepath.Join(dir, "missing.json")); err != nil {
		t.Errorf("missing file: %v", err)
	}
}

// FuzzHeldStateFile: whatever the state file holds, loading it never
// panics, and what it accepts is cluster identities with valid labels that
// survive a save and a reload unchanged.
func FuzzHeldStateFile(f *testing.F) {
	f.Add(`{"identities":{"256":["k8s:app=cart","k8s:io.kubernetes.pod.namespace=shop"]}}`)
	f.Add(`{"identities":{"65535":["k8s:a=b"],"300":["reserved:host"]}}`)
	f.Add(`{"identities":{"1":["k8s:a=b"]}}`)
	f.Add(`{"identities":{"256":["k8s:a=b\u0000"]}}`)
	f.Add(`{}`)
	f.Fuzz(func(t *testing.T, content string) {
		dir := t.TempDir()
		p := filepath.Join(dir, "identities.json")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		c := newFakeKV()
		a := NewAllocator(c)
		if err := a.SetStateFile(p); err != nil {
			return
		}
		a.mu.Lock()
		held := maps.Clone(a.held)
		a.mu.Unlock()
		for id, ls := range held {
			if !id.IsCluster() || ls.check() != nil {
				t.Fatalf("accepted identity %d with labels %q", id, ls)
			}
		}
		a.save()
		b := NewAllocator(c)
		if err := b.SetStateFile(p); err != nil {
			t.Fatalf("reloading a saved state file: %v", err)
		}
		if len(b.held) != len(held) {
			t.Fatalf("reloaded %d identities, saved %d", len(b.held), len(held))
		}
		for id, ls := range held {
			if b.held[id].String() != ls.String() {
				t.Fatalf("identity %d: reloaded %s, saved %s", id, b.held[id], ls)
			}
		}
	})
}

// fakeKV is a store that is never reached: save and SetStateFile only need
// an allocator in store mode.
type fakeKV struct{ kvstore.Store }

func newFakeKV() *fakeKV { return &fakeKV{} }
