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
	"slices"
	"strconv"
	"strings"

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

// validateService checks a Service like the API server (ValidateService
// plus the defaulting of the REST layer, and ValidateServiceStatus for a
// status) and stores the defaulted spec and the status.
func validateService(obj *resource.Object) resource.ErrorList {
	var el errs
	spec := decodeServiceSpec(obj.Spec, &el)
	rawStatus, hasStatus := obj.Other["status"]
	status := decodeServiceStatus(rawStatus, &el)
	if len(el) > 0 {
		return resource.ErrorList(el)
	}
	defaultServiceSpec(spec)
	validateServiceSpec(spec, &el)
	validateServiceStatus(status, spec, &el)
	if len(el) > 0 {
		return resource.ErrorList(el)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return resource.ErrorList{{Path: "spec", Msg: err.Error()}}
	}
	obj.Spec = b
	if hasStatus {
		if len(status.LoadBalancer.Ingress) == 0 && len(status.Conditions) == 0 {
			delete(obj.Other, "status") // nothing in it ("status: {loadBalancer: {}}")
		} else if b, err = json.Marshal(status); err != nil {
			return resource.ErrorList{{Path: "status", Msg: err.Error()}}
		} else {
			obj.Other["status"] = b
		}
	}
	return nil
}

// decodeServiceStatus decodes a status field by field, so that errors
// carry list indices ("status.loadBalancer.ingress[1].ip").
func decodeServiceStatus(raw json.RawMessage, el *errs) *ServiceStatus {
	st := &ServiceStatus{}
	if isNull(raw) {
		return st
	}
	var fields map[string]json.RawMessage
	if e := decodeStrict("status", raw, &fields); e != nil {
		el.add(e)
		return st
	}
	for _, k := range sortedKeys(fields) {
		v, p := fields[k], "status."+k
		switch k {
		case "loadBalancer":
			var lbFields map[string]json.RawMessage
			if isNull(v) {
				continue
			}
			if e := decodeStrict(p, v, &lbFields); e != nil {
				el.add(e)
				continue
			}
			for _, lk := range sortedKeys(lbFields) {
				if lk != "ingress" {
					el.add(&resource.FieldError{Path: p, Msg: fmt.Sprintf("unknown field %q", lk)})
					continue
				}
				st.LoadBalancer.Ingress = decodeList[LoadBalancerIngress](p+".ingress", lbFields[lk], el)
			}
		case "conditions":
			el.add(decodeStrict(p, v, &st.Conditions))
		default:
			el.add(&resource.FieldError{Path: "status", Msg: fmt.Sprintf("unknown field %q", k)})
		}
	}
	return st
}

var ipModes = []string{IPModeVIP, IPModeProxy}

// validateServiceStatus checks the load balancer status like the API
// server's ValidateLoadBalancerStatus: addresses are plain IPs traffic can
// be sent to, hostnames DNS names, ingress only on LoadBalancer services.
func validateServiceStatus(st *ServiceStatus, spec *ServiceSpec, el *errs) {
	ing := st.LoadBalancer.Ingress
	if len(ing) > 0 && spec.Type != TypeLoadBalancer {
		el.add(&resource.FieldError{Path: "status.loadBalancer.ingress", Msg: "forbidden: may only be used when `spec.type` is 'LoadBalancer'"})
		return
	}
	for i, in := range ing {
		p := fmt.Sprintf("status.loadBalancer.ingress[%d]", i)
		if in.IP != "" {
			el.add(nonSpecialIP(p+".ip", in.IP))
		}
		if in.Hostname != "" {
			if e := resource.DNSSubdomain(p+".hostname", in.Hostname); e != nil {
				el.add(e)
			} else if _, err := netip.ParseAddr(in.Hostname); err == nil {
				el.add(resource.Invalid(p+".hostname", in.Hostname, "must be a DNS name, not an IP address"))
			}
		}
		if in.IP == "" && in.Hostname == "" {
			el.add(&resource.FieldError{Path: p, Msg: "required value: ip or hostname"})
		}
		switch {
		case in.IPMode != "" && in.IP == "":
			el.add(resource.Invalid(p+".ipMode", in.IPMode, "may only be set when ip is set"))
		case in.IPMode != "" && !slices.Contains(ipModes, in.IPMode):
			el.add(resource.Unsupported(p+".ipMode", in.IPMode, ipModes...))
		}
		for j, ps := range in.Ports {
			pp := fmt.Sprintf("%s.ports[%d]", p, j)
			el.add(resource.Port(pp+".port", int64(ps.Port)))
			if !slices.Contains(protocolNames, ps.Protocol) {
				el.add(resource.Unsupported(pp+".protocol", ps.Protocol, protocolNames...))
			}
		}
	}
}

