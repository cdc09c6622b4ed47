package labtest

// Malformed policies in a running lab: each is refused (or fails closed)
// and reported, and the example policies are valid.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kinds"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/lab"
	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/resource"
)

// malformedCases are policies `lumen apply` must reject, with what the
// error must say: the field path and the bad value.
var malformedCases = []struct {
	name, yaml string
	want       []string
}{
	{"bad selector operator", `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-operator, namespace: u}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints:
    - matchExpressions: [{key: app, operator: Contains, values: [client]}]
`, []string{"spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator", `"Contains"`}},
	{"bad CIDR", `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-cidr, namespace: u}
spec:
  endpointSelector: {}
  egress:
  - toCIDR: ["10.0.0.300/24"]
`, []string{"spec.egress[0].toCIDR[0]", `"10.0.0.300/24"`}},
	{"bad ipBlock CIDR", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-ipblock, namespace: u}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/33}
`, []string{"spec.ingress[0].from[0].ipBlock.cidr", `"10.0.0.0/33"`}},
	{"except outside cidr", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-except, namespace: u}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 10.1.0.0/16, except: [10.2.0.0/24]}
`, []string{"spec.ingress[0].from[0].ipBlock.except[0]", `"10.2.0.0/24"`}},
	{"bad port", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-port, namespace: u}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 70000}]
`, []string{"spec.ingress[0].ports[0].port", "70000"}},
	{"bad cilium port", `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-cilium-port, namespace: u}
spec:
  endpointSelector: {}
  ingress:
  - toPorts: [{ports: [{port: "-1", protocol: TCP}]}]
`, []string{"spec.ingress[0].toPorts[0].ports[0].port", `"-1"`}},
	{"endPort below port", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-endport, namespace: u}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 90, endPort: 80}]
`, []string{"spec.ingress[0].ports[0].endPort", "80"}},
	{"bad protocol", `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-protocol, namespace: u}
spec:
  endpointSelector: {}
  ingress:
  - toPorts: [{ports: [{port: "80", protocol: ICMP}]}]
`, []string{"spec.ingress[0].toPorts[0].ports[0].protocol", `"ICMP"`}},
	{"bad netpol protocol", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-np-protocol, namespace: u}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 80, protocol: tcp}]
`, []string{"spec.ingress[0].ports[0].protocol", `"tcp"`}},
	{"unknown entity", `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-entity, namespace: u}
spec:
  endpointSelector: {}
  egress:
  - toEntities: [internet]
`, []string{"spec.egress[0].toEntities[0]", `"internet"`}},
	{"named port with endPort", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-named-range, namespace: u}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: http, endPort: 90}]
`, []string{"spec.ingress[0].ports[0].port", `"http"`, "endPort"}},
	{"misspelt field", `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-field, namespace: u}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoint: [{}]
`, []string{"spec.ingress[0]", `"fromEndpoint"`}},
	{"bad policy type", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-type, namespace: u}
spec:
  podSelector: {}
  policyTypes: [Ingres]
