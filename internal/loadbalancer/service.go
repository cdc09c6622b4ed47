// Package loadbalancer is the pure-Go model of Service load balancing (the
// kube-proxy replacement): the v1 Service and discovery.k8s.io/v1
// EndpointSlice kinds with API-server-like validation and defaulting, the
// cluster IP and node port allocator, the derivation of EndpointSlices from
// pods in standalone mode (with topology hints), the per-node selection of
// frontends and their backends (traffic policies, topology hints, graceful
// termination, dual stack) and stable 32-bit backend IDs. Maglev lookup
// tables live in the maglev subpackage. Nothing here touches the datapath.
package loadbalancer

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/lumen-net/lumen/internal/resource"
)

// Service types, traffic policies, affinities, families and family policies,
// as spelled in the Kubernetes API.
const (
	TypeClusterIP    = "ClusterIP"
	TypeNodePort     = "NodePort"
	TypeLoadBalancer = "LoadBalancer"

	PolicyCluster = "Cluster"
	PolicyLocal   = "Local"

	AffinityNone     = "None"
	AffinityClientIP = "ClientIP"

	IPv4 = "IPv4"
	IPv6 = "IPv6"

	SingleStack      = "SingleStack"
	PreferDualStack  = "PreferDualStack"
	RequireDualStack = "RequireDualStack"

	// ClusterIPNone makes a headless service: no virtual IP, no load balancing.
	ClusterIPNone = "None"
)

// Session affinity timeout bounds (seconds), as in Kubernetes.
const (
	DefaultAffinityTimeout = 10800
	MaxAffinityTimeout     = 86400
)

// Node port range the API server validates by default.
const (
	DefaultNodePortMin = 30000
	DefaultNodePortMax = 32767
)

// Annotations that turn topology aware routing on ("Auto"); the first wins
// when both are set, as in the EndpointSlice controller.
const (
	AnnotationTopologyMode       = "service.kubernetes.io/topology-mode"
	AnnotationTopologyAwareHints = "service.kubernetes.io/topology-aware-hints" // deprecated since Kubernetes 1.27
)

// Service is a v1 Service.
type Service struct {
	Namespace   string
	Name        string
	Labels      map[string]string
	Annotations map[string]string
	Spec        ServiceSpec
	Status      ServiceStatus
}

// ServiceSpec is the part of a Service spec Lumen implements.
type ServiceSpec struct {
	Type                          string                 `json:"type,omitempty"`
	ClusterIP                     string                 `json:"clusterIP,omitempty"`
	ClusterIPs                    []string               `json:"clusterIPs,omitempty"`
	IPFamilies                    []string               `json:"ipFamilies,omitempty"`
	IPFamilyPolicy                string                 `json:"ipFamilyPolicy,omitempty"`
	Ports                         []ServicePort          `json:"ports,omitempty"`
	Selector                      map[string]string      `json:"selector,omitempty"`
	ExternalIPs                   []string               `json:"externalIPs,omitempty"`
	LoadBalancerIP                string                 `json:"loadBalancerIP,omitempty"`
	SessionAffinity               string                 `json:"sessionAffinity,omitempty"`
	SessionAffinityConfig         *SessionAffinityConfig `json:"sessionAffinityConfig,omitempty"`
	ExternalTrafficPolicy         string                 `json:"externalTrafficPolicy,omitempty"`
	InternalTrafficPolicy         string                 `json:"internalTrafficPolicy,omitempty"`
	PublishNotReadyAddresses      bool                   `json:"publishNotReadyAddresses,omitempty"`
	AllocateLoadBalancerNodePorts *bool                  `json:"allocateLoadBalancerNodePorts,omitempty"`
}

// ServicePort is one port of a service.
type ServicePort struct {
	Name        string      `json:"name,omitempty"`
	Protocol    string      `json:"protocol,omitempty"`
	AppProtocol string      `json:"appProtocol,omitempty"`
	Port        int32       `json:"port"`
	TargetPort  IntOrString `json:"targetPort,omitzero"`
	NodePort    int32       `json:"nodePort,omitempty"`
}

// SessionAffinityConfig configures ClientIP affinity.
type SessionAffinityConfig struct {
	ClientIP *ClientIPConfig `json:"clientIP,omitempty"`
}

// ClientIPConfig is the ClientIP affinity's timeout.
type ClientIPConfig struct {
	TimeoutSeconds *int32 `json:"timeoutSeconds,omitempty"`
}

// ServiceStatus carries the load balancer's addresses, set by whoever
// provides the load balancer (a controller, or a person with `lumen
// apply`). An applied Service without a status keeps the stored one.
type ServiceStatus struct {
	LoadBalancer LoadBalancerStatus `json:"loadBalancer,omitzero"`
	// Conditions are kept as given (metav1.Condition objects); Lumen does
	// not read them.
	Conditions []json.RawMessage `json:"conditions,omitempty"`
}