// decodeServiceSpec decodes field by field so that errors carry list indices.
func decodeServiceSpec(raw json.RawMessage, el *errs) *ServiceSpec {
	spec := &ServiceSpec{}
	if isNull(raw) {
		return spec
	}
	var fields map[string]json.RawMessage
	if e := decodeStrict("spec", raw, &fields); e != nil {
		el.add(e)
		return spec
	}
	for _, k := range sortedKeys(fields) {
		v, p := fields[k], "spec."+k
		switch k {
		case "ports":
			spec.Ports = decodeList[ServicePort](p, v, el)
		case "type":
			el.add(decodeStrict(p, v, &spec.Type))
		case "clusterIP":
			el.add(decodeStrict(p, v, &spec.ClusterIP))
		case "clusterIPs":
			el.add(decodeStrict(p, v, &spec.ClusterIPs))
		case "ipFamilies":
			el.add(decodeStrict(p, v, &spec.IPFamilies))
		case "ipFamilyPolicy":
			el.add(decodeStrict(p, v, &spec.IPFamilyPolicy))
		case "selector":
			el.add(decodeStrict(p, v, &spec.Selector))
		case "externalIPs":
			el.add(decodeStrict(p, v, &spec.ExternalIPs))
		case "loadBalancerIP":
			el.add(decodeStrict(p, v, &spec.LoadBalancerIP))
		case "sessionAffinity":
			el.add(decodeStrict(p, v, &spec.SessionAffinity))
		case "sessionAffinityConfig":
			el.add(decodeStrict(p, v, &spec.SessionAffinityConfig))
		case "externalTrafficPolicy":
			el.add(decodeStrict(p, v, &spec.ExternalTrafficPolicy))
		case "internalTrafficPolicy":
			el.add(decodeStrict(p, v, &spec.InternalTrafficPolicy))
		case "publishNotReadyAddresses":
			el.add(decodeStrict(p, v, &spec.PublishNotReadyAddresses))
		case "allocateLoadBalancerNodePorts":
			el.add(decodeStrict(p, v, &spec.AllocateLoadBalancerNodePorts))
		default:
			el.add(&resource.FieldError{Path: "spec", Msg: fmt.Sprintf("unknown field %q", k)})
		}
	}
	return spec
}

// defaultServiceSpec fills in what the API server defaults before validation.
func defaultServiceSpec(s *ServiceSpec) {
	if s.Type == "" {
		s.Type = TypeClusterIP
	}
	// clusterIP and clusterIPs[0] are the same field; either may be given.
	if s.ClusterIP != "" && len(s.ClusterIPs) == 0 {
		s.ClusterIPs = []string{s.ClusterIP}
	} else if s.ClusterIP == "" && len(s.ClusterIPs) > 0 {
		s.ClusterIP = s.ClusterIPs[0]
	}
	if s.ClusterIP != ClusterIPNone && len(s.IPFamilies) == 0 {
		for _, ip := range s.ClusterIPs {
			if a, err := parseIP(ip); err == nil {
				s.IPFamilies = append(s.IPFamilies, family(a))
			}
		}
	}
	if s.IPFamilyPolicy == "" {
		if len(s.ClusterIPs) > 1 || len(s.IPFamilies) > 1 {
			s.IPFamilyPolicy = RequireDualStack
		} else {
			s.IPFamilyPolicy = SingleStack
		}
	}
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.Protocol == "" {
			p.Protocol = "TCP"
		}
		if p.TargetPort.IsZero() {
			p.TargetPort = FromInt(p.Port)
		}
	}
	if s.SessionAffinity == "" {
		s.SessionAffinity = AffinityNone
	}
	if s.SessionAffinity == AffinityClientIP {
		if s.SessionAffinityConfig == nil {
			s.SessionAffinityConfig = &SessionAffinityConfig{}
		}
		if s.SessionAffinityConfig.ClientIP == nil {
			s.SessionAffinityConfig.ClientIP = &ClientIPConfig{}
		}
		if s.SessionAffinityConfig.ClientIP.TimeoutSeconds == nil {
			t := int32(DefaultAffinityTimeout)
			s.SessionAffinityConfig.ClientIP.TimeoutSeconds = &t
		}
	}
	if s.ExternalTrafficPolicy == "" && externallyAccessible(s) {
		s.ExternalTrafficPolicy = PolicyCluster
	}
	if s.InternalTrafficPolicy == "" {
		s.InternalTrafficPolicy = PolicyCluster
	}
	if s.Type == TypeLoadBalancer && s.AllocateLoadBalancerNodePorts == nil {
		t := true
		s.AllocateLoadBalancerNodePorts = &t
	}
}

