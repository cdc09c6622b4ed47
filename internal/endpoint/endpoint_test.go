package endpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/nstest"
)

// recorder is a fake datapath and hook set that logs every call in order.
type recorder struct {
	mu      sync.Mutex
	log     []string
	entries map[netip.Addr]datapath.EndpointInfo
	failAt  int // UpsertEndpoint fails at this call (1-based), 0: never
	upserts int
	// during runs while the policy writer serves a request (concurrent
	// changes).
	during func()
}

// writer is the policy writer as internal/policysync behaves: requests are
// served one at a time in the order queued (here when some caller waits),
// the map by endpoint id holds what was written last.
type writer struct {
	r       *recorder
	mu      sync.Mutex
	queue   []*fakeReq
	records map[string]fakeRecord
	byID    map[uint16]uint32 // policy map: endpoint id -> identity written
	ids     map[string]uint16 // container -> endpoint id
	changed chan struct{}
	after   func() // runs once when a wait returns
}

type fakeReq struct {
	ep     api.Endpoint
	forget bool
	served bool
	pol    api.EndpointPolicy
	err    error
}

type fakeRecord struct {
	pol api.EndpointPolicy
	id  uint32
}

func (w *writer) Realize(ep api.Endpoint) func(context.Context) (api.EndpointPolicy, error) {
	req := &fakeReq{ep: ep}
	w.mu.Lock()
	w.queue = append(w.queue, req)
	w.mu.Unlock()
	return func(context.Context) (api.EndpointPolicy, error) {
		w.flush()
		if w.after != nil {
			f := w.after
			w.after = nil
			f()
		}
		return req.pol, req.err
	}
}

func (w *writer) Forget(cid string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.queue = append(w.queue, &fakeReq{ep: api.Endpoint{ContainerID: cid}, forget: true})
}

func (w *writer) Realized(cid string) (api.EndpointPolicy, uint32, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	rec, ok := w.records[cid]
	return rec.pol, rec.id, ok
}

func (w *writer) Changed() <-chan struct{} { return w.changed }

// set records a recomputed result, as a reconcile does.
func (w *writer) set(cid string, id uint32, pol api.EndpointPolicy) {
	w.mu.Lock()
	w.records[cid] = fakeRecord{pol, id}
	w.mu.Unlock()
}

// flush serves every queued request in order.
func (w *writer) flush() {
	for {
		w.mu.Lock()
		if len(w.queue) == 0 {
			w.mu.Unlock()
			return
		}
		req := w.queue[0]
		w.queue = w.queue[1:]
		w.mu.Unlock()
		if req.forget {
			w.mu.Lock()
			if id, ok := w.ids[req.ep.ContainerID]; ok {
				delete(w.byID, id)
			}
			delete(w.records, req.ep.ContainerID)
			delete(w.ids, req.ep.ContainerID)
			w.mu.Unlock()
			continue
		}
		w.r.add("policy identity=%d", req.ep.Identity)
		if w.r.during != nil {
			f := w.r.during
			w.r.during = nil
			f()
		}
		if req.ep.Identity == 666 {
			req.err = errors.New("not synchronised")
			continue
		}
		req.pol = policyOf(req.ep.Identity)
		w.mu.Lock()
		w.records[req.ep.ContainerID] = fakeRecord{req.pol, req.ep.Identity}
		w.byID[req.ep.ID] = req.ep.Identity
		w.ids[req.ep.ContainerID] = req.ep.ID
		w.mu.Unlock()
	}
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, fmt.Sprintf(format, args...))
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.log
	r.log = nil
	return l
}

func (r *recorder) UpsertEndpoint(ip netip.Addr, ep datapath.EndpointInfo) error {
	r.mu.Lock()
	r.upserts++
	fail := r.failAt != 0 && r.upserts == r.failAt
	r.mu.Unlock()
	if fail {
		r.add("upsert %s failed", ip)
		return errors.New("map full")
	}
	r.add("upsert %s identity=%d flags=%d", ip, ep.Identity, ep.Flags)
	r.mu.Lock()
	r.entries[ip] = ep
	r.mu.Unlock()
	return nil
}
func (r *recorder) DeleteEndpoint(ip netip.Addr) error        { return nil }
func (r *recorder) Attach(h datapath.Hook, ifindex int) error { return nil }
func (r *recorder) Detach(h datapath.Hook, ifindex int) error { return nil }

// policyOf is the fake policy of an identity: odd identities enforce ingress.
func policyOf(id uint32) api.EndpointPolicy {
	return api.EndpointPolicy{IngressEnforced: id%2 == 1, Entries: int(id)}
}

func newTestManager(t *testing.T) (*Manager, *recorder) {
	t.Helper()
	m, r, _ := newTestManagerWriter(t)
	return m, r
}

