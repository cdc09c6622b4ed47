package loadbalancer

import (
	"fmt"
	"strings"

	"github.com/lumen-net/lumen/internal/resource"
)

// Kinds are the kinds `lumen apply` accepts for load balancing.
func Kinds() []resource.Kind {
	return []resource.Kind{{
		APIVersion:  "v1",
		Kind:        "Service",
		Namespaced:  true,
		NameIsLabel: true,
		ShortNames:  []string{"svc"},
		Fields:      []string{"spec", "status"},
		Validate:    validateService,
		Columns: []resource.Column{
			{Header: "TYPE", Value: svcColumn(func(s *Service) string { return s.Spec.Type })},
			{Header: "CLUSTER-IP", Value: svcColumn(func(s *Service) string { return orNone(strings.Join(s.Spec.ClusterIPs, ",")) })},
			{Header: "EXTERNAL-IP", Value: svcColumn(func(s *Service) string { return orNone(strings.Join(externalAddrStrings(s), ",")) })},
			{Header: "PORT(S)", Value: svcColumn(portsColumn)},
			{Header: "SELECTOR", Value: svcColumn(func(s *Service) string { return labelString(s.Spec.Selector) })},
		},
	}, {
		APIVersion: "discovery.k8s.io/v1",
		Kind:       "EndpointSlice",
		Namespaced: true,
		Fields:     []string{"addressType", "endpoints", "ports"},
		Validate:   validateEndpointSlice,
		Columns: []resource.Column{
			{Header: "ADDRESSTYPE", Value: sliceColumn(func(s *EndpointSlice) string { return s.AddressType })},
			{Header: "PORTS", Value: sliceColumn(func(s *EndpointSlice) string {
				var ps []string
				for _, p := range s.Ports {
					if p.Port != nil {
						ps = append(ps, fmt.Sprint(*p.Port))
					}
				}
				return orNone(strings.Join(ps, ","))
			})},
			{Header: "ENDPOINTS", Value: sliceColumn(func(s *EndpointSlice) string {
				var as []string
				for _, ep := range s.Endpoints {
					if len(ep.Addresses) > 0 {
						as = append(as, ep.Addresses[0])
					}
				}
				return orNone(strings.Join(as, ","))
			})},
		},
	}}
}

func svcColumn(f func(*Service) string) func(*resource.Object) string {
	return func(o *resource.Object) string {
		s, err := ServiceOf(o)
		if err != nil {
			return "?"
		}
		return f(s)
	}
}

func sliceColumn(f func(*EndpointSlice) string) func(*resource.Object) string {
	return func(o *resource.Object) string {
		s, err := EndpointSliceOf(o)
		if err != nil {
			return "?"
		}
		return f(s)
	}
}

// portsColumn is kubectl's "80:30080/TCP,53/UDP".
func portsColumn(s *Service) string {
	var ps []string
	for _, p := range s.Spec.Ports {
		v := fmt.Sprint(p.Port)
		if p.NodePort != 0 {
			v += fmt.Sprintf(":%d", p.NodePort)
		}
		ps = append(ps, v+"/"+p.Protocol)
	}
	return orNone(strings.Join(ps, ","))
}

func labelString(l map[string]string) string {
	var kv []string
	for _, k := range sortedKeys(l) {
		kv = append(kv, k+"="+l[k])
	}
	return orNone(strings.Join(kv, ","))
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
