package loadbalancer

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/resource"
)

var fuzzNode = NodeInfo{Name: "n1", Zone: "a", IPs: []netip.Addr{netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("fd00::1")}}

// checkStable re-validates a decoded object: validation must accept its own
// output unchanged (what is stored is what the agent reads back).
func checkStable(t *testing.T, obj *resource.Object) {
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatalf("encoding %s: %v", obj, err)
	}
	again, err := resource.Unmarshal(b)
	if err != nil {
		t.Fatalf("decoding the stored form of %s: %v", obj, err)
	}
	if err := testKinds.Validate(again); err != nil {
		t.Fatalf("the stored form of %s does not validate: %v\n%s", obj, err, b)
	}
	b2, _ := json.Marshal(again)
	if string(b) != string(b2) {
		t.Fatalf("re-validation changed %s:\n%s\n%s", obj, b, b2)
	}
}

func FuzzDecodeService(f *testing.F) {
	for _, s := range []string{
		"apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}, {name: dns, port: 53, protocol: UDP}]}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: lb, annotations: {service.kubernetes.io/topology-mode: Auto}}\nspec: {type: LoadBalancer, clusterIPs: [10.96.0.10, 'fd00::10'], loadBalancerIP: 192.0.2.1, externalTrafficPolicy: Local, sessionAffinity: ClientIP, ports: [{port: 443, nodePort: 30443}]}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: np}\nspec: {type: NodePort, externalIPs: [198.51.100.1], internalTrafficPolicy: Local, ipFamilyPolicy: PreferDualStack, ports: [{port: 80, nodePort: 70000}]}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: h}\nspec: {clusterIP: None}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.7, ipMode: VIP, ports: [{port: 80, protocol: TCP}]}, {hostname: a.example}]}, conditions: [{type: x}]}\n",
		`{"apiVersion":"v1","kind":"Service","metadata":{"name":"j"},"spec":{"ports":[{"port":80,"targetPort":[1]}],"sessionAffinityConfig":{"clientIP":{"timeoutSeconds":-1}}}}`,
		"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 1e99}], clusterIP: '::ffff:1.2.3.4'}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := testKinds.Decode("fuzz", data)
		if err != nil {
			return
		}
		var svcs []*Service
		for i := range objs {
			if objs[i].Kind != "Service" {
				continue
			}
			checkStable(t, &objs[i])
			svc, err := ServiceOf(&objs[i])
			if err != nil {
				t.Fatalf("a validated service does not read back: %v", err)
			}
			svcs = append(svcs, svc)
			_ = SlicesFor(svc, []model.Endpoint{{Node: "n1", PodName: "p", Namespace: svc.Namespace, IPv4: "10.0.0.1", IPv6: "fd00::1"}},
				map[string]*Pod{svc.Namespace + "/p": {Pod: resource.Pod{Namespace: svc.Namespace, Name: "p", Labels: svc.Spec.Selector}}},
				[]model.Node{{Name: "n1", Zone: "a"}})
		}
		if err := (&Allocator{}).AssignAll(objs, nil); err == nil {
			for i := range objs {
				if objs[i].Kind == "Service" {
					checkStable(t, &objs[i])
				}
			}
		}
		_ = Desired(svcs, nil, fuzzNode)
	})
}

func FuzzDecodeEndpointSlice(f *testing.F) {
	for _, s := range []string{
		"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {ready: true}, nodeName: n1, zone: a, hints: {forZones: [{name: a}]}}]\nports: [{name: http, port: 8080}]\n",
		"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s6, labels: {kubernetes.io/service-name: web}}\naddressType: IPv6\nendpoints: [{addresses: ['fd00::1'], conditions: {ready: false, serving: true, terminating: true}}]\nports: [{port: 80, protocol: UDP}]\n",
		`{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"j","labels":{"kubernetes.io/service-name":"web"}},"addressType":"IPv4","endpoints":[{"addresses":[]}],"ports":[{"port":null}]}`,
		"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: x}\naddressType: FQDN\n",
	} {
		f.Add([]byte(s))
	}
	svc := webService(func(s *ServiceSpec) {
		s.Type, s.ExternalTrafficPolicy = TypeNodePort, PolicyLocal
		s.ClusterIPs, s.IPFamilies = []string{"10.96.0.10", "fd00:96::10"}, []string{IPv4, IPv6}
		s.Ports = []ServicePort{{Name: "http", Protocol: "TCP", Port: 80, NodePort: 30080}, {Name: "", Protocol: "UDP", Port: 80, NodePort: 30080}}
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := testKinds.Decode("fuzz", data)
		if err != nil {
			return
		}
		var slices []*EndpointSlice
		for i := range objs {
			if objs[i].Kind != "EndpointSlice" {
				continue
			}
			checkStable(t, &objs[i])
			s, err := EndpointSliceOf(&objs[i])
			if err != nil {
				t.Fatalf("a validated slice does not read back: %v", err)
			}
			s.Labels[LabelServiceName], s.Namespace = "web", "shop"
			slices = append(slices, s)
		}
		_ = Desired([]*Service{svc}, slices, fuzzNode)
	})
}

// FuzzServiceSpec feeds raw JSON specs straight to validation (no YAML
// layer), where the fuzzer reaches the field checks faster.
func FuzzServiceSpec(f *testing.F) {
	for _, s := range []string{
		`{"type":"NodePort","ports":[{"name":"a","port":80,"nodePort":30080},{"name":"b","port":80,"protocol":"UDP","nodePort":30080}]}`,
		`{"clusterIPs":["10.96.0.1","fd00::1"],"ipFamilies":["IPv4","IPv6"],"ipFamilyPolicy":"RequireDualStack","ports":[{"port":1,"targetPort":"x"}]}`,
		`{"type":"LoadBalancer","loadBalancerIP":"192.0.2.1","externalTrafficPolicy":"Local","allocateLoadBalancerNodePorts":false,"ports":[{"port":80}]}`,
		`{"sessionAffinity":"ClientIP","sessionAffinityConfig":{"clientIP":{"timeoutSeconds":5}},"ports":[{"port":80,"targetPort":8080}],"publishNotReadyAddresses":true}`,
		`{"clusterIP":"None","selector":{"a":"b"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, spec []byte) {
		obj := &resource.Object{APIVersion: "v1", Kind: "Service", Metadata: resource.Metadata{Name: "f", Namespace: "shop"}, Spec: spec}
		if err := testKinds.Validate(obj); err != nil {
			return
		}
		checkStable(t, obj)
		svc, err := ServiceOf(obj)
		if err != nil {
			t.Fatalf("a validated service does not read back: %v", err)
		}
		objs := []resource.Object{*obj}
		if err := (&Allocator{}).AssignAll(objs, nil); err == nil {
			checkStable(t, &objs[0])
		}
		sl := makeSlice("f", "f-1", IPv4, 8080, ready("10.0.0.1", "n1", "a"), terminatingEP("10.0.0.2", "n2", true))
		_ = Desired([]*Service{svc}, []*EndpointSlice{sl}, fuzzNode)
	})
}
