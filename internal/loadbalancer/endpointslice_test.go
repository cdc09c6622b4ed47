package loadbalancer

import (
	"reflect"
	"strings"
	"testing"
)

func TestEndpointSliceDecode(t *testing.T) {
	obj := decodeOne(t, `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.200.1.5]
  conditions: {ready: true}
  nodeName: n1
  zone: zone-a
  hints: {forZones: [{name: zone-a}]}
  targetRef: {kind: Pod, namespace: shop, name: web-1}
- addresses: [10.200.2.5]
  conditions: {ready: false, serving: true, terminating: true}
ports:
- {name: http, port: 8080}
`)
	s, err := EndpointSliceOf(obj)
	if err != nil {
		t.Fatal(err)
	}
	if s.Key() != "shop/web-abc" || s.ServiceKey() != "shop/web" || s.AddressType != IPv4 || len(s.Endpoints) != 2 {
		t.Fatalf("slice = %+v", s)
	}
	if want := []EndpointPort{{Name: "http", Protocol: "TCP", Port: ptr(int32(8080))}}; !reflect.DeepEqual(s.Ports, want) {
		t.Errorf("ports = %+v, want the protocol defaulted", s.Ports)
	}
	e0, e1 := s.Endpoints[0], s.Endpoints[1]
	if !e0.Conditions.IsReady() || !e0.Conditions.IsServing() || e0.Conditions.IsTerminating() ||
		e0.NodeName != "n1" || e0.Zone != "zone-a" || e0.Hints.ForZones[0].Name != "zone-a" || e0.TargetRef.Name != "web-1" {
		t.Errorf("endpoint 0 = %+v", e0)
	}
	if e1.Conditions.IsReady() || !e1.Conditions.IsServing() || !e1.Conditions.IsTerminating() {
		t.Errorf("endpoint 1 conditions = %+v", e1.Conditions)
	}
	// Round trip through the store form.
	back, err := s.Object()
	if err != nil {
		t.Fatal(err)
	}
	if err := testKinds.Validate(back); err != nil {
		t.Fatal(err)
	}
	s2, _ := EndpointSliceOf(back)
	if !reflect.DeepEqual(s, s2) {
		t.Errorf("round trip changed the slice:\n%+v\n%+v", s, s2)
	}
}

func TestEndpointConditionDefaults(t *testing.T) {
	tr, fa := ptr(true), ptr(false)
	for _, tc := range []struct {
		c                           EndpointConditions
		ready, serving, terminating bool
	}{
		{EndpointConditions{}, true, true, false}, // unknown: ready, serving follows ready, not terminating
		{EndpointConditions{Ready: fa}, false, false, false},
		{EndpointConditions{Ready: fa, Serving: tr, Terminating: tr}, false, true, true},
		{EndpointConditions{Ready: tr, Serving: fa}, true, false, false},
	} {
		if tc.c.IsReady() != tc.ready || tc.c.IsServing() != tc.serving || tc.c.IsTerminating() != tc.terminating {
			t.Errorf("%+v: ready %v serving %v terminating %v", tc.c, tc.c.IsReady(), tc.c.IsServing(), tc.c.IsTerminating())
		}
	}
}

func TestEndpointSliceErrors(t *testing.T) {
	slice := func(body string) string {
		return "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, namespace: shop, labels: {kubernetes.io/service-name: web}}\n" + body
	}
	for _, tc := range []struct{ doc, want string }{
		{slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\n"), ""},
		{slice("endpoints: []\n"), "EndpointSlice shop/s: addressType: required value"},
		{slice("addressType: FQDN\n"), `addressType: unsupported value "FQDN": supported values: "IPv4", "IPv6"`},
		{slice("addressType: IPv4\nendpoints: [{addresses: []}]\n"), "endpoints[0].addresses: required value"},
		{slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.256]}]\n"), `endpoints[1].addresses[0]: invalid value "10.0.0.256": must be a valid IP address`},
		{slice("addressType: IPv4\nendpoints: [{addresses: ['fd00::1']}]\n"), `endpoints[0].addresses[0]: invalid value "fd00::1": must be a valid IPv4 address`},
		{slice("addressType: IPv6\nendpoints: [{addresses: [10.0.0.1]}]\n"), `must be a valid IPv6 address`},
		{slice("addressType: IPv4\nendpoints: [{addresses: [127.0.0.1]}]\n"), "may not be in the loopback range"},
		{slice("addressType: IPv4\nendpoints: [{addresses: [0.0.0.0]}]\n"), "may not be unspecified"},
		{slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], nodeName: N_1}]\n"), `endpoints[0].nodeName: invalid value "N_1"`},
		{slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {ready: 'x'}}]\n"), `endpoints[0].conditions.ready: invalid value: must be a boolean, not string`},
		{slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], hints: {forZones: [{name: a}, {name: a}]}}]\n"), `endpoints[0].hints.forZones[1].name: duplicate value "a"`},
		{slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], hints: {forZones: [{}]}}]\n"), `endpoints[0].hints.forZones[0].name: required value`},
		{slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], topology: {a: b}}]\n"), `endpoints[0]: unknown field "topology"`},
		{slice("addressType: IPv4\nports: [{name: a, port: 80}, {name: a, port: 81}]\n"), `ports[1].name: duplicate value "a"`},
		{slice("addressType: IPv4\nports: [{port: 80}, {port: 81}]\n"), `ports[1].name: duplicate value ""`},
		{slice("addressType: IPv4\nports: [{name: a, port: 70000}]\n"), "ports[0].port: invalid value 70000: must be between 1 and 65535"},
		{slice("addressType: IPv4\nports: [{name: a, port: 80, protocol: icmp}]\n"), `ports[0].protocol: unsupported value "icmp"`},
		{slice("addressType: IPv4\nspec: {}\n"), `unknown field "spec"`},
		{"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\n",
			`EndpointSlice default/s: metadata.labels: required value: label "kubernetes.io/service-name"`},
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
	// Too many endpoints.
	var b strings.Builder
	b.WriteString(slice("addressType: IPv4\nendpoints:\n"))
	for range MaxEndpointsPerSlice + 1 {
		b.WriteString("- addresses: [10.0.0.1]\n")
	}
	if _, err := testKinds.Decode("x.yaml", []byte(b.String())); err == nil || !strings.Contains(err.Error(), "endpoints: invalid value 1001: too many") {
		t.Errorf("1001 endpoints: %v", err)
	}
}
