package loadbalancer

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"

	"github.com/lumen-net/lumen/internal/fielderr"
	"github.com/lumen-net/lumen/internal/resource"
)

// LabelServiceName links an EndpointSlice to its Service (same namespace).
const LabelServiceName = "kubernetes.io/service-name"

// LabelManagedBy names who manages a slice; derived slices carry ManagedBy.
const (
	LabelManagedBy = "endpointslice.kubernetes.io/managed-by"
	ManagedBy      = "standalone.lumen.io"
)

// API server limits of an EndpointSlice.
const (
	MaxEndpointsPerSlice = 1000
	maxAddresses         = 100
	maxSlicePorts        = 100
	maxZoneHints         = 8
)

// EndpointSlice is a discovery.k8s.io/v1 EndpointSlice. Its content is at
// the top level of the object, not in a spec.
type EndpointSlice struct {
	Namespace   string
	Name        string
	Labels      map[string]string
	AddressType string
	Endpoints   []Endpoint
	Ports       []EndpointPort
}

// Endpoint is one endpoint of a slice. Proxies use its first address only.
type Endpoint struct {
	Addresses  []string           `json:"addresses"`
	Conditions EndpointConditions `json:"conditions,omitzero"`
	Hostname   string             `json:"hostname,omitempty"`
	TargetRef  *ObjectReference   `json:"targetRef,omitempty"`
	NodeName   string             `json:"nodeName,omitempty"`
	Zone       string             `json:"zone,omitempty"`
	Hints      *EndpointHints     `json:"hints,omitempty"`
}

// EndpointConditions are tri-state like in Kubernetes: nil ready means
// ready, nil serving defers to ready, nil terminating means not terminating.
type EndpointConditions struct {
	Ready       *bool `json:"ready,omitempty"`
	Serving     *bool `json:"serving,omitempty"`
	Terminating *bool `json:"terminating,omitempty"`
}

// IsReady is the ready condition, unknown read as ready.
func (c EndpointConditions) IsReady() bool { return c.Ready == nil || *c.Ready }

// IsServing is the serving condition, unknown deferring to ready.
func (c EndpointConditions) IsServing() bool {
	if c.Serving == nil {
		return c.IsReady()
	}
	return *c.Serving
}

// IsTerminating is the terminating condition, unknown read as not terminating.
func (c EndpointConditions) IsTerminating() bool { return c.Terminating != nil && *c.Terminating }