func newTestManagerWriter(t *testing.T) (*Manager, *recorder, *writer) {
	t.Helper()
	r := &recorder{entries: map[netip.Addr]datapath.EndpointInfo{}}
	w := &writer{r: r, records: map[string]fakeRecord{}, byID: map[uint16]uint32{}, ids: map[string]uint16{}, changed: make(chan struct{}, 1)}
	m, err := New(r, t.TempDir(), Hooks{
		Policy: w,
		Publish: func(ctx context.Context, ep api.Endpoint) error {
			r.add("publish identity=%d labels=%v", ep.Identity, ep.Labels)
			return nil
		},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ep := &api.Endpoint{
		ID: 7, ContainerID: "c1", PodName: "web", Namespace: "shop", HostIfIndex: 9,
		IPv4: "10.0.0.7", IPv6: "fd00::7", MAC: "02:00:00:00:00:07", HostMAC: "02:00:00:00:00:08",
		Identity: 1000, Labels: map[string]string{"app": "web"}, Policy: policyOf(1000), State: api.EndpointReady,
	}
	m.eps[ep.ContainerID] = ep
	if err := m.save(ep); err != nil {
		t.Fatal(err)
	}
	w.set("c1", 1000, policyOf(1000))
	w.ids["c1"], w.byID[7] = 7, 1000
	return m, r, w
}

func persisted(t *testing.T, m *Manager, cid string) api.Endpoint {
	t.Helper()
	b, err := os.ReadFile(m.file(cid))
	if err != nil {
		t.Fatal(err)
	}
	var ep api.Endpoint
	if err := json.Unmarshal(b, &ep); err != nil {
		t.Fatal(err)
	}
	return ep
}

func TestUpdateIdentity(t *testing.T) {
	ctx := context.Background()
	m, r := newTestManager(t)
	ep, err := m.UpdateIdentity(ctx, "c1", 1001, map[string]string{"app": "db"})
	if err != nil {
		t.Fatal(err)
	}
	// Policy of the new identity first, then the map entries (identity and
	// flags together), then the announcement.
	want := []string{
		"policy identity=1001",
		"upsert 10.0.0.7 identity=1001 flags=1",
		"upsert fd00::7 identity=1001 flags=1",
		"publish identity=1001 labels=map[app:db]",
	}
	if got := r.take(); !slices.Equal(got, want) {
		t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if ep.Identity != 1001 || ep.Labels["app"] != "db" || ep.Policy.Entries != 1001 {
		t.Errorf("returned endpoint %+v", ep)
	}
	if got, _ := m.Get("c1"); got.Identity != 1001 || got.Policy.Entries != 1001 {
		t.Errorf("stored endpoint %+v", got)
	}
	if p := persisted(t, m, "c1"); p.Identity != 1001 || p.Labels["app"] != "db" {
		t.Errorf("persisted endpoint: identity %d labels %v", p.Identity, p.Labels)
	}

	// Same identity, same labels: nothing at all.
	if _, err := m.UpdateIdentity(ctx, "c1", 1001, map[string]string{"app": "db"}); err != nil {
		t.Fatal(err)
	}
	if got := r.take(); len(got) != 0 {
		t.Errorf("no-op update made calls: %v", got)
	}
	// Same identity, other labels: recorded and announced, no policy work.
	if _, err := m.UpdateIdentity(ctx, "c1", 1001, map[string]string{"app": "db", "x": "y"}); err != nil {
		t.Fatal(err)
	}
	if got := r.take(); !slices.Equal(got, []string{"publish identity=1001 labels=map[app:db x:y]"}) {
		t.Errorf("labels-only update: %v", got)
	}

	if _, err := m.UpdateIdentity(ctx, "nope", 1, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown container: %v, want ErrNotFound", err)
	}
}

func TestUpdateIdentityPolicyFailureKeepsEndpoint(t *testing.T) {
	m, r := newTestManager(t)
	if _, err := m.UpdateIdentity(context.Background(), "c1", 666, map[string]string{"app": "evil"}); err == nil {
		t.Fatal("no error when the policy cannot be computed")
	}
	if got := r.take(); !slices.Equal(got, []string{"policy identity=666"}) {
		t.Errorf("calls after a policy failure: %v (map or announcement touched)", got)
	}
	if ep, _ := m.Get("c1"); ep.Identity != 1000 || ep.Labels["app"] != "web" {
		t.Errorf("endpoint changed despite the failure: %+v", ep)
	}
}

func TestUpdateIdentityMapFailureRollsBack(t *testing.T) {
	m, r := newTestManager(t)
	r.failAt = 2 // the IPv6 entry
	if _, err := m.UpdateIdentity(context.Background(), "c1", 1001, map[string]string{"app": "db"}); err == nil {
		t.Fatal("no error when the endpoint map cannot be written")
	}
	ep, _ := m.Get("c1")
	if ep.Identity != 1000 || ep.Policy.Entries != 1000 {
		t.Errorf("endpoint after a failed switch: identity %d policy %+v", ep.Identity, ep.Policy)
	}
	for ip, e := range r.entries {
		if e.Identity != 1000 {
			t.Errorf("map entry of %s has identity %d after rollback", ip, e.Identity)
		}
	}
	got := r.take()
	if got[len(got)-1] != "policy identity=1000" {
		t.Errorf("the old identity's policy was not written back: %v", got)
	}
	if slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "publish") }) {
		t.Errorf("announced despite the failure: %v", got)
	}
}

