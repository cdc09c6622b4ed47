// Package k8s connects Lumen to a Kubernetes API server: the Cilium custom
// resources Lumen reads and writes (same group and field names as Cilium, so
// existing YAML and tools apply as-is), the client, and a kvstore.Store that
// presents the API under the store's keys so every agent subsystem works the
// same in standalone and Kubernetes mode.
package k8s

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group is the API group of the custom resources, Cilium's.
const Group = "cilium.io"

// Resources of the custom resource definitions in deploy/crds.
var (
	CiliumEndpoints      = schema.GroupVersionResource{Group: Group, Version: "v2", Resource: "ciliumendpoints"}
	CiliumEndpointSlices = schema.GroupVersionResource{Group: Group, Version: "v2alpha1", Resource: "ciliumendpointslices"}
	CiliumIdentities     = schema.GroupVersionResource{Group: Group, Version: "v2", Resource: "ciliumidentities"}
	CiliumNodes          = schema.GroupVersionResource{Group: Group, Version: "v2", Resource: "ciliumnodes"}
)

// Labels and annotations Lumen puts on its objects.
const (
	// NodeLabel on a CiliumEndpoint names the node the endpoint runs on, so
	// an agent lists its own endpoints with a label selector.
	NodeLabel = "lumen.io/node"
	// HubblePeerAnnotation on a CiliumNode holds the node's Hubble peer
	// announcement (JSON), which relays and agents discover.
	HubblePeerAnnotation = "lumen.io/hubble-peer"
	// ZoneLabel is the well-known zone label of nodes.
	ZoneLabel = "topology.kubernetes.io/zone"
)

// CiliumEndpoint (cilium.io/v2, namespaced, named after its pod) publishes
// one endpoint: its identity and addresses.
type CiliumEndpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Status            EndpointStatus `json:"status,omitempty"`
}

// EndpointStatus is the part of Cilium's endpoint status Lumen fills.
type EndpointStatus struct {
	ID                  int64                `json:"id,omitempty"`
	ExternalIdentifiers *EndpointIdentifiers `json:"external-identifiers,omitempty"`
	Identity            *EndpointIdentity    `json:"identity,omitempty"`
	Networking          *EndpointNetworking  `json:"networking,omitempty"`
	State               string               `json:"state,omitempty"`
	NamedPorts          []NamedPort          `json:"named-ports,omitempty"`
}

// EndpointIdentifiers tie an endpoint to its container and pod.
type EndpointIdentifiers struct {
	ContainerID  string `json:"container-id,omitempty"`
	K8sNamespace string `json:"k8s-namespace,omitempty"`
	K8sPodName   string `json:"k8s-pod-name,omitempty"`
	PodName      string `json:"pod-name,omitempty"` // namespace/name
}

// EndpointIdentity is the endpoint's security identity and its labels
// ("k8s:app=web").
type EndpointIdentity struct {
	ID     int64    `json:"id,omitempty"`
	Labels []string `json:"labels,omitempty"`
}

// EndpointNetworking holds the endpoint's addresses and its node's IP.
type EndpointNetworking struct {
	Addressing []AddressPair `json:"addressing"`
	NodeIP     string        `json:"node,omitempty"`
}

// AddressPair is one IPv4/IPv6 pair.
type AddressPair struct {
	IPv4 string `json:"ipv4,omitempty"`
	IPv6 string `json:"ipv6,omitempty"`
}

// NamedPort is a container port with a name.
type NamedPort struct {
	Name     string `json:"name,omitempty"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol,omitempty"`
}

// CiliumEndpointSlice (cilium.io/v2alpha1, cluster-scoped) batches the
// endpoints of one namespace, so agents watch far fewer objects.
type CiliumEndpointSlice struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Namespace         string               `json:"namespace,omitempty"`
	Endpoints         []CoreCiliumEndpoint `json:"endpoints"`
}

// CoreCiliumEndpoint is the slim form of an endpoint inside a slice.
type CoreCiliumEndpoint struct {
	Name       string              `json:"name,omitempty"`
	IdentityID int64               `json:"id,omitempty"`
	Networking *EndpointNetworking `json:"networking,omitempty"`
	NamedPorts []NamedPort         `json:"named-ports,omitempty"`
}

// CiliumIdentity (cilium.io/v2, cluster-scoped, named by the numeric id)
// maps an identity to its label set ("k8s:app" -> "web").
type CiliumIdentity struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	SecurityLabels    map[string]string `json:"security-labels"`
}

// CiliumNode (cilium.io/v2, cluster-scoped) is a node as Cilium sees it:
// addresses, and pod CIDRs (allocated by lumen-operator).
type CiliumNode struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NodeSpec `json:"spec"`
}

// NodeSpec is the part of Cilium's node spec Lumen uses.
type NodeSpec struct {
	Addresses []NodeAddress `json:"addresses,omitempty"`
	IPAM      IPAMSpec      `json:"ipam,omitempty"`
}

// NodeAddress is one node address; Type is InternalIP or ExternalIP.
type NodeAddress struct {
	Type string `json:"type,omitempty"`
	IP   string `json:"ip,omitempty"`
}

// IPAMSpec holds the node's pod CIDRs (one IPv4 and/or one IPv6).
type IPAMSpec struct {
	PodCIDRs []string `json:"podCIDRs,omitempty"`
}
