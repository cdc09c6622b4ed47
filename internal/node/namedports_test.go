package node

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/kvstore/kvstoretest"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/state"
)

// TestAnnouncedNamedPorts: a local endpoint is announced with its Pod's
// named ports (other nodes resolve egress named ports from them), also
// when the Pod reaches the table after the endpoint was announced.
func TestAnnouncedNamedPorts(t *testing.T) {
	c := kvstoretest.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ts := state.New(c, nil)
	pods := state.Register(ts, state.Spec[*resource.Object]{Name: "Pod", Prefix: resource.KindPrefix("Pod"),
		Decode: func(kv kvstore.KV) (*resource.Object, error) { return resource.Unmarshal(kv.Value) }})
	tables := Tables{Nodes: state.Register(ts, NodesSpec()), Endpoints: state.Register(ts, EndpointsSpec()), Pods: pods}
	go ts.Run(ctx)
	m := New(Node{Name: "n1", IPv4: "10.99.0.1"}, c, tables, &memIPCache{m: map[netip.Prefix]datapath.IPCacheEntry{}}, nil, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.SetLocalEndpoints(func() []api.Endpoint { return localEndpoints })
	go m.Run(ctx)

	announced := func() []NamedPort {
		kv, ok, err := c.Get(ctx, EndpointsPrefix+"n1/c1")
		if err != nil || !ok {
			return nil
		}
		var ep Endpoint
		if json.Unmarshal(kv.Value, &ep) != nil {
			return nil
		}
		return ep.NamedPorts
	}
	waitFor(t, "endpoint announced", func() bool {
		_, ok, _ := c.Get(ctx, EndpointsPrefix+"n1/c1")
		return ok
	})
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"cart","namespace":"shop"},"spec":{"containers":[
{"name":"a","image":"x","ports":[{"name":"http","containerPort":8080},{"containerPort":9000}]},
{"name":"b","image":"x","ports":[{"name":"dns","containerPort":53,"protocol":"UDP"}]}]}}`
	if _, err := c.Put(ctx, resource.Key("Pod", "shop", "cart"), []byte(pod)); err != nil {
		t.Fatal(err)
	}
	want := []NamedPort{{Name: "dns", Port: 53, Protocol: "UDP"}, {Name: "http", Port: 8080, Protocol: "TCP"}}
	waitFor(t, "named ports announced after the Pod arrived", func() bool { return slices.Equal(announced(), want) })
}
