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
	// during runs inside the Policy hook (a concurrent policy syncer).
	during func()
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
	r := &recorder{entries: map[netip.Addr]datapath.EndpointInfo{}}
	m, err := New(r, t.TempDir(), Hooks{
		Policy: func(ctx context.Context, ep api.Endpoint) (api.EndpointPolicy, error) {
			r.add("policy identity=%d", ep.Identity)
			if r.during != nil {
				f := r.during
				r.during = nil
				f()
			}
			if ep.Identity == 666 {
				return api.EndpointPolicy{}, errors.New("not synchronised")
			}
			return policyOf(ep.Identity), nil
		},
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
	return m, r
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

// TestStalePolicyAfterIdentityChange: the policy syncer lists endpoints,
// computes and writes their policy, then calls SetPolicy. When it listed the
// endpoint before an identity change, what it wrote is for the old
// identity: the manager recomputes instead of trusting it.
func TestStalePolicyAfterIdentityChange(t *testing.T) {
	ctx := context.Background()
	m, r := newTestManager(t)
	if _, err := m.UpdateIdentity(ctx, "c1", 1001, map[string]string{"app": "db"}); err != nil {
		t.Fatal(err)
	}
	r.take()
	if err := m.SetPolicy("c1", policyOf(1000)); err != nil { // computed for the old identity
		t.Fatal(err)
	}
	if got := r.take(); len(got) == 0 || got[0] != "policy identity=1001" {
		t.Errorf("stale SetPolicy not recomputed for the new identity: %v", got)
	}
	if ep, _ := m.Get("c1"); ep.Policy.Entries != 1001 {
		t.Errorf("policy after a stale SetPolicy: %+v", ep.Policy)
	}
	// Later results are taken as they are.
	if err := m.SetPolicy("c1", api.EndpointPolicy{Entries: 42}); err != nil {
		t.Fatal(err)
	}
	if got := r.take(); slices.Contains(got, "policy identity=1001") {
		t.Errorf("second SetPolicy recomputed again: %v", got)
	}
	if ep, _ := m.Get("c1"); ep.Policy.Entries != 42 {
		t.Errorf("second SetPolicy not applied: %+v", ep.Policy)
	}
}

// TestPolicyAppliedDuringIdentityChange: the syncer applies a policy for
// the old identity while UpdateIdentity computes the new one; the new
// identity's policy is computed again after the switch.
func TestPolicyAppliedDuringIdentityChange(t *testing.T) {
	m, r := newTestManager(t)
	r.during = func() {
		if err := m.SetPolicy("c1", policyOf(1000)); err != nil {
			t.Error(err)
		}
	}
	ep, err := m.UpdateIdentity(context.Background(), "c1", 1001, map[string]string{"app": "db"})
	if err != nil {
		t.Fatal(err)
	}
	got := r.take()
	if n := slices.Index(got, "publish identity=1001 labels=map[app:db]"); n < 0 || !slices.Contains(got[n:], "policy identity=1001") {
		t.Errorf("policy not recomputed after the switch: %v", got)
	}
	if ep.Policy.Entries != 1001 {
		t.Errorf("policy %+v, want the new identity's", ep.Policy)
	}
}

func TestDeleteForgetsIdentityState(t *testing.T) {
	m, _ := newTestManager(t)
	if _, err := m.UpdateIdentity(context.Background(), "c1", 1001, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	if m.recheck["c1"] || m.policyGen["c1"] != 0 {
		t.Error("state of a deleted endpoint kept")
	}
	if err := m.SetPolicy("c1", api.EndpointPolicy{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetPolicy of a deleted endpoint: %v", err)
	}
}

// TestIdentityChangeOfDeletedEndpoint: the pod goes away while the new
// identity's policy is computed, and a new pod gets its endpoint id. The
// entries written for the old pod are replaced by the new pod's policy.
func TestIdentityChangeOfDeletedEndpoint(t *testing.T) {
	m, r := newTestManager(t)
	r.during = func() {
		if err := m.Delete(context.Background(), "c1"); err != nil {
			t.Error(err)
		}
		m.mu.Lock()
		m.eps["c2"] = &api.Endpoint{ID: 7, ContainerID: "c2", IPv4: "10.0.0.8", MAC: "02:00:00:00:00:09", HostMAC: "02:00:00:00:00:0a", Identity: 2000}
		m.mu.Unlock()
	}
	if _, err := m.UpdateIdentity(context.Background(), "c1", 1001, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("identity change of a deleted endpoint: %v, want ErrNotFound", err)
	}
	got := r.take()
	if got[len(got)-1] != "policy identity=2000" {
		t.Errorf("the endpoint reusing the id did not get its policy back: %v", got)
	}
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
