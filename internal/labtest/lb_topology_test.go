package labtest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

// zonedPods: two backends (app=zb) in zone-a on n1 and two in zone-b on n2,
// a client pod on every node.
const zonedPods = `pods:
  - {name: a1, namespace: shop, labels: {app: zb}, node: n1, ports: ["80/tcp"]}
  - {name: a2, namespace: shop, labels: {app: zb}, node: n1, ports: ["80/tcp"]}
  - {name: b1, namespace: shop, labels: {app: zb}, node: n2, ports: ["80/tcp"]}
  - {name: b2, namespace: shop, labels: {app: zb}, node: n2, ports: ["80/tcp"]}
  - {name: c1, namespace: tools, node: n1, ports: ["80/tcp"]}
  - {name: c2, namespace: tools, node: n2, ports: ["80/tcp"]}
`

var (
	zoneA = []string{"shop/a1", "shop/a2"}
	zoneB = []string{"shop/b1", "shop/b2"}
	zoneX = []string{"shop/a1", "shop/a2", "shop/b1", "shop/b2"}
)

// autoService asks for topology aware routing over the zoned pods.
const autoService = `apiVersion: v1
kind: Service
metadata:
  name: zoned
  namespace: shop
  annotations: {service.kubernetes.io/topology-mode: Auto}
spec:
  selector: {app: zb}
  ports: [{name: http, port: 8080, targetPort: 80, protocol: TCP}]
`

// checkZones waits until each node (node -> pods) load-balances the
// service's TCP 8080 frontend over exactly those pods, checks the zones
// `service list -o json` reports for them, and that connections from the
// node itself and from its pod land on them only.
func checkZones(t *testing.T, name, svcName string, want map[string][]string, clientPod map[string]string) {
	t.Helper()
	names := podNames(t, name)
	frontend := hostPort(getService(t, name, "shop", svcName).ip(t, 4), 8080)
	zoneOf := map[string]string{"shop/a1": "zone-a", "shop/a2": "zone-a", "shop/b1": "zone-b", "shop/b2": "zone-b"}
	for _, node := range slices.Sorted(maps.Keys(want)) {
		waitBackends(t, name, node, frontend, "TCP", backendAddrs(t, name, 4, want[node]))
		for _, s := range serviceList(t, name, node) {
			if s.Frontend != frontend {
				continue
			}
			for _, b := range s.Backends {
				pod := whoIs(names, []string{strings.Split(strings.Trim(b.Address, "[]"), ":")[0]})
				if b.Zone != zoneOf[pod] {
					t.Errorf("node %s: backend %s (%s) listed in zone %q, want %q", node, b.Address, pod, b.Zone, zoneOf[pod])
				}
			}
		}
		for _, where := range []string{"node/" + node, clientPod[node]} {
			c := startClient(t, name, where)
			r := c.must("many tcp %s 24", frontend)
			got := countsByPod(names, r.Counts)
			t.Logf("%s -> %s (%s): %v", where, frontend, svcName, got)
			if len(r.Fails) > 0 {
				t.Errorf("%s -> %s: %d connections failed: %v", where, frontend, len(r.Fails), r.Fails)
			}
			if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want[node]) {
				t.Errorf("%s -> %s (%s): answered by %v, want each of %v", where, frontend, svcName, keys, want[node])
			}
		}
	}
}

// TestLBTopologyHints: a service with topology-mode Auto over pods in two
// zones: each node uses its own zone's endpoints, for pods and the node.
func TestLBTopologyHints(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, "nodes:\n  - {name: n1, zone: zone-a}\n  - {name: n2, zone: zone-b}\n"+zonedPods))
	applyYAML(t, name, autoService)
	checkZones(t, name, "zoned", map[string][]string{"n1": zoneA, "n2": zoneB}, map[string]string{"n1": "tools/c1", "n2": "tools/c2"})

	// Without the annotation: every backend everywhere.
	applyYAML(t, name, strings.Replace(autoService, "Auto", "Disabled", 1))
	checkZones(t, name, "zoned", map[string][]string{"n1": zoneX, "n2": zoneX}, map[string]string{"n1": "tools/c1", "n2": "tools/c2"})
}

// TestLBTopologyHintsZoneWithoutHints: a third node, in zone-c and labelled
// control-plane, gets no hints (a zone no endpoint is hinted for uses every
// endpoint), while zones a and b keep their own. First with hints written
// by hand in an EndpointSlice, then derived (topology-mode Auto: the
// control-plane node does not count towards zone capacity, as in
// Kubernetes).
func TestLBTopologyHintsZoneWithoutHints(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, `nodes:
  - {name: n1, zone: zone-a}
  - {name: n2, zone: zone-b}
  - {name: n3, zone: zone-c, labels: {node-role.kubernetes.io/control-plane: ""}}
`+zonedPods+"  - {name: c3, namespace: tools, node: n3, ports: [\"80/tcp\"]}\n"))
	want := map[string][]string{"n1": zoneA, "n2": zoneB, "n3": zoneX}
	clients := map[string]string{"n1": "tools/c1", "n2": "tools/c2", "n3": "tools/c3"}

	t.Run("hand-written hints", func(t *testing.T) {
		var b strings.Builder
		b.WriteString(`apiVersion: v1
kind: Service
metadata: {name: hinted, namespace: shop}
spec:
  ports: [{name: http, port: 8080, targetPort: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: hinted-1
  namespace: shop
  labels: {kubernetes.io/service-name: hinted}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
`)
		for _, p := range zoneX {
			node, zone := "n1", "zone-a"
			if strings.HasPrefix(p, "shop/b") {
				node, zone = "n2", "zone-b"
			}
			addr := strings.Split(podAddr(t, name, p, 4, 80), ":")[0]
			fmt.Fprintf(&b, "- {addresses: [%s], conditions: {ready: true}, nodeName: %s, zone: %s, hints: {forZones: [{name: %s}]}}\n", addr, node, zone, zone)
		}
		applyYAML(t, name, b.String())
		checkZones(t, name, "hinted", want, clients)
	})
	// The agents must announce n3's control-plane label (--node-labels) in
	// the store for the derivation to leave n3 out; without it zone-c
	// counts, four endpoints cannot cover three zones and nobody gets hints.
	t.Run("derived", func(t *testing.T) {
		applyYAML(t, name, autoService)
		checkZones(t, name, "zoned", want, clients)
	})
}
