package node

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/kvstore/kvstoretest"
	"github.com/lumen-net/lumen/internal/state"
)

func entry(key string, v any) kvstore.KV {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return kvstore.KV{Key: key, Value: b}
}

// The manager converges the ipcache from its tables: nothing before both
// listed the store (a restarted agent keeps what it inherited), then every
// change, and a bad update keeps the node it had.
func TestManagerFollowsTables(t *testing.T) {
	c := kvstoretest.Client(t) // the manager announces itself there
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tables := Tables{Nodes: state.NewTable(NodesSpec(), nil), Endpoints: state.NewTable(EndpointsSpec(), nil)}
	inherited := netip.MustParsePrefix("10.200.9.9/32")
	ipc := &memIPCache{m: map[netip.Prefix]datapath.IPCacheEntry{inherited: {Prefix: inherited, Identity: 3000}}}
	m := New(Node{Name: "n1", IPv4: "10.99.0.1"}, c, tables, ipc, nil, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go m.Run(ctx)
	has := func(p string, id uint32) bool {
		ipc.mu.Lock()
		defer ipc.mu.Unlock()
		e, ok := ipc.m[netip.MustParsePrefix(p)]
		return ok && e.Identity == id
	}

	n2 := Node{Name: "n2", IPv4: "10.99.0.2", PodCIDRv4: "10.200.2.0/24"}
	tables.Nodes.Apply(kvstore.Update{Resync: true, KVs: []kvstore.KV{entry(NodesPrefix+"n2", n2)}})
	if st := m.loop.Status(); !strings.Contains(st.Message, "waiting") || !has(inherited.String(), 3000) {
		t.Fatalf("before the endpoints listing: loop %+v, inherited entry kept %v", st, has(inherited.String(), 3000))
	}
	tables.Endpoints.Apply(kvstore.Update{Resync: true, KVs: []kvstore.KV{
		entry(EndpointsPrefix+"n2/c1", Endpoint{Node: "n2", ContainerID: "c1", IPv4: "10.200.2.7", Identity: 2001}),
	}})
	waitFor(t, "the remote endpoint in the ipcache", func() bool {
		return has("10.200.2.7/32", 2001) && has("10.99.0.2/32", idRemoteNode) && !has(inherited.String(), 3000)
	})

	// A bad update of n2 keeps it (and its endpoint); its deletion removes both.
	tables.Nodes.Apply(kvstore.Update{Events: []kvstore.Event{{Type: kvstore.EventPut, KV: kvstore.KV{Key: NodesPrefix + "n2", Value: []byte(`{`)}}}})
	if !m.IsRemoteNodeIP(netip.MustParseAddr("10.99.0.2")) {
		t.Fatal("a bad update removed node n2")
	}
	tables.Nodes.Apply(kvstore.Update{Events: []kvstore.Event{{Type: kvstore.EventDelete, KV: kvstore.KV{Key: NodesPrefix + "n2"}}}})
	waitFor(t, "node n2 and its endpoint gone from the ipcache", func() bool {
		return !has("10.200.2.7/32", 2001) && !has("10.99.0.2/32", idRemoteNode)
	})
	if m.IsRemoteNodeIP(netip.MustParseAddr("10.99.0.2")) {
		t.Fatal("a deleted node's address is still a remote node's")
	}
}