`, []string{"spec.policyTypes[0]", `"Ingres"`}},
}

// testMalformed applies each malformed policy (alone, and in a file with a
// valid policy that would change connectivity) and requires a rejection
// naming the field and value, no change in the store, and the same
// connectivity before and after.
func testMalformed(t *testing.T, name string) {
	matrix := func() map[string]bool {
		out := map[string]bool{}
		r := lumen(t, name, "lab", "probe", "--matrix", "-o", "json", "--timeout", "1s", "--parallel", "100")
		var res []lab.ProbeResult
		decode(t, r.stdout, &res)
		for _, p := range res {
			out[fmt.Sprintf("%s -> %s %d/%s", p.From, p.To, p.Port, p.Protocol)] = p.Connected
		}
		return out
	}
	policies := mustLumen(t, name, "policy", "get", "-o", "json")
	before := matrix()
	denied := 0
	for _, ok := range before {
		if !ok {
			denied++
		}
	}
	if denied == 0 || denied == len(before) {
		t.Fatalf("the policies in force should deny some cells and allow others: %d of %d denied", denied, len(before))
	}
	// A valid policy that would deny everything to and from namespace u.
	const valid = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-everything, namespace: u}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
`
	for _, mc := range malformedCases {
		t.Run(mc.name, func(t *testing.T) {
			for _, doc := range []string{mc.yaml, valid + "---\n" + mc.yaml} {
				r := lumen(t, name, "apply", "-f", writeFile(t, "bad.yaml", doc))
				if r.code == 0 {
					t.Fatalf("lumen apply accepted a malformed policy:\n%s\n%s", doc, r.stdout)
				}
				for _, w := range mc.want {
					if !strings.Contains(r.stderr, w) {
						t.Errorf("error does not name %s:\n%s", w, r.stderr)
					}
				}
			}
		})
	}
	if got := mustLumen(t, name, "policy", "get", "-o", "json"); got != policies {
		t.Errorf("policies changed by rejected applies:\nbefore %s\nafter %s", policies, got)
	}
	after := matrix()
	var diff []string
	for k, v := range before {
		if after[k] != v {
			diff = append(diff, fmt.Sprintf("%s: connected %v before, %v after", k, v, after[k]))
		}
	}
	if len(diff) > 0 {
		t.Errorf("connectivity changed by rejected applies:\n%s", strings.Join(diff, "\n"))
	}

	// A malformed policy written straight to the store, around the CLI's
	// validation, fails closed: the pods it selects (all of namespace u)
	// are isolated both ways (its rule with the bad port allows nothing;
	// what the other policies allow stays allowed), the agents report it,
	// and nothing denied before is allowed.
	ctx := context.Background()
	kv, err := kvstore.Dial(ctx, labpath.StoreURL(name))
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	key := resource.Key("NetworkPolicy", "u", "sneaked-in")
	bad := `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"sneaked-in","namespace":"u"},` +
		`"spec":{"podSelector":{},"policyTypes":["Ingress","Egress"],"ingress":[{"ports":[{"port":70000}]}]}}`
	if _, err := kv.Put(ctx, key, []byte(bad)); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = kv.Delete(ctx, key) }()
	waitUntil(t, "the agents to report the malformed policy", func() bool {
		for _, n := range []string{"n1", "n2"} {
			var st api.Status
			if err := json.Unmarshal([]byte(mustLumen(t, name, "--node", n, "status", "-o", "json")), &st); err != nil {
				return false
			}
			skipped := false
			for _, s := range st.Subsystems {
				skipped = skipped || (s.Name == "policy" && s.State == api.StateDegraded && strings.Contains(s.Message, "1 not fully enforced"))
			}
			if !skipped || len(st.PoliciesNotEnforced) != 1 || !strings.Contains(st.PoliciesNotEnforced[0], "spec.ingress[0].ports[0].port") {
				return false
			}
		}
		return true
	})
	after = matrix()
	diff = nil
	isolated := 0
	for k, v := range before {
		from, to, _ := strings.Cut(k, " -> ")
		selected := strings.HasPrefix(from, "u/") || strings.HasPrefix(to, "u/")
		switch {
		case v && !after[k] && selected:
			isolated++
		case after[k] != v:
			diff = append(diff, fmt.Sprintf("%s: connected %v before, %v after", k, v, after[k]))
		}
	}
	if len(diff) > 0 || isolated == 0 {
		t.Errorf("connectivity with a malformed policy selecting namespace u in the store (%d connections isolated):\n%s", isolated, strings.Join(diff, "\n"))
	}
}

// The example policies are valid (`lumen apply` would take them).
func TestExamplePoliciesValid(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "policies", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example policies: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := kinds.Registry().Decode(f, data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for i := range objs {
			if err := kinds.Registry().Validate(&objs[i]); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
	}
}