// ObjectReference points at the pod behind an endpoint.
type ObjectReference struct {
	Kind      string `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	UID       string `json:"uid,omitempty"`
}

// EndpointHints are the topology hints of an endpoint.
type EndpointHints struct {
	ForZones []ForZone `json:"forZones,omitempty"`
}

// ForZone names a zone that should consume an endpoint.
type ForZone struct {
	Name string `json:"name"`
}

// EndpointPort is a port every endpoint of the slice serves. A nil Port
// means "all ports" in Kubernetes; proxies ignore such ports.
type EndpointPort struct {
	Name        string `json:"name,omitempty"`
	Protocol    string `json:"protocol,omitempty"`
	Port        *int32 `json:"port,omitempty"`
	AppProtocol string `json:"appProtocol,omitempty"`
}

// Key is "namespace/name".
func (s *EndpointSlice) Key() string { return s.Namespace + "/" + s.Name }

// ServiceKey is "namespace/service" of the service the slice belongs to,
// "" when the slice has no service label.
func (s *EndpointSlice) ServiceKey() string {
	if n := s.Labels[LabelServiceName]; n != "" {
		return s.Namespace + "/" + n
	}
	return ""
}

// Unproxied reports a slice Lumen ignores: labelled for another proxy or
// headless (see LabelServiceProxyName).
func (s *EndpointSlice) Unproxied() bool {
	_, other := s.Labels[LabelServiceProxyName]
	_, headless := s.Labels[LabelHeadless]
	return other || headless
}

// Object returns the slice as a resource object (what the store holds).
func (s *EndpointSlice) Object() (*resource.Object, error) {
	other := map[string]json.RawMessage{}
	for k, v := range map[string]any{"addressType": s.AddressType, "endpoints": s.Endpoints, "ports": s.Ports} {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encoding EndpointSlice %s: %w", s.Key(), err)
		}
		other[k] = b
	}
	if s.Endpoints == nil {
		other["endpoints"] = json.RawMessage("[]")
	}
	return &resource.Object{
		APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice",
		Metadata: resource.Metadata{Name: s.Name, Namespace: s.Namespace, Labels: s.Labels},
		Other:    other,
	}, nil
}

// EndpointSliceOf reads an EndpointSlice object (as validated and stored).
func EndpointSliceOf(obj *resource.Object) (*EndpointSlice, error) {
	if obj.Kind != "EndpointSlice" {
		return nil, fmt.Errorf("%s is not an EndpointSlice", obj)
	}
	s := &EndpointSlice{Namespace: obj.Metadata.Namespace, Name: obj.Metadata.Name, Labels: obj.Metadata.Labels}
	for k, v := range map[string]any{"addressType": &s.AddressType, "endpoints": &s.Endpoints, "ports": &s.Ports} {
		if raw, ok := obj.Other[k]; ok {
			if err := json.Unmarshal(raw, v); err != nil {
				return nil, fmt.Errorf("decoding %s of %s: %w", k, obj, err)
			}
		}
	}
	return s, nil
}

var addressTypes = []string{IPv4, IPv6}

// validateEndpointSlice checks an EndpointSlice like the API server and
// stores the defaulted content.
func validateEndpointSlice(obj *resource.Object) resource.ErrorList {
	var el errs
	s := &EndpointSlice{}
	if raw, ok := obj.Other["addressType"]; ok {
		el.add(decodeStrict("addressType", raw, &s.AddressType))
	}
	if raw, ok := obj.Other["endpoints"]; ok {
		s.Endpoints = decodeList[Endpoint]("endpoints", raw, &el)
	}
	if raw, ok := obj.Other["ports"]; ok {
		s.Ports = decodeList[EndpointPort]("ports", raw, &el)
	}
	if len(el) > 0 {
		return resource.ErrorList(el)
	}
	if obj.Metadata.Labels[LabelServiceName] == "" {
		el.add(&fielderr.Error{Path: "metadata.labels", Msg: fmt.Sprintf("required value: label %q names the service the slice belongs to", LabelServiceName)})
	}
	switch {
	case s.AddressType == "":
		el.add(resource.Required("addressType"))
	case !slices.Contains(addressTypes, s.AddressType):
		el.add(resource.Unsupported("addressType", s.AddressType, addressTypes...))
	}
	validateEndpoints(s, &el)
	validateSlicePorts(s, &el)
	if len(el) > 0 {
		return resource.ErrorList(el)
	}
	norm, err := s.Object()
	if err != nil {
		return resource.ErrorList{{Path: "", Msg: err.Error()}}
	}
	obj.Other = norm.Other
	return nil
}

func validateEndpoints(s *EndpointSlice, el *errs) {
	if len(s.Endpoints) > MaxEndpointsPerSlice {
		el.add(resource.Invalid("endpoints", len(s.Endpoints), fmt.Sprintf("too many: must have at most %d items", MaxEndpointsPerSlice)))
		return
	}
	for i := range s.Endpoints {
		ep := &s.Endpoints[i]
		p := fmt.Sprintf("endpoints[%d]", i)
		switch {
		case len(ep.Addresses) == 0:
			el.add(&fielderr.Error{Path: p + ".addresses", Msg: "required value: must contain at least 1 address"})
		case len(ep.Addresses) > maxAddresses:
			el.add(resource.Invalid(p+".addresses", len(ep.Addresses), fmt.Sprintf("too many: must have at most %d items", maxAddresses)))
		}
		for j, a := range ep.Addresses {
			ap := fmt.Sprintf("%s.addresses[%d]", p, j)
			if e := nonSpecialIP(ap, a); e != nil {
				el.add(e)
			} else if addr, _ := netip.ParseAddr(a); slices.Contains(addressTypes, s.AddressType) && family(addr) != s.AddressType {
				el.add(resource.Invalid(ap, a, "must be a valid "+s.AddressType+" address (the slice's addressType)"))
			}
		}
		if ep.Hostname != "" {
			el.add(resource.DNSLabel(p+".hostname", ep.Hostname))
		}
		if ep.NodeName != "" {
			el.add(resource.DNSSubdomain(p+".nodeName", ep.NodeName))
		}
		if ep.Zone != "" {
			el.add(resource.LabelValue(p+".zone", ep.Zone))
		}
		if ep.Hints != nil {
			hp := p + ".hints.forZones"
			if len(ep.Hints.ForZones) > maxZoneHints {
				el.add(resource.Invalid(hp, len(ep.Hints.ForZones), fmt.Sprintf("too many: must have at most %d items", maxZoneHints)))
			}
			seen := map[string]bool{}
			for j, z := range ep.Hints.ForZones {
				zp := fmt.Sprintf("%s[%d].name", hp, j)
				switch {
				case z.Name == "":
					el.add(resource.Required(zp))
				case seen[z.Name]:
					el.add(resource.Duplicate(zp, z.Name))
				default:
					el.add(resource.LabelValue(zp, z.Name))
				}
				seen[z.Name] = true
			}
		}
	}
}

func validateSlicePorts(s *EndpointSlice, el *errs) {
	if len(s.Ports) > maxSlicePorts {
		el.add(resource.Invalid("ports", len(s.Ports), fmt.Sprintf("too many: must have at most %d items", maxSlicePorts)))
		return
	}
	names := map[string]bool{}
	for i := range s.Ports {
		p := &s.Ports[i]
		path := fmt.Sprintf("ports[%d]", i)
		if p.Name != "" {
			el.add(resource.DNSLabel(path+".name", p.Name))
		}
		if names[p.Name] {
			el.add(resource.Duplicate(path+".name", p.Name))
		}
		names[p.Name] = true
		if p.Protocol == "" {
			p.Protocol = "TCP"
		} else if !slices.Contains(protocolNames, p.Protocol) {
			el.add(resource.Unsupported(path+".protocol", p.Protocol, protocolNames...))
		}
		if p.Port != nil {
			el.add(resource.Port(path+".port", int64(*p.Port)))
		}
		if p.AppProtocol != "" {
			el.add(resource.QualifiedName(path+".appProtocol", p.AppProtocol))
		}
	}
}
