package loadbalancer

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/resource"
)

func decodeOne(t *testing.T, doc string) *resource.Object {
	t.Helper()
	objs, err := testKinds.Decode("x.yaml", []byte(doc))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(objs) != 1 {
		t.Fatalf("got %d objects, want 1", len(objs))
	}
	return &objs[0]
}

func decodeService(t *testing.T, doc string) *Service {
	t.Helper()
	svc, err := ServiceOf(decodeOne(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestServiceDefaults(t *testing.T) {
	svc := decodeService(t, `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, annotations: {service.kubernetes.io/topology-mode: Auto}}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: dns, port: 53, protocol: UDP}
  sessionAffinity: ClientIP
`)
	want := ServiceSpec{
		Type:           TypeClusterIP,
		IPFamilyPolicy: SingleStack,
		Ports: []ServicePort{
			{Name: "http", Protocol: "TCP", Port: 80, TargetPort: FromString("http")},
			{Name: "dns", Protocol: "UDP", Port: 53, TargetPort: FromInt(53)},
		},
		Selector:              map[string]string{"app": "web"},
		SessionAffinity:       AffinityClientIP,
		SessionAffinityConfig: &SessionAffinityConfig{ClientIP: &ClientIPConfig{TimeoutSeconds: ptr(int32(10800))}},
		InternalTrafficPolicy: PolicyCluster,
	}
	if !reflect.DeepEqual(svc.Spec, want) {
		t.Errorf("spec =\n%+v\nwant\n%+v", svc.Spec, want)
	}
	if svc.Key() != "shop/web" || !svc.TopologyAware() || svc.AffinityTimeout() != 10800 {
		t.Errorf("key %q, topology %v, affinity %d", svc.Key(), svc.TopologyAware(), svc.AffinityTimeout())
	}

	lb := decodeService(t, `
apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  clusterIPs: [10.96.0.10, "fd00:10:96::10"]
  loadBalancerIP: 192.0.2.10
  ports: [{port: 443, targetPort: 8443, nodePort: 30443}]
`)
	if lb.Spec.ClusterIP != "10.96.0.10" || !reflect.DeepEqual(lb.Spec.IPFamilies, []string{IPv4, IPv6}) ||
		lb.Spec.IPFamilyPolicy != RequireDualStack || lb.Spec.ExternalTrafficPolicy != PolicyCluster ||
		lb.Spec.AllocateLoadBalancerNodePorts == nil || !*lb.Spec.AllocateLoadBalancerNodePorts {
		t.Errorf("defaults of a dual-stack load balancer: %+v", lb.Spec)
	}
	if got := lb.LoadBalancerAddrs(); len(got) != 1 || got[0].String() != "192.0.2.10" {
		t.Errorf("LoadBalancerAddrs = %v", got)
	}
}

func TestServiceTopologyAnnotations(t *testing.T) {
	for _, tc := range []struct {
		ann  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{AnnotationTopologyMode: "Auto"}, true},
		{map[string]string{AnnotationTopologyAwareHints: "Auto"}, true},
		{map[string]string{AnnotationTopologyAwareHints: "auto"}, true},
		{map[string]string{AnnotationTopologyMode: "Disabled", AnnotationTopologyAwareHints: "Auto"}, false}, // the newer one wins
		{map[string]string{AnnotationTopologyMode: "PreferZone"}, false},
	} {
		if got := (&Service{Annotations: tc.ann}).TopologyAware(); got != tc.want {
			t.Errorf("TopologyAware(%v) = %v, want %v", tc.ann, got, tc.want)
		}
	}
}

func TestServiceErrors(t *testing.T) {
	svc := func(spec string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: " + spec + "\n"
	}
	for _, tc := range []struct{ doc, want string }{
		{svc(`{ports: [{name: a, port: 80}, {name: b, port: 70000}]}`),
			"x.yaml:1: Service shop/web: spec.ports[1].port: invalid value 70000: must be between 1 and 65535"},
		{svc(`{ports: [{name: a, port: 80}, {name: b, port: "x"}]}`),
			"spec.ports[1].port: invalid value: must be an integer, not string"},
		{svc(`{ports: [{name: a, port: 80}, {name: b, port: 80}]}`),
			`spec.ports[1]: duplicate value "80/TCP": the same port and protocol as spec.ports[0]`},
		{svc(`{ports: [{name: a, port: 80}, {name: b, port: 80, protocol: UDP}]}`), ""}, // same port, other protocol: fine
		{svc(`{ports: [{port: 80}, {port: 81}]}`), "spec.ports[0].name: required value"},
		{svc(`{ports: [{name: a, port: 80}, {name: a, port: 81}]}`), `spec.ports[1].name: duplicate value "a"`},
		{svc(`{ports: [{name: A, port: 80}]}`), `spec.ports[0].name: invalid value "A"`},
		{svc(`{ports: [{port: 80, protocol: ICMP}]}`), `spec.ports[0].protocol: unsupported value "ICMP": supported values: "TCP", "UDP", "SCTP"`},
		{svc(`{ports: [{port: 80, targetPort: [1]}]}`), `spec.ports[0].targetPort: invalid value "[1]": must be a port number or a port name`},
		{svc(`{ports: [{port: 80, targetPort: -x}]}`), `spec.ports[0].targetPort: invalid value "-x"`},
		{svc(`{ports: [{port: 80, targetPort: 1.5}]}`), `spec.ports[0].targetPort: invalid value "1.5": must be a port number or a port name`},
		{svc(`{ports: [{port: 80, targetPort: 70000}]}`), `spec.ports[0].targetPort: invalid value 70000: must be between 1 and 65535`},
		{svc(`{ports: [{port: 80, targetPort: "8080"}]}`), `spec.ports[0].targetPort: invalid value "8080": must contain at least one letter`},
		{svc(`{ports: [{port: 80, nodePort: 30080}]}`), "spec.ports[0].nodePort: invalid value 30080: may not be used when `type` is 'ClusterIP'"},
		{svc(`{type: NodePort, ports: [{port: 80, nodePort: 80}]}`),
			"spec.ports[0].nodePort: invalid value 80: provided port is not in the valid range. The range of valid ports is 30000-32767"},
		{svc(`{type: NodePort, ports: [{name: a, port: 80, nodePort: 32768}]}`), "spec.ports[0].nodePort: invalid value 32768"},
		{svc(`{type: NodePort, ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81, nodePort: 30080}]}`),
			`spec.ports[1].nodePort: duplicate value "30080/TCP"`},
		{svc(`{type: NodePort, ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 80, protocol: UDP, nodePort: 30080}]}`), ""},
		{svc(`{type: ExternalName, ports: [{port: 80}]}`), `spec.type: unsupported value "ExternalName": supported values: "ClusterIP", "NodePort", "LoadBalancer"`},
		{svc(`{}`), "spec.ports: required value"},
		{svc(`{clusterIP: None}`), ""}, // headless services may have no ports
		{svc(`{type: NodePort, clusterIP: None, ports: [{port: 80}]}`), `spec.clusterIPs[0]: invalid value "None": may not be set to 'None' for NodePort services`},
		{svc(`{clusterIP: 10.96.0.300, ports: [{port: 80}]}`), `spec.clusterIPs[0]: invalid value "10.96.0.300": must be a valid IP address or 'None'`},
		{svc(`{clusterIP: 10.96.0.1, clusterIPs: [10.96.0.2], ports: [{port: 80}]}`), `spec.clusterIPs[0]: invalid value "10.96.0.2": must be the same as spec.clusterIP "10.96.0.1"`},
		{svc(`{clusterIPs: [10.96.0.1, 10.96.0.2], ports: [{port: 80}]}`), `spec.clusterIPs[1]: invalid value "10.96.0.2": may not have the same IP family as another cluster IP`},
		{svc(`{clusterIPs: [10.96.0.1, "fd00::1"], ipFamilyPolicy: SingleStack, ports: [{port: 80}]}`), `spec.ipFamilyPolicy: invalid value "SingleStack": must be RequireDualStack or PreferDualStack`},
		{svc(`{clusterIPs: [10.96.0.1], ipFamilies: [IPv6], ports: [{port: 80}]}`), `spec.ipFamilies[0]: invalid value "IPv6": must match the family of spec.clusterIPs[0] (IPv4)`},
		{svc(`{ipFamilies: [IPv5], ports: [{port: 80}]}`), `spec.ipFamilies[0]: unsupported value "IPv5"`},
		{svc(`{ipFamilyPolicy: Maybe, ports: [{port: 80}]}`), `spec.ipFamilyPolicy: unsupported value "Maybe"`},
		{svc(`{externalIPs: [192.0.2.1, 127.0.0.1], ports: [{port: 80}]}`), `spec.externalIPs[1]: invalid value "127.0.0.1": may not be in the loopback range`},
		{svc(`{loadBalancerIP: 192.0.2.1, ports: [{port: 80}]}`), "spec.loadBalancerIP: invalid value \"192.0.2.1\": may only be used when `type` is 'LoadBalancer'"},
		{svc(`{sessionAffinity: Sticky, ports: [{port: 80}]}`), `spec.sessionAffinity: unsupported value "Sticky": supported values: "ClientIP", "None"`},
		{svc(`{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}, ports: [{port: 80}]}`),
			"spec.sessionAffinityConfig.clientIP.timeoutSeconds: invalid value 0: must be greater than 0 and at most 86400"},
		{svc(`{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}}, ports: [{port: 80}]}`), "timeoutSeconds: invalid value 86401"},
		{svc(`{sessionAffinityConfig: {clientIP: {timeoutSeconds: 10}}, ports: [{port: 80}]}`), `spec.sessionAffinityConfig: must not be set when sessionAffinity is "None"`},
		{svc(`{externalTrafficPolicy: Local, ports: [{port: 80}]}`), `spec.externalTrafficPolicy: invalid value "Local": may only be set for externally-accessible services`},
		{svc(`{externalIPs: [192.0.2.1], externalTrafficPolicy: Local, ports: [{port: 80}]}`), ""},
		{svc(`{type: NodePort, externalTrafficPolicy: Global, ports: [{port: 80}]}`), `spec.externalTrafficPolicy: unsupported value "Global": supported values: "Cluster", "Local"`},
		{svc(`{internalTrafficPolicy: local, ports: [{port: 80}]}`), `spec.internalTrafficPolicy: unsupported value "local"`},
		{svc(`{selector: {"bad key!": x}, ports: [{port: 80}]}`), `spec.selector: invalid value "bad key!"`},
		{svc(`{ports: [{port: 80}], healthCheckNodePort: 3}`), `spec: unknown field "healthCheckNodePort"`},
		{svc(`{ports: [{port: 80, bogus: 1}]}`), `spec.ports[0]: unknown field "bogus"`},
		{svc(`[1]`), "spec: invalid value: must be an object"},
		{"apiVersion: v1\nkind: Service\nmetadata: {name: Web}\nspec: {ports: [{port: 80}]}\n", `metadata.name: invalid value "Web"`},
	} {
		_, err := testKinds.Decode("x.yaml", []byte(tc.doc))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tc.doc, err)
		case tc.want != "" && err == nil:
			t.Errorf("%s: no error, want %q", tc.doc, tc.want)
		case tc.want != "" && !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: error %q, want it to contain %q", tc.doc, err, tc.want)
		}
	}
}

