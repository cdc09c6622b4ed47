package node

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/state"
)

// The overlay trusts encapsulated packets from nodes only, and a node's
// address as inner source from that node only: the ipcache marks every
// other node's address as a node's, with its owner, in any routing mode,
// and an override (kube-apiserver) keeps the mark.
func TestDesiredMarksNodeAddresses(t *testing.T) {
	for _, tunnel := range []bool{false, true} {
		m := New(Node{Name: "n1", IPv4: "10.99.0.1", IPv6: "fd00:10:99::1"}, nil, Tables{}, nil, nil, tunnel, slog.Default())
		put(m.nodes, NodesPrefix+"n2", Node{Name: "n2", IPv4: "10.99.0.2", IPv6: "fd00:10:99::2", PodCIDRv4: "10.200.2.0/24", PodCIDRv6: "fd00:10:200:2::/64"})
		put(m.nodes, NodesPrefix+"n3", Node{Name: "n3", IPv6: "fd00:10:99::3"})
		put(m.eps, "/lumen/v1/endpoints/n2/c1", Endpoint{Node: "n2", ContainerID: "c1", IPv4: "10.200.2.7", Identity: 2001})
		m.overrides = map[netip.Prefix]uint32{netip.MustParsePrefix("10.99.0.2/32"): 1<<24 | 5}
		ipc, _, _ := m.desired()
		n2 := netip.MustParseAddr("10.99.0.2")
		var noTunnel netip.Addr
		if tunnel {
			noTunnel = n2
		}
		for p, want := range map[string]datapath.IPCacheEntry{
			"10.99.0.1/32":       {Identity: idHost},
			"fd00:10:99::1/128":  {Identity: idHost},
			"10.99.0.2/32":       {Identity: 1<<24 | 5, Node: true, Tunnel: n2},
			"fd00:10:99::2/128":  {Identity: idRemoteNode, Node: true, Tunnel: n2},
			"fd00:10:99::3/128":  {Identity: idRemoteNode, Node: true}, // no IPv4: cannot tunnel
			"10.200.2.0/24":      {Identity: idWorld, Tunnel: noTunnel},
			"fd00:10:200:2::/64": {Identity: idWorld, Tunnel: noTunnel},
			"10.200.2.7/32":      {Identity: 2001, Tunnel: noTunnel},
		} {
			pfx := netip.MustParsePrefix(p)
			want.Prefix = pfx
			if got := ipc[pfx]; got != want {
				t.Errorf("tunnel=%v %s: %+v, want %+v", tunnel, p, got, want)
			}
		}
	}
}

// put stores v under key in a table, as the store would deliver it.
func put[T any](t *state.Table[T], key string, v T) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	t.Apply(kvstore.Update{Events: []kvstore.Event{{Type: kvstore.EventPut, KV: kvstore.KV{Key: key, Value: b}}}})
}
