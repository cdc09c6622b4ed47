package controlplane

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"

	"github.com/lumen-net/lumen/internal/k8s"
)

const testNS = "crd-test"

// resources maps the kinds of deploy/crds to their resource and scope.
var resources = map[string]struct {
	gvr        schema.GroupVersionResource
	namespaced bool
}{
	"CiliumNetworkPolicy":            {schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumnetworkpolicies"}, true},
	"CiliumClusterwideNetworkPolicy": {schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumclusterwidenetworkpolicies"}, false},
	"CiliumEndpoint":                 {k8s.CiliumEndpoints, true},
	"CiliumEndpointSlice":            {k8s.CiliumEndpointSlices, false},
	"CiliumIdentity":                 {k8s.CiliumIdentities, false},
	"CiliumNode":                     {k8s.CiliumNodes, false},
	"CiliumEgressGatewayPolicy":      {schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumegressgatewaypolicies"}, false},
	"CiliumBGPPeeringPolicy":         {schema.GroupVersionResource{Group: "cilium.io", Version: "v2alpha1", Resource: "ciliumbgppeeringpolicies"}, false},
}

func dynClient(t *testing.T, c *ControlPlane) dynamic.Interface {
	t.Helper()
	d, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// create creates obj with strict field validation (an unknown field is an
// error, as with kubectl), in testNS when the kind is namespaced.
func create(t *testing.T, d dynamic.Interface, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	t.Helper()
	r, ok := resources[obj.GetKind()]
	if !ok {
		t.Fatalf("unknown kind %q", obj.GetKind())
	}
	var ri dynamic.ResourceInterface = d.Resource(r.gvr)
	if r.namespaced {
		obj.SetNamespace(testNS)
		ri = d.Resource(r.gvr).Namespace(testNS)
	}
	return ri.Create(testContext(t), obj, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
}

// decodeDocs splits multi-document YAML into objects.
func decodeDocs(t *testing.T, src string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(src), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if err.Error() == "EOF" {
				return out
			}
			t.Fatalf("decoding YAML: %v", err)
		}
		if m != nil {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}

func toUnstructured(t *testing.T, v any) *unstructured.Unstructured {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	return u
}

// A policy that uses every part of the rule schema, L7 included.
const everyPolicyField = `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: every-field
specs:
- description: L3, L4 and L7
  endpointSelector:
    matchLabels: {app: web, "k8s:io.kubernetes.pod.namespace": crd-test}
    matchExpressions:
    - {key: tier, operator: In, values: [a, b]}
    - {key: debug, operator: DoesNotExist}
  labels: [{key: rule, value: one, source: lumen}]
  enableDefaultDeny: {ingress: true, egress: false}
  ingress:
  - fromEndpoints: [{}]
    fromEntities: [cluster, kube-apiserver]
    toPorts:
    - ports:
      - {port: "80", protocol: TCP}
      - {port: 8080, endPort: 8090, protocol: TCP}
      - {port: http}
      - {port: "53", protocol: ANY}
      rules:
        http: [{method: GET, path: "/api/.*"}]
  - fromCIDR: [10.0.0.0/8, 192.0.2.1, "fd00::/64", "2001:db8::1"]
    fromCIDRSet: [{cidr: 172.16.0.0/12, except: [172.16.1.0/24]}, {cidrGroupRef: office}]
    icmps: [{fields: [{type: 8, family: IPv4}, {type: EchoRequest, family: IPv6}]}]
    authentication: {mode: required}
  ingressDeny:
  - fromEntities: [world]
    toPorts: [{ports: [{port: "22"}]}]
  egress:
  - toFQDNs: [{matchName: example.com}, {matchPattern: "*.example.com"}]
    toPorts: [{ports: [{port: "443", protocol: TCP}], serverNames: [example.com]}]
  - toServices: [{k8sService: {serviceName: db, namespace: crd-test}}]
  - toRequires: [{matchLabels: {env: prod}}]
    toNodes: [{matchLabels: {rack: r1}}]
  egressDeny:
  - toCIDRSet: [{cidr: "fd00:10::/32", except: ["fd00:10:1::/48"]}]
- endpointSelector: {}
  ingress: [{}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: host-firewall
spec:
  nodeSelector:
    matchLabels: {kubernetes.io/hostname: n1}
  ingress:
  - fromEntities: [cluster]
    toPorts: [{ports: [{port: "22", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: egress-web
spec:
  selectors:
  - podSelector: {matchLabels: {app: web}}
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: crd-test}}
  destinationCIDRs: [0.0.0.0/0]
  excludedCIDRs: [10.0.0.0/8]
  egressGateway:
    nodeSelector: {matchLabels: {egress: "true"}}
    egressIP: 10.99.0.100
---
apiVersion: cilium.io/v2alpha1
kind: CiliumBGPPeeringPolicy
metadata:
  name: asdot
spec:
  virtualRouters:
  - localASN: "65000.1"
    neighbors:
    - {peerAddress: 10.99.0.253, peerASN: 4200000000}
    - {peerAddress: "fd00:10:99::fe/128", peerASN: "65000.2", peerPort: 1179, eBGPMultihopTTL: 2}
`

// The objects Lumen's agents write, from internal/k8s's types: reading
// them back must give the same values (no field pruned by the schema).
func lumenObjects() []any {
	networking := &k8s.EndpointNetworking{
		Addressing: []k8s.AddressPair{{IPv4: "10.200.1.7", IPv6: "fd00:10:200:1::7"}},
		NodeIP:     "10.99.0.1",
	}
	ports := []k8s.NamedPort{{Name: "http", Port: 8080, Protocol: "TCP"}}
	return []any{
		&k8s.CiliumEndpoint{
			TypeMeta:   metav1.TypeMeta{APIVersion: "cilium.io/v2", Kind: "CiliumEndpoint"},
			ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{k8s.NodeLabel: "n1"}},
			Status: k8s.EndpointStatus{
				ID: 1234,
				ExternalIdentifiers: &k8s.EndpointIdentifiers{
					ContainerID: "c0ffee", K8sNamespace: testNS, K8sPodName: "web-1", PodName: testNS + "/web-1",
				},
				Identity:   &k8s.EndpointIdentity{ID: 54321, Labels: []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=" + testNS}},
				Networking: networking,
				State:      "ready",
				NamedPorts: ports,
			},
		},
		&k8s.CiliumEndpointSlice{
			TypeMeta:   metav1.TypeMeta{APIVersion: "cilium.io/v2alpha1", Kind: "CiliumEndpointSlice"},
			ObjectMeta: metav1.ObjectMeta{Name: "ces-crd-test"},
			Namespace:  testNS,
			Endpoints:  []k8s.CoreCiliumEndpoint{{Name: "web-1", IdentityID: 54321, Networking: networking, NamedPorts: ports}},
		},
		&k8s.CiliumIdentity{
			TypeMeta:       metav1.TypeMeta{APIVersion: "cilium.io/v2", Kind: "CiliumIdentity"},
			ObjectMeta:     metav1.ObjectMeta{Name: "54321"},
			SecurityLabels: map[string]string{"k8s:app": "web", "k8s:io.kubernetes.pod.namespace": testNS},
		},
		&k8s.CiliumNode{
			TypeMeta:   metav1.TypeMeta{APIVersion: "cilium.io/v2", Kind: "CiliumNode"},
			ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: map[string]string{k8s.HubblePeerAnnotation: `{"address":"10.99.0.1:4244"}`}},
			Spec: k8s.NodeSpec{
				Addresses: []k8s.NodeAddress{{Type: "InternalIP", IP: "10.99.0.1"}, {Type: "InternalIP", IP: "fd00:10:99::1"}},
				IPAM:      k8s.IPAMSpec{PodCIDRs: []string{"10.200.1.0/24", "fd00:10:200:1::/64"}},
			},
		},
	}
}

var validOnce struct {
	sync.Once
	err error
}

// createValid creates every valid fixture once (shared by the tests that
// read them).
func createValid(t *testing.T) {
	t.Helper()
	c := controlPlane(t)
	validOnce.Do(func() {
		validOnce.err = func() error {
			d := dynClient(t, c)
			ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": testNS}}}
			if _, err := d.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(testContext(t), ns, metav1.CreateOptions{}); err != nil {
				return err
			}
			var objs []*unstructured.Unstructured
			for _, f := range []string{"policies/03-debug-access.yaml", "policies/04-deny-toolbox.yaml", "bgp/peering-policy.yaml"} {
				b, err := os.ReadFile(filepath.Join("..", "..", "examples", f))
				if err != nil {
					return err
				}
				objs = append(objs, decodeDocs(t, string(b))...)
			}
			objs = append(objs, decodeDocs(t, everyPolicyField)...)
			for _, o := range lumenObjects() {
				objs = append(objs, toUnstructured(t, o))
			}
			for _, o := range objs {
				if _, err := create(t, d, o); err != nil {
					return fmt.Errorf("%s %s: %w", o.GetKind(), o.GetName(), err)
				}
			}
			return nil
		}()
	})
	if validOnce.err != nil {
		t.Fatalf("creating the valid objects: %v", validOnce.err)
	}
}

// TestCRDsAcceptValid creates valid objects of every kind (the examples'
// policies, one using every rule field, and the objects Lumen writes) and
// reads Lumen's back unchanged.
func TestCRDsAcceptValid(t *testing.T) {
	c := controlPlane(t)
	createValid(t)
	d := dynClient(t, c)
	for _, want := range lumenObjects() {
		u := toUnstructured(t, want)
		r := resources[u.GetKind()]
		ri := d.Resource(r.gvr).Namespace("")
		if r.namespaced {
			ri = d.Resource(r.gvr).Namespace(testNS)
		}
		got, err := ri.Get(testContext(t), u.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := got.MarshalJSON()
		back := reflect.New(reflect.TypeOf(want).Elem()).Interface()
		if err := json.Unmarshal(b, back); err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
		// Compare what Lumen wrote, not the server's metadata.
		clear := func(v any) any {
			m := reflect.ValueOf(v).Elem().FieldByName("ObjectMeta").Addr().Interface().(*metav1.ObjectMeta)
			*m = metav1.ObjectMeta{Name: m.Name, Labels: m.Labels, Annotations: m.Annotations}
			return v
		}
		if !reflect.DeepEqual(clear(back), clear(want)) {
			wb, _ := json.Marshal(want)
			t.Errorf("%s %s read back differs:\n got %s\nwant %s", u.GetKind(), u.GetName(), b, wb)
		}
	}
	// The parts the schema does not model are kept as written.
	cnp, err := d.Resource(resources["CiliumNetworkPolicy"].gvr).Namespace(testNS).Get(testContext(t), "every-field", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	specs, _, _ := unstructured.NestedSlice(cnp.Object, "specs")
	in0 := specs[0].(map[string]any)["ingress"].([]any)[0].(map[string]any)
	rules := in0["toPorts"].([]any)[0].(map[string]any)["rules"]
	if !reflect.DeepEqual(rules, map[string]any{"http": []any{map[string]any{"method": "GET", "path": "/api/.*"}}}) {
		t.Errorf("L7 rules read back as %v", rules)
	}
}

// TestCRDsRejectMalformed: the API server refuses malformed objects with
// an error naming the field.
func TestCRDsRejectMalformed(t *testing.T) {
	c := controlPlane(t)
	createValid(t) // the namespace
	d := dynClient(t, c)
	cnp := func(rule string) string {
		return "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: bad}\nspec:\n" + indent(rule, "  ")
	}
	ports := func(p string) string {
		return cnp("endpointSelector: {}\ningress:\n- toPorts:\n  - ports:\n    - " + p + "\n")
	}
	ccnp := func(rule string) string {
		return "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: bad}\nspec:\n" + indent(rule, "  ")
	}
	cep := func(status string) string {
		return "apiVersion: cilium.io/v2\nkind: CiliumEndpoint\nmetadata: {name: bad}\nstatus:\n" + indent(status, "  ")
	}
	ces := func(body string) string {
		return "apiVersion: cilium.io/v2alpha1\nkind: CiliumEndpointSlice\nmetadata: {name: bad}\nnamespace: crd-test\n" + body
	}
	cid := func(name, body string) string {
		return "apiVersion: cilium.io/v2\nkind: CiliumIdentity\nmetadata: {name: \"" + name + "\"}\n" + body
	}
	cn := func(spec string) string {
		return "apiVersion: cilium.io/v2\nkind: CiliumNode\nmetadata: {name: bad}\nspec:\n" + indent(spec, "  ")
	}
	cegp := func(spec string) string {
		return "apiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata: {name: bad}\nspec:\n" + indent(spec, "  ")
	}
	bgpp := func(router, neighbor string) string {
		return "apiVersion: cilium.io/v2alpha1\nkind: CiliumBGPPeeringPolicy\nmetadata: {name: bad}\nspec:\n  virtualRouters:\n  - " + router +
			"\n    neighbors:\n    - " + neighbor + "\n"
	}
	for _, tc := range []struct {
		name, obj string
		want      []string // substrings of the error
	}{
		{"CNP port out of range", ports("{port: 70000}"), []string{"spec.ingress[0].toPorts[0].ports[0].port", "70000"}},
		{"CNP port string out of range", ports(`{port: "99999"}`), []string{"spec.ingress[0].toPorts[0].ports[0].port", "99999"}},
		{"CNP port bad name", ports(`{port: "http--x"}`), []string{"spec.ingress[0].toPorts[0].ports[0].port", "http--x"}},
		{"CNP port boolean", ports("{port: true}"), []string{"spec.ingress[0].toPorts[0].ports[0].port"}},
		{"CNP protocol", ports(`{port: "80", protocol: ICMPX}`), []string{"spec.ingress[0].toPorts[0].ports[0].protocol", `Unsupported value: "ICMPX"`}},
		{"CNP endPort type", ports(`{port: "80", endPort: "90"}`), []string{"spec.ingress[0].toPorts[0].ports[0].endPort", "integer"}},
		{"CNP endPort range", ports(`{port: "80", endPort: 65536}`), []string{"spec.ingress[0].toPorts[0].ports[0].endPort"}},
		{"CNP too many ports", cnp("endpointSelector: {}\ningress:\n- toPorts:\n  - ports: [" + strings.Repeat(`{port: "1"},`, 41) + "]\n"), []string{"spec.ingress[0].toPorts[0].ports", "41"}},
		{"CNP fromCIDR", cnp("endpointSelector: {}\ningress:\n- fromCIDR: [10.0.0.0/33]\n"), []string{"spec.ingress[0].fromCIDR[0]", "10.0.0.0/33"}},
		{"CNP toCIDRSet except", cnp("endpointSelector: {}\negress:\n- toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/x]}]\n"), []string{"spec.egress[0].toCIDRSet[0].except[0]"}},
		{"CNP CIDRSet without cidr", cnp("endpointSelector: {}\ningress:\n- fromCIDRSet: [{except: [10.1.0.0/16]}]\n"), []string{"spec.ingress[0].fromCIDRSet[0]", "cidr"}},
		{"CNP entity", cnp("endpointSelector: {}\ningress:\n- fromEntities: [everything]\n"), []string{"spec.ingress[0].fromEntities[0]", `Unsupported value: "everything"`}},
		{"CNP without endpointSelector", cnp("ingress: [{}]\n"), []string{"spec.endpointSelector", "Required value"}},
		{"CNP with nodeSelector", cnp("endpointSelector: {}\nnodeSelector: {}\n"), []string{"spec", "nodeSelector is only allowed in a CiliumClusterwideNetworkPolicy"}},
		{"CNP without spec", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: bad}\n", []string{"spec or specs is required"}},
		{"CNP specs item without selector", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: bad}\nspecs:\n- endpointSelector: {}\n- ingress: [{}]\n", []string{"specs[1].endpointSelector", "Required value"}},
		{"CNP selector operator", cnp("endpointSelector:\n  matchExpressions: [{key: app, operator: Equals, values: [x]}]\n"), []string{"spec.endpointSelector.matchExpressions[0].operator", `Unsupported value: "Equals"`}},
		{"CNP selector label value", cnp("endpointSelector:\n  matchLabels: {app: \"not valid!\"}\n"), []string{"spec.endpointSelector.matchLabels.app", "not valid!"}},
		{"CNP unknown field", cnp("endpointSelector: {}\ningress:\n- fromEndpoint: [{}]\n"), []string{`unknown field "spec.ingress[0].fromEndpoint"`}},
		{"CNP authentication mode", cnp("endpointSelector: {}\ningress:\n- authentication: {mode: sometimes}\n"), []string{"spec.ingress[0].authentication.mode"}},
		{"CCNP both selectors", ccnp("endpointSelector: {}\nnodeSelector: {}\n"), []string{"exactly one of endpointSelector and nodeSelector is required"}},
		{"CCNP no selector", ccnp("ingress: [{}]\n"), []string{"exactly one of endpointSelector and nodeSelector is required"}},
		{"CEP identity id", cep("identity: {id: abc}\n"), []string{"status.identity.id", "integer"}},
		{"CEP ipv4", cep("networking:\n  addressing: [{ipv4: 10.0.0.300}]\n"), []string{"status.networking.addressing[0].ipv4", "10.0.0.300"}},
		{"CEP ipv6", cep("networking:\n  addressing: [{ipv6: 10.0.0.1}]\n"), []string{"status.networking.addressing[0].ipv6"}},
		{"CEP networking without addressing", cep("networking: {node: 10.99.0.1}\n"), []string{"status.networking.addressing", "Required value"}},
		{"CEP state", cep("state: happy\n"), []string{"status.state", `Unsupported value: "happy"`}},
		{"CEP named port", cep("named-ports: [{name: http, port: 70000}]\n"), []string{"status.named-ports[0].port"}},
		{"CES without endpoints", ces(""), []string{"endpoints", "Required value"}},
		{"CES identity", ces("endpoints: [{name: a, id: x}]\n"), []string{"endpoints[0].id", "integer"}},
		{"CES address", ces("endpoints: [{name: a, networking: {addressing: [{ipv4: nope}]}}]\n"), []string{"endpoints[0].networking.addressing[0].ipv4"}},
		{"Identity without labels", cid("100", ""), []string{"security-labels", "Required value"}},
		{"Identity label type", cid("101", "security-labels: {\"k8s:app\": 5}\n"), []string{"security-labels.k8s:app", "string"}},
		{"Identity name", cid("web", "security-labels: {\"k8s:app\": web}\n"), []string{"the name must be the numeric identity"}},
		{"CiliumNode pod CIDR", cn("ipam: {podCIDRs: [not-a-cidr]}\n"), []string{"spec.ipam.podCIDRs[0]", "not-a-cidr"}},
		{"CiliumNode address", cn("addresses: [{type: InternalIP, ip: 10.99.0.256}]\n"), []string{"spec.addresses[0].ip"}},
		{"CiliumNode without spec", "apiVersion: cilium.io/v2\nkind: CiliumNode\nmetadata: {name: bad}\n", []string{"spec", "Required value"}},
		{"CEGP destination", cegp("selectors: [{podSelector: {}}]\ndestinationCIDRs: [1.2.3.4]\negressGateway: {nodeSelector: {}}\n"), []string{"spec.destinationCIDRs[0]", "1.2.3.4"}},
		{"CEGP without gateway", cegp("selectors: [{podSelector: {}}]\ndestinationCIDRs: [0.0.0.0/0]\n"), []string{"egressGateway"}},
		{"CEGP egress IP", cegp("selectors: [{podSelector: {}}]\ndestinationCIDRs: [0.0.0.0/0]\negressGateway: {nodeSelector: {}, egressIP: fd00::1}\n"), []string{"spec.egressGateway.egressIP"}},
		{"BGP local ASN 0", bgpp("localASN: 0", "{peerAddress: 10.0.0.1/32, peerASN: 65000}"), []string{"spec.virtualRouters[0].localASN"}},
		{"BGP local ASN text", bgpp("localASN: as65000", "{peerAddress: 10.0.0.1/32, peerASN: 65000}"), []string{"spec.virtualRouters[0].localASN", "as65000"}},
		{"BGP peer ASN too big", bgpp("localASN: 65000", "{peerAddress: 10.0.0.1/32, peerASN: 4294967296}"), []string{"spec.virtualRouters[0].neighbors[0].peerASN"}},
		{"BGP peer address", bgpp("localASN: 65000", "{peerAddress: nope, peerASN: 65001}"), []string{"spec.virtualRouters[0].neighbors[0].peerAddress", "nope"}},
		{"BGP without peer ASN", bgpp("localASN: 65000", "{peerAddress: 10.0.0.1/32}"), []string{"spec.virtualRouters[0].neighbors[0].peerASN", "Required value"}},
		{"BGP hold time", bgpp("localASN: 65000", "{peerAddress: 10.0.0.1/32, peerASN: 65001, holdTimeSeconds: 2}"), []string{"spec.virtualRouters[0].neighbors[0].holdTimeSeconds"}},
		{"BGP graceful restart", bgpp("localASN: 65000", "{peerAddress: 10.0.0.1/32, peerASN: 65001, gracefulRestart: {restartTimeSeconds: 60}}"), []string{"spec.virtualRouters[0].neighbors[0].gracefulRestart.enabled", "Required value"}},
		{"BGP no virtual routers", "apiVersion: cilium.io/v2alpha1\nkind: CiliumBGPPeeringPolicy\nmetadata: {name: bad}\nspec: {virtualRouters: []}\n", []string{"spec.virtualRouters"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := decodeDocs(t, tc.obj)
			if len(objs) != 1 {
				t.Fatalf("fixture has %d objects:\n%s", len(objs), tc.obj)
			}
			_, err := create(t, d, objs[0])
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.obj)
			}
			t.Logf("%v", err)
			if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
				t.Errorf("error is not Invalid or BadRequest: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n") + "\n"
}

// kubectl runs the real kubectl against c.
func kubectl(t *testing.T, c *ControlPlane, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(testContext(t), filepath.Join(c.BinDir(), "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig()}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// columns reads one row of kubectl's table output by the header's column
// offsets (kubectl left-aligns every cell under its header).
func columns(t *testing.T, out string, row string) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	header := lines[0]
	var names []string
	var starts []int
	for i := 0; i < len(header); {
		for i < len(header) && header[i] == ' ' {
			i++
		}
		if i >= len(header) {
			break
		}
		j := i
		// A header may hold single spaces ("SECURITY IDENTITY"); columns are
		// separated by at least two.
		for j < len(header) && !(header[j] == ' ' && (j+1 >= len(header) || header[j+1] == ' ')) {
			j++
		}
		names, starts = append(names, header[i:j]), append(starts, i)
		i = j
	}
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, row+" ") && !strings.Contains(l, " "+row+" ") {
			continue
		}
		out := map[string]string{}
		for k, name := range names {
			end := len(l)
			if k+1 < len(starts) && starts[k+1] < end {
				end = starts[k+1]
			}
			if starts[k] < len(l) {
				out[name] = strings.TrimSpace(l[starts[k]:end])
			}
		}
		return out
	}
	t.Fatalf("no row %q in:\n%s", row, out)
	return nil
}

// TestKubectlGet: the real kubectl lists every kind by short name and
// shows the printer columns.
func TestKubectlGet(t *testing.T) {
	c := controlPlane(t)
	createValid(t)
	out := kubectl(t, c, "get", "cnp,ccnp,cep,ces,ciliumidentities,ciliumnodes", "-A")
	t.Logf("kubectl get cnp,ccnp,cep,ces,ciliumidentities,ciliumnodes -A:\n%s", out)
	for _, name := range []string{
		"ciliumnetworkpolicy.cilium.io/debug-access", "ciliumnetworkpolicy.cilium.io/every-field",
		"ciliumclusterwidenetworkpolicy.cilium.io/toolbox-egress", "ciliumclusterwidenetworkpolicy.cilium.io/host-firewall",
		"ciliumendpoint.cilium.io/web-1", "ciliumendpointslice.cilium.io/ces-crd-test",
		"ciliumidentity.cilium.io/54321", "ciliumnode.cilium.io/n1",
	} {
		if !strings.Contains(out, name) {
			t.Errorf("kubectl get lists no %s", name)
		}
	}

	check := func(got map[string]string, want map[string]string) {
		t.Helper()
		for k, v := range want {
			if got[k] != v {
				t.Errorf("column %s = %q, want %q (row %v)", k, got[k], v, got)
			}
		}
	}
	check(columns(t, kubectl(t, c, "get", "cep", "-n", testNS, "-o", "wide"), "web-1"), map[string]string{
		"SECURITY IDENTITY": "54321", "ENDPOINT STATE": "ready", "IPV4": "10.200.1.7", "IPV6": "fd00:10:200:1::7",
		"NODE": "10.99.0.1", "ENDPOINT ID": "1234",
	})
	check(columns(t, kubectl(t, c, "get", "ces"), "ces-crd-test"), map[string]string{"POD NAMESPACE": testNS})
	check(columns(t, kubectl(t, c, "get", "ciliumidentities"), "54321"), map[string]string{"POD NAMESPACE": testNS})
	check(columns(t, kubectl(t, c, "get", "cn", "-o", "wide"), "n1"), map[string]string{
		"INTERNALIP": "10.99.0.1", "PODCIDRS": `["10.200.1.0/24","fd00:10:200:1::/64"]`,
	})
	check(columns(t, kubectl(t, c, "get", "ciliumegressgatewaypolicies"), "egress-web"), map[string]string{
		"DESTINATIONS": `["0.0.0.0/0"]`, "EGRESSIP": "10.99.0.100",
	})
	// Wide output works for policies too (two calls may straddle a second,
	// so only the column's presence is compared).
	if row := columns(t, kubectl(t, c, "get", "cnp", "-n", testNS, "-o", "wide"), "every-field"); row["AGE"] == "" {
		t.Errorf("kubectl get cnp -o wide: no AGE column in %v", row)
	}
	if got := kubectl(t, c, "get", "bgpp", "rack0", "-o", "jsonpath={.spec.virtualRouters[0].neighbors[0].peerAddress}"); got != "10.99.0.251/32" {
		t.Errorf("bgpp rack0 peerAddress %q", got)
	}
	// kubectl's own strict validation names the field too.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: cilium.io/v2\nkind: CiliumNode\nmetadata: {name: bad-kubectl}\nspec:\n  ipam: {podCIDRs: [not-a-cidr]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(testContext(t), filepath.Join(c.BinDir(), "kubectl"), "--kubeconfig", c.Kubeconfig(), "apply", "-f", bad)
	msg, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "spec.ipam.podCIDRs[0]") {
		t.Errorf("kubectl apply of a bad CiliumNode: %v\n%s", err, msg)
	}
}
