package k8s

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/lumen-net/lumen/internal/kinds"
	"github.com/lumen-net/lumen/internal/kvstore"
	lb "github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/resource"
)

func obj(t *testing.T, js string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON([]byte(js)); err != nil {
		t.Fatal(err)
	}
	return u
}

// Objects as the API server returns them: full of fields Lumen does not
// model, which its strict decoders would reject.
const (
	apiPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"shop","uid":"1","resourceVersion":"9",
 "creationTimestamp":"2026-01-01T00:00:00Z","labels":{"app":"web"},"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}"},
 "managedFields":[{"manager":"kubectl"}]},
 "spec":{"nodeName":"n1","restartPolicy":"Always","dnsPolicy":"ClusterFirst","schedulerName":"default-scheduler",
  "containers":[{"name":"app","image":"x","imagePullPolicy":"Always","resources":{},"terminationMessagePath":"/dev/termination-log",
   "ports":[{"name":"http","containerPort":80,"protocol":"TCP"}]}]},
 "status":{"phase":"Running","podIP":"10.0.0.1"}}`
	apiService = `{"apiVersion":"v1","kind":"Service","metadata":{"name":"be","namespace":"shop","uid":"2"},
 "spec":{"type":"LoadBalancer","clusterIP":"10.96.0.10","clusterIPs":["10.96.0.10"],"ipFamilies":["IPv4"],"ipFamilyPolicy":"SingleStack",
  "internalTrafficPolicy":"Cluster","externalTrafficPolicy":"Cluster","sessionAffinity":"None","allocateLoadBalancerNodePorts":true,
  "selector":{"app":"be"},"ports":[{"name":"http","port":80,"targetPort":8080,"protocol":"TCP","nodePort":30080}],
  "trafficDistribution":"PreferClose"},
 "status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.10","ipMode":"VIP"}]}}}`
	apiSlice = `{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"be-abc","namespace":"shop",
  "labels":{"kubernetes.io/service-name":"be","endpointslice.kubernetes.io/managed-by":"endpointslice-controller.k8s.io"},
  "ownerReferences":[{"apiVersion":"v1","kind":"Service","name":"be","uid":"2"}],"generateName":"be-"},
 "addressType":"IPv4",
 "endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":true,"serving":true,"terminating":false},"nodeName":"n1","zone":"a",
   "targetRef":{"kind":"Pod","namespace":"shop","name":"web","uid":"1"},"hints":{"forZones":[{"name":"a"}],"forNodes":[{"name":"n1"}]}}],
 "ports":[{"name":"http","port":8080,"protocol":"TCP"}]}`
	apiNetpol = `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"np","namespace":"shop","generation":1},
 "spec":{"podSelector":{"matchLabels":{"app":"web"}},"policyTypes":["Ingress"],
  "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"fe"}}}],"ports":[{"protocol":"TCP","port":80}]}]}}`
	apiNamespace = `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop","labels":{"kubernetes.io/metadata.name":"shop"}},
 "spec":{"finalizers":["kubernetes"]},"status":{"phase":"Active"}}`
	apiCNP = `{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy","metadata":{"name":"p","namespace":"shop"},
 "spec":{"endpointSelector":{"matchLabels":{"app":"web"}},"ingress":[{"fromEndpoints":[{"matchLabels":{"app":"fe"}}]}]},
 "status":{"conditions":[]}}`
)

func TestResourceObjectsFromTheAPI(t *testing.T) {
	for _, js := range []string{apiPod, apiService, apiSlice, apiNetpol, apiNamespace, apiCNP} {
		u := obj(t, js)
		kvs, err := resourceKV(kinds.Registry())(u)
		if err != nil {
			t.Errorf("%s %s: %v", u.GetKind(), u.GetName(), err)
			continue
		}
		if want := resource.Key(u.GetKind(), u.GetNamespace(), u.GetName()); len(kvs) != 1 || kvs[0].Key != want {
			t.Errorf("%s: keys %v, want %s", u.GetKind(), kvs, want)
		}
		got, err := resource.Unmarshal(kvs[0].Value)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Metadata.Annotations) != 0 {
			t.Errorf("%s kept foreign annotations: %v", u.GetKind(), got.Metadata.Annotations)
		}
		switch u.GetKind() {
		case "Pod":
			p, err := resource.PodOf(got)
			if err != nil || p.Spec.NodeName != "n1" || len(p.Ports()) != 1 || p.Labels["app"] != "web" {
				t.Errorf("pod: %+v %v", p, err)
			}
		case "Service":
			svc, err := lb.ServiceOf(got)
			if err != nil {
				t.Fatal(err)
			}
			if len(svc.Status.LoadBalancer.Ingress) != 1 || svc.Status.LoadBalancer.Ingress[0].IP != "192.0.2.10" {
				t.Errorf("service lost its load balancer status: %+v", svc.Status)
			}
		case "EndpointSlice":
			sl, err := lb.EndpointSliceOf(got)
			if err != nil || len(sl.Endpoints) != 1 || sl.Endpoints[0].Hints == nil || sl.ServiceKey() != "shop/be" {
				t.Errorf("slice: %+v %v", sl, err)
			}
		}
	}
}

