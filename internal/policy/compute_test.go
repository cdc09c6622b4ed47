package policy

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func computeFor(t *testing.T, subject string, opts Options, docs ...string) (*testWorld, *EndpointPolicy) {
	t.Helper()
	policies := decodeAll(t, docs...)
	w := newWorld(t, policies)
	eng, err := NewEngine(policies, w.ids, opts)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := eng.Compute(w.endpoint(t, subject))
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, pol)
	return w, pol
}

func keys(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.String())
	}
	return out
}

func TestMinimalEntries(t *testing.T) {
	tests := []struct {
		name                 string
		docs                 []string
		entries, overridden  []string
		shadowedAtLeast      int
		ingress, egressState bool
	}{
		{
			name: "wildcard allow makes narrower allows redundant",
			docs: []string{cnpHeader + `metadata: {name: p, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - fromEntities: [all]
  - fromEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - toPorts: [{ports: [{port: "80", endPort: 90, protocol: UDP}]}]
`},
			entries:         []string{"ingress identity=0 proto=any port=any allow"},
			shadowedAtLeast: 4, ingress: true,
		},
		{
			name: "a deny covering an allow of the same identity replaces it",
			docs: []string{cnpHeader + `metadata: {name: p, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: api}}]
`},
			entries:    []string{"ingress identity=1006 proto=any port=any deny"},
			overridden: []string{"ingress identity=1006 proto=TCP port=80 allow"},
			ingress:    true,
		},
		{
			name: "a narrower deny inside an allow stays, LPM prefers it",
			docs: []string{cnpHeader + `metadata: {name: p, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{matchLabels: {app: api}}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "80", endPort: 81, protocol: TCP}]}]
`},
			entries: []string{
				"ingress identity=1006 proto=any port=any allow",
				"ingress identity=1006 proto=TCP port=80-81 deny",
			},
			ingress: true,
		},
		{
			name: "an identity deny under a wildcard deny is redundant",
			docs: []string{cnpHeader + `metadata: {name: p, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - toPorts: [{ports: [{port: "53", protocol: UDP}]}]
  - fromEntities: [host]
    toPorts: [{ports: [{port: "53", protocol: UDP}]}]
`},
			entries: []string{
				"ingress identity=0 proto=any port=any allow",
				"ingress identity=0 proto=UDP port=53 deny",
			},
			shadowedAtLeast: 1, ingress: true,
		},
		{
			name: "port range blocks",
			docs: []string{cnpHeader + `metadata: {name: p, namespace: shop}
spec:
  endpointSelector: {}
  egress:
  - toEntities: [host]
    toPorts: [{ports: [{port: "80", endPort: 90, protocol: TCP}]}]
`},
			entries: []string{
				"egress identity=1 proto=TCP port=80-87 allow",
				"egress identity=1 proto=TCP port=88-89 allow",
				"egress identity=1 proto=TCP port=90 allow",
			},
			egressState: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, pol := computeFor(t, "shop/web", Options{}, tt.docs...)
			if got := keys(pol.Entries); !slices.Equal(got, tt.entries) {
				t.Errorf("entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.entries, "\n"))
			}
			if got := keys(pol.Overridden); !slices.Equal(got, tt.overridden) {
				t.Errorf("overridden: %q, want %q", got, tt.overridden)
			}
			if len(pol.Shadowed) < tt.shadowedAtLeast {
				t.Errorf("shadowed: %d entries, want at least %d", len(pol.Shadowed), tt.shadowedAtLeast)
			}
			if pol.IngressEnforced != tt.ingress || pol.EgressEnforced != tt.egressState {
				t.Errorf("enforced ingress=%v egress=%v, want %v %v", pol.IngressEnforced, pol.EgressEnforced, tt.ingress, tt.egressState)
			}
		})
	}
}

// TestComputeDeterministic: the result does not depend on map iteration or
// on the order of the policies.
func TestComputeDeterministic(t *testing.T) {
	var docs []string
	for _, tt := range truthTables {
		if tt.subject == "" && !tt.egress {
			docs = append(docs, tt.policies...)
		}
	}
	docs = slices.Compact(docs)
	policies := decodeAll(t, docs...)
	w := newWorld(t, policies)
	ep := w.endpoint(t, "shop/web")
	first, err := Compute(policies, w.ids, ep)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Entries) == 0 {
		t.Fatal("no entries")
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 5 {
		r.Shuffle(len(policies), func(i, j int) { policies[i], policies[j] = policies[j], policies[i] })
		again, err := Compute(policies, w.ids, ep)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(first, again) {
			t.Fatal("Compute is not deterministic")
		}
	}
}

