package bgp

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/resource"
)

const goodPolicy = `apiVersion: cilium.io/v2alpha1
kind: CiliumBGPPeeringPolicy
metadata:
  name: rack0
spec:
  nodeSelector:
    matchLabels: {rack: rack0}
  virtualRouters:
    - localASN: 64512
      exportPodCIDR: true
      serviceSelector:
        matchExpressions:
          - {key: somekey, operator: NotIn, values: ['never-used-value']}
      neighbors:
        - peerAddress: '10.0.0.1/32'
          peerASN: 64512
          eBGPMultihopTTL: 10
          connectRetryTimeSeconds: 12
          holdTimeSeconds: 9
          keepAliveTimeSeconds: 3
          gracefulRestart:
            enabled: true
            restartTimeSeconds: 15
        - peerAddress: 'fd00::1/128'
          peerASN: 65000
          peerPort: 1179
`

func decodeOne(t *testing.T, doc string) *resource.Object {
	t.Helper()
	objs, err := testKinds.Decode("test", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return &objs[0]
}

func TestPolicyDecode(t *testing.T) {
	obj := decodeOne(t, goodPolicy)
	p, err := PolicyOf(obj)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "rack0" || !p.NodeSelector.Matches(map[string]string{"rack": "rack0"}) || p.NodeSelector.Matches(map[string]string{"rack": "rack1"}) {
		t.Errorf("node selector: %+v", p)
	}
	if len(p.VirtualRouters) != 1 {
		t.Fatalf("routers: %+v", p.VirtualRouters)
	}
	vr := p.VirtualRouters[0]
	if vr.LocalASN != 64512 || !vr.ExportPodCIDR || vr.Source != "CiliumBGPPeeringPolicy rack0" || !vr.ServiceSelector.Matches(map[string]string{"app": "x"}) {
		t.Errorf("router: %+v", vr)
	}
	want := []Neighbor{
		{Address: netip.MustParseAddr("10.0.0.1"), Port: 179, ASN: 64512, HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second,
			ConnectRetry: 12 * time.Second, EBGPMultihopTTL: 10, GracefulRestart: true, RestartTime: 15 * time.Second},
		{Address: netip.MustParseAddr("fd00::1"), Port: 1179, ASN: 65000, HoldTime: DefaultHoldTime, KeepaliveTime: DefaultKeepalive,
			ConnectRetry: DefaultConnectRetry, EBGPMultihopTTL: 1},
	}
	if !reflect.DeepEqual(vr.Neighbors, want) {
		t.Errorf("neighbors:\n got %+v\nwant %+v", vr.Neighbors, want)
	}
	// Validation stores the defaulted spec, which decodes to the same.
	var spec map[string]any
	if err := json.Unmarshal(obj.Spec, &spec); err != nil {
		t.Fatal(err)
	}
	n1 := spec["virtualRouters"].([]any)[0].(map[string]any)["neighbors"].([]any)[1].(map[string]any)
	if n1["holdTimeSeconds"] != 90.0 || n1["connectRetryTimeSeconds"] != 120.0 || n1["peerAddress"] != "fd00::1/128" {
		t.Errorf("stored spec lacks defaults: %s", obj.Spec)
	}
	again, err := DecodePolicySpec(obj.Spec)
	if err != nil {
		t.Fatal(err)
	}
	again.Name = p.Name
	for i := range again.VirtualRouters {
		again.VirtualRouters[i].Source = p.VirtualRouters[i].Source
	}
	if !reflect.DeepEqual(again, p) {
		t.Errorf("stored spec decodes differently:\n%+v\n%+v", again, p)
	}
}

func TestPolicyErrors(t *testing.T) {
	spec := func(s string) string {
		return "apiVersion: cilium.io/v2alpha1\nkind: CiliumBGPPeeringPolicy\nmetadata: {name: p}\nspec:\n" + s
	}
	nb := "neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 65000}]"
	for _, c := range []struct{ in, want string }{
		{"apiVersion: cilium.io/v2alpha1\nkind: CiliumBGPPeeringPolicy\nmetadata: {name: p}\n", `spec: required value`},
		{spec("  virtualRouters: []"), `spec.virtualRouters: required value: at least one virtual router`},
		{spec("  virtualRouters: [{localASN: 65001}]"), `spec.virtualRouters[0].neighbors: required value: at least one neighbor`},
		{spec("  virtualRouters: [{" + nb + "}]"), `spec.virtualRouters[0].localASN: required value`},
		{spec("  virtualRouters: [{localASN: -1, " + nb + "}]"), `spec.virtualRouters[0].localASN: invalid value "-1"`},
		{spec("  virtualRouters: [{localASN: 65001, " + nb + "}, {localASN: 65001, " + nb + "}]"), `spec.virtualRouters[1].localASN: duplicate value 65001 (also spec.virtualRouters[0])`},
		{spec("  virtualRouters: [{localASN: 65001, exportPodCIDR: yes please, " + nb + "}]"), `spec.virtualRouters[0].exportPodCIDR: must be true or false`},
		{spec("  virtualRouters: [{localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32}]}]"), `spec.virtualRouters[0].neighbors[0].peerASN: required value`},
		{spec("  virtualRouters: [{localASN: 65001, neighbors: [{peerASN: 1}]}]"), `spec.virtualRouters[0].neighbors[0].peerAddress: required value`},
		{spec("  virtualRouters: [{localASN: 65001, neighbors: [{peerAddress: '', peerASN: 1}]}]"), `spec.virtualRouters[0].neighbors[0].peerAddress: required value`},
		{spec("  virtualRouters: [{localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 1}, {peerAddress: 10.0.0.1, peerASN: 2}]}]"), `spec.virtualRouters[0].neighbors[1].peerAddress: duplicate value "10.0.0.1"`},
		{spec("  virtualRouters: [{localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 1, peerPort: 70000}]}]"), `neighbors[0].peerPort: invalid value 70000: must be between 1 and 65535`},
		{spec("  virtualRouters: [{localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 1, eBGPMultihopTTL: 0}]}]"), `neighbors[0].eBGPMultihopTTL: invalid value 0`},
		{spec("  virtualRouters: [{localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 1, connectRetryTimeSeconds: 0}]}]"), `neighbors[0].connectRetryTimeSeconds: invalid value 0`},
		{spec("  virtualRouters: [{localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 1, holdTimeSeconds: 70000}]}]"), `neighbors[0].holdTimeSeconds: invalid value 70000: must be between 3 and 65535`},
		{spec("  virtualRouters: [{localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 1, holdTimeSeconds: '9s'}]}]"), `neighbors[0].holdTimeSeconds: invalid value "9s": must be a whole number`},
		{spec("  virtualRouters: [{localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 1, keepAliveTimeSeconds: 100}]}]"), `neighbors[0].keepAliveTimeSeconds: invalid value 100: must not exceed holdTimeSeconds (90)`},
		{spec("  virtualRouters: [{localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 1, gracefulRestart: {restartTimeSeconds: 5}}]}]"), `neighbors[0].gracefulRestart.enabled: required value`},
		{spec("  virtualRouters: [{localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 1, gracefulRestart: {enabled: true, restartTimeSeconds: 4096}}]}]"), `gracefulRestart.restartTimeSeconds: invalid value 4096: must be between 1 and 4095`},
		{spec("  virtualRouters: [{localASN: 65001, neighbors: [{peerAddress: 10.0.0.1/32, peerASN: 1, authSecretRef: s}]}]"), `neighbors[0].authSecretRef: unknown field "authSecretRef"`},
		{spec("  nodeSelector: {matchLabels: {a: 'b c'}}\n  virtualRouters: [{localASN: 65001, " + nb + "}]"), `spec.nodeSelector.matchLabels.a: invalid value "b c"`},
		{spec("  nodeSelector: {matchExpressions: [{operator: Exists}]}\n  virtualRouters: [{localASN: 65001, " + nb + "}]"), `spec.nodeSelector.matchExpressions[0].key: required value`},
		{spec("  nodeSelector: []\n  virtualRouters: [{localASN: 65001, " + nb + "}]"), `spec.nodeSelector: must be a mapping`},
		{spec("  virtualRouters: [{localASN: 65001, serviceSelector: {matchLabels: []}, " + nb + "}]"), `spec.virtualRouters[0].serviceSelector.matchLabels: must be a mapping`},
	} {
		_, err := testKinds.Decode("test", []byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Decode(%q):\n got %v\nwant it to contain %q", c.in, err, c.want)
		}
	}
}

func TestResolvePolicies(t *testing.T) {
	mk := func(name string, sel *Selector) *PeeringPolicy {
		return &PeeringPolicy{Name: name, NodeSelector: sel, VirtualRouters: []VirtualRouter{{LocalASN: 1, Source: name}}}
	}
	a := mk("a", &Selector{MatchLabels: map[string]string{"rack": "a"}})
	b := mk("b", &Selector{MatchExpressions: []Requirement{{Key: "rack", Operator: OpIn, Values: []string{"b", "c"}}}})
	all := mk("all", nil)
	if name, vrs, err := ResolvePolicies([]*PeeringPolicy{a, b}, map[string]string{"rack": "c"}); err != nil || name != "b" || len(vrs) != 1 {
		t.Errorf("rack c: %q %v %v", name, vrs, err)
	}
	if name, vrs, err := ResolvePolicies([]*PeeringPolicy{a, b}, map[string]string{"rack": "d"}); err != nil || name != "" || vrs != nil {
		t.Errorf("rack d: %q %v %v", name, vrs, err)
	}
	_, vrs, err := ResolvePolicies([]*PeeringPolicy{a, b, all}, map[string]string{"rack": "a"})
	if err == nil || vrs != nil || !strings.Contains(err.Error(), "(a, all)") {
		t.Errorf("two policies: %v %v", vrs, err)
	}
}

func TestSelector(t *testing.T) {
	s := &Selector{
		MatchLabels: map[string]string{"app": "web"},
		MatchExpressions: []Requirement{
			{Key: "tier", Operator: OpIn, Values: []string{"a", "b"}},
			{Key: "env", Operator: OpNotIn, Values: []string{"prod"}},
			{Key: "team", Operator: OpExists},
			{Key: "legacy", Operator: OpDoesNotExist},
		},
	}
	for labels, want := range map[string]bool{
		"app=web,tier=a,team=x":                  true,
		"app=web,tier=b,team=x,env=dev":          true,
		"app=web,tier=c,team=x":                  false,
		"app=web,tier=a,team=x,env=prod":         false,
		"app=web,tier=a":                         false,
		"app=web,tier=a,team=x,legacy=":          false,
		"app=db,tier=a,team=x":                   false,
		"tier=a,team=x":                          false,
		"app=web,tier=a,team=x,unrelated=anyval": true,
	} {
		m := map[string]string{}
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		if got := s.Matches(m); got != want {
			t.Errorf("%s: got %v, want %v", labels, got, want)
		}
	}
	var none *Selector
	if !none.Matches(nil) || !(&Selector{}).Matches(map[string]string{"a": "b"}) {
		t.Error("empty selectors must match everything")
	}
	if got := s.String(); got != "app=web,tier in (a,b),env notin (prod),team,!legacy" {
		t.Errorf("String() = %q", got)
	}
}

// FuzzDecodePolicySpec: a spec either decodes into valid routers, which
// encode and decode to the same, or fails with field errors.
func FuzzDecodePolicySpec(f *testing.F) {
	obj := func(doc string) []byte {
		objs, err := testKinds.Decode("seed", []byte(doc))
		if err != nil {
			f.Fatal(err)
		}
		return objs[0].Spec
	}
	f.Add(obj(goodPolicy))
	f.Add([]byte(`{"virtualRouters":[{"localASN":1,"neighbors":[{"peerAddress":"10.0.0.1","peerASN":"1.5"}]}]}`))
	f.Add([]byte(`{"nodeSelector":{"matchExpressions":[{"key":"a","operator":"Exists"}]},"virtualRouters":[{"localASN":4294967295,"serviceSelector":{},"neighbors":[{"peerAddress":"::1:2/128","peerASN":2,"gracefulRestart":{"enabled":false}}]}]}`))
	f.Add([]byte(`{"nodeSelector":{"matchLabels":{}},"virtualRouters":[{"localASN":1,"serviceSelector":{"matchLabels":{},"matchExpressions":[]},"neighbors":[{"peerAddress":"10.0.0.1","peerASN":2}]}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, spec []byte) {
		p, err := DecodePolicySpec(spec)
		if err != nil {
			return
		}
		for _, vr := range p.VirtualRouters {
			if vr.LocalASN == 0 || len(vr.Neighbors) == 0 {
				t.Fatalf("invalid router accepted: %+v", vr)
			}
			for _, n := range vr.Neighbors {
				if !n.Address.IsValid() || n.ASN == 0 || n.KeepaliveTime > n.HoldTime || n.HoldTime < 3*time.Second || n.RestartTime > MaxRestartTime {
					t.Fatalf("invalid neighbor accepted: %+v", n)
				}
			}
		}
		b, err := json.Marshal(encodePolicySpec(p))
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodePolicySpec(b)
		if err != nil {
			t.Fatalf("stored form %s does not decode: %v", b, err)
		}
		if !reflect.DeepEqual(again, p) {
			t.Fatalf("stored form decodes differently:\n%+v\n%+v", again, p)
		}
	})
}
