package policy

import (
	"errors"
	"strings"
	"testing"
)

// Truth tables for icmps, fromRequires/toRequires and lenient decoding
// (Kubernetes mode: what Lumen cannot enforce fails closed). They run
// through TestTruthTables' checker.
var failClosedTables = []truthTable{
	// ---- icmps ----
	{
		name: "icmps allow echo request by type only", egress: true, rows: []string{"*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: icmp-rule, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - icmps:
    - fields:
      - type: 8
        family: IPv4
      - type: EchoRequest
        family: IPv6
`},
		explain: []explainCell{
			{"world", ProtoICMP, 8, true, []string{"ports ICMP/8"}},
			{"shop/api", ProtoICMP, 8, true, []string{"ports ICMP/8"}},
			{"world", ProtoICMP, 0, false, []string{"default deny"}},
			{"world", ProtoICMP, 13, false, []string{"default deny"}},
			{"world", ProtoICMP, 128, false, []string{"default deny"}},
			{"world", ProtoICMPv6, 128, true, []string{"ports ICMPv6/128"}},
			{"world", ProtoICMPv6, 8, false, []string{"default deny"}},
			{"world", ProtoICMPv6, 135, false, []string{"default deny"}},
			{"world", ProtoTCP, 8, false, []string{"default deny"}},
		},
	},
	{
		name: "icmps with a peer and a deny", rows: []string{"*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: icmp-peers, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {tier: back}}]
    icmps: [{fields: [{type: "8"}, {type: 128, family: IPv6}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: db}}]
    icmps: [{fields: [{type: EchoRequest}]}]
`},
		explain: []explainCell{
			{"shop/api", ProtoICMP, 8, true, []string{"ports ICMP/8"}},
			{"shop/api", ProtoICMPv6, 128, true, []string{"ports ICMPv6/128"}},
			{"shop/db", ProtoICMP, 8, false, []string{"ingressDeny[0]"}},
			{"shop/db", ProtoICMPv6, 128, true, []string{"ports ICMPv6/128"}},
			{"dev/api", ProtoICMP, 8, false, []string{"default deny"}},
			{"world", ProtoICMP, 8, false, []string{"default deny"}},
		},
	},
	// ---- fromRequires / toRequires ----
	{
		name: "fromRequires restricts every rule's fromEndpoints of the endpoint",
		rows: []string{"shop/api: AAAAAA", "shop/db: AAAAAA", "ops/api: AAAAAA", "ops/db: AAAAAA", "world: AAAAAA", "cidr:*: AAAAAA", "*: DDDDDD"},
		policies: []string{ccnpHeader + `metadata: {name: from-back}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {tier: back}}]
  - fromEntities: [world]
`, cnpHeader + `metadata: {name: requires-rule, namespace: shop}
specs:
  - endpointSelector: {matchLabels: {app: web}}
    ingress:
    - fromRequires:
      - matchLabels: {io.cilium.k8s.namespace.labels.env: prod}
`},
		explain: []explainCell{
			{"dev/api", ProtoTCP, 80, false, []string{"default deny"}},
			{"ops/api", ProtoTCP, 80, true, []string{"CiliumClusterwideNetworkPolicy from-back spec.ingress[0]"}},
		},
	},
	{
		name: "fromRequires alone grants nothing", rows: []string{"*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: requires-rule, namespace: shop}
specs:
  - endpointSelector: {matchLabels: {app: web}}
    ingress:
    - fromRequires:
      - matchLabels: {io.cilium.k8s.namespace.labels.env: prod}
`},
	},
	{
		name: "fromRequires of other endpoints does not apply", subject: "shop/api",
		rows: []string{"shop/*: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: same-ns, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{}]
`, cnpHeader + `metadata: {name: requires-web, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromRequires: [{matchLabels: {app: db}}]
`},
	},
	{
		name: "deny requirements restrict deny sections only",
		rows: []string{"shop/api: DDDDDD", "shop/db: DDDDDD", "shop/*: AAAAAA", "dev/*: AAAAAA", "ops/web: AAAAAA", "*: DDDDDD"},
		policies: []string{ccnpHeader + `metadata: {name: pods-but-prod-back}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {tier: back}}]
    fromRequires: [{matchLabels: {io.cilium.k8s.namespace.labels.env: prod}}]
`},
	},
	{
		name: "toRequires", egress: true,
		rows: []string{"shop/api: AAAAAA", "shop/db: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: to-back, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{}]
  - toRequires: [{matchExpressions: [{key: tier, operator: In, values: [back]}]}]
`},
	},
	// ---- lenient decoding: unsupported or malformed parts fail closed ----
	{
		name: "L7 rule denies its port", lenient: true,
		rows: []string{"shop/api: AAAAAA", "shop/db: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: rule1, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {tier: back}}]
  - toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET, path: /public}]
`},
		explain: []explainCell{{"world", ProtoTCP, 80, false, []string{"default deny"}}},
	},
	{
		name: "L7 port rule denies its port, the section's other port rule stands", lenient: true,
		rows: []string{"shop/api: DADADA", "shop/db: DADADA", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: l7-and-l4, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {tier: back}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules: {http: [{method: GET}]}
    - ports: [{port: "81"}]
`},
	},
	{
		name: "malformed port in a deny section denies everything", lenient: true, rows: []string{"*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: bad-deny-port, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - fromEntities: [world]
    toPorts: [{ports: [{port: "90", endPort: 80}]}]
`},
	},
	{
		name: "toFQDNs allows nothing, the rest applies", lenient: true, egress: true,
		rows: []string{"shop/api: AAAAAA", "shop/db: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: to-fqdn, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {tier: back}}]
  - toFQDNs: [{matchName: my-remote-service.com}]
`},
	},
	{
		name: "serverNames denies its port", lenient: true, egress: true, rows: []string{"*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: l4-sni-rule, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toPorts:
    - ports: [{port: "443", protocol: TCP}]
      serverNames: [one.one.one.one]
`},
		explain: []explainCell{{"world", ProtoTCP, 443, false, []string{"default deny"}}},
	},
	{
		name: "unreadable deny section denies everything", lenient: true, rows: []string{"*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: bad-deny, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {tier: back}}]
    fromGroups: [{aws: {}}]
`},
	},
	{
		name: "unknown rule field isolates both directions (ingress)", lenient: true, rows: []string{"*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: future, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [all]
  futureField: {x: 1}
`},
	},
	{
		name: "unknown rule field isolates both directions (egress)", lenient: true, egress: true, rows: []string{"*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: future, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [all]
  futureField: {x: 1}
`},
	},
	{
		name: "unreadable endpointSelector selects nothing", lenient: true, rows: []string{"*: AAAAAA"},
		policies: []string{cnpHeader + `metadata: {name: bad-subject, namespace: shop}
spec:
  endpointSelector: {matchLabels: {"bad key!": web}}
  ingress: [{}]
`},
	},
	{
		name: "unreadable requirement requires the impossible", lenient: true,
		rows: []string{"world: AAAAAA", "cidr:*: AAAAAA", "*: DDDDDD"},
		policies: []string{cnpHeader + `metadata: {name: reqs, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{}]
  - fromEntities: [world]
  - fromRequires: [{matchLabels: {"bad key!": x}}]
`},
	},
	{
		name: "np unsupported protocol allows nothing on that rule", lenient: true,
		rows: []string{"shop/api: AAAAAA", "shop/db: AAAAAA", "*: DDDDDD"},
		policies: []string{npHeader + `metadata: {name: np-icmp, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{port: 80, protocol: ICMP}]
  - from: [{podSelector: {matchLabels: {tier: back}}}]
`},
	},
}

func TestFailClosedTables(t *testing.T) {
	saved := truthTables
	defer func() { truthTables = saved }()
	truthTables = failClosedTables
	TestTruthTables(t)
}

// The six Cilium examples (as in testdata/cilium-examples) decode leniently
// with the unsupported part named; the strict decoder (lumen apply) still
// rejects those it always rejected.
func TestDecodeLenientNamesTheField(t *testing.T) {
	cases := []struct {
		doc         string
		strictFails bool
		want        []string // field paths
		unsupported bool
	}{
		{cnpHeader + "metadata: {name: l7}\nspec:\n  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: \"80\"}], rules: {http: [{method: GET}]}}]\n",
			true, []string{"spec.ingress[0].toPorts[0].rules"}, true},
		{cnpHeader + "metadata: {name: f}\nspec:\n  endpointSelector: {}\n  egress:\n  - toFQDNs: [{matchName: a.b}]\n",
			true, []string{"spec.egress[0].toFQDNs"}, true},
		{cnpHeader + "metadata: {name: s}\nspec:\n  endpointSelector: {}\n  egress:\n  - toPorts: [{ports: [{port: \"443\"}], serverNames: [a.b]}]\n",
			true, []string{"spec.egress[0].toPorts[0].serverNames"}, true},
		{cnpHeader + "metadata: {name: m}\nspec:\n  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: \"90\", endPort: 80}]}]\n",
			true, []string{"spec.ingress[0].toPorts[0].ports[0].endPort"}, false},
		{cnpHeader + "metadata: {name: ok}\nspec:\n  endpointSelector: {}\n  egress:\n  - icmps: [{fields: [{type: 8}]}]\n  - toRequires: [{}]\n",
			false, nil, false},
	}
	for _, c := range cases {
		_, serr := Decode([]byte(c.doc))
		if (serr != nil) != c.strictFails {
			t.Errorf("strict Decode error %v, want failure=%v\n%s", serr, c.strictFails, c.doc)
		}
		p, err := DecodeLenient([]byte(c.doc))
		if p == nil {
			t.Fatalf("DecodeLenient returned no policy: %v", err)
		}
		var de *DecodeError
		if (err != nil) != (len(c.want) > 0) || (err != nil && !errors.As(err, &de)) {
			t.Fatalf("DecodeLenient error %v, want fields %v", err, c.want)
		}
		if len(p.Unenforced) != len(c.want) {
			t.Fatalf("Unenforced %v, want %v", p.Unenforced, c.want)
		}
		for i, fe := range p.Unenforced {
			if fe.Path != c.want[i] || Unsupported(fe) != c.unsupported {
				t.Errorf("Unenforced[%d] = %+v (unsupported %v), want path %s unsupported %v", i, fe, Unsupported(fe), c.want[i], c.unsupported)
			}
			if !strings.Contains(err.Error(), fe.Path) {
				t.Errorf("error %q does not name %s", err, fe.Path)
			}
		}
	}
	// Not a policy at all: nothing to fail closed for.
	if p, err := DecodeLenient([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")); p != nil || err == nil {
		t.Errorf("DecodeLenient of a Pod: %v, %v", p, err)
	}
}