func TestComputeErrors(t *testing.T) {
	if _, err := NewEngine(nil, map[uint32]Labels{0: MustParseLabels("reserved:world")}, Options{}); err == nil || !strings.Contains(err.Error(), "identity 0") {
		t.Errorf("identity 0: err = %v", err)
	}
	if _, err := NewEngine([]*Policy{nil}, nil, Options{}); err == nil {
		t.Error("nil policy: no error")
	}
	e, err := NewEngine(nil, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Compute(EndpointInfo{Identity: 1000, Namespace: "dev", Labels: MustParseLabels("k8s:io.kubernetes.pod.namespace=shop")})
	if err == nil || !strings.Contains(err.Error(), `namespace "dev" does not match`) {
		t.Errorf("namespace mismatch: err = %v", err)
	}
}

// TestKubeAPIServerOnNodeIdentity: labels, not numbers, decide. A remote
// node identity that also runs the apiserver matches both entities.
func TestKubeAPIServerOnNodeIdentity(t *testing.T) {
	policies := decodeAll(t, cnpHeader+`metadata: {name: api, namespace: shop}
spec:
  endpointSelector: {}
  egress:
  - toEntities: [kube-apiserver]
    toPorts: [{ports: [{port: "6443", protocol: TCP}]}]
`)
	w := newWorld(t, policies)
	w.ids[IdentityRemoteNode] = MustParseLabels("reserved:remote-node", "reserved:kube-apiserver")
	w.ids[70000] = MustParseLabels("reserved:remote-node")
	pol, err := Compute(policies, w.ids, w.endpoint(t, "shop/web"))
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[uint32]bool{IdentityRemoteNode: true, IdentityKubeAPIServer: true, 70000: false, IdentityHost: false} {
		if got := Lookup(pol, id, true, ProtoTCP, 6443).Allowed; got != want {
			t.Errorf("identity %d to 6443: allowed=%v, want %v", id, got, want)
		}
	}
}

func TestAllowLocalhostSkipsHostEndpoint(t *testing.T) {
	_, pol := computeFor(t, "host", Options{AllowLocalhost: true}, ccnpHostFW)
	if Lookup(pol, IdentityHost, false, ProtoTCP, 22).Allowed {
		t.Error("allow-localhost applied to the host endpoint itself")
	}
	_, pol = computeFor(t, "shop/web", Options{AllowLocalhost: true}, cnpEntities("world"))
	if !Lookup(pol, IdentityHost, false, ProtoTCP, 22).Allowed {
		t.Error("allow-localhost not applied to a pod")
	}
	if Lookup(pol, IdentityHost, true, ProtoTCP, 22).Reason != "not enforced" {
		t.Error("allow-localhost changed egress")
	}
}

func TestLookupContract(t *testing.T) {
	ep := &EndpointPolicy{IngressEnforced: true, Entries: []Entry{
		{Key: Key{Identity: 0, Proto: ProtoTCP, Port: 80, PortBits: 16}, Deny: true},
		{Key: Key{Identity: 5}},
		{Key: Key{Identity: 5, Proto: ProtoTCP, Port: 0, PortBits: 0}, Deny: true},
		{Key: Key{Identity: 5, Proto: ProtoTCP, Port: 443, PortBits: 16}},
		{Key: Key{Identity: 6, Proto: ProtoUDP, Port: 1024, PortBits: 6}},
	}}
	cases := []struct {
		id     uint32
		egress bool
		proto  uint8
		port   uint16
		reason string
	}{
		{5, false, ProtoTCP, 443, "allowed"},       // the exact port beats the TCP deny
		{5, false, ProtoTCP, 444, "denied"},        // TCP any-port deny beats proto-any allow
		{5, false, ProtoTCP, 80, "denied"},         // the wildcard group denies
		{5, false, ProtoUDP, 80, "allowed"},        // proto-any allow
		{6, false, ProtoUDP, 1024, "allowed"},      // 1024/6 covers 1024-2047
		{6, false, ProtoUDP, 2047, "allowed"},      //
		{6, false, ProtoUDP, 2048, "default deny"}, //
		{6, false, ProtoTCP, 1024, "default deny"}, //
		{7, false, ProtoTCP, 80, "denied"},         //
		{7, true, ProtoTCP, 80, "not enforced"},    //
	}
	for _, c := range cases {
		if v := Lookup(ep, c.id, c.egress, c.proto, c.port); v.Reason != c.reason || v.Allowed != (c.reason == "allowed" || c.reason == "not enforced") {
			t.Errorf("Lookup(%d, egress=%v, %s/%d) = %+v, want %s", c.id, c.egress, ProtoName(c.proto), c.port, v, c.reason)
		}
	}
}

func TestEndpointPolicyJSON(t *testing.T) {
	_, pol := computeFor(t, "shop/web", Options{}, npAllowAllShop, ccnpNoWorld)
	b, err := json.Marshal(pol)
	if err != nil {
		t.Fatal(err)
	}
	var back EndpointPolicy
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, pol) {
		t.Errorf("JSON round trip changed the policy:\n%s", b)
	}
}

