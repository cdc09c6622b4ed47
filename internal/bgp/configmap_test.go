package bgp

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

const goodConfigMap = `apiVersion: v1
kind: ConfigMap
metadata:
  name: bgp-config
  namespace: kube-system
data:
  config.yaml: |
    peers:
      - peer-address: 10.0.0.1
        peer-asn: 64512
        my-asn: 64513
      - peer-address: fd00::1
        peer-asn: 64512
        my-asn: 64513
        peer-port: 1179
        hold-time: 9s
        keepalive-time: 3s
        restart-time: 30s
        source-address: fd00::10
        node-selectors:
          - match-labels: {rack: r1}
          - match-expressions: [{key: zone, operator: In, values: [b, a]}]
      - peer-address: 10.0.0.2
        peer-asn: 65000
        my-asn: "1.10"
        router-id: 192.0.2.1
        graceful-restart: false
        connect-retry: 10s
        ebgp-multihop: true
    address-pools:
      - name: default
        protocol: bgp
        addresses:
          - 192.0.2.0/24
          - 198.51.100.10-198.51.100.13
        auto-assign: false
`

func TestParseConfigMap(t *testing.T) {
	c, err := ParseConfigMap([]byte(goodConfigMap))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Peers) != 3 || len(c.Pools) != 1 {
		t.Fatalf("got %d peers, %d pools", len(c.Peers), len(c.Pools))
	}
	p := c.Peers[0]
	want := Neighbor{Address: netip.MustParseAddr("10.0.0.1"), Port: 179, ASN: 64512, HoldTime: 90 * time.Second, KeepaliveTime: 30 * time.Second,
		ConnectRetry: DefaultConnectRetry, EBGPMultihopTTL: 1, GracefulRestart: true, RestartTime: DefaultRestartTime}
	if p.Neighbor != want || p.MyASN != 64513 {
		t.Errorf("defaults: got %+v, want %+v", p.Neighbor, want)
	}
	p = c.Peers[1]
	if p.Port != 1179 || p.HoldTime != 9*time.Second || p.KeepaliveTime != 3*time.Second || p.RestartTime != 30*time.Second ||
		p.SourceAddress != netip.MustParseAddr("fd00::10") || len(p.NodeSelectors) != 2 {
		t.Errorf("second peer: %+v", p)
	}
	p = c.Peers[2]
	if p.MyASN != 1<<16|10 || p.GracefulRestart || p.ConnectRetry != 10*time.Second || p.EBGPMultihopTTL != 255 || p.RouterID != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("third peer: %+v", p)
	}
	wantPool := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.10/31"), netip.MustParsePrefix("198.51.100.12/31")}
	if !reflect.DeepEqual(c.Pools[0].Prefixes, wantPool) || c.Pools[0].AutoAssign {
		t.Errorf("pool: %+v", c.Pools[0])
	}

	// The bare content parses the same.
	bare := goodConfigMap[strings.Index(goodConfigMap, "    peers:"):]
	bare = strings.ReplaceAll(bare, "\n    ", "\n")
	c2, err := ParseConfigMap([]byte(strings.TrimPrefix(bare, "    ")))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Errorf("bare content differs:\n%+v\n%+v", c, c2)
	}
}

func TestConfigMapRouters(t *testing.T) {
	c, err := ParseConfigMap([]byte(goodConfigMap))
	if err != nil {
		t.Fatal(err)
	}
	// A node in rack r1: every peer; routers per my-asn, in order.
	rs := c.Routers(map[string]string{"rack": "r1"}, AnnounceOptions{PodCIDR: true, LBIP: true}, "test")
	if len(rs) != 2 || rs[0].LocalASN != 64513 || len(rs[0].Neighbors) != 2 || rs[1].LocalASN != 1<<16|10 || rs[1].RouterID != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("routers: %+v", rs)
	}
	if !rs[0].ExportPodCIDR || rs[0].ServiceSelector == nil || len(rs[0].Pools) != 3 {
		t.Errorf("announce options not applied: %+v", rs[0])
	}
	// A node matching the second selector (zone a) also gets the IPv6 peer.
	if rs := c.Routers(map[string]string{"zone": "a"}, AnnounceOptions{}, "test"); len(rs[0].Neighbors) != 2 {
		t.Errorf("zone a: %+v", rs)
	}
	// Elsewhere: not the IPv6 peer; nothing announced without the flags.
	rs = c.Routers(map[string]string{"rack": "r2"}, AnnounceOptions{}, "test")
	if len(rs[0].Neighbors) != 1 || rs[0].ExportPodCIDR || rs[0].ServiceSelector != nil {
		t.Errorf("rack r2: %+v", rs)
	}
	// Without pools, no service address qualifies (MetalLB's rule).
	c.Pools = nil
	if rs := c.Routers(nil, AnnounceOptions{LBIP: true}, "test"); rs[0].Pools == nil || len(rs[0].Pools) != 0 {
		t.Errorf("no pools: want an empty, non-nil pool list, got %#v", rs[0].Pools)
	}
}