// LoadBalancerStatus lists the load balancer's ingress points.
type LoadBalancerStatus struct {
	Ingress []LoadBalancerIngress `json:"ingress,omitempty"`
}

// Load balancer IP modes: VIP (the default) delivers to the address
// itself, so nodes load-balance it; Proxy means the load balancer
// forwards to the nodes, so the address is not programmed.
const (
	IPModeVIP   = "VIP"
	IPModeProxy = "Proxy"
)

// LoadBalancerIngress is one ingress point; Lumen programs its IP.
type LoadBalancerIngress struct {
	IP       string       `json:"ip,omitempty"`
	Hostname string       `json:"hostname,omitempty"`
	IPMode   string       `json:"ipMode,omitempty"`
	Ports    []PortStatus `json:"ports,omitempty"`
}

// PortStatus is the state of one port of a load balancer ingress.
type PortStatus struct {
	Port     int32   `json:"port"`
	Protocol string  `json:"protocol"`
	Error    *string `json:"error,omitempty"`
}

// Key is "namespace/name".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// IsHeadless reports a service without a virtual IP.
func (s *Service) IsHeadless() bool { return s.Spec.ClusterIP == ClusterIPNone }

// LabelServiceProxyName on a service or endpoint slice hands it to another
// proxy, and LabelHeadless marks it headless whatever its spec: like
// kube-proxy (which selects both kinds by the absence of both labels) and
// Cilium without --k8s-service-proxy-name, Lumen leaves such services and
// slices alone, whatever the label's value.
const (
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	LabelHeadless         = "service.kubernetes.io/headless"
)

// Unproxied reports a service Lumen does not load-balance: headless, or
// labelled for another proxy or as headless.
func (s *Service) Unproxied() bool {
	_, other := s.Labels[LabelServiceProxyName]
	_, headless := s.Labels[LabelHeadless]
	return other || headless || s.IsHeadless()
}

// ExternallyAccessible reports a service reachable from outside the cluster
// (NodePort, LoadBalancer, or external IPs): externalTrafficPolicy applies.
func (s *Service) ExternallyAccessible() bool { return externallyAccessible(&s.Spec) }

func externallyAccessible(spec *ServiceSpec) bool {
	return spec.Type == TypeNodePort || spec.Type == TypeLoadBalancer || len(spec.ExternalIPs) > 0
}

// TopologyAware reports whether the service asks for topology aware hints
// (annotation topology-mode, else the deprecated topology-aware-hints, set
// to "Auto"; any other value disables them).
func (s *Service) TopologyAware() bool {
	v, ok := s.Annotations[AnnotationTopologyMode]
	if !ok {
		v = s.Annotations[AnnotationTopologyAwareHints]
	}
	return v == "Auto" || v == "auto"
}

// AffinityTimeout is the ClientIP affinity timeout in seconds, 0 without affinity.
func (s *Service) AffinityTimeout() uint32 {
	if s.Spec.SessionAffinity != AffinityClientIP {
		return 0
	}
	if c := s.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
		return uint32(*c.ClientIP.TimeoutSeconds)
	}
	return DefaultAffinityTimeout
}

// ClusterAddrs returns the parsed cluster IPs (none for a headless service
// or one not allocated yet).
func (s *Service) ClusterAddrs() []netip.Addr {
	var out []netip.Addr
	for _, ip := range s.Spec.ClusterIPs {
		if a, err := parseIP(ip); err == nil {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		if a, err := parseIP(s.Spec.ClusterIP); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// Families returns the service's IP families: spec.ipFamilies, else the
// families of its cluster IPs.
func (s *Service) Families() []string {
	if len(s.Spec.IPFamilies) > 0 {
		return s.Spec.IPFamilies
	}
	var out []string
	for _, a := range s.ClusterAddrs() {
		out = append(out, family(a))
	}
	return out
}

// ServiceOf reads a Service object (as validated and stored). A status
// field still present in obj.Other (an object that was not through
// resource.Validate) is read too.
func ServiceOf(obj *resource.Object) (*Service, error) {
	if obj.Kind != "Service" {
		return nil, fmt.Errorf("%s is not a Service", obj)
	}
	s := &Service{Namespace: obj.Metadata.Namespace, Name: obj.Metadata.Name, Labels: obj.Metadata.Labels, Annotations: obj.Metadata.Annotations}
	if len(obj.Spec) > 0 {
		if err := json.Unmarshal(obj.Spec, &s.Spec); err != nil {
			return nil, fmt.Errorf("decoding spec of %s: %w", obj, err)
		}
	}
	if st, ok := obj.Other["status"]; ok && !isNull(st) {
		if err := json.Unmarshal(st, &s.Status); err != nil {
			return nil, fmt.Errorf("decoding status of %s: %w", obj, err)
		}
	}
	return s, nil
}
