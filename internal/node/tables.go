package node

import (
	"encoding/json"
	"fmt"

	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/state"
)

// Index names of the node and endpoint tables.
const (
	// ByIP finds nodes by address.
	ByIP = "ip"
	// ByNode finds endpoints by node name.
	ByNode = "node"
	// ByPod finds endpoints by "namespace/pod".
	ByPod = "pod"
)

// Tables are the state tables the manager reads.
type Tables struct {
	Nodes     *state.Table[Node]
	Endpoints *state.Table[Endpoint]
}

// NodesSpec is the table of nodes announced under NodesPrefix.
func NodesSpec() state.Spec[Node] {
	return state.Spec[Node]{Name: "nodes", Prefix: NodesPrefix, Decode: decodeNode, Indexes: map[string]func(Node) []string{
		ByIP: func(n Node) []string {
			var out []string
			for _, a := range []string{n.IPv4, n.IPv6} {
				if a != "" {
					out = append(out, a)
				}
			}
			return out
		},
	}}
}

// EndpointsSpec is the table of every node's endpoints (EndpointsPrefix).
func EndpointsSpec() state.Spec[Endpoint] {
	return state.Spec[Endpoint]{Name: "endpoints", Prefix: EndpointsPrefix, Decode: decodeEndpoint, Indexes: map[string]func(Endpoint) []string{
		ByNode: func(e Endpoint) []string { return []string{e.Node} },
		ByPod: func(e Endpoint) []string {
			if e.PodName == "" {
				return nil
			}
			return []string{e.Namespace + "/" + e.PodName}
		},
	}}
}

func decodeNode(kv kvstore.KV) (Node, error) {
	var n Node
	if err := json.Unmarshal(kv.Value, &n); err != nil {
		return Node{}, fmt.Errorf("node %s: %w", kv.Key, err)
	}
	if n.Name == "" {
		return Node{}, fmt.Errorf("node %s: name is empty", kv.Key)
	}
	return n, nil
}

func decodeEndpoint(kv kvstore.KV) (Endpoint, error) {
	var ep Endpoint
	if err := json.Unmarshal(kv.Value, &ep); err != nil {
		return Endpoint{}, fmt.Errorf("endpoint %s: %w", kv.Key, err)
	}
	return ep, nil
}

// staticTables are the tables of a node alone (no store): synced, empty.
func staticTables() Tables {
	t := Tables{Nodes: state.NewTable(NodesSpec(), nil), Endpoints: state.NewTable(EndpointsSpec(), nil)}
	t.Nodes.Apply(kvstore.Update{Resync: true})
	t.Endpoints.Apply(kvstore.Update{Resync: true})
	return t
}
