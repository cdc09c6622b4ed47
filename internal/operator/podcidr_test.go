package operator

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lumen-net/lumen/internal/k8s"
)

func ciliumNode(name string, podCIDRs ...string) *k8s.CiliumNode {
	n := &k8s.CiliumNode{Spec: k8s.NodeSpec{Addresses: []k8s.NodeAddress{{Type: "InternalIP", IP: "10.99.0.1"}}, IPAM: k8s.IPAMSpec{PodCIDRs: podCIDRs}}}
	n.APIVersion, n.Kind, n.Name = k8s.CiliumNodes.GroupVersion().String(), "CiliumNode", name
	n.Labels = map[string]string{"kubernetes.io/hostname": name}
	return n
}

func createNodes(ctx context.Context, t *testing.T, c *k8s.Clients, names []string) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	for _, name := range names {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			create(ctx, t, c, ciliumNode(name), "")
		})
	}
	wg.Wait()
}

// nodeCIDRs returns every CiliumNode's pod CIDRs.
func nodeCIDRs(ctx context.Context, c *k8s.Clients) (map[string][]netip.Prefix, error) {
	list, err := c.Dynamic.Resource(k8s.CiliumNodes).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string][]netip.Prefix{}
	for i := range list.Items {
		n, err := fromUnstructured[k8s.CiliumNode](&list.Items[i])
		if err != nil {
			return nil, err
		}
		for _, s := range n.Spec.IPAM.PodCIDRs {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("node %s: bad pod CIDR %q", n.Name, s)
			}
			out[n.Name] = append(out[n.Name], p)
		}
		if out[n.Name] == nil {
			out[n.Name] = []netip.Prefix{}
		}
	}
	return out, nil
}

// checkAllocated checks every node has one IPv4 /24 of v4 and one IPv6 /64
// of v6 (static CIDRs excepted), none shared.
func checkAllocated(all map[string][]netip.Prefix, want int, v4, v6 netip.Prefix, static map[string]netip.Prefix) error {
	if len(all) != want {
		return fmt.Errorf("%d nodes, want %d", len(all), want)
	}
	owner := map[netip.Prefix]string{}
	for node, cidrs := range all {
		var n4, n6 int
		for _, p := range cidrs {
			if other, dup := owner[p]; dup {
				return fmt.Errorf("%s allocated to both %s and %s", p, other, node)
			}
			owner[p] = node
			switch {
			case p == static[node]:
				n4++
			case p.Addr().Is4() && p.Bits() == 24 && v4.Contains(p.Addr()):
				n4++
			case p.Addr().Is6() && p.Bits() == 64 && v6.Contains(p.Addr()):
				n6++
			default:
				return fmt.Errorf("node %s: unexpected pod CIDR %s", node, p)
			}
		}
		if n4 != 1 || n6 != 1 {
			return fmt.Errorf("node %s has pod CIDRs %v, want one IPv4 and one IPv6", node, cidrs)
		}
	}
	return nil
}

