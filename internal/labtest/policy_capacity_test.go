package labtest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/api"
)

// An endpoint whose policy needs more map entries than the configured
// capacity fails closed: a clear error on the endpoint, a metric, and no
// traffic; never a silent allow. Other endpoints are untouched.
func TestPolicyMapOverflowFailsClosed(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, `
agentArgs: ["--policy-map-max-entries=16"]
nodes:
  - {name: n1}
pods:
  - {name: a, namespace: x, labels: {app: a}, node: n1, ports: ["80/tcp"]}
  - {name: b, namespace: x, labels: {app: b}, node: n1, ports: ["80/tcp"]}
  - {name: c, namespace: x, labels: {app: c}, node: n1, ports: ["80/tcp"]}
`))
	// 20 single ports: 20 entries, over the capacity of 16.
	var ports []string
	for p := 80; p < 100; p++ {
		ports = append(ports, fmt.Sprintf(`{port: "%d", protocol: TCP}`, p))
	}
	lumenStdin(t, name, `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: many-ports, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [`+strings.Join(ports, ", ")+`]}]
`, "apply", "-f", "-")
	waitUntil(t, "b's policy error", func() bool {
		var eps []api.Endpoint
		decode(t, mustLumen(t, name, "--node", "n1", "endpoint", "list", "-o", "json"), &eps)
		for _, e := range eps {
			if e.PodName == "b" {
				return strings.Contains(e.Policy.Error, "more than the per-endpoint capacity of 16")
			}
		}
		return false
	})
	// Fails closed: even the allowed peer on an allowed port is denied.
	waitProbe(t, name, "x/a", "x/b:80/tcp", false)
	waitProbe(t, name, "x/b", "x/c:80/tcp", false) // egress too
	waitProbe(t, name, "x/a", "x/c:80/tcp", true)  // others untouched
	metrics := mustLumen(t, name, "--node", "n1", "metrics")
	if !strings.Contains(metrics, "lumen_policy_map_overflow_total") || strings.Contains(metrics, "lumen_policy_map_overflow_total 0\n") {
		t.Errorf("overflow metric missing or zero:\n%s", grepLines(metrics, "overflow"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