// A validated service validates again unchanged: the stored form is stable.
func TestServiceValidateIdempotent(t *testing.T) {
	obj := decodeOne(t, `
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: LoadBalancer, sessionAffinity: ClientIP, externalIPs: [192.0.2.7], ports: [{name: h, port: 80, targetPort: web}, {name: u, port: 80, protocol: UDP}]}
`)
	again := *obj
	if err := testKinds.Validate(&again); err != nil {
		t.Fatal(err)
	}
	if string(again.Spec) != string(obj.Spec) {
		t.Errorf("re-validation changed the spec:\n%s\n%s", obj.Spec, again.Spec)
	}
}

func TestServiceStatusRead(t *testing.T) {
	obj := decodeOne(t, "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n")
	obj.Other = map[string]json.RawMessage{"status": json.RawMessage(`{"loadBalancer":{"ingress":[{"ip":"192.0.2.20"},{"hostname":"lb.example"}]}}`)}
	svc, err := ServiceOf(obj)
	if err != nil {
		t.Fatal(err)
	}
	if got := svc.LoadBalancerAddrs(); len(got) != 1 || got[0].String() != "192.0.2.20" {
		t.Errorf("LoadBalancerAddrs = %v", got)
	}
}

func ptr[T any](v T) *T { return &v }

