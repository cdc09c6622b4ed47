package policy

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Truth tables written from the Kubernetes NetworkPolicy API reference and
// the Cilium policy language documentation. Each table fixes one subject
// endpoint and direction; every identity of the test world is a row, the
// columns are TCP/80 TCP/81 UDP/80 UDP/81 SCTP/80 SCTP/81 (A allowed, D
// denied). Rows are "pattern: AADDAA", first match wins, '*' is a wildcard.
// Every cell is checked through Lookup on Compute's output, and through
// Explain, which must agree; explain cells also pin the rule named.

var columns = []struct {
	proto uint8
	port  uint16
}{{ProtoTCP, 80}, {ProtoTCP, 81}, {ProtoUDP, 80}, {ProtoUDP, 81}, {ProtoSCTP, 80}, {ProtoSCTP, 81}}

type explainCell struct {
	peer  string
	proto uint8
	port  uint16
	allow bool
	want  []string // substrings of Explanation.String()
}

type truthTable struct {
	name     string
	policies []string
	opts     Options
	subject  string // endpoint name, "shop/web" if empty
	egress   bool
	rows     []string
	explain  []explainCell
	warning  string // substring expected in Warnings
	lenient  bool   // decode with DecodeLenient (Kubernetes mode)
}

const (
	npHeader       = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
	cnpHeader      = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
	ccnpHeader     = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n"
	npDenyAllShop  = npHeader + "metadata: {name: deny-all, namespace: shop}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n"
	npAllowAllShop = npHeader + "metadata: {name: allow-all, namespace: shop}\nspec:\n  podSelector: {}\n  ingress: [{}]\n"
)