func TestMalformedResourcesAreRejected(t *testing.T) {
	for name, js := range map[string]string{
		"pod port out of range": strings.Replace(apiPod, `"containerPort":80`, `"containerPort":70000`, 1),
		"service port type":     strings.Replace(apiService, `"port":80,`, `"port":"eighty",`, 1),
		"unknown kind":          `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","namespace":"x"}}`,
	} {
		if _, err := resourceKV(kinds.Registry())(obj(t, js)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestEndpointRoundTrip(t *testing.T) {
	ep := model.Endpoint{Node: "n1", ContainerID: strings.Repeat("ab", 32), PodName: "web", Namespace: "shop",
		IPv4: "10.200.1.2", IPv6: "fd00::2", Identity: 300, Labels: map[string]string{"app": "web"}}
	cep := ciliumEndpointFor(ep, "10.99.0.1", nil)
	u, err := toUnstructured(cep)
	if err != nil {
		t.Fatal(err)
	}
	kvs, err := cepKV(u)
	if err != nil {
		t.Fatal(err)
	}
	var back model.Endpoint
	if err := json.Unmarshal(kvs[0].Value, &back); err != nil {
		t.Fatal(err)
	}
	if kvs[0].Key != model.EndpointsPrefix+"n1/"+ep.ContainerID || back.IPv4 != ep.IPv4 || back.IPv6 != ep.IPv6 ||
		back.Identity != 300 || back.NodeIP != "10.99.0.1" || back.PodName != "web" {
		t.Errorf("round trip: %s %+v", kvs[0].Key, back)
	}
	// Identity 0 or a bad address: malformed, skipped by the stream.
	cep.Status.Identity.ID = 0
	u, _ = toUnstructured(cep)
	if _, err := cepKV(u); err == nil {
		t.Error("identity 0 accepted")
	}
}

// TestEndpointNamedPortsRoundTrip: an endpoint's named ports go into its
// CiliumEndpoint's status.named-ports (Cilium's field) and come back, from
// the CiliumEndpoint and from a slice (endpoints[].named-ports), so that
// other nodes resolve egress named ports without the Pod.
func TestEndpointNamedPortsRoundTrip(t *testing.T) {
	ports := []model.NamedPort{{Name: "dns", Port: 53, Protocol: "UDP"}, {Name: "http", Port: 8080, Protocol: "TCP"}}
	ep := model.Endpoint{Node: "n1", ContainerID: "c1", PodName: "web", Namespace: "shop", IPv4: "10.200.1.2", Identity: 300, NamedPorts: ports}
	cep := ciliumEndpointFor(ep, "10.99.0.1", nil)
	u, err := toUnstructured(cep)
	if err != nil {
		t.Fatal(err)
	}
	got, _, _ := unstructured.NestedSlice(u.Object, "status", "named-ports")
	if len(got) != 2 || got[0].(map[string]any)["name"] != "dns" || got[0].(map[string]any)["protocol"] != "UDP" {
		t.Fatalf("status.named-ports = %v", got)
	}
	kvs, err := cepKV(u)
	if err != nil {
		t.Fatal(err)
	}
	var back model.Endpoint
	if err := json.Unmarshal(kvs[0].Value, &back); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.NamedPorts, ports) {
		t.Errorf("from the CiliumEndpoint: named ports %+v, want %+v", back.NamedPorts, ports)
	}

	// In a slice; a port without a protocol is TCP, one without a name
	// cannot be referred to.
	ces := &CiliumEndpointSlice{Namespace: "shop", Endpoints: []CoreCiliumEndpoint{{Name: "web", IdentityID: 300,
		NamedPorts: []NamedPort{{Name: "dns", Port: 53, Protocol: "UDP"}, {Name: "http", Port: 8080}, {Port: 9}}}}}
	ces.APIVersion, ces.Kind, ces.Name = "cilium.io/v2alpha1", "CiliumEndpointSlice", "ces-1"
	if u, err = toUnstructured(ces); err != nil {
		t.Fatal(err)
	}
	if kvs, err = cesKVs(func(string) string { return "n1" })(u); err != nil {
		t.Fatal(err)
	}
	back = model.Endpoint{}
	if err := json.Unmarshal(kvs[0].Value, &back); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.NamedPorts, ports) {
		t.Errorf("from the slice: named ports %+v, want %+v", back.NamedPorts, ports)
	}
}

func TestSliceEndpointsMoveBetweenSlices(t *testing.T) {
	// An endpoint moving from slice A to slice B must survive A's update
	// arriving after B's.
	conv := cesKVs(func(ip string) string { return map[string]string{"10.99.0.1": "n1"}[ip] })
	st := &streamState{vals: map[string][]byte{}, keysOf: map[string][]string{}, owner: map[string]string{},
		kick: make(chan struct{}, 1), convert: conv, synced: true}
	slice := func(name string, pods ...string) *unstructured.Unstructured {
		ces := &CiliumEndpointSlice{Namespace: "shop"}
		ces.APIVersion, ces.Kind, ces.Name = "cilium.io/v2alpha1", "CiliumEndpointSlice", name
		for i, p := range pods {
			ces.Endpoints = append(ces.Endpoints, CoreCiliumEndpoint{Name: p, IdentityID: int64(300 + i),
				Networking: &EndpointNetworking{NodeIP: "10.99.0.1", Addressing: []AddressPair{{IPv4: "10.200.1." + string(rune('2'+i))}}}})
		}
		u, err := toUnstructured(ces)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	st.upsert(slice("a", "web", "db"))
	st.upsert(slice("b", "db"))
	st.upsert(slice("a", "web"))
	key := model.EndpointsPrefix + "ces/shop/db"
	if _, ok := st.vals[key]; !ok {
		t.Fatalf("db lost when it moved from slice a to b: %v", st.vals)
	}
	var ep model.Endpoint
	_ = json.Unmarshal(st.vals[key], &ep)
	if ep.Node != "n1" || ep.Namespace != "shop" {
		t.Errorf("slice endpoint %+v", ep)
	}
	st.remove(slice("b"))
	if _, ok := st.vals[key]; ok {
		t.Error("db still there after its slice was deleted")
	}
	var deletes int
	for _, e := range st.pending {
		if e.Type == kvstore.EventDelete {
			deletes++
		}
	}
	if deletes != 1 {
		t.Errorf("%d delete events, want 1 (db, once)", deletes)
	}
}

func FuzzResourceObject(f *testing.F) {
	for _, s := range []string{apiPod, apiService, apiSlice, apiNetpol, apiNamespace, apiCNP} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, js string) {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON([]byte(js)); err != nil {
			return
		}
		_, _ = resourceKV(kinds.Registry())(u) // never panics
		_, _ = cepKV(u)
		_, _ = nodeKV(u)
		_, _ = identityKV(u)
		_, _ = cesKVs(func(string) string { return "" })(u)
	})
}

