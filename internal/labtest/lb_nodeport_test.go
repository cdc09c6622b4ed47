package labtest

import (
	"fmt"
	"maps"
	"slices"
	"testing"
)

// nodePortServices: the backends behind node ports with each external
// traffic policy, and a Local one whose only backend is on n1.
const nodePortServices = `apiVersion: v1
kind: Service
metadata: {name: np-cluster, namespace: shop}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  selector: {app: be}
  ports:
  - {name: http, port: 8080, targetPort: 80, nodePort: 30080, protocol: TCP}
  - {name: dns, port: 5353, targetPort: 80, nodePort: 30053, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: np-local, namespace: shop}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  ipFamilyPolicy: RequireDualStack
  selector: {app: be}
  ports:
  - {name: http, port: 8080, targetPort: 80, nodePort: 30081, protocol: TCP}
  - {name: dns, port: 5353, targetPort: 80, nodePort: 30054, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: np-local-a, namespace: shop}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {side: a}
  ports:
  - {name: http, port: 8080, targetPort: 80, nodePort: 30082, protocol: TCP}
`

// TestLBNodePort: node ports reached from outside the cluster (an external
// client on the underlay) and from inside (the node itself, a pod), with
// externalTrafficPolicy Cluster (every backend; remote ones through SNAT)
// and Local (the receiving node's backends only; none: dropped; traffic
// from inside the cluster is not subject to it).
func TestLBNodePort(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology("")))
	applyYAML(t, name, nodePortServices)
	names := podNames(t, name)
	local := map[string][]string{"n1": {"shop/be-a1"}, "n2": {"shop/be-b1", "shop/be-b2"}}
	for _, node := range []string{"n1", "n2"} {
		for _, fam := range []int{4, 6} {
			ip := nodeIP(t, name, node, fam)
			waitBackends(t, name, node, hostPort(ip, 30080), "TCP", backendAddrs(t, name, fam, lbBackends))
			waitBackends(t, name, node, hostPort(ip, 30053), "UDP", backendAddrs(t, name, fam, lbBackends))
		}
	}

	// expect runs n connections and checks who answered: exactly the pods
	// of want, each at least once, and every connection succeeded.
	expect := func(c *lbClient, proto, target string, n int, want []string) {
		t.Helper()
		what := fmt.Sprintf("%s -> %s/%s", c.where, target, proto)
		r := c.must("many %s %s %d", proto, target, n)
		if len(r.Fails) > 0 {
			t.Errorf("%s: %d of %d connections failed: %v", what, len(r.Fails), n, r.Fails)
		}
		got := countsByPod(names, r.Counts)
		t.Logf("%s: %v", what, got)
		if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want) {
			t.Errorf("%s: answered by %v, want each of %v", what, keys, want)
		}
		if d := c.must("dial x %s %s", proto, target); d.Peer != target {
			t.Errorf("%s: the socket's peer is %s, want the node port %s", what, d.Peer, target)
		} else if proto == "tcp" {
			c.must("close x")
		}
	}

	ext := startClient(t, name, "client/ext")
	for _, node := range []string{"n1", "n2"} {
		for _, fam := range []int{4, 6} {
			ip := nodeIP(t, name, node, fam)
			// Cluster: every backend, on this node or not.
			expect(ext, "tcp", hostPort(ip, 30080), 30, lbBackends)
			expect(ext, "udp", hostPort(ip, 30053), 30, lbBackends)
			// Local: this node's backends only.
			expect(ext, "tcp", hostPort(ip, 30081), 20, local[node])
			expect(ext, "udp", hostPort(ip, 30054), 20, local[node])
		}
	}
	// Local with no backend on the receiving node: nothing answers.
	expect(ext, "tcp", hostPort(nodeIP(t, name, "n1", 4), 30082), 5, []string{"shop/be-a1"})
	if r := ext.must("many tcp %s 1", hostPort(nodeIP(t, name, "n2", 4), 30082)); len(r.Fails) != 1 {
		t.Errorf("client/ext -> n2:30082 (Local, no backend on n2): want the connection to fail, got answers %v", countsByPod(names, r.Counts))
	}

	// From inside the cluster a node port is a way to the service: the
	// node itself and its pods reach every backend, Local policy or not.
	for _, where := range []string{"node/n2", "tools/cl2"} {
		c := startClient(t, name, where)
		for _, fam := range []int{4, 6} {
			ip := nodeIP(t, name, "n2", fam)
			expect(c, "tcp", hostPort(ip, 30080), 30, lbBackends)
			expect(c, "tcp", hostPort(ip, 30081), 30, lbBackends)
			expect(c, "udp", hostPort(ip, 30054), 30, lbBackends)
		}
		expect(c, "tcp", hostPort(nodeIP(t, name, "n2", 4), 30082), 5, []string{"shop/be-a1"})
	}
}
