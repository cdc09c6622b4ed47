package lab

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/lab/labpath"
)

const goodTopology = `
routing: vxlan
nodes:
  - {name: n1, zone: zone-a}
  - {name: n2}
pods:
  - name: web
    namespace: shop
    labels: {app: web, "example.com/tier": front}
    node: n1
    ports: ["80/tcp", "81/TCP", "80/udp", "80/sctp"]
  - {name: client, node: n2}
`

func TestParseTopology(t *testing.T) {
	topo, err := ParseTopology([]byte(goodTopology))
	if err != nil {
		t.Fatal(err)
	}
	if topo.RoutingMode() != RoutingVXLAN {
		t.Errorf("routing = %q", topo.RoutingMode())
	}
	if len(topo.Nodes) != 2 || !reflect.DeepEqual(topo.Nodes[0], Node{Name: "n1", Zone: "zone-a"}) || topo.Nodes[1].Name != "n2" {
		t.Errorf("nodes = %+v", topo.Nodes)
	}
	if len(topo.Pods) != 2 {
		t.Fatalf("pods = %+v", topo.Pods)
	}
	web := topo.Pods[0]
	want := []Port{{Port: 80, Protocol: ProtoTCP}, {Port: 81, Protocol: ProtoTCP}, {Port: 80, Protocol: ProtoUDP}, {Port: 80, Protocol: ProtoSCTP}}
	if len(web.Ports) != len(want) {
		t.Fatalf("ports = %v", web.Ports)
	}
	for i := range want {
		if web.Ports[i] != want[i] {
			t.Errorf("ports[%d] = %v, want %v", i, web.Ports[i], want[i])
		}
	}
	if web.Labels["app"] != "web" || web.Labels["example.com/tier"] != "front" {
		t.Errorf("labels = %v", web.Labels)
	}
	if topo.Pods[1].Namespace != "default" {
		t.Errorf("namespace default = %q", topo.Pods[1].Namespace)
	}
	if topo.NodeIndex("n2") != 1 || topo.NodeIndex("n9") != -1 {
		t.Error("NodeIndex")
	}
}

func TestParseTopologyDefaultRouting(t *testing.T) {
	topo, err := ParseTopology([]byte("nodes: [{name: a}]"))
	if err != nil {
		t.Fatal(err)
	}
	if topo.RoutingMode() != RoutingNative {
		t.Errorf("routing = %q", topo.RoutingMode())
	}
}

func TestTopologyErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown node", `
nodes: [{name: n1}]
pods:
  - {name: a, node: n1}
  - {name: b, node: n1}
  - {name: c, node: n9}`, []string{`pods[2].node: unknown node "n9"`}},
		{"bad protocol", `
nodes: [{name: n1}]
pods: [{name: a, node: n1, ports: ["80/tcp", "80/icmp"]}]`, []string{`pods[0].ports[1]: invalid port "80/icmp"`}},
		{"port out of range", `
nodes: [{name: n1}]
pods: [{name: a, node: n1, ports: ["0/tcp", "65536/udp", "x/tcp", "80"]}]`, []string{
			`pods[0].ports[0]: invalid port "0/tcp"`, `pods[0].ports[1]: invalid port "65536/udp"`,
			`pods[0].ports[2]: invalid port "x/tcp"`, `pods[0].ports[3]: invalid port "80"`}},
		{"port not a string", `
nodes: [{name: n1}]
pods: [{name: a, node: n1, ports: [80]}]`, []string{`pods[0].ports[0]: invalid port 80`}},
		{"duplicate port", `
nodes: [{name: n1}]
pods: [{name: a, node: n1, ports: ["80/tcp", "80/TCP"]}]`, []string{`pods[0].ports[1]: duplicate port "80/tcp"`}},
		{"named ports", `
nodes: [{name: n1}]
pods: [{name: a, node: n1, ports: ["web=80/tcp", "web=81/tcp", "api=80/tcp"]}]`, []string{
			`pods[0].ports[1]: duplicate port name "web"`, `pods[0].ports[2]: duplicate port "api=80/tcp"`}},
		{"bad port names", `
nodes: [{name: n1}]
pods: [{name: a, node: n1, ports: ["Web=82/tcp", "1=83/tcp"]}]`, []string{
			`pods[0].ports[0]: invalid port "Web=82/tcp": name "Web"`, `pods[0].ports[1]: invalid port "1=83/tcp": name "1"`}},
		{"no nodes", `pods: []`, []string{`nodes: at least one node is required`}},
		{"empty", ``, []string{`topology: is empty`}},
		{"not a mapping", `[1, 2]`, []string{`topology: must be a mapping`}},
		{"unknown field", `
