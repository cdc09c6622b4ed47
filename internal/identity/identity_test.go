package identity

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/kvstore/kvstoretest"
)

func TestPodLabels(t *testing.T) {
	ls := PodLabels(map[string]string{"app": "web", "example.com/tier": "front"}, "prod", map[string]string{"team": "blue"})
	want := "k8s:app=web;k8s:example.com/tier=front;k8s:io.cilium.k8s.namespace.labels.team=blue;k8s:io.kubernetes.pod.namespace=prod"
	if ls.String() != want {
		t.Fatalf("PodLabels = %s\nwant        %s", ls, want)
	}
	back, err := ParseCanonical(ls.String())
	if err != nil || back.String() != want {
		t.Fatalf("ParseCanonical = %s, %v", back, err)
	}
	// Map order must not matter.
	for range 20 {
		again := PodLabels(map[string]string{"example.com/tier": "front", "app": "web"}, "prod", map[string]string{"team": "blue"})
		if again.String() != want {
			t.Fatalf("unstable canonical form: %s", again)
		}
	}
}

func TestNewLabelsDedup(t *testing.T) {
	ls := NewLabels(Label{"k8s", "b", "1"}, Label{"k8s", "a", "1"}, Label{"k8s", "b", "2"}, Label{"reserved", "host", ""})
	if got := ls.String(); got != "k8s:a=1;k8s:b=2;reserved:host" {
		t.Fatalf("NewLabels = %s", got)
	}
}

func TestParseLabel(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"k8s:app=web", "k8s:app=web"},
		{"reserved:host", "reserved:host"},
		{"cidr:fd00::/64", "cidr:fd00::/64"},
		{"k8s:a=b=c", "k8s:a=b=c"},
	} {
		l, err := ParseLabel(tc.in)
		if err != nil || l.String() != tc.want {
			t.Errorf("ParseLabel(%q) = %v, %v", tc.in, l, err)
		}
	}
	for _, bad := range []string{"app=web", ":app", "k8s:", "k8s:a;b=c", "k8s:a=b;c", "k 8s:a", "k8s:a=b\x00c", "k8s:a\x00=b", "k8s:a=\x7f"} {
		if _, err := ParseLabel(bad); err == nil || !strings.Contains(err.Error(), "invalid label") {
			t.Errorf("ParseLabel(%q) = %v, want an invalid label error", bad, err)
		}
	}
}

