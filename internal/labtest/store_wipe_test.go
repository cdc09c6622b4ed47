package labtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
)

// Issue 11 item 5: a store that restarts empty while pods live must not
// make the agents hand a new label set a number a live endpoint holds, and
// must get back what the agents hold.

const storeWipeTopology = `
nodes: [{name: n1}, {name: n2}]
pods:
  - {name: cart, namespace: shop, labels: {app: cart}, node: n1, ports: ["80/tcp"]}
  - {name: catalog, namespace: shop, labels: {app: catalog}, node: n2, ports: ["80/tcp"]}
  - {name: other, namespace: shop, labels: {app: other}, node: n2, ports: ["80/tcp"]}
`

// catalogFromCart: only shop/cart may reach catalog:80.
const catalogFromCart = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: catalog-from-cart, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: catalog}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: cart}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
`

// storeIdentity returns the labels the store binds identity id to.
func storeIdentity(ctx context.Context, c *kvstore.Client, id uint32) (string, bool) {
	kv, ok, err := c.Get(ctx, fmt.Sprintf("/lumen/v1/identities/ids/%d", id))
	if err != nil || !ok {
		return "", false
	}
	var v struct {
		Labels []string `json:"labels"`
	}
	if json.Unmarshal(kv.Value, &v) != nil {
		return "", false
	}
	return strings.Join(v.Labels, ";"), true
}

// storeEndpointIdentity returns the identity the store announces for a
// node's endpoint.
func storeEndpointIdentity(ctx context.Context, c *kvstore.Client, node, containerID string) (uint32, bool) {
	kv, ok, err := c.Get(ctx, "/lumen/v1/endpoints/"+node+"/"+containerID)
	if err != nil || !ok {
		return 0, false
	}
	var v struct {
		Identity uint32 `json:"identity"`
	}
	if json.Unmarshal(kv.Value, &v) != nil {
		return 0, false
	}
	return v.Identity, true
}

// probeStable probes from -> to until the result is want three times in a
// row (the policy converged), failing when it never settles there.
func probeStable(t *testing.T, labName, from, to string, want bool) {
	t.Helper()
	eventually(t, 90*time.Second, fmt.Sprintf("%s -> %s connected=%v", from, to, want), func() string {
		for i := range 3 {
			if got := probe(t, labName, from, to); got != want {
				return fmt.Sprintf("probe %d: connected=%v", i, got)
			}
		}
		return ""
	})
}

func TestStoreWipeIdentityReuse(t *testing.T) {
	ctx := context.Background()
	name := newLab(t)
	up(t, name, writeTopology(t, storeWipeTopology))
	applyYAML(t, name, catalogFromCart)
	probeStable(t, name, "cart", "catalog:80/tcp", true)
	probeStable(t, name, "other", "catalog:80/tcp", false)

	type live struct {
		node, ref string
		ep        api.Endpoint
	}
	lives := []live{{node: "n1", ref: "shop/cart"}, {node: "n2", ref: "shop/catalog"}, {node: "n2", ref: "shop/other"}}
	held := map[uint32]string{}
	labelsOf := map[uint32]string{}
	for i := range lives {
		lives[i].ep = endpointOf(t, name, lives[i].node, lives[i].ref)
		held[lives[i].ep.Identity] = lives[i].ref
	}
	c, err := kvstore.Dial(ctx, labpath.StoreURL(name))
	if err != nil {
		t.Fatal(err)
	}
	for id := range held {
		ls, ok := storeIdentity(ctx, c, id)
		if !ok {
			t.Fatalf("identity %d of %s not in the store before the wipe", id, held[id])
		}
		labelsOf[id] = ls
	}
	c.Close()

	// The store restarts empty; its desired state (pods, namespaces, the
	// policy) is applied again, as an operator restoring it would.
	if err := lab.StartStore(ctx, name, true, nil); err != nil {
		t.Fatal(err)
	}
	if err := lab.WriteResources(ctx, name); err != nil {
		t.Fatal(err)
	}
	applyYAML(t, name, catalogFromCart)

	// New label sets, on the node holding cart and on the other one.
	for _, p := range []lab.Pod{
		{Name: "intruder2", Namespace: "shop", Labels: map[string]string{"app": "intruder2"}, Node: "n2"},
		{Name: "intruder3", Namespace: "shop", Labels: map[string]string{"app": "intruder3"}, Node: "n1"},
	} {
		if _, err := lab.AddPod(ctx, name, p, nil); err != nil {
			t.Fatalf("adding pod %s: %v%s", p.Name, err, labLogs(name))
		}
	}

	// (a) No new pod got a number a live endpoint holds.
	newIDs := map[uint32]string{}
	for _, p := range []struct{ node, ref string }{{"n2", "shop/intruder2"}, {"n1", "shop/intruder3"}} {
		ep := endpointOf(t, name, p.node, p.ref)
		if owner, ok := held[ep.Identity]; ok {
			t.Errorf("(a) %s got identity %d, which live endpoint %s holds", p.ref, ep.Identity, owner)
		}
		if other, ok := newIDs[ep.Identity]; ok {
			t.Errorf("(a) %s and %s share identity %d", p.ref, other, ep.Identity)
		}
		newIDs[ep.Identity] = p.ref
	}

	// (b) The live endpoints' identities and announcements are back.
	c, err = kvstore.Dial(ctx, labpath.StoreURL(name))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eventually(t, 60*time.Second, "(b) live endpoints and their identities back in the store", func() string {
		for _, l := range lives {
			if ls, ok := storeIdentity(ctx, c, l.ep.Identity); !ok || ls != labelsOf[l.ep.Identity] {
				return fmt.Sprintf("identity %d of %s: store has %q (present %v), want %q", l.ep.Identity, l.ref, ls, ok, labelsOf[l.ep.Identity])
			}
			if id, ok := storeEndpointIdentity(ctx, c, l.node, l.ep.ContainerID); !ok || id != l.ep.Identity {
				return fmt.Sprintf("endpoint %s: store announces identity %d (present %v), want %d", l.ref, id, ok, l.ep.Identity)
			}
		}
		return ""
	})

	// (c) Old pods keep their identities and verdicts; the intruders reach
	// nothing cart may reach.
	for _, l := range lives {
		if now := endpointOf(t, name, l.node, l.ref); now.Identity != l.ep.Identity {
			t.Errorf("(c) %s: identity %d after the wipe, %d before", l.ref, now.Identity, l.ep.Identity)
		}
	}
	probeStable(t, name, "cart", "catalog:80/tcp", true)
	probeStable(t, name, "other", "catalog:80/tcp", false)
	probeStable(t, name, "intruder2", "catalog:80/tcp", false)
	probeStable(t, name, "intruder3", "catalog:80/tcp", false)
	// Remote nodes see the intruders with their own identity.
	for _, p := range []struct{ node, ref, remote string }{{"n2", "shop/intruder2", "n1"}, {"n1", "shop/intruder3", "n2"}} {
		ep := endpointOf(t, name, p.node, p.ref)
		eventually(t, 60*time.Second, "ipcache of "+p.remote+" for "+p.ref, func() string {
			if id, ok := ipcacheIdentity(t, name, p.remote, ep.IPv4); !ok || id != ep.Identity {
				return fmt.Sprintf("ipcache has %d (present %v), want %d", id, ok, ep.Identity)
			}
			return ""
		})
	}
	for _, node := range []string{"n1", "n2"} {
		eventually(t, 60*time.Second, "agent "+node+" healthy after the store came back", func() string {
			if s := agentStatus(t, name, node); !s.Healthy() {
				return fmt.Sprintf("%+v", s.Subsystems)
			}
			return ""
		})
	}
}

// TestStoreWipeConflictFailsClosed is the race the allocator cannot see:
// the store restarts empty while cart's agent is down, and another agent,
// restarted meanwhile (its cache empty), gives a new label set cart's
// number before cart's agent re-publishes it. The store's binding wins:
// cart's agent reports the conflict and moves cart to a fresh identity;
// the intruder never reaches what cart may reach, and cart does again once
// moved.
func TestStoreWipeConflictFailsClosed(t *testing.T) {
	ctx := context.Background()
	name := newLab(t)
	up(t, name, writeTopology(t, storeWipeTopology))
	applyYAML(t, name, catalogFromCart)
	probeStable(t, name, "cart", "catalog:80/tcp", true)
	cart := endpointOf(t, name, "n1", "shop/cart")

	killAgent(t, name, "n1")
	if err := lab.StartStore(ctx, name, true, nil); err != nil {
		t.Fatal(err)
	}
	if err := lab.WriteResources(ctx, name); err != nil {
		t.Fatal(err)
	}
	applyYAML(t, name, catalogFromCart)
	if _, err := lab.RestartAgent(ctx, name, "n2", 2*time.Minute, nil); err != nil {
		t.Fatalf("restarting n2: %v%s", err, labLogs(name))
	}
	if _, err := lab.AddPod(ctx, name, lab.Pod{Name: "intruder2", Namespace: "shop", Labels: map[string]string{"app": "intruder2"}, Node: "n2"}, nil); err != nil {
		t.Fatalf("adding intruder2: %v%s", err, labLogs(name))
	}
	intruder := endpointOf(t, name, "n2", "shop/intruder2")
	if intruder.Identity != cart.Identity {
		t.Fatalf("precondition: intruder2 got %d, the test needs cart's %d (nothing told n2 about it)", intruder.Identity, cart.Identity)
	}
	// Until cart's agent is back, the number means intruder2 everywhere.
	probeStable(t, name, "intruder2", "catalog:80/tcp", false)

	if _, err := lab.RestartAgent(ctx, name, "n1", 2*time.Minute, nil); err != nil {
		t.Fatalf("restarting n1 (healthy only once cart moved off the conflicting number): %v%s", err, labLogs(name))
	}
	moved := endpointOf(t, name, "n1", "shop/cart")
	if moved.Identity == cart.Identity || moved.Identity == intruder.Identity {
		t.Fatalf("cart kept identity %d, which the store binds to intruder2", moved.Identity)
	}
	c, err := kvstore.Dial(ctx, labpath.StoreURL(name))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ls, _ := storeIdentity(ctx, c, moved.Identity); !strings.Contains(ls, "k8s:app=cart") {
		t.Errorf("store binds cart's new identity %d to %q", moved.Identity, ls)
	}
	if ls, _ := storeIdentity(ctx, c, cart.Identity); !strings.Contains(ls, "k8s:app=intruder2") {
		t.Errorf("store binds %d to %q, want intruder2's labels", cart.Identity, ls)
	}
	probeStable(t, name, "cart", "catalog:80/tcp", true)
	probeStable(t, name, "intruder2", "catalog:80/tcp", false)
	probeStable(t, name, "other", "catalog:80/tcp", false)
}
