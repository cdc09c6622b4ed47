// Package model holds the stored and wire types of the cluster's nodes and
// endpoints: what an agent announces in the store (etcd keys' values, or
// the Kubernetes objects the adapter converts to them) and every reader
// decodes. It depends on nothing of the agent, so that pure packages (the
// load-balancer model, policy) need not import the managers that write it.
package model

// Store key prefixes of the announcements.
const (
	NodesPrefix     = "/lumen/v1/nodes/"
	EndpointsPrefix = "/lumen/v1/endpoints/"
)

// Node is a node as announced in the store.
type Node struct {
	Name      string            `json:"name"`
	Zone      string            `json:"zone,omitempty"`
	IPv4      string            `json:"ipv4,omitempty"`
	IPv6      string            `json:"ipv6,omitempty"`
	PodCIDRv4 string            `json:"podCIDRv4,omitempty"`
	PodCIDRv6 string            `json:"podCIDRv6,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// Endpoint is an endpoint as announced in the store.
type Endpoint struct {
	Node        string            `json:"node"`
	ContainerID string            `json:"containerID"`
	PodName     string            `json:"podName,omitempty"`
	Namespace   string            `json:"namespace,omitempty"`
	IPv4        string            `json:"ipv4,omitempty"`
	IPv6        string            `json:"ipv6,omitempty"`
	Identity    uint32            `json:"identity"`
	Labels      map[string]string `json:"labels,omitempty"`
	// NodeIP is the node's address when only that is known (Kubernetes
	// CiliumEndpointSlices); Node may then be empty.
	NodeIP string `json:"nodeIP,omitempty"`
	// NamedPorts are the pod's named container ports: egress rules naming
	// a port resolve it on the destination, which may run on another node
	// (whose Pod this node does not watch).
	NamedPorts []NamedPort `json:"namedPorts,omitempty"`
}

// NamedPort is a named container port of an endpoint's pod, as Cilium's
// CiliumEndpoint status.named-ports has it.
type NamedPort struct {
	Name     string `json:"name"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol,omitempty"` // TCP (default), UDP or SCTP
}