func TestConfigMapErrors(t *testing.T) {
	peer := func(extra string) string {
		return "peers:\n  - peer-address: 10.0.0.1\n    peer-asn: 64512\n    my-asn: 64513\n" + extra
	}
	for _, c := range []struct{ in, want string }{
		{"", `<document>: is empty`},
		{"peers: {}", `peers: must be a list`},
		{"address-pools: []", `peers: required value`},
		{"peers:\n  - peer-address: 10.0.0.1\n    peer-asn: 0\n    my-asn: 1", `peers[0].peer-asn: invalid value "0": must be between 1 and 4294967295`},
		{"peers:\n  - peer-address: 10.0.0.1\n    peer-asn: 4294967296\n    my-asn: 1", `peers[0].peer-asn: invalid value "4294967296"`},
		{"peers:\n  - peer-address: 10.0.0.1\n    peer-asn: 23456\n    my-asn: 1", `peers[0].peer-asn: invalid value "23456": AS 23456 is AS_TRANS`},
		{"peers:\n  - peer-address: 10.0.0.1\n    peer-asn: abc\n    my-asn: 1", `peers[0].peer-asn: invalid value "abc": not an AS number`},
		{"peers:\n  - peer-address: 10.0.0.1\n    peer-asn: 1", `peers[0].my-asn: required value`},
		{"peers:\n  - peer-address: 10.0.0.1\n    peer-asn: 1.10\n    my-asn: 2", `peers[0].peer-asn: invalid value "1.1": not an AS number (quote asdot notation`},
		{"peers:\n  - peer-address: 10.0.0.256\n    peer-asn: 1\n    my-asn: 2", `peers[0].peer-address: invalid value "10.0.0.256": not an IP address`},
		{"peers:\n  - peer-address: 10.0.0.0/24\n    peer-asn: 1\n    my-asn: 2", `peers[0].peer-address: invalid value "10.0.0.0/24": must be a single address (/32)`},
		{"peers:\n  - peer-address: 224.0.0.1\n    peer-asn: 1\n    my-asn: 2", `peers[0].peer-address: invalid value "224.0.0.1": not a unicast peer address`},
		{peer("    peer-port: 0\n"), `peers[0].peer-port: invalid value 0: must be between 1 and 65535`},
		{peer("    hold-time: 2s\n"), `peers[0].hold-time: invalid value "2s": must be between 3s and 18h12m15s`},
		{peer("    hold-time: ninety\n"), `peers[0].hold-time: invalid value "ninety": not a duration`},
		{peer("    hold-time: 1.5s\n"), `peers[0].hold-time: invalid value "1.5s": must be whole seconds`},
		{peer("    hold-time: 9s\n    keepalive-time: 10s\n"), `peers[0].keepalive-time: invalid value "10s": keepalive time 10s must not exceed the hold time 9s`},
		{peer("    restart-time: 5000s\n"), `peers[0].restart-time: invalid value "1h23m20s": must be between 1s and 1h8m15s`},
		{peer("    graceful-restart: false\n    restart-time: 10s\n"), `peers[0].restart-time: set while graceful-restart is false`},
		{peer("    graceful-restart: maybe\n"), `peers[0].graceful-restart: must be true or false`},
		{peer("    router-id: fd00::1\n"), `peers[0].router-id: invalid value "fd00::1": must be an IPv4 address`},
		{peer("    source-address: fd00::1\n"), `peers[0].source-address: invalid value "fd00::1": must be of the peer address's family`},
		{peer("    bfd-profile: x\n"), `peers[0].bfd-profile: unknown field "bfd-profile"`},
		{peer("    node-selectors: [{match-labels: {a: b}, match-expressions: [{key: k, operator: Within, values: [x]}]}]\n"), `peers[0].node-selectors[0].match-expressions[0].operator: unsupported value "Within"`},
		{peer("    node-selectors: [{match-expressions: [{key: k, operator: In}]}]\n"), `peers[0].node-selectors[0].match-expressions[0].values: must be non-empty for operator In`},
		{peer("    node-selectors: [{match-expressions: [{key: k, operator: Exists, values: [x]}]}]\n"), `values: must be empty for operator Exists`},
		{peer("    node-selectors: [{match-labels: {'bad key!': x}}]\n"), `peers[0].node-selectors[0].match-labels: invalid value "bad key!"`},
		{peer("") + peer("")[len("peers:\n"):], `peers[1].peer-address: duplicate value "10.0.0.1"`},
		{peer("    router-id: 1.1.1.1\n") + "  - {peer-address: 10.0.0.2, peer-asn: 1, my-asn: 64513, router-id: 2.2.2.2}\n", `peers[1].router-id: invalid value "2.2.2.2": peers of my-asn 64513 must use one router-id`},
		{peer("") + "address-pools:\n  - {name: p, protocol: layer2, addresses: [10.0.0.0/24]}", `address-pools[0].protocol: unsupported value "layer2"`},
		{peer("") + "address-pools:\n  - {name: p, protocol: bgp, addresses: [10.0.0.1/24]}", `address-pools[0].addresses[0]: invalid value "10.0.0.1/24": host bits set: did you mean 10.0.0.0/24?`},
		{peer("") + "address-pools:\n  - {name: p, protocol: bgp, addresses: [10.0.0.9-10.0.0.1]}", `address-pools[0].addresses[0]: invalid value "10.0.0.9-10.0.0.1": range ends before it starts`},
		{peer("") + "address-pools:\n  - {name: p, protocol: bgp, addresses: [10.0.0.1-fd00::1]}", `range mixes IPv4 and IPv6`},
		{peer("") + "address-pools:\n  - {name: p, protocol: bgp}", `address-pools[0].addresses: required value`},
		{peer("") + "address-pools:\n  - {protocol: bgp, addresses: [10.0.0.0/8]}", `address-pools[0].name: required value`},
		{peer("") + "address-pools:\n  - {name: p, protocol: bgp, addresses: [10.0.0.0/8]}\n  - {name: p, protocol: bgp, addresses: [10.1.0.0/16]}", `address-pools[1].name: duplicate value "p"`},
		{peer("") + "address-pools:\n  - {name: p, protocol: bgp, addresses: [10.0.0.0/8], bgp-advertisements: [{aggregation-length: 24}]}", `address-pools[0].bgp-advertisements: not supported by Lumen`},
		{"apiVersion: v1\nkind: Secret\ndata: {config.yaml: 'peers: []'}", `kind: unsupported value "Secret"`},
		{"apiVersion: v1\nkind: ConfigMap\ndata: {other: x}", `data.other: unknown field "other"`},
		{"apiVersion: v1\nkind: ConfigMap\ndata: {config.yaml: 'peers: [{peer-address: x}]'}", `data.config.yaml.peers[0].peer-address: invalid value "x"`},
		{"peers:\n  - a: 1\n    a: 2", `parsing YAML`},
	} {
		_, err := ParseConfigMap([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseConfigMap(%q):\n got %v\nwant it to contain %q", c.in, err, c.want)
		}
	}
}

func TestParseASN(t *testing.T) {
	for in, want := range map[string]uint32{"1": 1, "65535": 65535, "4294967295": 4294967295, "1.0": 65536, "65535.65535": 4294967295} {
		if got, err := ParseASN(in); err != nil || got != want {
			t.Errorf("ParseASN(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "0.0", "23456", "4294967296", "-1", "1.65536", "a.b", "1e3"} {
		if _, err := ParseASN(in); err == nil {
			t.Errorf("ParseASN(%q): want an error", in)
		}
	}
}

func TestRangePrefixes(t *testing.T) {
	for _, c := range []struct {
		from, to string
		want     []string
	}{
		{"10.0.0.0", "10.0.0.255", []string{"10.0.0.0/24"}},
		{"10.0.0.1", "10.0.0.1", []string{"10.0.0.1/32"}},
		{"10.0.0.1", "10.0.0.6", []string{"10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"}},
		{"0.0.0.0", "255.255.255.255", []string{"0.0.0.0/0"}},
		{"255.255.255.254", "255.255.255.255", []string{"255.255.255.254/31"}},
		{"fd00::", "fd00::ffff", []string{"fd00::/112"}},
	} {
		var got []string
		for _, p := range rangePrefixes(netip.MustParseAddr(c.from), netip.MustParseAddr(c.to)) {
			got = append(got, p.String())
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("rangePrefixes(%s, %s) = %v, want %v", c.from, c.to, got, c.want)
		}
	}
}

// FuzzParseConfigMap: any input either parses into a configuration whose
// values are all valid, or fails with field errors; never a panic.
func FuzzParseConfigMap(f *testing.F) {
	f.Add(goodConfigMap)
	f.Add("peers: [{peer-address: 10.0.0.1, peer-asn: 1, my-asn: 2}]")
	f.Add("peers: [{peer-address: 'fd00::1/128', peer-asn: '1.1', my-asn: 2, hold-time: 3, restart-time: 4095s}]\naddress-pools: [{name: a, protocol: bgp, addresses: ['::-::ff']}]")
	f.Add("apiVersion: v1\nkind: ConfigMap\ndata:\n  config.yaml: |\n    peers: []\n")
	f.Add("{}")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := ParseConfigMap([]byte(in))
		if err != nil {
			if _, ok := err.(*ConfigError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		for _, p := range c.Peers {
			if !p.Address.IsValid() || p.ASN == 0 || p.MyASN == 0 || p.Port == 0 || p.HoldTime < 3*time.Second || p.KeepaliveTime > p.HoldTime ||
				(p.GracefulRestart && (p.RestartTime < time.Second || p.RestartTime > MaxRestartTime)) {
				t.Fatalf("invalid peer accepted: %+v", p)
			}
		}
		for _, pool := range c.Pools {
			if pool.Name == "" || pool.Protocol != "bgp" || len(pool.Prefixes) == 0 {
				t.Fatalf("invalid pool accepted: %+v", pool)
			}
		}
	})
}
