package labtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/lab"
)

// TestKubernetesFailClosed (issue 11, item 6): Cilium's own example
// policies applied with kubectl. Where they use a field Lumen does not
// implement (L7 rules, toFQDNs, serverNames) the pods they select are
// isolated in the directions the policy covers and the unsupported part
// denies; the objects carry an Enforced=False condition and an event naming
// the field; `lumen status` counts them. icmps and fromRequires, which Lumen
// implements, are enforced. An update adding an L7 rule takes effect.
func TestKubernetesFailClosed(t *testing.T) {
	name, st := k8sLab(t)
	pod := func(ref string) lab.PodReport {
		for _, p := range st.Pods {
			if p.Namespace+"/"+p.Name == ref {
				return p
			}
		}
		t.Fatalf("no pod %s", ref)
		return lab.PodReport{}
	}
	catalog, toolbox := pod("shop/catalog"), pod("tools/toolbox")
	// deletePrivate sends a raw `DELETE /private` to catalog:80 from
	// toolbox and reports whether the echo server got it (it echoes).
	deletePrivate := func() bool {
		script := fmt.Sprintf(`exec 3<>/dev/tcp/%s/80 && printf 'DELETE /private HTTP/1.1\r\nHost: catalog\r\n\r\n' >&3 && timeout 2 head -c 15 <&3`, catalog.IPv4)
		r := lumen(t, name, "lab", "exec", "tools/toolbox", "--", "timeout", "5", "bash", "-c", script)
		return strings.Contains(r.stdout, "DELETE /private")
	}
	ping := func(from, to string) bool {
		r := lumen(t, name, "lab", "exec", from, "--", "ping", "-c", "1", "-W", "2", to)
		return r.code == 0
	}

	// Before: everything connects, pings pass, the DELETE reaches catalog.
	waitReach(t, name, "tools/toolbox", "shop/catalog:80/tcp", true)
	if !deletePrivate() {
		t.Fatal("baseline: DELETE /private did not reach catalog without any policy")
	}
	if !ping("shop/checkout", toolbox.IPv4) {
		t.Fatal("baseline: checkout cannot ping toolbox")
	}

	// The examples' subjects: catalog is app=service (l7.yaml), checkout
	// app=myService (icmp.yaml, l4_sni.yaml), cart app=test-app (fqdn.yaml),
	// frontend env=prod (requires.yaml, and the source l7.yaml allows).
	kubectl(t, name, "", "label", "pod", "-n", "shop", "catalog", "app=service", "--overwrite")
	kubectl(t, name, "", "label", "pod", "-n", "shop", "checkout", "app=myService", "--overwrite")
	kubectl(t, name, "", "label", "pod", "-n", "shop", "cart", "app=test-app", "--overwrite")
	kubectl(t, name, "", "label", "pod", "-n", "shop", "frontend", "env=prod")
	dir := filepath.Join("..", "k8s", "testdata", "cilium-examples")
	for _, f := range []string{"l7.yaml", "fqdn.yaml", "icmp.yaml", "l4_sni.yaml", "requires.yaml", "demo-host-policy.yaml"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		// Cilium's files carry a top-level description the schema does not
		// have: the API server prunes it (as for Cilium).
		kubectl(t, name, string(b), "apply", "-n", "shop", "--validate=warn", "-f", "-")
	}

	notEnforced := []string{"rule1", "to-fqdn", "l4-sni-rule"}
	eventually(t, 60*time.Second, "lumen status counts the policies not fully enforced", func() string {
		for _, n := range []string{"n1", "n2"} {
			r := lumen(t, name, "--node", n, "status", "-o", "json")
			var s api.Status
			if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
				return fmt.Sprintf("node %s status: %v", n, err)
			}
			if len(s.PoliciesNotEnforced) != len(notEnforced) {
				return fmt.Sprintf("node %s: %d policies not enforced, want %d: %q", n, len(s.PoliciesNotEnforced), len(notEnforced), s.PoliciesNotEnforced)
			}
			for _, p := range notEnforced {
				if !strings.Contains(strings.Join(s.PoliciesNotEnforced, "\n"), "/shop/"+p+": ") {
					return fmt.Sprintf("node %s: %s not listed: %q", n, p, s.PoliciesNotEnforced)
				}
			}
			if s.Healthy() {
				return fmt.Sprintf("node %s reports healthy with policies failing closed", n)
			}
		}
		return ""
	})
	if r := lumen(t, name, "--node", "n2", "status"); r.code != 1 || !strings.Contains(r.stdout, "Policies not enforced:") ||
		!strings.Contains(r.stdout, "spec.ingress[1].toPorts[0].rules") {
		t.Errorf("lumen status: exit %d\n%s", r.code, r.stdout)
	}
	if out := mustLumen(t, name, "--node", "n1", "metrics"); !strings.Contains(out, "lumen_policy_not_enforced 3") {
		t.Errorf("metric lumen_policy_not_enforced is not 3")
	}

	fields := map[string]string{
		"rule1": "spec.ingress[1].toPorts[0].rules", "to-fqdn": "spec.egress[1].toFQDNs", "l4-sni-rule": "spec.egress[0].toPorts[0].serverNames",
	}
	for p, field := range fields {
		eventually(t, 60*time.Second, p+" condition and event", func() string {
			cond := kubectl(t, name, "", "get", "cnp", "-n", "shop", p, "-o",
				`jsonpath={.status.conditions[?(@.type=="Enforced")].status} {.status.conditions[?(@.type=="Enforced")].reason} {.status.conditions[?(@.type=="Enforced")].message}`)
			if !strings.HasPrefix(cond, "False UnsupportedField ") || !strings.Contains(cond, field) {
				return "condition: " + cond
			}
			ev := kubectl(t, name, "", "get", "events", "-n", "shop", "--field-selector", "reason=PolicyNotFullyEnforced,involvedObject.name="+p,
				"-o", "jsonpath={range .items[*]}{.type} {.message}{end}")
			if !strings.HasPrefix(ev, "Warning ") || !strings.Contains(ev, field) {
				return "event: " + ev
			}
			return ""
		})
	}

	// l7.yaml: catalog is isolated; the L7 port is closed, not open; the
	// port the policy does not open is closed; the part Lumen understands
	// (from env=prod, every port) applies.
	waitReach(t, name, "tools/toolbox", "shop/catalog:80/tcp", false)
	waitReach(t, name, "shop/frontend", "shop/catalog:80/tcp", true)
	if probe(t, name, "tools/toolbox", "shop/catalog:81/tcp") {
		t.Error("toolbox -> catalog:81 connected: a port the policy does not open")
	}
	if !probe(t, name, "shop/frontend", "shop/catalog:81/tcp") {
		t.Error("frontend (env=prod) -> catalog:81 denied: the rule Lumen understands must apply")
	}
	if deletePrivate() {
		t.Error("a raw DELETE /private reached catalog")
	}
	// requires.yaml: frontend (env=prod) accepts only env=prod sources, and
	// nothing grants any: isolated.
	waitReach(t, name, "tools/debug", "shop/frontend:80/tcp", false)
	// icmp.yaml + l4_sni.yaml: checkout may send echo requests (the replies
	// come back through conntrack), nothing else; 443 allows nothing.
	if !ping("shop/checkout", toolbox.IPv4) {
		t.Error("checkout cannot ping toolbox (icmps type 8)")
	}
	if !ping("shop/checkout", toolbox.IPv6) {
		t.Error("checkout cannot ping6 toolbox (icmps EchoRequest, IPv6)")
	}
	if probe(t, name, "shop/checkout", "tools/toolbox:80/tcp") {
		t.Error("checkout -> toolbox:80 connected: its egress allows ICMP echo only")
	}
	// fqdn.yaml: cart's egress allows kube-dns (none here) and toFQDNs
	// allows nothing.
	if probe(t, name, "shop/cart", "tools/toolbox:80/tcp") {
		t.Error("cart -> toolbox:80 connected: toFQDNs must allow nothing")
	}
	// Unselected pods are unaffected.
	if !probe(t, name, "tools/debug", "tools/toolbox:80/tcp") {
		t.Error("debug -> toolbox:80 denied: no policy selects toolbox")
	}

	// An update adding an L7 rule to a valid policy takes effect.
	upd := `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: upd, namespace: tools}
spec:
  endpointSelector: {matchLabels: {app: toolbox}}
  ingress:
  - toPorts:
    - ports: [{port: "80", protocol: TCP}]
`
	kubectl(t, name, upd, "apply", "-f", "-")
	waitReach(t, name, "tools/debug", "tools/toolbox:81/tcp", false)
	waitReach(t, name, "tools/debug", "tools/toolbox:80/tcp", true)
	kubectl(t, name, upd+"      rules: {http: [{method: GET, path: /public}]}\n", "apply", "-f", "-")
	waitReach(t, name, "tools/debug", "tools/toolbox:80/tcp", false)
	eventually(t, 60*time.Second, "upd condition", func() string {
		cond := kubectl(t, name, "", "get", "cnp", "-n", "tools", "upd", "-o", `jsonpath={.status.conditions[?(@.type=="Enforced")].status}`)
		if cond != "False" {
			return "condition " + cond
		}
		return ""
	})
	checkDown(t, name)
}