var (
	serviceTypes     = []string{TypeClusterIP, TypeNodePort, TypeLoadBalancer}
	trafficPolicies  = []string{PolicyCluster, PolicyLocal}
	affinities       = []string{AffinityClientIP, AffinityNone}
	ipFamilyNames    = []string{IPv4, IPv6}
	ipFamilyPolicies = []string{SingleStack, PreferDualStack, RequireDualStack}
)

func validateServiceSpec(s *ServiceSpec, el *errs) {
	if !slices.Contains(serviceTypes, s.Type) {
		el.add(resource.Unsupported("spec.type", s.Type, serviceTypes...))
		return // the rest depends on the type
	}
	headless := s.ClusterIP == ClusterIPNone
	validateClusterIPs(s, el)
	if len(s.Ports) == 0 && !headless {
		el.add(resource.Required("spec.ports"))
	}
	validateServicePorts(s, el)
	el.addAll(resource.Labels("spec.selector", s.Selector))
	for i, ip := range s.ExternalIPs {
		el.add(nonSpecialIP(fmt.Sprintf("spec.externalIPs[%d]", i), ip))
	}
	if s.LoadBalancerIP != "" {
		if s.Type != TypeLoadBalancer {
			el.add(resource.Invalid("spec.loadBalancerIP", s.LoadBalancerIP, "may only be used when `type` is 'LoadBalancer'"))
		} else {
			el.add(nonSpecialIP("spec.loadBalancerIP", s.LoadBalancerIP))
		}
	}
	if s.AllocateLoadBalancerNodePorts != nil && s.Type != TypeLoadBalancer {
		el.add(resource.Invalid("spec.allocateLoadBalancerNodePorts", *s.AllocateLoadBalancerNodePorts, "may only be used when `type` is 'LoadBalancer'"))
	}
	if !slices.Contains(affinities, s.SessionAffinity) {
		el.add(resource.Unsupported("spec.sessionAffinity", s.SessionAffinity, affinities...))
	}
	if s.SessionAffinity == AffinityClientIP {
		t := *s.SessionAffinityConfig.ClientIP.TimeoutSeconds
		if t < 1 || t > MaxAffinityTimeout {
			el.add(resource.Invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds", t, fmt.Sprintf("must be greater than 0 and at most %d", MaxAffinityTimeout)))
		}
	} else if s.SessionAffinityConfig != nil {
		el.add(&resource.FieldError{Path: "spec.sessionAffinityConfig", Msg: fmt.Sprintf("must not be set when sessionAffinity is %q", s.SessionAffinity)})
	}
	if s.ExternalTrafficPolicy != "" {
		if !externallyAccessible(s) {
			el.add(resource.Invalid("spec.externalTrafficPolicy", s.ExternalTrafficPolicy, "may only be set for externally-accessible services (type NodePort or LoadBalancer, or with externalIPs)"))
		} else if !slices.Contains(trafficPolicies, s.ExternalTrafficPolicy) {
			el.add(resource.Unsupported("spec.externalTrafficPolicy", s.ExternalTrafficPolicy, trafficPolicies...))
		}
	}
	if !slices.Contains(trafficPolicies, s.InternalTrafficPolicy) {
		el.add(resource.Unsupported("spec.internalTrafficPolicy", s.InternalTrafficPolicy, trafficPolicies...))
	}
}

func validateClusterIPs(s *ServiceSpec, el *errs) {
	if len(s.ClusterIPs) > 0 && s.ClusterIP != s.ClusterIPs[0] {
		el.add(resource.Invalid("spec.clusterIPs[0]", s.ClusterIPs[0], fmt.Sprintf("must be the same as spec.clusterIP %q", s.ClusterIP)))
		return
	}
	if len(s.ClusterIPs) > 2 {
		el.add(resource.Invalid("spec.clusterIPs", strings.Join(s.ClusterIPs, ","), "may have at most 2 addresses, one per IP family"))
		return
	}
	var fams []string
	for i, ip := range s.ClusterIPs {
		p := fmt.Sprintf("spec.clusterIPs[%d]", i)
		if ip == ClusterIPNone {
			switch {
			case i > 0 || len(s.ClusterIPs) > 1:
				el.add(resource.Invalid(p, ip, "'None' must be the only value"))
			case s.Type != TypeClusterIP:
				el.add(resource.Invalid(p, ip, fmt.Sprintf("may not be set to 'None' for %s services", s.Type)))
			}
			continue
		}
		a, err := parseIP(ip)
		if err != nil {
			el.add(resource.Invalid(p, ip, err.Error()+" or 'None'"))
			continue
		}
		if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
			el.add(nonSpecialIP(p, ip))
			continue
		}
		f := family(a)
		if slices.Contains(fams, f) {
			el.add(resource.Invalid(p, ip, "may not have the same IP family as another cluster IP"))
		}
		fams = append(fams, f)
	}
	if len(s.IPFamilies) > 2 {
		el.add(resource.Invalid("spec.ipFamilies", strings.Join(s.IPFamilies, ","), "may have at most 2 families"))
	}
	seen := map[string]bool{}
	for i, f := range s.IPFamilies {
		p := fmt.Sprintf("spec.ipFamilies[%d]", i)
		if !slices.Contains(ipFamilyNames, f) {
			el.add(resource.Unsupported(p, f, ipFamilyNames...))
		} else if seen[f] {
			el.add(resource.Duplicate(p, f))
		} else if i < len(fams) && fams[i] != f {
			el.add(resource.Invalid(p, f, fmt.Sprintf("must match the family of spec.clusterIPs[%d] (%s)", i, fams[i])))
		}
		seen[f] = true
	}
	if !slices.Contains(ipFamilyPolicies, s.IPFamilyPolicy) {
		el.add(resource.Unsupported("spec.ipFamilyPolicy", s.IPFamilyPolicy, ipFamilyPolicies...))
	} else if s.IPFamilyPolicy == SingleStack && (len(s.ClusterIPs) > 1 || len(s.IPFamilies) > 1) {
		el.add(resource.Invalid("spec.ipFamilyPolicy", s.IPFamilyPolicy, "must be RequireDualStack or PreferDualStack when multiple IP families are specified"))
	}
}

