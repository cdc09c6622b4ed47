package operator

import (
	"fmt"
	"regexp"
	"sort"
	"testing"

	"github.com/lumen-net/lumen/internal/k8s"
)

func ep(name string, identity int64, ip string) k8s.CoreCiliumEndpoint {
	return k8s.CoreCiliumEndpoint{Name: name, IdentityID: identity, Networking: &k8s.EndpointNetworking{
		Addressing: []k8s.AddressPair{{IPv4: ip}}, NodeIP: "10.99.0.1"}}
}

func newTestBatcher(mode string, max int) *cesBatcher {
	b := newCESBatcher(mode, max)
	n := 0
	b.nameFunc = func() string { n++; return fmt.Sprintf("ces-%03d", n) }
	return b
}

// flushAll applies every write as if the API server accepted it.
func flushAll(b *cesBatcher) []sliceWrite {
	ws := b.takeWrites()
	for i, w := range ws {
		b.written(w, fmt.Sprint(i+1))
	}
	return ws
}

// content maps slice name -> namespace and sorted endpoint names, from the
// batcher's desired state.
func content(b *cesBatcher) map[string]string {
	m := map[string]string{}
	for name, s := range b.slices {
		var eps []string
		for n := range s.endpoints {
			eps = append(eps, n)
		}
		sort.Strings(eps)
		m[name] = fmt.Sprintf("%s %v", s.group.namespace, eps)
	}
	return m
}

func TestBatcherNamespacesAndMaxPerSlice(t *testing.T) {
	b := newTestBatcher(SliceModeFCFS, 3)
	for i := range 5 {
		b.upsert("a", ep(fmt.Sprintf("a%d", i), 100, "10.0.0.1"))
	}
	b.upsert("b", ep("b0", 100, "10.0.1.1"))
	ws := flushAll(b)
	if len(ws) != 3 {
		t.Fatalf("writes %v, want 3 creates", ws)
	}
	for _, w := range ws {
		if w.Op != opCreate || len(w.Slice.Endpoints) > 3 {
			t.Fatalf("bad write %v", w)
		}
		for _, e := range w.Slice.Endpoints {
			if e.Name[:1] != w.Slice.Namespace {
				t.Fatalf("endpoint %s in slice of namespace %s", e.Name, w.Slice.Namespace)
			}
		}
	}
	got := content(b)
	want := map[string]string{"ces-001": "a [a0 a1 a2]", "ces-002": "a [a3 a4]", "ces-003": "b [b0]"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("slices %v, want %v", got, want)
	}
	if b.pending() != 0 {
		t.Fatalf("%d slices pending after a flush", b.pending())
	}
}

func TestBatcherCoalescesAndTouchesOnlyTheEndpointsSlice(t *testing.T) {
	b := newTestBatcher(SliceModeFCFS, 2)
	for _, n := range []string{"p0", "p1", "p2", "p3"} {
		b.upsert("ns", ep(n, 7, "10.0.0.1"))
	}
	flushAll(b) // ces-001 [p0 p1], ces-002 [p2 p3]

	// An unchanged endpoint (a status field the slice does not carry)
	// costs nothing.
	if b.upsert("ns", ep("p0", 7, "10.0.0.1")) || b.pending() != 0 {
		t.Fatal("unchanged endpoint marked a slice dirty")
	}
	// Many changes of one endpoint: one write, of its slice only.
	for i := range 10 {
		b.upsert("ns", ep("p3", 7, fmt.Sprintf("10.0.0.%d", i+2)))
	}
	ws := flushAll(b)
	if len(ws) != 1 || ws[0].Op != opUpdate || ws[0].Slice.Name != "ces-002" || ws[0].ResourceVersion == "" {
		t.Fatalf("writes %v, want one update of ces-002 with its resourceVersion", ws)
	}
	if ip := ws[0].Slice.Endpoints[1].Networking.Addressing[0].IPv4; ip != "10.0.0.11" {
		t.Fatalf("slice carries %s, want the last address 10.0.0.11", ip)
	}
	// Delete and create in the same interval: the new endpoint fills the
	// room in the slice that is written anyway.
	b.remove(cepKey{"ns", "p1"})
	b.upsert("ns", ep("p4", 7, "10.0.0.20"))
	ws = flushAll(b)
	if len(ws) != 1 || ws[0].Slice.Name != "ces-001" || fmt.Sprint(content(b)["ces-001"]) != "ns [p0 p4]" {
		t.Fatalf("writes %v slices %v, want p4 to take p1's place in ces-001", ws, content(b))
	}
}