// TestStalePolicyAfterIdentityChange: the policy writer recomputes every
// endpoint when policies change; a result still for the old identity
// (computed before the identity change was served) is not applied, later
// results for the endpoint's identity are.
func TestStalePolicyAfterIdentityChange(t *testing.T) {
	ctx := context.Background()
	m, r, w := newTestManagerWriter(t)
	if _, err := m.UpdateIdentity(ctx, "c1", 1001, map[string]string{"app": "db"}); err != nil {
		t.Fatal(err)
	}
	r.take()
	w.set("c1", 1000, policyOf(1000)) // computed for the old identity
	m.mu.Lock()
	if err := m.pullPolicies(); err != nil {
		t.Fatal(err)
	}
	m.mu.Unlock()
	if ep, _ := m.Get("c1"); ep.Policy.Entries != 1001 {
		t.Errorf("policy after a stale result: %+v", ep.Policy)
	}
	if got := r.take(); len(got) != 0 {
		t.Errorf("a stale result touched the map: %v", got)
	}
	// Later results are taken as they are.
	w.set("c1", 1001, api.EndpointPolicy{Entries: 42})
	m.mu.Lock()
	if err := m.pullPolicies(); err != nil {
		t.Fatal(err)
	}
	m.mu.Unlock()
	if ep, _ := m.Get("c1"); ep.Policy.Entries != 42 {
		t.Errorf("later result not applied: %+v", ep.Policy)
	}
	if p := persisted(t, m, "c1"); p.Policy.Entries != 42 {
		t.Errorf("later result not persisted: %+v", p.Policy)
	}
}

// TestPolicyAppliedDuringIdentityChange: the writer's results for the old
// identity are pulled while the new identity's policy is realized; the
// endpoint ends with the new identity's, and a result recomputed for the
// new identity before the switch wins over the one Realize returned.
func TestPolicyAppliedDuringIdentityChange(t *testing.T) {
	m, r, w := newTestManagerWriter(t)
	r.during = func() {
		w.set("c1", 1000, api.EndpointPolicy{Entries: 999})
		m.mu.Lock()
		if err := m.pullPolicies(); err != nil {
			t.Error(err)
		}
		m.mu.Unlock()
	}
	ep, err := m.UpdateIdentity(context.Background(), "c1", 1001, map[string]string{"app": "db"})
	if err != nil {
		t.Fatal(err)
	}
	if ep.Policy.Entries != 1001 {
		t.Errorf("policy %+v, want the new identity's", ep.Policy)
	}

	// Recomputed (policies changed) between Realize and the switch.
	w.after = func() { w.set("c1", 2001, api.EndpointPolicy{Entries: 77}) }
	if ep, err = m.UpdateIdentity(context.Background(), "c1", 2001, map[string]string{"app": "api"}); err != nil {
		t.Fatal(err)
	}
	if ep.Policy.Entries != 77 {
		t.Errorf("policy %+v, want the one recomputed last", ep.Policy)
	}
}