func validateServicePorts(s *ServiceSpec, el *errs) {
	names := map[string]bool{}
	ports := map[string]int{}     // "80/TCP" -> index
	nodePorts := map[string]int{} // "30080/TCP" -> index
	for i := range s.Ports {
		p := &s.Ports[i]
		path := fmt.Sprintf("spec.ports[%d]", i)
		switch {
		case p.Name == "" && len(s.Ports) > 1:
			el.add(&resource.FieldError{Path: path + ".name", Msg: "required value: every port must be named when a service has more than one"})
		case p.Name != "":
			if e := resource.DNSLabel(path+".name", p.Name); e != nil {
				el.add(e)
			} else if names[p.Name] {
				el.add(resource.Duplicate(path+".name", p.Name))
			}
			names[p.Name] = true
		}
		protoOK := slices.Contains(protocolNames, p.Protocol)
		if !protoOK {
			el.add(resource.Unsupported(path+".protocol", p.Protocol, protocolNames...))
		}
		portOK := resource.Port(path+".port", int64(p.Port)) == nil
		el.add(resource.Port(path+".port", int64(p.Port)))
		if p.AppProtocol != "" {
			el.add(resource.QualifiedName(path+".appProtocol", p.AppProtocol))
		}
		switch tp := p.TargetPort; {
		case tp.Invalid != "":
			el.add(resource.Invalid(path+".targetPort", tp.Invalid, "must be a port number or a port name"))
		case tp.IsStr:
			el.add(resource.PortName(path+".targetPort", tp.StrVal))
		default:
			el.add(resource.Port(path+".targetPort", int64(tp.IntVal)))
		}
		if portOK && protoOK {
			k := strconv.Itoa(int(p.Port)) + "/" + p.Protocol
			if j, dup := ports[k]; dup {
				el.add(&resource.FieldError{Path: path, Msg: fmt.Sprintf("duplicate value %q: the same port and protocol as spec.ports[%d]", k, j)})
			} else {
				ports[k] = i
			}
		}
		if p.NodePort != 0 {
			switch {
			case s.Type == TypeClusterIP:
				el.add(resource.Invalid(path+".nodePort", p.NodePort, "may not be used when `type` is 'ClusterIP'"))
			case p.NodePort < DefaultNodePortMin || p.NodePort > DefaultNodePortMax:
				el.add(resource.Invalid(path+".nodePort", p.NodePort, fmt.Sprintf("provided port is not in the valid range. The range of valid ports is %d-%d", DefaultNodePortMin, DefaultNodePortMax)))
			case protoOK:
				k := strconv.Itoa(int(p.NodePort)) + "/" + p.Protocol
				if j, dup := nodePorts[k]; dup {
					el.add(&resource.FieldError{Path: path + ".nodePort", Msg: fmt.Sprintf("duplicate value %q: the same node port and protocol as spec.ports[%d]", k, j)})
				} else {
					nodePorts[k] = i
				}
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