// TestServiceStatusApplied: a Service's status.loadBalancer.ingress is
// kept through validation (a controller or a person sets it), its
// addresses checked, and its IPs become LoadBalancer frontends.
func TestServiceStatusApplied(t *testing.T) {
	doc := "apiVersion: v1\nkind: Service\nmetadata: {name: lb, namespace: shop}\n" +
		"spec: {type: LoadBalancer, clusterIP: 10.96.0.9, selector: {app: be}, ports: [{port: 80, nodePort: 30080}]}\n" +
		"status: {loadBalancer: {ingress: [{ip: 192.0.2.20}, {ip: '2001:db8::20', ipMode: VIP}, {ip: 192.0.2.21, ipMode: Proxy}, {hostname: lb.example}]}}\n"
	obj := decodeOne(t, doc)
	if _, ok := obj.Other["status"]; !ok {
		t.Fatal("status dropped by validation")
	}
	if err := testKinds.Validate(obj); err != nil {
		t.Fatalf("validating again: %v", err)
	}
	svc, err := ServiceOf(obj)
	if err != nil {
		t.Fatal(err)
	}
	// Proxy-mode addresses are the load balancer's business, not ours.
	if got := svc.LoadBalancerAddrs(); len(got) != 2 || got[0].String() != "192.0.2.20" || got[1].String() != "2001:db8::20" {
		t.Errorf("LoadBalancerAddrs = %v", got)
	}
	slice := &EndpointSlice{Namespace: "shop", Name: "lb-1", AddressType: IPv4, Labels: map[string]string{LabelServiceName: "lb"},
		Endpoints: []Endpoint{{Addresses: []string{"10.200.1.5"}, NodeName: "n1"}},
		Ports:     []EndpointPort{{Port: ptr(int32(8080)), Protocol: "TCP"}}}
	var lbFrontends []string
	for _, fe := range ServiceFrontends(svc, []*EndpointSlice{slice}, NodeInfo{Name: "n1"}) {
		if fe.Type == FrontendLoadBalancer {
			lbFrontends = append(lbFrontends, fe.Key()+" -> "+fe.Backends[0].Key().String())
		}
	}
	if want := []string{"192.0.2.20:80/TCP -> 10.200.1.5:8080/TCP"}; !reflect.DeepEqual(lbFrontends, want) {
		t.Errorf("LoadBalancer frontends = %v, want %v (the IPv6 address has no IPv6 cluster family)", lbFrontends, want)
	}

	// An empty status is not stored.
	empty := decodeOne(t, "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80}]}\nstatus: {loadBalancer: {}}\n")
	if _, ok := empty.Other["status"]; ok {
		t.Errorf("empty status kept: %s", empty.Other["status"])
	}

	svcDoc := func(typ, status string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {type: " + typ + ", ports: [{port: 80}]}\nstatus: " + status + "\n"
	}
	for _, tc := range []struct{ doc, want string }{
		{svcDoc("LoadBalancer", "{loadBalancer: {ingress: [{ip: 192.0.2.1}, {ip: 300.1.1.1}]}}"), `status.loadBalancer.ingress[1].ip: invalid value "300.1.1.1": must be a valid IP address`},
		{svcDoc("LoadBalancer", "{loadBalancer: {ingress: [{ip: 127.0.0.1}]}}"), `status.loadBalancer.ingress[0].ip: invalid value "127.0.0.1": may not be in the loopback range`},
		{svcDoc("LoadBalancer", "{loadBalancer: {ingress: [{ip: '::ffff:192.0.2.1'}]}}"), `status.loadBalancer.ingress[0].ip: invalid value "::ffff:192.0.2.1": must be a plain IPv4 or IPv6 address`},
		{svcDoc("LoadBalancer", "{loadBalancer: {ingress: [{hostname: 192.0.2.1}]}}"), `status.loadBalancer.ingress[0].hostname: invalid value "192.0.2.1": must be a DNS name, not an IP address`},
		{svcDoc("LoadBalancer", "{loadBalancer: {ingress: [{}]}}"), "status.loadBalancer.ingress[0]: required value: ip or hostname"},
		{svcDoc("LoadBalancer", "{loadBalancer: {ingress: [{ip: 192.0.2.1, ipMode: Direct}]}}"), `status.loadBalancer.ingress[0].ipMode: unsupported value "Direct"`},
		{svcDoc("LoadBalancer", "{loadBalancer: {ingress: [{hostname: a.example, ipMode: VIP}]}}"), `status.loadBalancer.ingress[0].ipMode: invalid value "VIP": may only be set when ip is set`},
		{svcDoc("LoadBalancer", "{loadBalancer: {ingress: [{ip: 192.0.2.1, ports: [{port: 0, protocol: TCP}]}]}}"), "status.loadBalancer.ingress[0].ports[0].port: invalid value 0"},
		{svcDoc("LoadBalancer", "{loadBalancer: {ingress: [{ip: 192.0.2.1, address: x}]}}"), `status.loadBalancer.ingress[0]: unknown field "address"`},
		{svcDoc("LoadBalancer", "{loadBalancer: {ingres: []}}"), `status.loadBalancer: unknown field "ingres"`},
		{svcDoc("LoadBalancer", "{phase: Ready}"), `status: unknown field "phase"`},
		{svcDoc("ClusterIP", "{loadBalancer: {ingress: [{ip: 192.0.2.1}]}}"), "status.loadBalancer.ingress: forbidden: may only be used when `spec.type` is 'LoadBalancer'"},
	} {
		_, err := testKinds.Decode("x.yaml", []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.doc, err, tc.want)
		}
	}
}
