package lab

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/testutil"
)

func TestParseTopologyClients(t *testing.T) {
	topo, err := ParseTopology([]byte("nodes: [{name: n1}]\nclients: [{name: ext}, {name: other}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.Clients) != 2 || topo.Clients[0].Name != "ext" || topo.Clients[1].Name != "other" {
		t.Errorf("clients = %+v", topo.Clients)
	}
	if got := ClientIPv4(0).String(); got != "10.99.0.200/24" {
		t.Errorf("ClientIPv4(0) = %s", got)
	}
	if got := ClientIPv6(1).String(); got != "fd00:10:99::201/64" {
		t.Errorf("ClientIPv6(1) = %s", got)
	}
	if ClientNS("l", "ext") != "lmn-l-client-ext" {
		t.Error("client namespace name")
	}
	// Clients never take a node's address.
	for i := 0; i < MaxClients; i++ {
		for j := 0; j < firstClientHost-1; j++ {
			if ClientIPv4(i).Addr() == NodeIPv4(j).Addr() || ClientIPv6(i).Addr() == NodeIPv6(j).Addr() {
				t.Fatalf("client %d and node %d share an address", i, j)
			}
		}
	}
}

func TestTopologyClientErrors(t *testing.T) {
	var many []string
	for i := 0; i <= MaxClients; i++ {
		many = append(many, fmt.Sprintf("{name: c%d}", i))
	}
	var nodes []string
	for i := 0; i < firstClientHost; i++ {
		nodes = append(nodes, fmt.Sprintf("{name: n%d}", i))
	}
	for _, c := range []struct{ name, yaml, want string }{
		{"bad name", "nodes: [{name: n1}]\nclients: [{name: Ext}]", `clients[0].name: invalid name "Ext"`},
		{"missing name", "nodes: [{name: n1}]\nclients: [{}]", `clients[0].name: is required`},
		{"unknown field", "nodes: [{name: n1}]\nclients: [{name: a, zone: z}]", `clients[0].zone: unknown field`},
		{"not a list", "nodes: [{name: n1}]\nclients: ext", `clients: must be a list`},
		{"duplicate", "nodes: [{name: n1}]\nclients: [{name: a}, {name: a}]", `clients[1].name: duplicate client "a" (also clients[0])`},
		{"node collision", "nodes: [{name: client-a}]\nclients: [{name: a}]", `clients[0].name: client "a": its namespace client-a would collide with node "client-a"`},
		{"pod collision", "nodes: [{name: client}]\npods: [{name: a, node: client}]\nclients: [{name: a}]", `would collide with pod "a" on node "client"`},
		{"too many", "nodes: [{name: n1}]\nclients: [" + strings.Join(many, ", ") + "]", fmt.Sprintf("clients: %d clients, at most %d", MaxClients+1, MaxClients)},
		{"too many nodes", "nodes: [" + strings.Join(nodes, ", ") + "]\nclients: [{name: a}]", "clients: clients use 10.99.0.200 and up"},
	} {
		_, err := ParseTopology([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want error containing %q, got %v", c.name, c.want, err)
		}
	}
}

func TestClientProbeSpecs(t *testing.T) {
	st := &State{
		Name:    "l",
		Pods:    []PodState{{Name: "web", Namespace: "shop", IPv4: "10.200.1.2", IPv6: "fd00:10:200:1::2"}},
		Clients: []ClientState{{Name: "ext", NetNS: "lmn-l-client-ext", IPs: []string{"10.99.0.200/24", "fd00:10:99::200/64"}}},
	}
	if a, ok := st.Clients[0].Addr(6); !ok || a != netip.MustParseAddr("fd00:10:99::200") {
		t.Errorf("Addr(6) = %v %v", a, ok)
	}
	if name, ok := ClientRef(st, "client/ext"); !ok || name != "ext" {
		t.Errorf("ClientRef(client/ext) = %q %v", name, ok)
	}
	if _, ok := ClientRef(st, "client/nope"); ok {
		t.Error("ClientRef of an unknown client")
	}
	if _, ok := ClientRef(st, "shop/web"); ok {
		t.Error("ClientRef of a pod")
	}
	tgt, err := ParseTarget("10.99.0.1:30080/tcp")
	if err != nil {
		t.Fatal(err)
	}
	specs, err := ClientProbeSpecs(st, "ext", tgt, []int{4})
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 1 || specs[0].From.NetNS != "lmn-l-client-ext" || specs[0].From.FullName() != "client/ext" || specs[0].Target.String() != "10.99.0.1:30080" {
		t.Errorf("specs = %+v", specs)
	}
	tgt, _ = ParseTarget("web:80/udp")
	specs, err = ClientProbeSpecs(st, "ext", tgt, []int{4, 6})
	if err != nil || len(specs) != 2 || specs[1].Target.String() != "[fd00:10:200:1::2]:80" || specs[1].Proto != ProtoUDP {
		t.Errorf("pod target: %+v %v", specs, err)
	}
	if _, err := ClientProbeSpecs(st, "nope", tgt, []int{4}); err == nil || !strings.Contains(err.Error(), `no client "nope"`) {
		t.Errorf("unknown client: %v", err)
	}
}

// A client sits on the underlay: it reaches the nodes on both families.
func TestSetupClient(t *testing.T) {
	testutil.RequirePrivileged(t)
	lab := "c" + testutil.Suffix()
	t.Cleanup(func() {
		names, _ := ListNS(labpath.NSPrefix(lab))
		for _, n := range names {
			_ = DeleteNS(n)
		}
	})
	if err := setupUnderlay(labpath.UnderlayNS(lab)); err != nil {
		t.Fatal(err)
	}
	if err := setupNode(labpath.UnderlayNS(lab), labpath.NodeNS(lab, "n1"), "n1", 0); err != nil {
		t.Fatal(err)
	}
	st := &State{Name: lab}
	if err := os.MkdirAll(labpath.Dir(lab), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(labpath.Dir(lab)) })
	topo := &Topology{Clients: []Client{{Name: "ext"}, {Name: "a-client-with-a-long-name"}}}
	if err := buildClients(st, topo, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if len(st.Clients) != 2 || st.Clients[1].NetNS != ClientNS(lab, "a-client-with-a-long-name") {
		t.Fatalf("clients = %+v", st.Clients)
	}
	addrs, err := ifaceAddrs(ClientNS(lab, "ext"), NodeDevice)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() {
			got = append(got, a.String())
		}
	}
	if strings.Join(got, " ") != "10.99.0.200/24 fd00:10:99::200/64" {
		t.Errorf("client addresses %v", got)
	}
	for _, c := range st.Clients {
		for _, target := range []string{"10.99.0.1:9", "[fd00:10:99::1]:9"} {
			conn, err := DialInNS(c.NetNS, "tcp", target, 5e9)
			if err == nil {
				conn.Close()
				t.Errorf("%s: dial %s: nothing listens there, yet it connected", c.Name, target)
			} else if !strings.Contains(err.Error(), "refused") {
				t.Errorf("%s: dial %s: want connection refused (reachable, closed port), got %v", c.Name, target, err)
			}
		}
	}
}
