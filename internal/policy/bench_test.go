package policy

import (
	"fmt"
	"strings"
	"testing"
)

// benchSetup: 1,000 identities (10 namespaces x 97 apps, the reserved ones
// and CIDR identities) and 250 rules that all select the subject endpoint,
// mixing L3, L4, ranges, namespace-wide peers, entities, CIDRs and denies.
func benchSetup(b *testing.B) ([]*Policy, map[uint32]Labels, EndpointInfo) {
	ids := map[uint32]Labels{
		IdentityHost: MustParseLabels("reserved:host"), IdentityWorld: MustParseLabels("reserved:world"),
		IdentityRemoteNode: MustParseLabels("reserved:remote-node"), IdentityKubeAPIServer: MustParseLabels("reserved:kube-apiserver"),
	}
	id := uint32(1000)
	for n := range 10 {
		for a := range 97 {
			ids[id] = MustParseLabels(fmt.Sprintf("k8s:app=app%d", a), fmt.Sprintf("k8s:tier=t%d", a%5),
				fmt.Sprintf("k8s:%s=ns%d", PodNamespaceLabel, n), fmt.Sprintf("k8s:%steam=team%d", NamespaceLabelsPrefix, n%3))
			id++
		}
	}
	var docs []string
	for i := range 250 {
		var sec string
		switch i % 10 {
		case 0:
			sec = fmt.Sprintf("ingress:\n  - fromEndpoints: [{matchLabels: {app: app%d}}]\n", i%97)
		case 1:
			sec = fmt.Sprintf("ingress:\n  - fromEndpoints: [{matchLabels: {app: app%d, k8s:io.kubernetes.pod.namespace: ns%d}}]\n    toPorts: [{ports: [{port: \"%d\", protocol: TCP}]}]\n", i%97, i%10, 8000+i)
		case 2:
			sec = fmt.Sprintf("ingress:\n  - fromEndpoints: [{matchLabels: {k8s:io.cilium.k8s.namespace.labels.team: team%d}}]\n    toPorts: [{ports: [{port: \"%d\", endPort: %d, protocol: TCP}]}]\n", i%3, 1000+i, 1100+i)
		case 3:
			sec = fmt.Sprintf("egress:\n  - toEndpoints: [{matchLabels: {tier: t%d}}]\n    toPorts: [{ports: [{port: \"%d\"}]}]\n", i%5, 5000+i)
		case 4:
			sec = fmt.Sprintf("egress:\n  - toCIDRSet: [{cidr: 10.%d.0.0/16, except: [10.%d.1.0/24]}]\n", i%256, i%256)
		case 5:
			sec = "egress:\n  - toEntities: [kube-apiserver, remote-node]\n    toPorts: [{ports: [{port: \"6443\", protocol: TCP}]}]\n"
		case 6:
			sec = fmt.Sprintf("ingressDeny:\n  - fromEndpoints: [{matchLabels: {app: app%d, k8s:io.kubernetes.pod.namespace: ns%d}}]\n", i%97, (i/10)%10)
		case 7:
			sec = fmt.Sprintf("ingress:\n  - toPorts: [{ports: [{port: \"%d\", protocol: UDP}]}]\n", 9000+i)
		case 8:
			sec = fmt.Sprintf("ingress:\n  - fromEndpoints: [{matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: In, values: [ns%d, ns%d]}, {key: tier, operator: NotIn, values: [t0]}]}]\n", i%10, (i+3)%10)
		case 9:
			sec = fmt.Sprintf("egressDeny:\n  - toEndpoints: [{matchLabels: {tier: t%d, k8s:io.kubernetes.pod.namespace: ns%d}}]\n    toPorts: [{ports: [{port: \"%d\", protocol: TCP}]}]\n", i%5, i%10, 5000+i-6)
		}
		docs = append(docs, fmt.Sprintf("%smetadata: {name: p%d, namespace: ns0}\nspec:\n  endpointSelector: {matchLabels: {app: app0}}\n  %s", cnpHeader, i, sec))
	}
	var policies []*Policy
	for _, d := range docs {
		p, err := Decode([]byte(d))
		if err != nil {
			b.Fatalf("%v\n%s", err, d)
		}
		policies = append(policies, p)
	}
	for i, p := range CIDRPrefixes(policies) {
		var ls []string
		for _, q := range CIDRPrefixes(policies) {
			if within(p, q) {
				ls = append(ls, "cidr:"+q.String())
			}
		}
		ids[1<<24+uint32(i)] = MustParseLabels(append(ls, "reserved:world")...)
	}
	ep := EndpointInfo{Identity: 1000, Labels: ids[1000], Namespace: "ns0"}
	if !strings.Contains(ids[1000].String(), "app=app0") {
		b.Fatal("subject is not app0")
	}
	return policies, ids, ep
}

// BenchmarkCompute: the whole job for one endpoint (prepare + compute).
func BenchmarkCompute(b *testing.B) {
	policies, ids, ep := benchSetup(b)
	b.ReportMetric(float64(len(ids)), "identities")
	var pol *EndpointPolicy
	for b.Loop() {
		var err error
		if pol, err = Compute(policies, ids, ep); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(pol.Entries)), "entries")
	if len(pol.SelectedBy) != 250 {
		b.Fatalf("selected by %d policies, want 250", len(pol.SelectedBy))
	}
}

// BenchmarkEngineCompute: computing one more endpoint on a prepared engine.
func BenchmarkEngineCompute(b *testing.B) {
	policies, ids, ep := benchSetup(b)
	eng, err := NewEngine(policies, ids, Options{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := eng.Compute(ep); err != nil {
			b.Fatal(err)
		}
	}
}