// Policies are never rejected by the conversion (what they select would run
// unprotected, an update would leave the old version in force): their
// problems are reported, and the syncer fails closed on them.
func TestPolicyProblems(t *testing.T) {
	cases := []struct {
		name, js, reason string
		fields           []string
	}{
		{"valid", apiCNP, "", nil},
		{"valid netpol", apiNetpol, "", nil},
		{"port range inverted", `{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy","metadata":{"name":"bad","namespace":"shop"},
 "spec":{"endpointSelector":{},"ingress":[{"toPorts":[{"ports":[{"port":"90","endPort":80,"protocol":"TCP"}]}]}]}}`,
			ReasonInvalidField, []string{"spec.ingress[0].toPorts[0].ports[0].endPort"}},
		{"L7 and FQDN", `{"apiVersion":"cilium.io/v2","kind":"CiliumClusterwideNetworkPolicy","metadata":{"name":"l7"},
 "spec":{"endpointSelector":{},"ingress":[{"toPorts":[{"ports":[{"port":"80","protocol":"TCP"}],"rules":{"http":[{"method":"GET"}]}}]}],
  "egress":[{"toFQDNs":[{"matchName":"a.example"}]}]}}`,
			ReasonUnsupportedField, []string{"spec.ingress[0].toPorts[0].rules", "spec.egress[0].toFQDNs"}},
		{"netpol protocol", strings.Replace(apiNetpol, `"protocol":"TCP"`, `"protocol":"ICMP"`, 1),
			ReasonInvalidField, []string{"spec.ingress[0].ports[0].protocol"}},
	}
	for _, c := range cases {
		kvs, err := resourceKV(kinds.Registry())(obj(t, c.js))
		if err != nil {
			t.Errorf("%s: rejected: %v", c.name, err)
			continue
		}
		pr := policyProblem(kvs[0].Value)
		switch {
		case c.reason == "" && pr != nil:
			t.Errorf("%s: problem %+v", c.name, pr)
		case c.reason == "":
		case pr == nil:
			t.Errorf("%s: no problem reported", c.name)
		default:
			if pr.Reason != c.reason || strings.Join(pr.Fields, ",") != strings.Join(c.fields, ",") {
				t.Errorf("%s: %+v, want reason %s fields %v", c.name, pr, c.reason, c.fields)
			}
			for _, f := range c.fields {
				if !strings.Contains(pr.Message, f) {
					t.Errorf("%s: message %q does not name %s", c.name, pr.Message, f)
				}
			}
		}
	}
}
