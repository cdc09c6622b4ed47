package labelwatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/endpoint"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/state"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func podKV(t *testing.T, ns, name string, labels map[string]string, node string) kvstore.KV {
	t.Helper()
	spec, _ := json.Marshal(resource.PodSpec{NodeName: node, Containers: []resource.Container{{Name: "c", Image: "i"}}})
	b, err := json.Marshal(resource.Object{APIVersion: "v1", Kind: "Pod", Metadata: resource.Metadata{Name: name, Namespace: ns, Labels: labels}, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	return kvstore.KV{Key: resource.Key("Pod", ns, name), Value: b}
}

func nsKV(t *testing.T, name string, labels map[string]string) kvstore.KV {
	t.Helper()
	all := map[string]string{resource.MetadataNameLabel: name}
	maps.Copy(all, labels)
	b, err := json.Marshal(resource.Object{APIVersion: "v1", Kind: "Namespace", Metadata: resource.Metadata{Name: name, Labels: all}})
	if err != nil {
		t.Fatal(err)
	}
	return kvstore.KV{Key: resource.Key("Namespace", "", name), Value: b}
}

func put(kvs ...kvstore.KV) kvstore.Update {
	u := kvstore.Update{}
	for _, kv := range kvs {
		u.Events = append(u.Events, kvstore.Event{Type: kvstore.EventPut, KV: kv})
	}
	return u
}

// feeder holds a Pod and a Namespace table, fed as the store feeds the
// agent's, and a subscription to each as the watcher holds them.
type feeder struct {
	tables map[string]*state.Table[*resource.Object]
	subs   map[string]*state.Subscription
}

func newFeeder() *feeder {
	f := &feeder{tables: map[string]*state.Table[*resource.Object]{}, subs: map[string]*state.Subscription{}}
	for _, kind := range []string{kindPod, kindNamespace} {
		f.tables[kind] = state.NewTable(state.Spec[*resource.Object]{Name: kind, Prefix: resource.KindPrefix(kind),
			Decode: func(kv kvstore.KV) (*resource.Object, error) { return resource.Unmarshal(kv.Value) }}, quiet)
		f.subs[kind] = f.tables[kind].Subscribe()
	}
	return f
}

// apply feeds u to kind's table and s the changes, as Run does.
func (f *feeder) apply(s *labelState, kind string, u kvstore.Update) bool {
	f.tables[kind].Apply(u)
	keys, all := f.subs[kind].Drain()
	return s.apply(kind, f.tables[kind], keys, all)
}

func TestLabelStateChangeDetection(t *testing.T) {
	s := newLabelState()
	f := newFeeder()
	web := map[string]string{"app": "web"}
	if !f.apply(s, kindPod, kvstore.Update{Resync: true, KVs: []kvstore.KV{podKV(t, "shop", "a", web, "n1"), podKV(t, "shop", "b", web, "n1")}}) {
		t.Fatal("first listing reported no change")
	}
	if s.ready() {
		t.Fatal("ready before the namespaces were listed")
	}
	f.apply(s, kindNamespace, kvstore.Update{Resync: true, KVs: []kvstore.KV{nsKV(t, "shop", nil)}})
	if !s.ready() {
		t.Fatal("not ready after both listings")
	}
	if !s.dirty("shop", "a") || !s.dirty("shop", "b") {
		t.Fatal("pods of the first listing are not pending")
	}
	s.clean(nil)

	// Same labels, other spec (a status or spec update): nothing to do.
	if f.apply(s, kindPod, put(podKV(t, "shop", "a", map[string]string{"app": "web"}, "n2"))) {
		t.Error("an update that keeps the labels counts as a change")
	}
	if s.dirty("shop", "a") {
		t.Error("pod a pending after an update that kept its labels")
	}
	// Same labels in a new listing (a resync after a store outage).
	if f.apply(s, kindPod, kvstore.Update{Resync: true, KVs: []kvstore.KV{podKV(t, "shop", "a", web, "n1"), podKV(t, "shop", "b", web, "n1")}}) {
		t.Error("an identical listing counts as a change")
	}

	// A relabel.
	if !f.apply(s, kindPod, put(podKV(t, "shop", "a", map[string]string{"app": "db"}, "n1"))) {
		t.Fatal("relabel not detected")
	}
	if !s.dirty("shop", "a") || s.dirty("shop", "b") {
		t.Errorf("after relabelling a: dirty a=%v b=%v, want true false", s.dirty("shop", "a"), s.dirty("shop", "b"))
	}
	got, lbls, ok := s.desired("shop", "a")
	if !ok || got["app"] != "db" {
		t.Fatalf("desired labels of a: %v %v", got, ok)
	}
	want := identity.PodLabels(map[string]string{"app": "db"}, "shop", map[string]string{resource.MetadataNameLabel: "shop"})
	if lbls.String() != want.String() {
		t.Errorf("label set %s, want %s", lbls, want)
	}
	s.clean(nil)

	// A namespace relabel touches every pod in it.
	if !f.apply(s, kindNamespace, put(nsKV(t, "shop", map[string]string{"team": "x"}))) {
		t.Fatal("namespace relabel not detected")
	}
	if !s.dirty("shop", "a") || !s.dirty("shop", "b") || s.dirty("other", "a") {
		t.Error("namespace relabel did not mark exactly the pods of shop")
	}
	_, lbls, _ = s.desired("shop", "b")
	if v, _ := lbls.Get(identity.SourceK8s, identity.NamespaceLabelPrefix+"team"); v != "x" {
		t.Errorf("namespace label missing from %s", lbls)
	}
	s.clean(map[string]bool{"shop/b": true})
	if s.dirty("shop", "a") || !s.dirty("shop", "b") {
		t.Error("clean did not keep exactly the failed pod")
	}
	s.clean(nil)

	// Deletions: the pod is gone (nothing desired), the namespace falls
	// back to the label the API server would give it.
	f.apply(s, kindPod, kvstore.Update{Events: []kvstore.Event{{Type: kvstore.EventDelete, KV: kvstore.KV{Key: resource.Key("Pod", "shop", "b")}}}})
	if _, _, ok := s.desired("shop", "b"); ok || !s.dirty("shop", "b") {
		t.Errorf("deleted pod: desired ok=%v dirty=%v", ok, s.dirty("shop", "b"))
	}
	f.apply(s, kindNamespace, kvstore.Update{Resync: true})
	_, lbls, _ = s.desired("shop", "a")
	if lbls.String() != want.String() {
		t.Errorf("namespace gone: label set %s, want %s", lbls, want)
	}

	// Undecodable values and foreign keys are ignored.
	if f.apply(s, kindPod, put(kvstore.KV{Key: resource.Key("Pod", "shop", "c"), Value: []byte("{")}, kvstore.KV{Key: "/lumen/v1/other", Value: []byte("{}")})) {
		t.Error("garbage counted as a change")
	}
}

// fakeEndpoints records identity updates.
type fakeEndpoints struct {
	mu    sync.Mutex
	eps   map[string]api.Endpoint
	calls []string
	fail  map[string]error
	done  chan struct{}
}

func newFakeEndpoints(eps ...api.Endpoint) *fakeEndpoints {
	f := &fakeEndpoints{eps: map[string]api.Endpoint{}, fail: map[string]error{}, done: make(chan struct{}, 100)}
	for _, ep := range eps {
		f.eps[ep.ContainerID] = ep
	}
	return f
}

func (f *fakeEndpoints) List() []api.Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Collect(maps.Values(f.eps))
	slices.SortFunc(out, func(a, b api.Endpoint) int { return int(a.ID) - int(b.ID) })
	return out
}

func (f *fakeEndpoints) UpdateIdentity(_ context.Context, cid string, id uint32, labels map[string]string) (api.Endpoint, error) {
	f.mu.Lock()
	defer func() { f.mu.Unlock(); f.done <- struct{}{} }()
	f.calls = append(f.calls, fmt.Sprintf("%s=%d", cid, id))
	if err := f.fail[cid]; err != nil {
		delete(f.fail, cid)
		return api.Endpoint{}, err
	}
	ep, ok := f.eps[cid]
	if !ok {
		return api.Endpoint{}, endpoint.ErrNotFound
	}
	ep.Identity, ep.Labels = id, labels
	f.eps[cid] = ep
	return ep, nil
}

func (f *fakeEndpoints) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func TestLabelSync(t *testing.T) {
	ctx := context.Background()
	alloc := identity.NewAllocator(nil)
	nsl := map[string]string{resource.MetadataNameLabel: "shop"}
	idOf := func(pod map[string]string, ns map[string]string) uint32 {
		id, err := alloc.Allocate(ctx, identity.PodLabels(pod, "shop", ns))
		if err != nil {
			t.Fatal(err)
		}
		return uint32(id)
	}
	web := map[string]string{"app": "web"}
	db := map[string]string{"app": "db"}
	webID, dbID := idOf(web, nsl), idOf(db, nsl)
	eps := newFakeEndpoints(
		api.Endpoint{ID: 1, ContainerID: "ca", PodName: "a", Namespace: "shop", Identity: webID, Labels: web},
		api.Endpoint{ID: 2, ContainerID: "cb", PodName: "b", Namespace: "shop", Identity: webID, Labels: web},
		api.Endpoint{ID: 3, ContainerID: "cx", Identity: 5},                                                       // no pod: never touched
		api.Endpoint{ID: 4, ContainerID: "cg", PodName: "ghost", Namespace: "shop", Identity: webID, Labels: web}, // not in the store
	)
	w := New(nil, nil, alloc, eps, quiet)
	st := newLabelState()
	f := newFeeder()
	f.apply(st, kindPod, kvstore.Update{Resync: true, KVs: []kvstore.KV{podKV(t, "shop", "a", web, "n1"), podKV(t, "shop", "b", web, "n1")}})
	f.apply(st, kindNamespace, kvstore.Update{Resync: true, KVs: []kvstore.KV{nsKV(t, "shop", nil)}})

	// Everything listed matches: no update at all.
	if !w.sync(ctx, st) {
		t.Fatal("sync failed")
	}
	if c := eps.takeCalls(); len(c) != 0 {
		t.Fatalf("unchanged labels caused updates: %v", c)
	}

	// A burst of relabels of a between two passes: one update, to the last.
	f.apply(st, kindPod, put(podKV(t, "shop", "a", map[string]string{"app": "x"}, "n1")))
	f.apply(st, kindPod, put(podKV(t, "shop", "a", map[string]string{"app": "y"}, "n1")))
	f.apply(st, kindPod, put(podKV(t, "shop", "a", db, "n1")))
	w.sync(ctx, st)
	if c := eps.takeCalls(); !slices.Equal(c, []string{fmt.Sprintf("ca=%d", dbID)}) {
		t.Fatalf("burst: updates %v, want only ca=%d", c, dbID)
	}
	if got := eps.eps["ca"]; got.Identity != dbID || got.Labels["app"] != "db" {
		t.Errorf("endpoint a after relabel: %+v", got)
	}

	// Relabel back: the earlier identity again.
	f.apply(st, kindPod, put(podKV(t, "shop", "a", web, "n1")))
	w.sync(ctx, st)
	if c := eps.takeCalls(); !slices.Equal(c, []string{fmt.Sprintf("ca=%d", webID)}) {
		t.Fatalf("relabel back: updates %v, want ca=%d", c, webID)
	}

	// A namespace relabel moves both pods of shop; a failure is retried on
	// the next pass, and only the failed endpoint is.
	teamID := idOf(web, map[string]string{resource.MetadataNameLabel: "shop", "team": "t"})
	eps.fail["cb"] = errors.New("map full")
	f.apply(st, kindNamespace, put(nsKV(t, "shop", map[string]string{"team": "t"})))
	if w.sync(ctx, st) {
		t.Error("sync reported success with a failed update")
	}
	if c := eps.takeCalls(); !slices.Equal(c, []string{fmt.Sprintf("ca=%d", teamID), fmt.Sprintf("cb=%d", teamID)}) {
		t.Fatalf("namespace relabel: updates %v", c)
	}
	if !w.sync(ctx, st) {
		t.Error("retry failed")
	}
	if c := eps.takeCalls(); !slices.Equal(c, []string{fmt.Sprintf("cb=%d", teamID)}) {
		t.Fatalf("retry: updates %v, want cb only", c)
	}
	if !w.sync(ctx, st) {
		t.Error("idle pass failed")
	}
	if c := eps.takeCalls(); len(c) != 0 {
		t.Fatalf("idle pass: updates %v", c)
	}
}

func TestLabelsChanged(t *testing.T) {
	ctx := context.Background()
	alloc := identity.NewAllocator(nil)
	want := identity.PodLabels(map[string]string{"app": "web"}, "shop", nil)
	id, _ := alloc.Allocate(ctx, want)
	ep := api.Endpoint{Identity: uint32(id), Labels: map[string]string{"app": "web"}}
	if labelsChanged(alloc, ep, map[string]string{"app": "web"}, want) {
		t.Error("same identity and labels reported as changed")
	}
	if !labelsChanged(alloc, ep, map[string]string{"app": "web", "x": "y"}, want) {
		t.Error("recorded pod labels differ but not reported")
	}
	other := identity.PodLabels(map[string]string{"app": "db"}, "shop", nil)
	if !labelsChanged(alloc, ep, map[string]string{"app": "db"}, other) {
		t.Error("other label set not reported")
	}
	ep.Identity = 99999 // unknown to the allocator
	if !labelsChanged(alloc, ep, map[string]string{"app": "web"}, want) {
		t.Error("unknown identity not reported")
	}
	// nil and empty label maps are the same.
	empty := identity.PodLabels(nil, "shop", nil)
	eid, _ := alloc.Allocate(ctx, empty)
	if labelsChanged(alloc, api.Endpoint{Identity: uint32(eid)}, map[string]string{}, empty) {
		t.Error("nil and empty labels differ")
	}
}

// TestLabelWatcherRun drives the loop: nothing happens before pods and
// namespaces are both listed (else the namespace labels would be missing),
// then a relabel moves the endpoint.
func TestLabelWatcherRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	alloc := identity.NewAllocator(nil)
	web := map[string]string{"app": "web"}
	nsl := map[string]string{resource.MetadataNameLabel: "shop", "team": "t"}
	staleID, _ := alloc.Allocate(ctx, identity.PodLabels(web, "shop", nil)) // as if the namespace had no labels
	wantID, _ := alloc.Allocate(ctx, identity.PodLabels(web, "shop", nsl))
	dbID, _ := alloc.Allocate(ctx, identity.PodLabels(map[string]string{"app": "db"}, "shop", nsl))
	eps := newFakeEndpoints(api.Endpoint{ID: 1, ContainerID: "ca", PodName: "a", Namespace: "shop", Identity: uint32(staleID), Labels: web})
	f := newFeeder()
	pods, nss := f.tables[kindPod], f.tables[kindNamespace]
	w := New(pods, nss, alloc, eps, quiet)
	w.settle = time.Millisecond
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()

	next := func(what string) {
		t.Helper()
		select {
		case <-eps.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("no update after %s", what)
		}
	}
	pods.Apply(kvstore.Update{Resync: true, KVs: []kvstore.KV{podKV(t, "shop", "a", web, "n1")}})
	nss.Apply(kvstore.Update{Resync: true, KVs: []kvstore.KV{nsKV(t, "shop", map[string]string{"team": "t"})}})
	next("listing")
	pods.Apply(put(podKV(t, "shop", "a", map[string]string{"app": "db"}, "n1")))
	next("relabel")
	if c := eps.takeCalls(); !slices.Equal(c, []string{fmt.Sprintf("ca=%d", wantID), fmt.Sprintf("ca=%d", dbID)}) {
		t.Fatalf("updates %v, want ca=%d (listing with namespace labels) then ca=%d", c, wantID, dbID)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after ctx ended")
	}
}