// truthTables are the Kubernetes tables here and the Cilium ones in
// truth_cilium_test.go.
var truthTables = append([]truthTable{
	{
		name: "no policy", rows: []string{"*: AAAAAA"},
		explain: []explainCell{{"world", ProtoTCP, 80, true, []string{"allowed: no policy selects the endpoint"}}},
	},
	// ---- Kubernetes NetworkPolicy ----
	{
		name: "np deny all ingress", policies: []string{npDenyAllShop}, rows: []string{"*: DDDDDD"},
		explain: []explainCell{
			{"shop/api", ProtoTCP, 80, false, []string{"default deny: endpoint is enforced by NetworkPolicy shop/deny-all"}},
			{"host", ProtoUDP, 81, false, []string{"default deny"}},
		},
	},
	{
		name: "np deny all ingress leaves egress alone", policies: []string{npDenyAllShop}, egress: true, rows: []string{"*: AAAAAA"},
		explain: []explainCell{{"world", ProtoTCP, 80, true, []string{"egress not enforced", "selected by NetworkPolicy shop/deny-all"}}},
	},
	{
		name: "np deny all in another namespace", policies: []string{npDenyAllShop}, subject: "dev/web", rows: []string{"*: AAAAAA"},
		explain: []explainCell{{"shop/web", ProtoTCP, 80, true, []string{"no policy selects the endpoint"}}},
	},
	{
		name: "np empty ingress rule allows all", rows: []string{"*: AAAAAA"},
		policies: []string{npHeader + `metadata: {name: allow-all, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{}]
`},
		explain: []explainCell{{"world", ProtoSCTP, 81, true, []string{"NetworkPolicy shop/allow-all spec.ingress[0] any peer (no from) ports any"}}},
	},
	{
		name: "np empty ingress list allows none", rows: []string{"*: DDDDDD"},
		policies: []string{npHeader + `metadata: {name: none, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: []
`},
		explain: []explainCell{{"shop/api", ProtoTCP, 80, false, []string{"default deny: endpoint is enforced by NetworkPolicy shop/none"}}},
	},
	{
		name: "np podSelector does not select other pods", subject: "shop/api", rows: []string{"*: AAAAAA"},
		policies: []string{npHeader + `metadata: {name: none, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
`},
	},
	{
		name: "np allow same namespace", rows: []string{"shop/*: AAAAAA", "*: DDDDDD"},
		policies: []string{npHeader + `metadata: {name: same-ns, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {}
`},
		explain: []explainCell{
			{"shop/db", ProtoUDP, 81, true, []string{"NetworkPolicy shop/same-ns spec.ingress[0] from[0] {k8s:io.kubernetes.pod.namespace=shop}"}},
			{"dev/web", ProtoTCP, 80, false, []string{"default deny: endpoint is enforced by NetworkPolicy shop/same-ns"}},
		},
	},
	{
		name: "np namespaceSelector", rows: []string{"shop/*: AAAAAA", "dev/*: AAAAAA", "*: DDDDDD"},
		policies: []string{npHeader + `metadata: {name: team-a, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: a}}
`},
		explain: []explainCell{{"dev/api", ProtoTCP, 80, true, []string{"spec.ingress[0] from[0] {has(k8s:io.kubernetes.pod.namespace), k8s:io.cilium.k8s.namespace.labels.team=a}"}}},
	},
	{
		name: "np pod and namespace selector in one peer", rows: []string{"shop/api: AAAAAA", "dev/api: AAAAAA", "*: DDDDDD"},
		policies: []string{npHeader + `metadata: {name: api-of-team-a, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: a}}
      podSelector: {matchLabels: {app: api}}
`},
		explain: []explainCell{{"ops/api", ProtoTCP, 80, false, []string{"default deny"}}},
	},
	{
		name: "np pod and namespace selector as two peers", rows: []string{"dev/*: AAAAAA", "shop/api: AAAAAA", "*: DDDDDD"},
		policies: []string{npHeader + `metadata: {name: two-peers, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {env: dev}}
    - podSelector: {matchLabels: {app: api}}
`},
		explain: []explainCell{
			{"shop/api", ProtoTCP, 80, true, []string{"spec.ingress[0] from[1] {k8s:app=api, k8s:io.kubernetes.pod.namespace=shop}"}},
			{"dev/db", ProtoTCP, 80, true, []string{"spec.ingress[0] from[0]"}},
		},
	},
	{
		name: "np namespaceSelector on the metadata.name label", rows: []string{"dev/*: AAAAAA", "ops/*: AAAAAA", "*: DDDDDD"},
		policies: []string{npHeader + `metadata: {name: not-shop, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [shop]}
`},
	},
	{
		name: "np ports per rule", rows: []string{"shop/api: ADDAAD", "*: DDDAAD"},
		policies: []string{npHeader + `metadata: {name: ports, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: api}}
    ports:
    - port: 80
  - ports:
    - {protocol: UDP, port: 81}
    - {protocol: SCTP, port: 80}
`},
		explain: []explainCell{
			{"shop/api", ProtoTCP, 80, true, []string{"spec.ingress[0] from[0]", "ports TCP/80"}},
			{"world", ProtoUDP, 81, true, []string{"spec.ingress[1] any peer (no from) ports UDP/81"}},
			{"shop/api", ProtoTCP, 81, false, []string{"default deny"}},
		},
	},
	{
		name: "np endPort", rows: []string{"*: AADDDD"},
		policies: []string{npHeader + `metadata: {name: range, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - ports:
    - {port: 80, endPort: 81}
    - {protocol: UDP, port: 1000, endPort: 2000}
`},
		explain: []explainCell{
			{"world", ProtoTCP, 79, false, []string{"default deny"}},
			{"world", ProtoTCP, 81, true, []string{"ports TCP/80-81"}},
			{"world", ProtoTCP, 82, false, []string{"default deny"}},
			{"world", ProtoUDP, 999, false, []string{"default deny"}},
			{"world", ProtoUDP, 1000, true, []string{"ports UDP/1000-2000"}},
			{"world", ProtoUDP, 1537, true, []string{"ports UDP/1000-2000"}},
			{"world", ProtoUDP, 2000, true, []string{"ports UDP/1000-2000"}},
			{"world", ProtoUDP, 2001, false, []string{"default deny"}},
		},
	},
	{
		name: "np named ports", rows: []string{"*: DADDDD"}, warning: `named port "metrics" is 9090/TCP, the rule wants UDP`,
		policies: []string{npHeader + `metadata: {name: named, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - ports:
    - port: http
    - {port: dns, protocol: UDP}
    - {port: metrics, protocol: UDP}
`},
		explain: []explainCell{
			{"world", ProtoTCP, 81, true, []string{"ports TCP/http(81/TCP)"}},
			{"world", ProtoUDP, 53, true, []string{"ports UDP/dns(53/UDP)"}},
			{"world", ProtoUDP, 9090, false, []string{"default deny"}},
		},
	},
	{
		name: "np ipBlock with except",
		rows: []string{"cidr:10.0.0.0/8: AAAAAA", "cidr:10.2.0.0/16: AAAAAA", "*: DDDDDD"},
		policies: []string{npHeader + `metadata: {name: ten, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
`},
		explain: []explainCell{
			{"cidr:10.2.0.0/16", ProtoTCP, 80, true, []string{"spec.ingress[0] from[0] ipBlock 10.0.0.0/8 except 10.1.0.0/16"}},
			{"cidr:10.1.2.0/24", ProtoTCP, 80, false, []string{"default deny"}},
			{"world", ProtoTCP, 80, false, []string{"default deny"}},
		},
	},
	{
		name: "np egress only: ingress not enforced", rows: []string{"*: AAAAAA"},
		policies: []string{npEgressOnly},
		explain:  []explainCell{{"world", ProtoTCP, 80, true, []string{"ingress not enforced"}}},
	},
	{
		name: "np egress only: egress", egress: true, rows: []string{"shop/db: DADDDD", "*: DDDDDD"},
		policies: []string{npEgressOnly},
		explain: []explainCell{
			{"shop/db", ProtoTCP, 81, true, []string{"NetworkPolicy shop/to-db spec.egress[0] to[0] {k8s:app=db, k8s:io.kubernetes.pod.namespace=shop} ports TCP/81"}},
			{"dev/db", ProtoTCP, 81, false, []string{"default deny: endpoint is enforced by NetworkPolicy shop/to-db"}},
		},
	},
	{
		name: "np empty policyTypes is defaulted", rows: []string{"shop/*: AAAAAA", "*: DDDDDD"},
		policies: []string{npHeader + `metadata: {name: empty-types, namespace: shop}
spec:
  podSelector: {}
  policyTypes: []
  ingress:
  - from:
    - podSelector: {}
`},
	},
	{
		name: "np egress rules imply both policy types", rows: []string{"*: DDDDDD"},
		policies: []string{npHeader + `metadata: {name: egress-rules, namespace: shop}
spec:
  podSelector: {}
  egress:
  - to:
    - podSelector: {}
`},
	},
	{
		name: "np egress to the internet except 10/8", egress: true,
		rows: []string{"world: AAAAAA", "cidr:192.0.2.0/24: AAAAAA", "cidr:8.8.8.0/24: AAAAAA", "*: DDDDDD"},
		policies: []string{npHeader + `metadata: {name: internet, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}
`},
		explain: []explainCell{{"cidr:fd00:1::/64", ProtoTCP, 80, false, []string{"default deny"}}},
	},
	{
		name: "np egress named ports resolve on peers", egress: true,
		rows:    []string{"shop/*: DADDDD", "dev/*: DADDDD", "ops/*: DADDDD", "*: DDDDDD"},
		warning: `named port "admin" is ambiguous for TCP on peer identity`,
		policies: []string{npHeader + `metadata: {name: egress-named, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - ports:
    - {port: dns, protocol: UDP}
    - port: http
    - port: admin
`},
		explain: []explainCell{
			{"shop/api", ProtoUDP, 53, true, []string{"UDP/dns(53/UDP)"}},
			{"shop/api", ProtoTCP, 53, false, []string{"default deny"}},
			// Peers without pods have no named ports.
			{"world", ProtoUDP, 53, false, []string{"default deny"}},
			{"ops/db", ProtoTCP, 8080, false, []string{"default deny"}},
		},
	},
	{
		// Issue 11 item 7: the name resolves to each destination's own port.
		name: "np egress named port resolves per destination", egress: true,
		rows: []string{"*/web: DADDDD", "*/api: ADDDDD", "*: DDDDDD"},
		policies: []string{npHeader + `metadata: {name: egress-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {}
    ports:
    - port: web
`},
		explain: []explainCell{
			{"dev/api", ProtoTCP, 80, true, []string{"TCP/web(80/TCP)"}},
			{"dev/api", ProtoTCP, 81, false, []string{"default deny"}},
			{"ops/web", ProtoTCP, 81, true, []string{"TCP/web(81/TCP)"}},
			{"ops/web", ProtoTCP, 80, false, []string{"default deny"}},
		},
	},
	{
		name: "np egress named port on no selected peer warns and allows nothing", egress: true, rows: []string{"*: DDDDDD"},
		warning: `named port "web" not found on any peer the rule selects`,
		policies: []string{npHeader + `metadata: {name: egress-db-web, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {app: db}}
    ports:
    - port: web
`},
	},
	{
		name: "cnp egressDeny named port denies each destination's own port", egress: true,
		rows: []string{"shop/api: DAAAAA", "*: AAAAAA"}, // toEndpoints: the policy namespace only
		policies: []string{cnpHeader + `metadata: {name: deny-web, namespace: shop}
spec:
  endpointSelector: {}
  egress:
  - toEntities: [all]
  egressDeny:
  - toEndpoints: [{matchLabels: {app: api}}]
    toPorts:
    - ports: [{port: web, protocol: TCP}]
`},
		explain: []explainCell{{"shop/api", ProtoTCP, 80, false, []string{"TCP/web(80/TCP)"}}},
	},
	{
		name: "allow-localhost option", policies: []string{npDenyAllShop}, opts: Options{AllowLocalhost: true},
		rows:    []string{"host: AAAAAA", "*: DDDDDD"},
		explain: []explainCell{{"host", ProtoTCP, 80, true, []string{"agent option allow-localhost"}}},
	},
}, ciliumTruthTables...)

