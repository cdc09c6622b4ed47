package labtest

import "testing"

// TestPolicyICMPAndRequires: icmps rules (ICMP type, not echo identifier,
// in the policy key; replies through conntrack) and fromRequires, applied
// with `lumen apply` (store mode), probed with real ping and TCP.
func TestPolicyICMPAndRequires(t *testing.T) {
	name := newLab(t)
	st := up(t, name, exampleTopology)
	addr := func(ref string, fam int) string {
		for _, p := range st.Pods {
			if p.Namespace+"/"+p.Name == ref {
				if fam == 6 {
					return p.IPv6
				}
				return p.IPv4
			}
		}
		t.Fatalf("no pod %s", ref)
		return ""
	}
	ping := func(from, to string, fam int) bool {
		r := lumen(t, name, "lab", "exec", from, "--", "ping", "-c", "1", "-W", "2", addr(to, fam))
		return r.code == 0
	}
	for _, fam := range []int{4, 6} {
		if !ping("tools/debug", "tools/toolbox", fam) || !ping("shop/checkout", "tools/toolbox", fam) {
			t.Fatalf("baseline: IPv%d ping fails without policy", fam)
		}
	}
	mustLumen(t, name, "apply", "-f", writeFile(t, "icmp.yaml", `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: checkout-ping-only, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: checkout}}
  egress:
  - icmps: [{fields: [{type: 8, family: IPv4}, {type: EchoRequest, family: IPv6}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: toolbox-ping4-from-debug, namespace: tools}
spec:
  endpointSelector: {matchLabels: {app: toolbox}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: debug}}]
    icmps: [{fields: [{type: EchoRequest}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: catalog-from-shop, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: catalog}}
  ingress:
  - fromEndpoints: [{}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: catalog-requires-web, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: catalog}}
  ingress:
  - fromRequires: [{matchLabels: {tier: web}}]
`))
	// checkout: echo requests out (both families, to a pod that allows
	// them), nothing else.
	waitReach(t, name, "shop/checkout", "tools/debug:80/tcp", false)
	for _, fam := range []int{4, 6} {
		if !ping("shop/checkout", "tools/debug", fam) {
			t.Errorf("checkout -> debug IPv%d ping denied: icmps allows echo requests", fam)
		}
	}
	// toolbox: IPv4 echo requests from debug only; TCP and ICMPv6 denied.
	waitReach(t, name, "tools/debug", "tools/toolbox:80/tcp", false)
	if !ping("tools/debug", "tools/toolbox", 4) {
		t.Error("debug -> toolbox ping denied: icmps type EchoRequest (IPv4) from debug")
	}
	if ping("tools/debug", "tools/toolbox", 6) {
		t.Error("debug -> toolbox ping6 allowed: only IPv4 echo requests are")
	}
	if ping("shop/checkout", "tools/toolbox", 4) {
		t.Error("checkout -> toolbox ping allowed: toolbox accepts pings from debug only")
	}
	// catalog: shop pods, but fromRequires tier=web leaves only frontend.
	waitReach(t, name, "shop/frontend", "shop/catalog:80/tcp", true)
	for _, from := range []string{"shop/cart", "shop/checkout", "tools/toolbox"} {
		if probe(t, name, from, "shop/catalog:80/tcp") {
			t.Errorf("%s -> catalog:80 allowed: fromRequires tier=web", from)
		}
	}
	mustLumen(t, name, "policy", "delete", "cnp", "catalog-requires-web", "-n", "shop")
	waitReach(t, name, "shop/cart", "shop/catalog:80/tcp", true)
	checkDown(t, name)
}