func TestBatcherDeletesEmptySlices(t *testing.T) {
	b := newTestBatcher(SliceModeFCFS, 10)
	b.upsert("ns", ep("p0", 1, "10.0.0.1"))
	// Created and removed before any write: nothing to write at all.
	b.remove(cepKey{"ns", "p0"})
	if ws := flushAll(b); len(ws) != 0 || len(b.slices) != 0 {
		t.Fatalf("writes %v slices %v, want none", ws, b.slices)
	}
	b.upsert("ns", ep("p1", 1, "10.0.0.1"))
	flushAll(b)
	b.remove(cepKey{"ns", "p1"})
	ws := b.takeWrites()
	if len(ws) != 1 || ws[0].Op != opDelete {
		t.Fatalf("writes %v, want one delete", ws)
	}
	// While the delete is in flight a new endpoint goes to a new slice.
	b.upsert("ns", ep("p2", 1, "10.0.0.2"))
	if got := b.ceps[cepKey{"ns", "p2"}]; got == ws[0].Slice.Name {
		t.Fatal("endpoint placed in a slice being deleted")
	}
	b.written(ws[0], "")
	if _, ok := b.slices[ws[0].Slice.Name]; ok {
		t.Fatal("deleted slice still known")
	}
}

func TestBatcherIdentityMode(t *testing.T) {
	b := newTestBatcher(SliceModeIdentity, 10)
	b.upsert("ns", ep("web-1", 100, "10.0.0.1"))
	b.upsert("ns", ep("db-1", 200, "10.0.0.2"))
	b.upsert("ns", ep("web-2", 100, "10.0.0.3"))
	flushAll(b)
	want := map[string]string{"ces-001": "ns [web-1 web-2]", "ces-002": "ns [db-1]"}
	if fmt.Sprint(content(b)) != fmt.Sprint(want) {
		t.Fatalf("slices %v, want %v", content(b), want)
	}
	// A new identity moves the endpoint.
	b.upsert("ns", ep("web-2", 200, "10.0.0.3"))
	ws := flushAll(b)
	want = map[string]string{"ces-001": "ns [web-1]", "ces-002": "ns [db-1 web-2]"}
	if len(ws) != 2 || fmt.Sprint(content(b)) != fmt.Sprint(want) {
		t.Fatalf("writes %v slices %v, want %v", ws, content(b), want)
	}
}

func TestBatcherRestoreDeduplicatesAndWritesNothingWhenUnchanged(t *testing.T) {
	stored := []k8s.CiliumEndpointSlice{
		{Namespace: "ns", Endpoints: []k8s.CoreCiliumEndpoint{ep("p0", 1, "10.0.0.1"), ep("p1", 1, "10.0.0.2")}},
		{Namespace: "ns", Endpoints: []k8s.CoreCiliumEndpoint{ep("p1", 1, "10.0.0.2"), ep("p2", 1, "10.0.0.3")}},
		{Namespace: "other", Endpoints: []k8s.CoreCiliumEndpoint{ep("p0", 1, "10.0.1.1")}},
		{Namespace: "ns"},
	}
	for i, name := range []string{"ces-a", "ces-b", "ces-c", "ces-d"} {
		stored[i].Name, stored[i].ResourceVersion = name, "7"
	}
	b := newTestBatcher(SliceModeFCFS, 10)
	b.restore(stored)
	// The same endpoints arriving from the informer change nothing.
	for _, e := range []struct {
		ns string
		ep k8s.CoreCiliumEndpoint
	}{{"ns", ep("p0", 1, "10.0.0.1")}, {"ns", ep("p1", 1, "10.0.0.2")}, {"ns", ep("p2", 1, "10.0.0.3")}, {"other", ep("p0", 1, "10.0.1.1")}} {
		if b.upsert(e.ns, e.ep) {
			t.Fatalf("restored endpoint %s/%s rewritten", e.ns, e.ep.Name)
		}
	}
	ws := flushAll(b)
	// p1 stays in ces-a and leaves ces-b; the empty ces-d goes.
	got := map[string]string{}
	for _, w := range ws {
		got[w.Slice.Name] = w.Op
	}
	if fmt.Sprint(got) != "map[ces-b:update ces-d:delete]" || fmt.Sprint(content(b)) != "map[ces-a:ns [p0 p1] ces-b:ns [p2] ces-c:other [p0]]" {
		t.Fatalf("writes %v slices %v", got, content(b))
	}
}

