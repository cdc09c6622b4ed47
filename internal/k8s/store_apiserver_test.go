package k8s_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/controlplane/cptest"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/lumen-net/lumen/internal/k8s"
	"github.com/lumen-net/lumen/internal/kinds"
	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/testutil"
)

// An agent started with --ipv4-pod-cidr owns its CiliumNode's pod CIDRs by
// server-side apply; the same node's agent started later without it
// (operator IPAM) failed every apply with `spec.ipam: Invalid value:
// "null"` (seen on real kubelet nodes). Now it applies, the CIDRs stay on
// the node and lumen-operator owns them.
func TestCiliumNodeStaticThenOperatorPodCIDRs(t *testing.T) {
	c := apiClients(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := "static-then-op-" + testutil.Suffix()
	defer c.Dynamic.Resource(k8s.CiliumNodes).Delete(context.Background(), name, metav1.DeleteOptions{})

	announce := func(n model.Node) error {
		st := k8s.NewStore(ctx, c, k8s.StoreOptions{NodeName: name, Kinds: kinds.Registry()})
		b, _ := json.Marshal(n)
		_, err := st.Put(ctx, model.NodesPrefix+name, b)
		return err
	}
	static := model.Node{Name: name, IPv4: "10.77.0.11", PodCIDRv4: "10.244.7.0/24"}
	if err := announce(static); err != nil {
		t.Fatalf("agent with a static pod CIDR: %v", err)
	}
	if got := podCIDRs(t, c, name); !slices.Equal(got, []string{"10.244.7.0/24"}) {
		t.Fatalf("pod CIDRs after the static agent: %v", got)
	}
	// restarted without --ipv4-pod-cidr, twice (the second finds nothing to hand over)
	for i := range 2 {
		if err := announce(model.Node{Name: name, IPv4: "10.77.0.11"}); err != nil {
			t.Fatalf("agent without a static pod CIDR (apply %d): %v", i+1, err)
		}
		if got := podCIDRs(t, c, name); !slices.Equal(got, []string{"10.244.7.0/24"}) {
			t.Fatalf("pod CIDRs after the agent without static CIDRs (apply %d): %v (want them kept)", i+1, got)
		}
	}
	cur, err := c.Dynamic.Resource(k8s.CiliumNodes).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]bool{}
	for _, e := range cur.GetManagedFields() {
		if e.FieldsV1 != nil && strings.Contains(string(e.FieldsV1.Raw), `"f:podCIDRs"`) {
			owners[e.Manager] = true
		}
	}
	if owners["lumen-agent"] || !owners["lumen-operator"] {
		t.Fatalf("podCIDRs owned by %v, want lumen-operator only", owners)
	}
	if ips, _, _ := unstructured.NestedSlice(cur.Object, "spec", "addresses"); len(ips) != 1 {
		t.Fatalf("spec.addresses = %v, want the node's one address", ips)
	}

	// A node that never had static CIDRs gets no spec.ipam from its agent.
	fresh := name + "-b"
	defer c.Dynamic.Resource(k8s.CiliumNodes).Delete(context.Background(), fresh, metav1.DeleteOptions{})
	st := k8s.NewStore(ctx, c, k8s.StoreOptions{NodeName: fresh, Kinds: kinds.Registry()})
	b, _ := json.Marshal(model.Node{Name: fresh, IPv4: "10.77.0.12"})
	if _, err := st.Put(ctx, model.NodesPrefix+fresh, b); err != nil {
		t.Fatalf("agent of a new node without static CIDRs: %v", err)
	}
	if got := podCIDRs(t, c, fresh); len(got) != 0 {
		t.Fatalf("pod CIDRs of a new node: %v, want none", got)
	}
}

func podCIDRs(t *testing.T, c *k8s.Clients, name string) []string {
	t.Helper()
	u, err := c.Dynamic.Resource(k8s.CiliumNodes).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "ipam", "podCIDRs")
	return got
}

// apiClients starts a control plane (no controllers) with Lumen's CRDs for
// the test. It skips when the Kubernetes binaries are missing, except in CI.
func apiClients(t *testing.T) *k8s.Clients {
	t.Helper()
	c, err := k8s.NewClientsFor(cptest.Start(t).RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return c
}