func TestDeleteForgetsPolicy(t *testing.T) {
	m, _, w := newTestManagerWriter(t)
	if _, err := m.UpdateIdentity(context.Background(), "c1", 1001, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	w.flush()
	if _, _, ok := w.Realized("c1"); ok {
		t.Error("policy of a deleted endpoint kept")
	}
	if _, ok := w.byID[7]; ok {
		t.Error("policy map entries of a deleted endpoint kept")
	}
}

// TestIdentityChangeOfDeletedEndpoint: the pod goes away while the new
// identity's policy is realized, and a new pod gets its endpoint id. The
// requests are served in the order the manager made them, so the new pod's
// policy is the one in the map.
func TestIdentityChangeOfDeletedEndpoint(t *testing.T) {
	m, r, w := newTestManagerWriter(t)
	r.during = func() {
		if err := m.Delete(context.Background(), "c1"); err != nil {
			t.Error(err)
		}
		c2 := api.Endpoint{ID: 7, ContainerID: "c2", IPv4: "10.0.0.8", MAC: "02:00:00:00:00:09", HostMAC: "02:00:00:00:00:0a", Identity: 2000}
		m.mu.Lock()
		wait := w.Realize(c2) // as Create does
		m.eps["c2"] = &c2
		m.mu.Unlock()
		_ = wait // served by the flush below
	}
	if _, err := m.UpdateIdentity(context.Background(), "c1", 1001, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("identity change of a deleted endpoint: %v, want ErrNotFound", err)
	}
	w.flush()
	got := r.take()
	if got[len(got)-1] != "policy identity=2000" {
		t.Errorf("the endpoint reusing the id did not get its policy: %v", got)
	}
	if w.byID[7] != 2000 {
		t.Errorf("policy map of endpoint 7 holds identity %d's policy, want 2000's", w.byID[7])
	}
	m.mu.Lock()
	if err := m.pullPolicies(); err != nil {
		t.Error(err)
	}
	m.mu.Unlock()
	if ep, _ := m.Get("c2"); ep.Policy.Entries != 2000 {
		t.Errorf("policy of the new endpoint: %+v", ep.Policy)
	}
}

// TestCreateRefusesNonVeth: a device that carries the right name but is not
// a veth (renamed uplink, dummy, bridge) is not a pod's.
func TestCreateRefusesNonVeth(t *testing.T) {
	ns := nstest.New(t, "epnv")
	name := api.HostIfName("c9")
	if err := ns.NL.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		t.Fatal(err)
	}
	m, _ := newTestManager(t)
	err := ns.Do(func() error {
		_, err := m.Create(context.Background(), &api.EndpointRequest{ContainerID: "c9", HostIfName: name, MAC: "02:00:00:00:00:09", IPv4: "10.0.0.9"})
		return err
	})
	if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "a bridge device, not a pod's veth") {
		t.Fatalf("Create on a bridge: %v", err)
	}
	// The uplink by name is refused before any lookup.
	_, err = m.Create(context.Background(), &api.EndpointRequest{ContainerID: "c9", HostIfName: "eth0", MAC: "02:00:00:00:00:09", IPv4: "10.0.0.9"})
	if err == nil || !strings.Contains(err.Error(), `hostIfName "eth0": not the host side of container "c9"'s veth`) {
		t.Fatalf("Create on eth0: %v", err)
	}
}

// TestCreateWaitsForPolicy: a new pod's policy is written before the pod
// is wired; when it cannot be, the ADD fails naming the pod and nothing of
// it is left (no endpoint, no map entry).
func TestCreateWaitsForPolicy(t *testing.T) {
	ns := nstest.New(t, "eppol")
	m, r, w := newTestManagerWriter(t)
	m.hooks.Identity = func(_ context.Context, req *api.EndpointRequest) (uint32, map[string]string, error) {
		if req.Labels["app"] == "evil" {
			return 666, req.Labels, nil
		}
		return 1003, req.Labels, nil
	}
	create := func(cid, ip string, labels map[string]string) (api.Endpoint, error) {
		name := api.HostIfName(cid)
		if err := ns.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "p" + cid}); err != nil {
			t.Fatal(err)
		}
		var ep api.Endpoint
		err := ns.Do(func() error {
			var err error
			ep, err = m.Create(context.Background(), &api.EndpointRequest{ContainerID: cid, PodName: cid, Namespace: "shop",
				HostIfName: name, MAC: "02:00:00:00:01:01", IPv4: ip, Labels: labels})
			return err
		})
		return ep, err
	}
	r.take()
	ep, err := create("c3", "10.0.0.3", map[string]string{"app": "api"})
	if err != nil {
		t.Fatal(err)
	}
	got := r.take()
	if len(got) < 2 || got[0] != "policy identity=1003" || !strings.HasPrefix(got[1], "upsert 10.0.0.3 identity=1003 flags=1") {
		t.Errorf("calls %v: want the policy first, then the map entry with its flags", got)
	}
	if ep.Policy.Entries != 1003 || w.byID[ep.ID] != 1003 {
		t.Errorf("endpoint policy %+v, policy map %v", ep.Policy, w.byID)
	}

	_, err = create("c4", "10.0.0.4", map[string]string{"app": "evil"})
	if err == nil || !strings.Contains(err.Error(), "policy of shop/c4 (identity 666)") {
		t.Fatalf("Create whose policy cannot be realized: %v", err)
	}
	if _, gerr := m.Get("c4"); !errors.Is(gerr, ErrNotFound) {
		t.Errorf("endpoint kept after a failed ADD: %v", gerr)
	}
	if got := r.take(); slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "10.0.0.4") }) {
		t.Errorf("map written for a pod without policy: %v", got)
	}
}