const npEgressOnly = npHeader + `metadata: {name: to-db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {app: db}}
    ports:
    - port: 81
`

const cnpEgress = cnpHeader + `metadata: {name: egress, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: db}}]
    toPorts: [{ports: [{port: "81", protocol: TCP}]}]
  - toEntities: [world]
`

const ccnpNoWorld = ccnpHeader + `metadata: {name: no-world}
spec:
  endpointSelector: {}
  ingressDeny:
  - fromEntities: [world]
`

const ccnpHostFW = ccnpHeader + `metadata: {name: host-fw}
spec:
  nodeSelector: {matchLabels: {node-role: worker}}
  ingress:
  - fromEntities: [remote-node]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - fromEntities: [cluster]
    toPorts: [{ports: [{port: "81", protocol: UDP}]}]
`

const ccnpPodsOnly = ccnpHeader + `metadata: {name: pods-only}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{}]
`

const ccnpBlockWorldNoDefaultDeny = ccnpHeader + `metadata: {name: block-world}
spec:
  endpointSelector: {}
  enableDefaultDeny: {ingress: false}
  ingressDeny:
  - fromEntities: [world]
`

func cnpEntities(es ...string) string {
	return cnpHeader + "metadata: {name: entities, namespace: shop}\nspec:\n  endpointSelector: {}\n  ingress:\n  - fromEntities: [" + strings.Join(es, ", ") + "]\n"
}

