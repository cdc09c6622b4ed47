package lab

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/bgp"
)

func TestTopologyRouters(t *testing.T) {
	topo, err := ParseTopology([]byte(`
nodes: [{name: n1}, {name: n2}]
routers:
  - {name: tor1, asn: 65000}
  - {name: tor2, kind: frr, asn: 4200000000, nodeASN: 65010}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Router{{Name: "tor1", Kind: RouterBIRD, ASN: 65000, NodeASN: DefaultNodeASN}, {Name: "tor2", Kind: RouterFRR, ASN: 4200000000, NodeASN: 65010}}
	if len(topo.Routers) != 2 || topo.Routers[0] != want[0] || topo.Routers[1] != want[1] {
		t.Errorf("routers: %+v", topo.Routers)
	}
	if RouterIPv4(0).String() != "10.99.0.251/24" || RouterIPv6(3).String() != "fd00:10:99::254/64" {
		t.Errorf("addresses: %s %s", RouterIPv4(0), RouterIPv6(3))
	}
	for _, c := range []struct{ yaml, want string }{
		{"routers: [{name: r, asn: 65000, color: red}]", `routers[0].color: unknown field`},
		{"routers: [{name: r}]", `routers[0].asn: is required`},
		{"routers: [{name: r, asn: 0}]", `routers[0].asn: invalid AS number 0`},
		{"routers: [{name: r, asn: 4294967296}]", `routers[0].asn: invalid AS number 4294967296`},
		{"routers: [{name: r, asn: 23456}]", `routers[0].asn: invalid AS number 23456: reserved (AS_TRANS)`},
		{"routers: [{name: r, asn: '65000'}]", `routers[0].asn: invalid AS number "65000": want a number`},
		{"routers: [{name: r, asn: 65001}]", `routers[0].nodeASN: invalid AS number 65001: the same as the router's asn`},
		{"routers: [{name: r, asn: 65000, kind: quagga}]", `routers[0].kind: invalid kind "quagga": want bird or frr`},
		{"routers: [{name: R_1, asn: 65000}]", `routers[0].name: invalid name "R_1"`},
		{"routers: [{name: r, asn: 65000}, {name: r, asn: 65100}]", `routers[1].name: duplicate router "r" (also routers[0])`},
		{"routers: [{name: a, asn: 1}, {name: b, asn: 2}, {name: c, asn: 3}, {name: d, asn: 4}, {name: e, asn: 5}]", `routers: 5 routers, at most 4 are supported`},
		{"routers: {name: r}", `routers: must be a list`},
	} {
		_, err := ParseTopology([]byte("nodes: [{name: n1}]\n" + c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got %v\nwant %q", c.yaml, err, c.want)
		}
	}
	// A router's namespace must not be a node's.
	_, err = ParseTopology([]byte("nodes: [{name: router-x}]\nrouters: [{name: x, asn: 65000}]"))
	if err == nil || !strings.Contains(err.Error(), `its namespace router-x would collide with node "router-x"`) {
		t.Errorf("namespace collision: %v", err)
	}
}

func TestRouterConfigs(t *testing.T) {
	dir := t.TempDir()
	r := &RouterState{Name: "tor", Kind: RouterBIRD, ASN: 65000, NodeASN: 65001, IPs: []string{RouterIPv4(0).String(), RouterIPv6(0).String()}, Dir: dir}
	nodes := []netip.Addr{netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("10.99.0.2")}
	conf := birdConfig(r, nodes)
	for _, want := range []string{"router id 10.99.0.251;", "local as 65000;", "graceful restart on;", "protocol bgp node2 from nodes { neighbor 10.99.0.2 as 65001; }"} {
		if !strings.Contains(conf, want) {
			t.Errorf("BIRD configuration lacks %q:\n%s", want, conf)
		}
	}
	// BIRD itself accepts it (parse only), where it is installed.
	if bird, err := exec.LookPath(birdBinary("bird")); err == nil {
		p := filepath.Join(dir, "bird.conf")
		if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bird, "-p", "-c", p).CombinedOutput(); err != nil {
			t.Errorf("bird -p rejects the configuration: %v\n%s\n%s", err, out, conf)
		}
	}

	// The agents' ConfigMap peers with every router and is valid.
	r2 := *r
	r2.Name, r2.ASN, r2.IPs = "tor2", 65100, []string{RouterIPv4(1).String(), RouterIPv6(1).String()}
	cmPath := filepath.Join(dir, "bgp-config.yaml")
	if err := writeBGPConfig(cmPath, []RouterState{*r, r2}); err != nil {
		t.Fatal(err)
	}
	cm, err := bgp.LoadConfigMap(cmPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(cm.Peers) != 2 || cm.Peers[1].Address != netip.MustParseAddr("10.99.0.252") || cm.Peers[1].ASN != 65100 || cm.Peers[1].MyASN != 65001 || !cm.Peers[0].GracefulRestart {
		t.Errorf("generated ConfigMap: %+v", cm.Peers)
	}
	if !agentArgsConfigureBGP([]string{"--x", "--enable-bgp-control-plane"}) || !agentArgsConfigureBGP([]string{"--bgp-config-path=/f"}) || agentArgsConfigureBGP([]string{"--bgp-announce-lb-ip"}) {
		t.Error("agentArgsConfigureBGP")
	}
}
