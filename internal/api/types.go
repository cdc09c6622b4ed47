// Package api defines the agent's local API: the JSON types exchanged over the
// agent's unix socket and a small client for them. The CLI and the CNI plugin
// talk to the agent only through this package.
package api

import "time"

// Default paths of a node's agent outside the lab.
const (
	DefaultSocket   = "/run/lumen/agent.sock"
	DefaultStateDir = "/run/lumen"
)

// Subsystem states reported by GET /v1/status.
const (
	StateOK       = "ok"
	StateDegraded = "degraded"
	StateFailure  = "failure"
	StateDisabled = "disabled"
)

// Endpoint states.
const (
	EndpointReady     = "ready"
	EndpointRestoring = "restoring"
	EndpointNotReady  = "not-ready"
)

// SubsystemStatus is the health of one part of the agent.
type SubsystemStatus struct {
	Name    string `json:"name"`
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
}

// Status is returned by GET /v1/status.
type Status struct {
	Node      string   `json:"node"`
	Version   string   `json:"version"`
	Routing   string   `json:"routing"` // "native" or "vxlan"
	Devices   []string `json:"devices"`
	PodCIDRs  []string `json:"podCIDRs"`
	NodeIPs   []string `json:"nodeIPs"`
	Endpoints int      `json:"endpoints"`
	// PoliciesNotEnforced lists the policies not enforced as written
	// ("<Kind>/<namespace>/<name>: <why>"); their unenforceable parts deny.
	PoliciesNotEnforced []string          `json:"policiesNotEnforced"`
	Subsystems          []SubsystemStatus `json:"subsystems"`
	StartedAt           time.Time         `json:"startedAt"`
}

// Healthy reports whether every subsystem is ok or disabled.
func (s *Status) Healthy() bool {
	for _, ss := range s.Subsystems {
		if ss.State != StateOK && ss.State != StateDisabled {
			return false
		}
	}
	return true
}

// IPConfig is one address handed to a pod.
type IPConfig struct {
	Address string `json:"address"` // CIDR notation, e.g. 10.200.1.7/32
	Gateway string `json:"gateway"` // the pod's next hop, e.g. 10.200.1.1
}

// IPAMRequest asks the agent for pod addresses (POST /v1/ipam).
type IPAMRequest struct {
	Owner string `json:"owner"` // container ID
}

// IPAMResponse carries the allocated addresses and the MTU the pod must use.
type IPAMResponse struct {
	IPv4 *IPConfig `json:"ipv4,omitempty"`
	IPv6 *IPConfig `json:"ipv6,omitempty"`
	MTU  int       `json:"mtu"`
}

// EndpointRequest registers a plugged-in pod (PUT /v1/endpoints/{containerID}).
type EndpointRequest struct {
	ContainerID string            `json:"containerID"`
	NetNS       string            `json:"netns"`
	IfName      string            `json:"ifName"`     // inside the pod, e.g. eth0
	HostIfName  string            `json:"hostIfName"` // host side of the veth
	PodName     string            `json:"podName,omitempty"`
	Namespace   string            `json:"namespace,omitempty"`
	IPv4        string            `json:"ipv4,omitempty"` // bare address
	IPv6        string            `json:"ipv6,omitempty"`
	MAC         string            `json:"mac"` // pod side MAC
	Labels      map[string]string `json:"labels,omitempty"`
}

// Endpoint is a pod as the agent manages it.
type Endpoint struct {
	ID          uint16            `json:"id"`
	ContainerID string            `json:"containerID"`
	PodName     string            `json:"podName,omitempty"`
	Namespace   string            `json:"namespace,omitempty"`
	NetNS       string            `json:"netns"`
	IfName      string            `json:"ifName"`
	HostIfName  string            `json:"hostIfName"`
	HostIfIndex int               `json:"hostIfIndex"`
	IPv4        string            `json:"ipv4,omitempty"`
	IPv6        string            `json:"ipv6,omitempty"`
	MAC         string            `json:"mac"`
	HostMAC     string            `json:"hostMAC"`
	Identity    uint32            `json:"identity"`
	Labels      map[string]string `json:"labels,omitempty"`
	State       string            `json:"state"`
	Created     time.Time         `json:"created"`
	Policy      EndpointPolicy    `json:"policy"`
}

