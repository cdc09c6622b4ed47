// Package clusterstate declares the agent's state tables: what the agent
// reads of the cluster (nodes, endpoints, identities, Hubble peers and
// resources such as Pods, Namespaces, Services and policies), each fed by
// one watch of the store however many subsystems read it. Controllers take
// the tables they need from here instead of following the store.
package clusterstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/lumen-net/lumen/internal/hubble/peer"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/node"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/state"
)

// Index names of resource tables.
const (
	// ByNamespace finds namespaced objects by namespace.
	ByNamespace = "namespace"
	// ByLabel finds objects by one label, as "key=value".
	ByLabel = "label"
	// ByNode finds Pods by spec.nodeName (and endpoints by node name,
	// node.ByNode).
	ByNode = node.ByNode
	// ByNamedPort finds Pods by the name of a container port.
	ByNamedPort = "namedport"
)

// Tables are the agent's tables. Resources holds one table per resource
// kind the agent follows, by kind name ("Pod", "Service", "CiliumNetworkPolicy").
type Tables struct {
	*state.Tables
	Nodes      *state.Table[model.Node]
	Endpoints  *state.Table[model.Endpoint]
	Identities *state.Table[identity.Entry]
	Peers      *state.Table[peer.Peer]
	Resources  map[string]*state.Table[*resource.Object]
}

// NodeTables are the tables the node manager reads.
func (t *Tables) NodeTables() node.Tables {
	return node.Tables{Nodes: t.Nodes, Endpoints: t.Endpoints, Pods: t.Pods()}
}

// New declares the tables of an agent fed from store (nil: the node is
// alone, every table is empty) for the given resource kinds; Run feeds them.
// Pods and Namespaces are always among them.
func New(store kvstore.Store, kinds []string, log *slog.Logger) *Tables {
	ts := state.New(store, log)
	t := &Tables{
		Tables:     ts,
		Nodes:      state.Register(ts, node.NodesSpec()),
		Endpoints:  state.Register(ts, node.EndpointsSpec()),
		Identities: state.Register(ts, identity.EntriesSpec()),
		Peers:      state.Register(ts, state.Spec[peer.Peer]{Name: "hubble-peers", Prefix: peer.StorePrefix, Decode: decodePeer}),
		Resources:  map[string]*state.Table[*resource.Object]{},
	}
	for _, k := range append([]string{"Pod", "Namespace"}, kinds...) {
		if _, ok := t.Resources[k]; ok {
			continue
		}
		spec := state.Spec[*resource.Object]{Name: k, Prefix: resource.KindPrefix(k), Decode: decodeObject(k), Indexes: map[string]func(*resource.Object) []string{
			ByNamespace: func(o *resource.Object) []string { return []string{o.Metadata.Namespace} },
			ByLabel:     labelValues,
		}}
		if k == "Pod" {
			spec.Indexes[ByNode] = podNode
			spec.Indexes[ByNamedPort] = podNamedPorts
		}
		t.Resources[k] = state.Register(ts, spec)
	}
	return t
}

// Pods is the Pod table (in Kubernetes mode, this node's Pods only).
func (t *Tables) Pods() *state.Table[*resource.Object] { return t.Resources["Pod"] }

// Namespaces is the Namespace table.
func (t *Tables) Namespaces() *state.Table[*resource.Object] { return t.Resources["Namespace"] }

// Kind returns the table of a resource kind; it panics for a kind New was
// not given (a programming error).
func (t *Tables) Kind(kind string) *state.Table[*resource.Object] {
	tb, ok := t.Resources[kind]
	if !ok {
		panic("clusterstate: no table for kind " + kind)
	}
	return tb
}

func decodeJSON[T any](kv kvstore.KV) (T, error) {
	var v T
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return v, fmt.Errorf("decoding %s: %w", kv.Key, err)
	}
	return v, nil
}

func decodePeer(kv kvstore.KV) (peer.Peer, error) {
	p, err := decodeJSON[peer.Peer](kv)
	if err == nil && (p.Name == "" || p.Address == "") {
		err = fmt.Errorf("hubble peer %s: name %q and address %q must be set", kv.Key, p.Name, p.Address)
	}
	return p, err
}

func decodeObject(kind string) func(kvstore.KV) (*resource.Object, error) {
	return func(kv kvstore.KV) (*resource.Object, error) {
		obj, err := resource.Unmarshal(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", kv.Key, err)
		}
		if obj.Kind != kind {
			return nil, errors.New("object under " + kv.Key + " has kind " + strconv.Quote(obj.Kind))
		}
		return obj, nil
	}
}

func labelValues(o *resource.Object) []string {
	out := make([]string, 0, len(o.Metadata.Labels))
	for k, v := range o.Metadata.Labels {
		out = append(out, k+"="+v)
	}
	return out
}

func podNode(o *resource.Object) []string {
	p, err := resource.PodOf(o)
	if err != nil || p.Spec.NodeName == "" {
		return nil
	}
	return []string{p.Spec.NodeName}
}

func podNamedPorts(o *resource.Object) []string {
	p, err := resource.PodOf(o)
	if err != nil {
		return nil
	}
	var out []string
	for _, cp := range p.Ports() {
		if cp.Name != "" {
			out = append(out, cp.Name)
		}
	}
	return out
}
