package labtest

import (
	"fmt"
	"strings"
	"testing"
)

// TestLBBadServices: malformed or conflicting Services are rejected by
// `lumen apply` with the field and the value named, nothing of the batch is
// stored, and the services already there keep working unchanged.
func TestLBBadServices(t *testing.T) {
	name := newLab(t)
	up(t, name, writeTopology(t, lbTopology("")))
	applyYAML(t, name, dualStackService+`---
apiVersion: v1
kind: Service
metadata: {name: np, namespace: shop}
spec:
  type: NodePort
  selector: {app: be}
  ports: [{name: http, port: 80, nodePort: 30100}]
`)
	be := getService(t, name, "shop", "be")
	for _, node := range []string{"n1", "n2"} {
		waitBackends(t, name, node, hostPort(be.ip(t, 4), 8080), "TCP", backendAddrs(t, name, 4, lbBackends))
		waitBackends(t, name, node, hostPort(nodeIP(t, name, node, 4), 30100), "TCP", backendAddrs(t, name, 4, lbBackends))
	}
	before := map[string][]string{"n1": lbIDs(t, name, "n1"), "n2": lbIDs(t, name, "n2")}
	taken := be.ip(t, 4).String()

	svc := func(spec string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: shop}\nspec:\n" + spec
	}
	for _, c := range []struct {
		name, yaml string
		want       []string // all must appear in the error
	}{
		{"port 0", svc("  selector: {app: be}\n  ports: [{port: 0}]\n"), []string{"spec.ports[0].port", "0"}},
		{"port too big", svc("  selector: {app: be}\n  ports: [{port: 70000}]\n"), []string{"spec.ports[0].port", "70000"}},
		{"protocol", svc("  ports: [{port: 80, protocol: ICMP}]\n"), []string{"spec.ports[0].protocol", `"ICMP"`}},
		{"protocol case", svc("  ports: [{port: 80, protocol: tcp}]\n"), []string{"spec.ports[0].protocol", `"tcp"`}},
		{"duplicate port", svc("  ports: [{name: a, port: 80}, {name: b, port: 80}]\n"), []string{"spec.ports[1]", "80/TCP"}},
		{"duplicate port name", svc("  ports: [{name: a, port: 80}, {name: a, port: 81}]\n"), []string{"spec.ports[1].name", `"a"`}},
		{"unnamed ports", svc("  ports: [{port: 80}, {port: 81}]\n"), []string{"spec.ports[0].name", "required"}},
		{"target port", svc("  ports: [{port: 80, targetPort: 70000}]\n"), []string{"spec.ports[0].targetPort", "70000"}},
		{"target port name", svc("  ports: [{port: 80, targetPort: Not_A_Name}]\n"), []string{"spec.ports[0].targetPort", "Not_A_Name"}},
		{"no ports", svc("  selector: {app: be}\n"), []string{"spec.ports", "required"}},
		{"node port out of range", svc("  type: NodePort\n  ports: [{port: 80, nodePort: 40000}]\n"), []string{"spec.ports[0].nodePort", "40000", "30000-32767"}},
		{"node port on ClusterIP", svc("  ports: [{port: 80, nodePort: 30200}]\n"), []string{"spec.ports[0].nodePort", "30200"}},
		{"duplicate node port", svc("  type: NodePort\n  ports: [{name: a, port: 80, nodePort: 30201}, {name: b, port: 81, nodePort: 30201}]\n"), []string{"spec.ports[1].nodePort", "30201"}},
		{"node port taken", svc("  type: NodePort\n  ports: [{port: 80, nodePort: 30100}]\n"), []string{"spec.ports[0].nodePort", "30100", "shop/np"}},
		{"cluster IP taken", svc("  clusterIP: " + taken + "\n  ports: [{port: 80}]\n"), []string{"spec.clusterIP", taken, "shop/be"}},
		{"cluster IP out of range", svc("  clusterIP: 10.200.1.9\n  ports: [{port: 80}]\n"), []string{"spec.clusterIP", "10.200.1.9"}},
		{"type", svc("  type: Ingress\n  ports: [{port: 80}]\n"), []string{"spec.type", `"Ingress"`}},
		{"external policy on ClusterIP", svc("  externalTrafficPolicy: Local\n  ports: [{port: 80}]\n"), []string{"spec.externalTrafficPolicy", "Local"}},
		{"families", svc("  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv4]\n  ports: [{port: 80}]\n"), []string{"spec.ipFamilies[1]", "IPv4"}},
		{"unknown field", svc("  port: 80\n  ports: [{port: 80}]\n"), []string{"spec", `"port"`}},
		// A good service in the same batch is not stored either.
		{"batch", "apiVersion: v1\nkind: Service\nmetadata: {name: good, namespace: shop}\nspec:\n  ports: [{port: 80}]\n---\n" +
			svc("  ports: [{port: 80, protocol: ICMP}]\n"), []string{"spec.ports[0].protocol"}},
	} {
		r := lumenStdin(t, name, c.yaml, "apply", "-f", "-")
		msg := r.stdout + r.stderr
		if r.code == 0 {
			t.Errorf("%s: accepted:\n%s", c.name, c.yaml)
			continue
		}
		t.Logf("%s: %s", c.name, strings.TrimSpace(msg))
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: error does not name %q: %s", c.name, w, strings.TrimSpace(msg))
			}
		}
	}

	// Nothing of the rejected batches was stored.
	for _, n := range []string{"bad", "good"} {
		if r := lumen(t, name, "get", "service", "-n", "shop", n); r.code == 0 || !strings.Contains(r.stderr, "not found") {
			t.Errorf("service %s was stored: exit %d: %s%s", n, r.code, r.stdout, r.stderr)
		}
	}
	// The services that were there are untouched and still answer.
	for _, node := range []string{"n1", "n2"} {
		if after := lbIDs(t, name, node); fmt.Sprint(after) != fmt.Sprint(before[node]) {
			t.Errorf("node %s: frontends changed:\nbefore %v\nafter  %v", node, before[node], after)
		}
	}
	c := startClient(t, name, "tools/cl1")
	for _, target := range []string{hostPort(be.ip(t, 4), 8080), hostPort(be.ip(t, 6), 8080), hostPort(nodeIP(t, name, "n1", 4), 30100)} {
		if r := c.must("many tcp %s 10", target); len(r.Fails) > 0 {
			t.Errorf("%s after the rejected applies: %v", target, r.Fails)
		}
	}
}
