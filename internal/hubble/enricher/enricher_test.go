package enricher

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/hubble/parser"
	"github.com/lumen-net/lumen/internal/node"
)

// endpoints is a node's endpoint list that grows under the test.
type endpoints struct {
	mu   sync.Mutex
	list []api.Endpoint
}

func (e *endpoints) List() []api.Endpoint {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]api.Endpoint(nil), e.list...)
}

func (e *endpoints) add(ep api.Endpoint) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, ep)
}

type nodes []node.Node

func (n nodes) Nodes() []node.Node { return n }

// TestEndpointByIP: nodes are host or remote-node, local endpoints carry
// their pod, an address outside everything is world, and a new pod of this
// node's CIDR is named on its first lookup without waiting for a rebuild.
func TestEndpointByIP(t *testing.T) {
	eps := &endpoints{}
	eps.add(api.Endpoint{ID: 7, ContainerID: "c1", IPv4: "10.0.1.5", Identity: 4242, Namespace: "shop", PodName: "web", Labels: map[string]string{"app": "web"}})
	e := New(Deps{
		NodeName: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24"), {}}, Endpoints: eps,
		Nodes: nodes{{Name: "n1", IPv4: "192.168.0.1"}, {Name: "n2", IPv4: "192.168.0.2", IPv6: "fd00::2"}},
	})
	check := func(ip string, identity uint32, pod string) {
		t.Helper()
		got := e.EndpointByIP(netip.MustParseAddr(ip))
		if got.Identity != identity || got.PodName != pod {
			t.Errorf("%s: identity %d pod %q, want %d %q", ip, got.Identity, got.PodName, identity, pod)
		}
	}
	check("192.168.0.1", parser.IdentityHost, "")
	check("192.168.0.2", parser.IdentityRemoteNode, "")
	check("::ffff:192.168.0.2", parser.IdentityRemoteNode, "")
	check("fd00::2", parser.IdentityRemoteNode, "")
	check("10.0.1.5", 4242, "web")
	check("8.8.8.8", parser.IdentityWorld, "")
	if got := e.EndpointByIP(netip.MustParseAddr("10.0.1.5")); got.ID != 7 || got.Namespace != "shop" || len(got.Labels) == 0 {
		t.Errorf("local endpoint %+v", got)
	}

	// A pod created after the snapshot, looked up once the rebuild limit
	// has passed (the snapshot is older than it: built before the add).
	eps.add(api.Endpoint{ID: 8, ContainerID: "c2", IPv4: "10.0.1.6", Identity: 4343, Namespace: "shop", PodName: "db"})
	e.mu.Lock()
	e.last = e.last.Add(-time.Second)
	e.mu.Unlock()
	check("10.0.1.6", 4343, "db")
}