// TestEngineConcurrent: an Engine is shared by the agent's endpoint
// regenerations (run with -race).
func TestEngineConcurrent(t *testing.T) {
	policies := decodeAll(t, npAllowAllShop, ccnpNoWorld, ccnpPodsOnly, cnpEgress)
	w := newWorld(t, policies)
	eng, err := NewEngine(policies, w.ids, Options{AllowLocalhost: true})
	if err != nil {
		t.Fatal(err)
	}
	ep := w.endpoint(t, "shop/web")
	want, err := eng.Compute(ep)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			got, err := eng.Compute(ep)
			if err == nil && !reflect.DeepEqual(got, want) {
				err = errors.New("different result")
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestExplainConnection(t *testing.T) {
	policies := decodeAll(t, npEgressOnly, npHeader+`metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 81}, {port: 82}]
`)
	w := newWorld(t, policies)
	eng, err := NewEngine(policies, w.ids, Options{})
	if err != nil {
		t.Fatal(err)
	}
	web, db := w.endpoint(t, "shop/web"), w.endpoint(t, "shop/db")
	for _, c := range []struct {
		from, to Side
		port     uint16
		allowed  bool
		want     []string
	}{
		{Side{Endpoint: &web}, Side{Endpoint: &db}, 81, true, []string{"egress at the source: allowed by 1 rule(s)", "ingress at the destination: allowed by 1 rule(s)", "NetworkPolicy shop/db-from-web spec.ingress[0]"}},
		{Side{Endpoint: &web}, Side{Endpoint: &db}, 82, false, []string{"egress at the source: default deny: endpoint is enforced by NetworkPolicy shop/to-db", "ingress at the destination: allowed"}},
		{Side{Identity: IdentityWorld}, Side{Endpoint: &db}, 81, false, []string{"ingress at the destination: default deny"}},
		{Side{Endpoint: &web}, Side{Identity: IdentityWorld}, 81, false, []string{"egress at the source: default deny"}},
	} {
		x, err := eng.ExplainConnection(c.from, c.to, ProtoTCP, c.port)
		if err != nil {
			t.Fatal(err)
		}
		s := x.String()
		if x.Allowed != c.allowed {
			t.Errorf("%d -> %d port %d: allowed=%v, want %v\n%s", c.from.identity(), c.to.identity(), c.port, x.Allowed, c.allowed, s)
		}
		for _, want := range c.want {
			if !strings.Contains(s, want) {
				t.Errorf("%q not in\n%s", want, s)
			}
		}
	}
}

// TestEndpointWithoutNamespaceLabel: a caller giving only Namespace gets
// the same selection as one giving the namespace label.
func TestEndpointWithoutNamespaceLabel(t *testing.T) {
	policies := decodeAll(t, ccnpHeader+`metadata: {name: shop-only}
spec:
  endpointSelector: {matchLabels: {k8s:io.kubernetes.pod.namespace: shop}}
  ingress: [{}]
`)
	pol, err := Compute(policies, nil, EndpointInfo{Identity: 1000, Labels: MustParseLabels("k8s:app=web"), Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if !pol.IngressEnforced {
		t.Error("the namespace given as a field did not select the endpoint")
	}
}