func TestPodCIDRsUniqueAndStableAcrossRestart(t *testing.T) {
	c := clients(t)
	ctx := testContext(t)
	t.Cleanup(func() { deleteAll(t, c, k8s.CiliumNodes) })
	v4, v6 := netip.MustParsePrefix("10.220.0.0/16"), netip.MustParsePrefix("fd00:10:220::/48")
	cfg := onlyConfig()
	cfg.IPv4Pools, cfg.IPv4MaskSize = []netip.Prefix{v4}, 24
	cfg.IPv6Pools, cfg.IPv6MaskSize = []netip.Prefix{v6}, 64

	_, stop := startOperator(t, c, cfg)
	var names []string
	for i := range 50 {
		names = append(names, fmt.Sprintf("node-%02d", i))
	}
	createNodes(ctx, t, c, names)
	var before map[string][]netip.Prefix
	eventually(t, "50 nodes get unique pod CIDRs", func() (err error) {
		before, err = nodeCIDRs(ctx, c)
		if err == nil {
			err = checkAllocated(before, 50, v4, v6, nil)
		}
		return err
	})
	stop()

	// While the operator is away: nodes go, nodes come, one with a CIDR
	// of the pool set by hand (the agent's --ipv4-pod-cidr), which the
	// restarted operator must not hand to anyone else.
	for _, name := range names[:5] {
		if err := c.Dynamic.Resource(k8s.CiliumNodes).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var added []string
	for i := range 10 {
		added = append(added, fmt.Sprintf("late-%02d", i))
	}
	createNodes(ctx, t, c, added)
	static := netip.MustParsePrefix("10.220.200.0/24")
	create(ctx, t, c, ciliumNode("static", static.String()), "")

	op, _ := startOperator(t, c, cfg)
	var after map[string][]netip.Prefix
	eventually(t, "new nodes get pod CIDRs after the restart", func() (err error) {
		after, err = nodeCIDRs(ctx, c)
		if err == nil {
			err = checkAllocated(after, 56, v4, v6, map[string]netip.Prefix{"static": static})
		}
		return err
	})
	for _, name := range names[5:] {
		if fmt.Sprint(after[name]) != fmt.Sprint(before[name]) {
			t.Errorf("node %s changed pod CIDRs across the restart: %v -> %v", name, before[name], after[name])
		}
	}
	if got := testGauge(t, op.metrics.podCIDRsAllocated.WithLabelValues("ipv4")); got != 56 {
		t.Errorf("lumen_operator_pod_cidrs_allocated{family=ipv4} = %v, want 56", got)
	}

	// A node whose pod CIDRs are cleared gets the same ones back (its
	// CIDRs are released only with the node).
	n := after["node-10"]
	patch := []byte(`{"spec":{"ipam":{"podCIDRs":null}}}`)
	if _, err := c.Dynamic.Resource(k8s.CiliumNodes).Patch(ctx, "node-10", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cleared node gets its pod CIDRs back", func() error {
		all, err := nodeCIDRs(ctx, c)
		if err != nil {
			return err
		}
		if fmt.Sprint(all["node-10"]) != fmt.Sprint(n) {
			return fmt.Errorf("node-10 has %v, want %v", all["node-10"], n)
		}
		return nil
	})
}

func TestPodCIDRPoolExhaustion(t *testing.T) {
	c := clients(t)
	ctx := testContext(t)
	t.Cleanup(func() { deleteAll(t, c, k8s.CiliumNodes) })
	cfg := onlyConfig()
	cfg.IPv4Pools, cfg.IPv4MaskSize = []netip.Prefix{netip.MustParsePrefix("10.230.0.0/23")}, 24 // two node CIDRs
	op, _ := startOperator(t, c, cfg)

	createNodes(ctx, t, c, []string{"a", "b", "c"})
	var all map[string][]netip.Prefix
	eventually(t, "two of three nodes get the pool's two CIDRs", func() (err error) {
		if all, err = nodeCIDRs(ctx, c); err != nil {
			return err
		}
		got := 0
		for _, cidrs := range all {
			got += len(cidrs)
		}
		if got != 2 || testGauge(t, op.metrics.nodesPending) != 1 {
			return fmt.Errorf("nodes %v, waiting %v", all, testGauge(t, op.metrics.nodesPending))
		}
		return nil
	})
	if testCounter(t, op.metrics.podCIDRExhausted.WithLabelValues("ipv4")) < 1 {
		t.Error("lumen_operator_pod_cidr_pool_exhausted_total not counted")
	}
	var waiting, holder string
	for name, cidrs := range all {
		if len(cidrs) == 0 {
			waiting = name
		} else if holder == "" {
			holder = name
		}
	}
	eventually(t, "a warning event names the waiting node", func() error {
		evs, err := c.Core.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, ev := range evs.Items {
			if ev.Reason == "PodCIDRPoolExhausted" && ev.InvolvedObject.Name == waiting && ev.InvolvedObject.Kind == "CiliumNode" {
				return nil
			}
		}
		return fmt.Errorf("no PodCIDRPoolExhausted event for %s among %d events", waiting, len(evs.Items))
	})

	// Deleting a node frees its CIDR for the waiting one.
	freed := all[holder][0]
	if err := c.Dynamic.Resource(k8s.CiliumNodes).Delete(ctx, holder, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the waiting node gets the freed CIDR", func() error {
		all, err := nodeCIDRs(ctx, c)
		if err != nil {
			return err
		}
		if len(all[waiting]) != 1 || all[waiting][0] != freed {
			return fmt.Errorf("%s has %v, want %s", waiting, all[waiting], freed)
		}
		return nil
	})
}