nodes: [{name: n1, nmae: x}]
podz: []`, []string{`nodes[0].nmae: unknown field`, `podz: unknown field`}},
		{"bad routing", `
routing: geneve
nodes: [{name: n1}]`, []string{`routing: invalid routing "geneve"`}},
		{"duplicate node", `nodes: [{name: n1}, {name: n1}]`, []string{`nodes[1].name: duplicate node "n1"`}},
		{"bad node name", `nodes: [{name: N_1}, {name: ""}, {name: underlay}]`, []string{
			`nodes[0].name: invalid name "N_1"`, `nodes[1].name: is required`, `nodes[2].name: invalid name "underlay"`}},
		{"long node name", `nodes: [{name: ` + strings.Repeat("n", 49) + `}]`, []string{`nodes[0].name: invalid name "nnnn`, `limited to 48 characters`}},
		{"bad zone", `nodes: [{name: n1, zone: "a b"}]`, []string{`nodes[0].zone: invalid zone "a b"`}},
		{"duplicate pod", `
nodes: [{name: n1}, {name: n2}]
pods: [{name: a, namespace: x, node: n1}, {name: a, namespace: x, node: n2}]`, []string{`pods[1].name: duplicate pod "x/a"`}},
		{"same name on node", `
nodes: [{name: n1}]
pods: [{name: a, namespace: x, node: n1}, {name: a, namespace: z, node: n1}]`, []string{`pods[1].name: pod "a" on node "n1": its namespace n1-a would collide`}},
		{"collision with node", `
nodes: [{name: n1}, {name: n1-a}]
pods: [{name: a, node: n1}]`, []string{`pods[0].name: pod "a" on node "n1": its namespace n1-a would collide with node "n1-a"`}},
		{"missing pod fields", `
nodes: [{name: n1}]
pods: [{namespace: x}]`, []string{`pods[0].name: is required`, `pods[0].node: is required`}},
		{"bad labels", `
nodes: [{name: n1}]
pods: [{name: a, node: n1, labels: {"-x": v, num: 5}}]`, []string{
			`pods[0].labels.num: must be a string, got 5`}},
		{"bad label key", `
nodes: [{name: n1}]
pods: [{name: a, node: n1, labels: {"-x": v, "a/b/c": v, "/x": v}}]`, []string{
			`pods[0].labels: invalid label key "-x"`, `pods[0].labels: invalid label key "a/b/c"`, `pods[0].labels: invalid label key "/x"`}},
		{"bad label value", `
nodes: [{name: n1}]
pods: [{name: a, node: n1, labels: {ok: "bad value!"}}]`, []string{`pods[0].labels.ok: invalid label value "bad value!"`}},
		{"labels not a map", `
nodes: [{name: n1}]
pods: [{name: a, node: n1, labels: [a]}]`, []string{`pods[0].labels: must be a mapping of strings, got a list`}},
		{"nodes not a list", `nodes: n1`, []string{`nodes: must be a list, got "n1"`}},
		{"pod not a mapping", `
nodes: [{name: n1}]
pods: [web]`, []string{`pods[0]: must be a mapping, got "web"`}},
		{"duplicate key", "nodes: []\nnodes: []", []string{`parsing YAML`}},
		{"bad yaml", "nodes: [", []string{`parsing YAML`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseTopology([]byte(c.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestTopologyErrorLists(t *testing.T) {
	_, err := ParseTopology([]byte(`
nodes: [{name: n1}]
pods: [{name: a, node: n7}, {name: b, node: n8}]`))
	var te *TopologyError
	if !errors.As(err, &te) || len(te.Errs) != 2 {
		t.Fatalf("want 2 field errors, got %v", err)
	}
	if te.Errs[0].Path != "pods[0].node" || te.Errs[1].Path != "pods[1].node" {
		t.Errorf("paths = %s, %s", te.Errs[0].Path, te.Errs[1].Path)
	}
}

func TestLoadTopologyExample(t *testing.T) {
	path := filepath.Join("..", "..", "examples", "lab", "topology.yaml")
	topo, err := LoadTopology(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.Nodes) != 2 || len(topo.Pods) != 6 {
		t.Errorf("example has %d nodes and %d pods, want 2 and 6", len(topo.Nodes), len(topo.Pods))
	}
	if _, err := LoadTopology(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "reading topology") {
		t.Errorf("missing file: %v", err)
	}
}

func TestPortJSON(t *testing.T) {
	b, err := json.Marshal([]Port{{Port: 80, Protocol: ProtoTCP}, {Port: 53, Protocol: ProtoUDP}})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `["80/tcp","53/udp"]` {
		t.Errorf("marshal = %s", b)
	}
	var ps []Port
	if err := json.Unmarshal(b, &ps); err != nil || len(ps) != 2 || ps[1] != (Port{Port: 53, Protocol: ProtoUDP}) {
		t.Errorf("unmarshal = %v, %v", ps, err)
	}
	if err := json.Unmarshal([]byte(`["1/icmp"]`), &ps); err == nil {
		t.Error("bad port accepted")
	}
}

func TestAddressPlan(t *testing.T) {
	if got := NodeIPv4(0).String(); got != "10.99.0.1/24" {
		t.Errorf("NodeIPv4(0) = %s", got)
	}
	if got := NodeIPv6(1).String(); got != "fd00:10:99::2/64" {
		t.Errorf("NodeIPv6(1) = %s", got)
	}
	if got := PodCIDRv4(0).String(); got != "10.200.1.0/24" {
		t.Errorf("PodCIDRv4(0) = %s", got)
	}
	if got := PodCIDRv6(9).String(); got != "fd00:10:200:a::/64" {
		t.Errorf("PodCIDRv6(9) = %s", got)
	}
}

func TestLabName(t *testing.T) {
	for _, ok := range []string{"lumen", "t1a2b3c", "a"} {
		if err := labpath.ValidateName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "my-lab", "Lab", "a/b", "../x", strings.Repeat("a", 17)} {
		if err := labpath.ValidateName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	t.Setenv("LUMEN_LAB", "xyz")
	if labpath.Name() != "xyz" {
		t.Error("LUMEN_LAB ignored")
	}
	if labpath.PodNS("l", "n1", "web") != "lmn-l-n1-web" || labpath.NodeNS("l", "n1") != "lmn-l-n1" || labpath.UnderlayNS("l") != "lmn-l-underlay" {
		t.Error("namespace names")
	}
}

func TestSocketPathFits(t *testing.T) {
	p := labpath.NodeSocket(strings.Repeat("l", 16), strings.Repeat("n", MaxNodeNameLen))
	if len(p) > 107 {
		t.Errorf("longest socket path %d bytes: %s", len(p), p)
	}
}

func FuzzParseTopology(f *testing.F) {
	f.Add([]byte(goodTopology))
	f.Add([]byte("nodes: [{name: n1}]\npods: [{name: a, node: n1, ports: [\"80/icmp\"]}]"))
	f.Add([]byte("{}"))
	f.Add([]byte("nodes: 5"))
	f.Add([]byte("pods: [{labels: {a: [1]}}]"))
	if b, err := os.ReadFile(filepath.Join("..", "..", "examples", "lab", "topology.yaml")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		topo, err := ParseTopology(data)
		if err != nil {
			if topo != nil {
				t.Fatal("topology returned with an error")
			}
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		// A valid topology keeps its invariants and survives a round trip.
		if len(topo.Nodes) == 0 || len(topo.Nodes) > MaxNodes {
			t.Fatalf("valid topology with %d nodes", len(topo.Nodes))
		}
		for _, p := range topo.Pods {
			if topo.NodeIndex(p.Node) < 0 || p.Namespace == "" {
				t.Fatalf("valid topology with bad pod %+v", p)
			}
			for _, port := range p.Ports {
				if port.Port == 0 {
					t.Fatalf("port 0 accepted")
				}
			}
		}
		b, err := json.Marshal(topo)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseTopology(b)
		if err != nil {
			t.Fatalf("round trip of %s: %v", b, err)
		}
		b2, _ := json.Marshal(again)
		if string(b) != string(b2) {
			t.Fatalf("round trip changed the topology:\n%s\n%s", b, b2)
		}
	})
}

func TestTopologyAgentArgsLabelsAPIServer(t *testing.T) {
	topo, err := ParseTopology([]byte(`
agentArgs: ["--policy-audit-mode"]
kubeAPIServer: n1
nodes:
  - {name: n1, labels: {role: control}}
pods: []
`))
	if err != nil {
		t.Fatal(err)
	}
	if topo.KubeAPIServer != "n1" || len(topo.AgentArgs) != 1 || topo.Nodes[0].Labels["role"] != "control" {
		t.Fatalf("parsed %+v", topo)
	}
	for _, bad := range []struct{ yaml, want string }{
		{"kubeAPIServer: n9\nnodes: [{name: n1}]\n", `kubeAPIServer: unknown node "n9"`},
		{"agentArgs: [policy-audit-mode]\nnodes: [{name: n1}]\n", `agentArgs[0]: invalid agent flag "policy-audit-mode"`},
		{"nodes: [{name: n1, labels: {'a,b': x}}]\n", `nodes[0].labels: invalid label key "a,b"`},
	} {
		_, err := ParseTopology([]byte(bad.yaml))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: error %v, want %q", bad.yaml, err, bad.want)
		}
	}
}