func TestBatcherRetriesFailedWrites(t *testing.T) {
	b := newTestBatcher(SliceModeFCFS, 10)
	b.upsert("ns", ep("p0", 1, "10.0.0.1"))
	ws := b.takeWrites()
	b.failed(ws[0], failRetry, "")
	ws2 := b.takeWrites()
	if len(ws2) != 1 || ws2[0].Op != opCreate || !ws2[0].Since.Equal(ws[0].Since) {
		t.Fatalf("retry %v, want the same create with its first change time", ws2)
	}
	b.written(ws2[0], "5")
	// Someone else deleted the slice: it is created again.
	b.storedGone(ws2[0].Slice.Name)
	ws3 := b.takeWrites()
	if len(ws3) != 1 || ws3[0].Op != opCreate {
		t.Fatalf("after external delete: %v, want a create", ws3)
	}
	b.written(ws3[0], "6")
	// A conflicting version: the update is retried on top of it.
	b.upsert("ns", ep("p0", 1, "10.0.0.9"))
	ws4 := b.takeWrites()
	b.failed(ws4[0], failConflict, "42")
	ws5 := b.takeWrites()
	if len(ws5) != 1 || ws5[0].Op != opUpdate || ws5[0].ResourceVersion != "42" {
		t.Fatalf("after conflict: %v, want an update at version 42", ws5)
	}
}

func TestGeneratedSliceNames(t *testing.T) {
	re := regexp.MustCompile(`^ces-[` + cesNameAlphabet + `]{9}-[` + cesNameAlphabet + `]{5}$`)
	seen := map[string]bool{}
	for range 1000 {
		n := generateSliceName()
		if !re.MatchString(n) || seen[n] {
			t.Fatalf("bad or repeated name %q", n)
		}
		seen[n] = true
	}
}

func TestCoreEndpointFromCEP(t *testing.T) {
	cep := &k8s.CiliumEndpoint{Status: k8s.EndpointStatus{
		ID: 7, State: "ready",
		Identity:   &k8s.EndpointIdentity{ID: 1234, Labels: []string{"k8s:app=web"}},
		Networking: &k8s.EndpointNetworking{Addressing: []k8s.AddressPair{{IPv4: "10.200.1.5", IPv6: "fd00:10:200:1::5"}}, NodeIP: "10.99.0.1"},
		NamedPorts: []k8s.NamedPort{{Name: "http", Port: 80, Protocol: "TCP"}},
	}}
	cep.Name = "web-1"
	c := coreEndpoint(cep)
	if c.Name != "web-1" || c.IdentityID != 1234 || c.Networking.Addressing[0].IPv6 != "fd00:10:200:1::5" || c.Networking.NodeIP != "10.99.0.1" || c.NamedPorts[0].Port != 80 {
		t.Fatalf("core endpoint %+v", c)
	}
	// A status change the slice does not carry leaves it equal.
	cep.Status.State = "regenerating"
	if b := newTestBatcher(SliceModeFCFS, 1); !b.upsert("ns", c) || b.upsert("ns", coreEndpoint(cep)) {
		t.Fatal("state change counted as a slice change")
	}
}