func globMatch(pattern, s string) bool {
	re := "^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, ".*") + "$"
	return regexp.MustCompile(re).MatchString(s)
}

func TestTruthTables(t *testing.T) {
	for _, tt := range truthTables {
		t.Run(tt.name, func(t *testing.T) {
			var policies []*Policy
			if !tt.lenient {
				policies = decodeAll(t, tt.policies...)
			} else {
				for _, d := range tt.policies {
					p, err := DecodeLenient([]byte(d))
					if p == nil || err == nil {
						t.Fatalf("DecodeLenient: %v, %v: the table wants a policy with unenforced parts", p, err)
					}
					policies = append(policies, p)
				}
			}
			w := newWorld(t, policies)
			subject := tt.subject
			if subject == "" {
				subject = "shop/web"
			}
			ep := w.endpoint(t, subject)
			eng, err := NewEngine(policies, w.ids, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			pol, err := eng.Compute(ep)
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, pol)
			for _, name := range slices.Sorted(func(yield func(string) bool) {
				for n := range w.byName {
					if !yield(n) {
						return
					}
				}
			}) {
				want := ""
				for _, row := range tt.rows {
					pat, cells, _ := strings.Cut(row, ": ")
					if globMatch(pat, name) {
						want = cells
						break
					}
				}
				if len(want) != len(columns) {
					t.Fatalf("no row (or a malformed one) for %s", name)
				}
				id := w.id(t, name)
				for c, col := range columns {
					v := Lookup(pol, id, tt.egress, col.proto, col.port)
					x := pol.Explain(id, tt.egress, col.proto, col.port)
					if x.Allowed() != v.Allowed {
						t.Fatalf("%s %s/%d: Explain says %v, Lookup %v", name, ProtoName(col.proto), col.port, x.Allowed(), v.Allowed)
					}
					if v.Allowed != (want[c] == 'A') {
						t.Errorf("%s %s/%d: allowed=%v, want %c\nexplanation: %s\nentries: %v", name, ProtoName(col.proto), col.port, v.Allowed, want[c], x, pol.Entries)
					}
					if (v.Reason == "allowed" || v.Reason == "denied") && len(x.Rules) == 0 {
						t.Errorf("%s %s/%d: %s without a rule: %s", name, ProtoName(col.proto), col.port, v.Reason, x)
					}
				}
			}
			for _, c := range tt.explain {
				id := w.id(t, c.peer)
				x, err := Explain(policies, w.ids, ExplainQuery{Endpoint: ep, Peer: id, Egress: tt.egress, Proto: c.proto, Port: c.port, Options: tt.opts})
				if err != nil {
					t.Fatal(err)
				}
				if x.Allowed() != c.allow {
					t.Errorf("explain %s %s/%d: allowed=%v, want %v\n%s", c.peer, ProtoName(c.proto), c.port, x.Allowed(), c.allow, x)
				}
				if v := Lookup(pol, id, tt.egress, c.proto, c.port); v.Allowed != x.Allowed() {
					t.Errorf("explain %s %s/%d disagrees with Lookup", c.peer, ProtoName(c.proto), c.port)
				}
				s := x.String()
				for _, want := range c.want {
					if !strings.Contains(s, want) {
						t.Errorf("explain %s %s/%d: %q not in\n%s", c.peer, ProtoName(c.proto), c.port, want, s)
					}
				}
			}
			if tt.warning != "" && !slices.ContainsFunc(pol.Warnings, func(s string) bool { return strings.Contains(s, tt.warning) }) {
				t.Errorf("no warning containing %q in %q", tt.warning, pol.Warnings)
			}
		})
	}
}