// EndpointPolicy is the enforcement state of an endpoint.
type EndpointPolicy struct {
	IngressEnforced bool     `json:"ingressEnforced"`
	EgressEnforced  bool     `json:"egressEnforced"`
	Audit           bool     `json:"audit,omitempty"`
	Entries         int      `json:"entries"`
	SelectedBy      []string `json:"selectedBy,omitempty"`
	// Warnings: named ports that did not resolve, ... (the rule still
	// applies, without what could not be resolved).
	Warnings []string `json:"warnings,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// ExplainRequest asks an agent why a packet between one of its endpoints
// and a peer is allowed or denied (POST /v1/policy/explain).
type ExplainRequest struct {
	Endpoint  string `json:"endpoint"`  // local endpoint: id, container ID, namespace/pod or IP
	Peer      string `json:"peer"`      // the other side's IP address
	Direction string `json:"direction"` // "ingress" (peer to endpoint) or "egress"
	Protocol  string `json:"protocol"`  // tcp, udp, sctp or any
	Port      uint16 `json:"port"`
}

// ExplainRule is one rule taking part in a verdict.
type ExplainRule struct {
	Policy   string `json:"policy"`
	Rule     string `json:"rule"`
	Section  string `json:"section"`
	Selector string `json:"selector"`
	Ports    string `json:"ports"`
}

// Explanation is the answer to an ExplainRequest.
type Explanation struct {
	Node             string        `json:"node"`
	Endpoint         string        `json:"endpoint"`
	EndpointID       uint16        `json:"endpointID"`
	EndpointIdentity uint32        `json:"endpointIdentity"`
	Peer             string        `json:"peer"`
	PeerIdentity     uint32        `json:"peerIdentity"`
	PeerLabels       []string      `json:"peerLabels,omitempty"`
	Direction        string        `json:"direction"`
	Protocol         string        `json:"protocol"`
	Port             uint16        `json:"port"`
	Allowed          bool          `json:"allowed"`
	Reason           string        `json:"reason"`
	Rules            []ExplainRule `json:"rules,omitempty"`
	Overridden       []ExplainRule `json:"overridden,omitempty"`
	EnforcedBy       []string      `json:"enforcedBy,omitempty"`
	SelectedBy       []string      `json:"selectedBy,omitempty"`
	Warnings         []string      `json:"warnings,omitempty"` // of the endpoint's policy
}

// Service is one programmed frontend (GET /v1/services).
type Service struct {
	Service         string `json:"service"`
	Type            string `json:"type"`
	Frontend        string `json:"frontend"`
	Protocol        string `json:"protocol"`
	Scope           string `json:"scope"`
	ID              uint32 `json:"id"`
	Maglev          bool   `json:"maglev,omitempty"`
	AffinityTimeout uint32 `json:"affinityTimeout,omitempty"`
	// NoBackends is set when the frontend has no active backend: "no
	// endpoints" (none usable anywhere: Kubernetes rejects new connections)
	// or "no local endpoints" (its traffic policy, Local, excludes those it
	// has elsewhere: Kubernetes drops them). NewConnections says what this
	// node's datapath does to them: "reject" or "drop".
	NoBackends     string           `json:"noBackends,omitempty"`
	NewConnections string           `json:"newConnections,omitempty"`
	Backends       []ServiceBackend `json:"backends"`
}

// ServiceBackend is one backend of a frontend.
type ServiceBackend struct {
	ID      uint32 `json:"id"`
	Address string `json:"address"`
	Node    string `json:"node,omitempty"`
	Zone    string `json:"zone,omitempty"`
	State   string `json:"state"`
}
