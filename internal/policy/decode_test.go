package policy

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestDecodeErrors(t *testing.T) {
	cnp := func(spec string) string {
		return cnpHeader + "metadata: {name: allow-web, namespace: shop}\nspec:\n" + spec
	}
	np := func(spec string) string {
		return npHeader + "metadata: {name: np, namespace: shop}\nspec:\n" + spec
	}
	tests := []struct {
		name string
		doc  string
		want []string // each must appear in the error
	}{
		{"named port with endPort", cnp(`  endpointSelector: {}
  ingress:
  - toPorts:
    - ports:
      - port: "80"
      - {port: http, endPort: 90}
`), []string{`CiliumNetworkPolicy shop/allow-web: spec.ingress[0].toPorts[0].ports[1].port: invalid value "http": a named port cannot have an endPort`}},
		{"bad port name", cnp("  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: Web_Port}]}]\n"),
			[]string{`spec.ingress[0].toPorts[0].ports[0].port: invalid value "Web_Port": must be a port number or a port name`}},
		{"port out of range", cnp("  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: \"70000\"}]}]\n"),
			[]string{`spec.ingress[0].toPorts[0].ports[0].port: invalid value "70000": must be between 0 and 65535`}},
		{"numeric port out of range", cnp("  endpointSelector: {}\n  egress:\n  - toPorts: [{ports: [{port: -1}]}]\n"),
			[]string{`spec.egress[0].toPorts[0].ports[0].port: invalid value -1: must be between 0 and 65535`}},
		{"endPort below port", cnp("  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: \"80\", endPort: 79, protocol: TCP}]}]\n"),
			[]string{`spec.ingress[0].toPorts[0].ports[0].endPort: invalid value 79: must be greater than or equal to port 80`}},
		{"endPort without port", cnp("  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{endPort: 79, protocol: TCP}]}]\n"),
			[]string{`spec.ingress[0].toPorts[0].ports[0].endPort: may not be specified without a port`}},
		{"unknown protocol", cnp("  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: \"80\", protocol: ICMP}]}]\n"),
			[]string{`spec.ingress[0].toPorts[0].ports[0].protocol: unsupported value "ICMP": supported values: "TCP", "UDP", "SCTP", "ANY"`}},
		{"unknown entity", cnp("  endpointSelector: {}\n  egress:\n  - toEntities: [world, internet]\n"),
			[]string{`spec.egress[0].toEntities[1]: unsupported value "internet": supported values: "all", "world", "cluster"`}},
		{"bad CIDR", cnp("  endpointSelector: {}\n  egress:\n  - toCIDR: [10.0.0.300/8]\n"),
			[]string{`spec.egress[0].toCIDR[0]: invalid value "10.0.0.300/8": must be a valid CIDR`}},
		{"except outside cidr", cnp("  endpointSelector: {}\n  egress:\n  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [192.168.0.0/16]}]\n"),
			[]string{`spec.egress[0].toCIDRSet[0].except[0]: invalid value "192.168.0.0/16": must be inside cidr 10.0.0.0/8`}},
		{"bad selector operator", cnp("  endpointSelector:\n    matchExpressions: [{key: app, operator: Contains, values: [a]}]\n  ingress: [{}]\n"),
			[]string{`spec.endpointSelector.matchExpressions[0].operator: unsupported value "Contains": supported values: "In", "NotIn", "Exists", "DoesNotExist"`}},
		{"In without values", cnp("  endpointSelector:\n    matchExpressions: [{key: app, operator: In}]\n  ingress: [{}]\n"),
			[]string{`spec.endpointSelector.matchExpressions[0].values: required value: must be non-empty when operator is In`}},
		{"Exists with values", cnp("  endpointSelector: {}\n  ingress:\n  - fromEndpoints:\n    - matchExpressions: [{key: app, operator: Exists, values: [a]}]\n"),
			[]string{`spec.ingress[0].fromEndpoints[0].matchExpressions[0].values: must be empty when operator is Exists`}},
		{"bad label value", cnp("  endpointSelector: {matchLabels: {app: \"a b\"}}\n  ingress: [{}]\n"),
			[]string{`spec.endpointSelector.matchLabels.app: invalid value "a b": must be a label value`}},
		{"bad label key", cnp("  endpointSelector: {matchLabels: {\"-app\": a}}\n  ingress: [{}]\n"),
			[]string{`spec.endpointSelector.matchLabels.-app: invalid value "-app": must be a qualified name`}},
		{"L7 rules", cnp("  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports: [{port: \"80\", protocol: TCP}]\n      rules:\n        http: [{method: GET}]\n"),
			[]string{`CiliumNetworkPolicy shop/allow-web: spec.ingress[0].toPorts[0].rules: L7 rules are not supported yet`}},
		{"unknown field", cnp("  endpointSelector: {}\n  ingress:\n  - fromEndpoint: [{}]\n"),
			[]string{`spec.ingress[0]: unknown field "fromEndpoint"`}},
		{"not supported yet", cnp("  endpointSelector: {}\n  ingress:\n  - fromGroups: [{}]\n  egress:\n  - toFQDNs: [{matchName: a.b}]\n  - toPorts: [{ports: [{port: \"443\"}], serverNames: [a.b]}]\n"),
			[]string{`spec.ingress[0].fromGroups: not supported yet`, `spec.egress[0].toFQDNs: not supported yet`, `spec.egress[1].toPorts[0].serverNames: not supported yet`}},
		{"icmps with toPorts", cnp("  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: \"80\"}]}]\n    icmps: [{fields: [{type: 8}]}]\n"),
			[]string{`spec.ingress[0]: toPorts and icmps are mutually exclusive`}},
		{"icmp type out of range", cnp("  endpointSelector: {}\n  ingress:\n  - icmps: [{fields: [{type: 256}, {type: -1}]}]\n"),
			[]string{`spec.ingress[0].icmps[0].fields[0].type: invalid value 256: must be between 0 and 255`, `fields[1].type: invalid value -1`}},
		{"icmp type name of the other family", cnp("  endpointSelector: {}\n  ingress:\n  - icmps: [{fields: [{type: NeighborSolicitation, family: IPv4}, {type: \"Echo\\0Request\", family: IPv6}]}]\n"),
			[]string{`spec.ingress[0].icmps[0].fields[0].type: invalid value "NeighborSolicitation": must be an ICMP type number (0-255) or an IPv4 type name`, `fields[1].type: invalid value "Echo\x00Request"`}},
		{"icmp family", cnp("  endpointSelector: {}\n  ingress:\n  - icmps: [{fields: [{type: 8, family: IPv5}, {family: IPv4}]}]\n"),
			[]string{`spec.ingress[0].icmps[0].fields[0].family: unsupported value "IPv5": supported values: "IPv4", "IPv6"`, `fields[1].type: required value`}},
		{"requires selector", cnp("  endpointSelector: {}\n  ingress:\n  - fromRequires: [{matchLabels: {\"bad key!\": x}}]\n"),
			[]string{`spec.ingress[0].fromRequires[0].matchLabels.bad key!: invalid value "bad key!"`}},
		{"rules in deny ports", cnp("  endpointSelector: {}\n  ingressDeny:\n  - toPorts: [{ports: [{port: \"80\"}], rules: {}}]\n"),
			[]string{`spec.ingressDeny[0].toPorts[0]: unknown field "rules"`}},
		{"nodeSelector in a namespaced policy", cnp("  nodeSelector: {}\n  ingress: [{}]\n"),
			[]string{`spec.nodeSelector: only allowed in a CiliumClusterwideNetworkPolicy`}},
		{"both selectors", ccnpHeader + "metadata: {name: x}\nspec:\n  nodeSelector: {}\n  endpointSelector: {}\n",
			[]string{`CiliumClusterwideNetworkPolicy x: spec: endpointSelector and nodeSelector are mutually exclusive`}},
		{"no selector", cnp("  ingress: [{}]\n"), []string{`spec: required value: one of endpointSelector or nodeSelector`}},
		{"no spec", cnpHeader + "metadata: {name: x, namespace: shop}\n", []string{`CiliumNetworkPolicy shop/x: spec: required value`}},
		{"empty specs", cnpHeader + "metadata: {name: x, namespace: shop}\nspecs: []\n", []string{`specs: must contain at least one rule`}},
		{"bad enableDefaultDeny", cnp("  endpointSelector: {}\n  enableDefaultDeny: {ingress: no-thanks}\n"),
			[]string{`spec.enableDefaultDeny.ingress: must be a boolean, not a string`}},
		{"wrong type", cnp("  endpointSelector: {}\n  ingress: {fromEntities: [all]}\n"), []string{`spec.ingress: must be a list, not an object`}},
		{"several errors, each named", cnp("  endpointSelector: {}\n  ingress:\n  - fromEntities: [bogus]\n    toPorts: [{ports: [{port: \"99999\"}]}]\n"),
			[]string{"CiliumNetworkPolicy shop/allow-web: spec.ingress[0].fromEntities[0]: unsupported value \"bogus\"", "\nCiliumNetworkPolicy shop/allow-web: spec.ingress[0].toPorts[0].ports[0].port: invalid value \"99999\""}},

		// NetworkPolicy, validated like the API server does.
		{"np numeric string port", np("  podSelector: {}\n  ingress:\n  - ports: [{port: \"80\"}]\n"),
			[]string{`NetworkPolicy shop/np: spec.ingress[0].ports[0].port: invalid value "80": must contain at least one letter`}},
		{"np port 0", np("  podSelector: {}\n  ingress:\n  - ports: [{port: 0}]\n"),
			[]string{`spec.ingress[0].ports[0].port: invalid value 0: must be between 1 and 65535, inclusive`}},
		{"np lowercase protocol", np("  podSelector: {}\n  egress:\n  - ports: [{protocol: tcp, port: 80}]\n"),
			[]string{`spec.egress[0].ports[0].protocol: unsupported value "tcp": supported values: "TCP", "UDP", "SCTP"`}},
		{"np named port with endPort", np("  podSelector: {}\n  ingress:\n  - ports: [{port: http, endPort: 90}]\n"),
			[]string{`spec.ingress[0].ports[0].port: invalid value "http": a named port cannot have an endPort`}},
		{"np endPort below port", np("  podSelector: {}\n  ingress:\n  - ports: [{port: 90, endPort: 80}]\n"),
			[]string{`spec.ingress[0].ports[0].endPort: invalid value 80: must be greater than or equal to port 90`}},
		{"np endPort without port", np("  podSelector: {}\n  ingress:\n  - ports: [{endPort: 80}]\n"),
			[]string{`spec.ingress[0].ports[0].endPort: may not be specified without port`}},
		{"np empty peer", np("  podSelector: {}\n  ingress:\n  - from: [{}]\n"),
			[]string{`spec.ingress[0].from[0]: required value: must specify a peer`}},
		{"np ipBlock with selector", np("  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]\n"),
			[]string{`spec.ingress[0].from[0]: may not specify ipBlock together with podSelector or namespaceSelector`}},
		{"np except not a strict subset", np("  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]\n"),
			[]string{`spec.ingress[0].from[0].ipBlock.except[0]: invalid value "10.0.0.0/8": must be a strict subset of cidr 10.0.0.0/8`}},
		{"np ipBlock address", np("  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.1.2.3}}]\n"),
			[]string{`spec.ingress[0].from[0].ipBlock.cidr: invalid value "10.1.2.3": must be a valid CIDR`}},
		{"np bad policyType", np("  podSelector: {}\n  policyTypes: [Ingress, Ingress, Both]\n"),
			[]string{`spec.policyTypes[1]: duplicate value "Ingress"`, `spec.policyTypes[2]: unsupported value "Both": supported values: "Ingress", "Egress"`}},
		{"np selector key with a source", np("  podSelector: {matchLabels: {k8s:app: web}}\n"),
			[]string{`spec.podSelector.matchLabels.k8s:app: invalid value "k8s:app": must be a qualified name`}},
		{"np specs", npHeader + "metadata: {name: np}\nspec: {podSelector: {}}\nspecs: []\n", []string{`NetworkPolicy default/np: unknown field "specs"`}},

		// The object itself.
		{"unsupported kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
			[]string{`Pod default/p: kind: unsupported value "Pod": supported values: "NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"`}},
		{"wrong apiVersion", "apiVersion: cilium.io/v1\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\nspec: {endpointSelector: {}}\n",
			[]string{`CiliumNetworkPolicy default/p: apiVersion: unsupported value "cilium.io/v1": supported values: "cilium.io/v2"`}},
		{"no name", cnpHeader + "metadata: {namespace: shop}\nspec: {endpointSelector: {}}\n", []string{`metadata.name: required value`}},
		{"bad name", cnpHeader + "metadata: {name: Bad_Name}\nspec: {endpointSelector: {}}\n", []string{`metadata.name: invalid value "Bad_Name"`}},
		{"not YAML", "kind: [\n", []string{`policy: <document>: parsing YAML`}},
		{"empty", "", []string{`empty document`}},
		{"a list", "- 1\n- 2\n", []string{`must be an object, not a list`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Decode([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Decode succeeded (%s), want an error containing %q", p, tt.want)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T is not a *DecodeError: %v", err, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	docs := map[string]string{
		"json": `{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy","metadata":{"name":"j","namespace":"shop"},
			"spec":{"endpointSelector":{"matchLabels":{"app":"web"}},"ingress":[{"fromEndpoints":[{}],"toPorts":[{"ports":[{"port":"80","protocol":"TCP"}]}]}]}}`,
		"integer port and description": cnpHeader + `metadata: {name: p, namespace: shop, labels: {a: b}, uid: "123"}
spec:
  description: "free text"
  labels: [{key: team, value: a, source: k8s}]
  endpointSelector: {}
  ingress:
  - toPorts: [{ports: [{port: 8080, protocol: TCP}, {port: "0", protocol: UDP}, {port: "53", protocol: ""}]}]
status: {anything: goes}
`,
		"empty rules object is fine when null": cnpHeader + "metadata: {name: p}\nspec:\n  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: \"80\"}], rules: null}]\n",
		"spec and specs":                       cnpHeader + "metadata: {name: p}\nspec: {endpointSelector: {}}\nspecs: [{endpointSelector: {}}, {endpointSelector: {}}]\n",
		"np everything": npHeader + `metadata: {name: all-fields, namespace: shop}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [web, api]}]}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    - namespaceSelector: {}
      podSelector: {matchLabels: {app.kubernetes.io/name: db}}
    ports:
    - {protocol: SCTP, port: 80, endPort: 90}
    - {port: metrics}
    - {protocol: UDP}
  egress:
  - {}
`,
	}
	for name, doc := range docs {
		if _, err := Decode([]byte(doc)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestDecodeNamespaces(t *testing.T) {
	p := decodeAll(t, npHeader+"metadata: {name: x}\nspec: {podSelector: {}}\n")[0]
	if p.Namespace != "default" || p.String() != "NetworkPolicy default/x" {
		t.Errorf("namespace defaulting: got %q (%s)", p.Namespace, p)
	}
	p = decodeAll(t, ccnpHeader+"metadata: {name: x, namespace: ignored}\nspec: {endpointSelector: {}}\n")[0]
	if p.Namespace != "" || p.String() != "CiliumClusterwideNetworkPolicy x" {
		t.Errorf("clusterwide policy: got namespace %q (%s)", p.Namespace, p)
	}
}

func TestHostRules(t *testing.T) {
	p := decodeAll(t, ccnpHeader+`metadata: {name: mixed}
specs:
- endpointSelector: {}
  ingress: [{}]
- nodeSelector: {}
  ingress: [{}]
`)[0]
	if got := p.HostRules(); !slices.Equal(got, []int{1}) || p.Rules() != 2 {
		t.Errorf("HostRules() = %v (of %d), want [1] of 2", got, p.Rules())
	}
	if got := decodeAll(t, npAllowAllShop)[0].HostRules(); got != nil {
		t.Errorf("NetworkPolicy HostRules() = %v, want none", got)
	}
}

func TestCIDRPrefixes(t *testing.T) {
	ps := decodeAll(t,
		npHeader+`metadata: {name: a, namespace: shop}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.0.0/16]}}]
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [192.168.0.0/16]}}]
`,
		cnpHeader+`metadata: {name: b, namespace: shop}
spec:
  endpointSelector: {}
  egress:
  - toCIDR: [10.0.0.0/8, 1.2.3.4, "fd00::/64"]
  egressDeny:
  - toCIDRSet: [{cidr: 10.1.0.0/16, except: [10.1.2.0/24]}]
`)
	var got []string
	for _, p := range CIDRPrefixes(ps) {
		got = append(got, p.String())
	}
	want := []string{"1.2.3.4/32", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16", "192.168.0.0/16", "fd00::/64"}
	if !slices.Equal(got, want) {
		t.Errorf("CIDRPrefixes = %v, want %v", got, want)
	}
	if !netip.MustParsePrefix("10.0.0.0/8").Contains(netip.MustParseAddr("10.1.2.3")) {
		t.Fatal("sanity")
	}
}