func TestReserved(t *testing.T) {
	want := map[string]ID{"host": 1, "world": 2, "unmanaged": 3, "health": 4, "init": 5, "remote-node": 6,
		"kube-apiserver": 7, "ingress": 8, "world-ipv4": 9, "world-ipv6": 10}
	a := NewAllocator(nil)
	for name, id := range want {
		ls, err := ParseLabels("reserved:" + name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := a.Allocate(context.Background(), ls)
		if err != nil || got != id || !got.IsReserved() || got.String() != "reserved:"+name {
			t.Errorf("Allocate(reserved:%s) = %v (%d), %v; want %d", name, got, got, err, id)
		}
		if back, ok := a.Lookup(id); !ok || back.String() != "reserved:"+name {
			t.Errorf("Lookup(%d) = %s, %v", id, back, ok)
		}
	}
	ls, _ := ParseLabels("reserved:host", "k8s:node=n1")
	if id, err := a.Allocate(context.Background(), ls); err != nil || id != Host {
		t.Errorf("host with extra labels = %v, %v; want host", id, err)
	}
	ls, _ = ParseLabels("reserved:world", "k8s:app=x")
	if _, err := a.Allocate(context.Background(), ls); err == nil {
		t.Error("reserved:world mixed with a pod label was allocated")
	}
	if _, err := a.Allocate(context.Background(), nil); err == nil {
		t.Error("empty label set was allocated")
	}
}

func TestInMemory(t *testing.T) {
	a := NewAllocator(nil)
	ctx := context.Background()
	web := PodLabels(map[string]string{"app": "web"}, "default", nil)
	db := PodLabels(map[string]string{"app": "db"}, "default", nil)
	id1, _ := a.Allocate(ctx, web)
	id2, _ := a.Allocate(ctx, db)
	id3, _ := a.Allocate(ctx, web)
	if id1 != MinCluster || id2 != MinCluster+1 || id3 != id1 {
		t.Fatalf("ids = %d %d %d", id1, id2, id3)
	}
	cidr, _ := a.Allocate(ctx, CIDRLabels(netip.MustParsePrefix("10.1.2.3/16")))
	if cidr != MinLocal || !cidr.IsLocal() {
		t.Fatalf("CIDR identity = %d, want %d", cidr, MinLocal)
	}
	if ls, ok := a.Lookup(cidr); !ok || ls.String() != "cidr:10.1.0.0/16;reserved:world" {
		t.Fatalf("Lookup(cidr) = %s %v", ls, ok)
	}
}

func TestClusterAllocation(t *testing.T) {
	c := kvstoretest.Client(t)
	ctx := context.Background()
	a := NewAllocator(c)
	web := PodLabels(map[string]string{"app": "web"}, "default", nil)
	id, err := a.Allocate(ctx, web)
	if err != nil || id != MinCluster {
		t.Fatalf("Allocate = %d, %v", id, err)
	}
	kv, ok, _ := c.Get(ctx, LabelsPrefix+web.String())
	if !ok || string(kv.Value) != `{"id":256}` {
		t.Fatalf("labels key = %s (%v)", kv.Value, ok)
	}
	kv, ok, _ = c.Get(ctx, IDsPrefix+"256")
	if !ok || string(kv.Value) != `{"labels":["k8s:app=web","k8s:io.kubernetes.pod.namespace=default"]}` {
		t.Fatalf("id key = %s (%v)", kv.Value, ok)
	}
	// CIDR identities stay out of the store.
	if _, err := a.Allocate(ctx, CIDRLabels(netip.MustParsePrefix("192.0.2.0/24"))); err != nil {
		t.Fatal(err)
	}
	if kvs, _, _ := c.List(ctx, "/lumen/v1/identities/"); len(kvs) != 2 {
		t.Fatalf("store has %d identity keys, want 2", len(kvs))
	}
	// Another node gets the same id, and learns it through Run.
	b := NewAllocator(newClient(t, c.Endpoint()))
	if id2, err := b.Allocate(ctx, web); err != nil || id2 != id {
		t.Fatalf("second allocator = %d, %v; want %d", id2, err, id)
	}
	other := NewAllocator(newClient(t, c.Endpoint()))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go other.Run(runCtx)
	db := PodLabels(map[string]string{"app": "db"}, "default", nil)
	dbID, err := b.Allocate(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { ls, ok := other.Lookup(dbID); return ok && ls.String() == db.String() })

	// Garbage-collected (both keys deleted, as lumen-operator does): the
	// following allocator forgets it and allocates the labels anew.
	if _, err := c.Delete(ctx, IDsPrefix+fmt.Sprint(dbID)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, LabelsPrefix+db.String()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := other.Lookup(dbID); return !ok })
	again, err := other.Allocate(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c.Get(ctx, IDsPrefix+fmt.Sprint(again)); !ok {
		t.Errorf("re-allocated identity %d of a collected label set is not in the store", again)
	}
}

// TestConcurrentAllocators runs several allocators, each with its own
// connection like separate nodes, allocating the same label sets at the same
// time in different orders. They must agree, and ids must be unique.
func TestConcurrentAllocators(t *testing.T) {
	ep := kvstoretest.Start(t)
	const nodes, sets = 4, 25
	var labelSets []Labels
	for i := range sets {
		labelSets = append(labelSets, PodLabels(map[string]string{"app": fmt.Sprintf("app%d", i)}, "default", nil))
	}
	got := make([][]ID, nodes)
	var wg sync.WaitGroup
	errs := make(chan error, nodes)
	for n := range nodes {
		a := NewAllocator(newClient(t, ep))
		got[n] = make([]ID, sets)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, i := range rand.Perm(sets) {
				id, err := a.Allocate(context.Background(), labelSets[i])
				if err != nil {
					errs <- err
					return
				}
				got[n][i] = id
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[ID]int{}
	for i := range sets {
		for n := 1; n < nodes; n++ {
			if got[n][i] != got[0][i] {
				t.Fatalf("label set %d: node 0 got %d, node %d got %d", i, got[0][i], n, got[n][i])
			}
		}
		id := got[0][i]
		if !id.IsCluster() {
			t.Fatalf("label set %d got non-cluster id %d", i, id)
		}
		if j, dup := seen[id]; dup {
			t.Fatalf("label sets %d and %d share id %d", j, i, id)
		}
		seen[id] = i
	}
	// Ids are handed out densely from the bottom of the range.
	for id := MinCluster; id < MinCluster+sets; id++ {
		if _, ok := seen[id]; !ok {
			t.Errorf("id %d unused; got %v", id, seen)
		}
	}
}

func newClient(t *testing.T, ep string) *kvstore.Client {
	t.Helper()
	c, err := kvstore.Dial(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func FuzzParseCanonical(f *testing.F) {
	f.Add("k8s:app=web;k8s:io.kubernetes.pod.namespace=default")
	f.Add("cidr:fd00::/64;reserved:world")
	f.Add("reserved:host")
	f.Add("k8s:a=b=c;k8s:a=d")
	f.Fuzz(func(t *testing.T, s string) {
		ls, err := ParseCanonical(s)
		if err != nil {
			return
		}
		back, err := ParseCanonical(ls.String())
		if err != nil || back.String() != ls.String() {
			t.Fatalf("round trip of %q: %q, %v", ls, back, err)
		}
		if len(ls) > 0 {
			if err := ls.check(); err != nil {
				t.Fatalf("parsed labels %q fail check: %v", ls, err)
			}
		}
	})
}
