package resource

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// NamespaceKind and PodKind are the core kinds every Lumen node understands.
var (
	NamespaceKind = &Kind{
		APIVersion:  "v1",
		Kind:        "Namespace",
		NameIsLabel: true,
		ShortNames:  []string{"ns"},
		Validate:    validateNamespace,
		Columns:     []Column{{Header: "LABELS", Value: func(o *Object) string { return labelString(o.Metadata.Labels) }}},
	}
	PodKind = &Kind{
		APIVersion: "v1",
		Kind:       "Pod",
		Namespaced: true,
		ShortNames: []string{"po"},
		Validate:   validatePod,
		Columns: []Column{
			{Header: "NODE", Value: func(o *Object) string {
				if p, err := PodOf(o); err == nil && p.Spec.NodeName != "" {
					return p.Spec.NodeName
				}
				return "<none>"
			}},
			{Header: "PORTS", Value: func(o *Object) string {
				p, err := PodOf(o)
				if err != nil {
					return "?"
				}
				var ps []string
				for _, port := range p.Ports() {
					ps = append(ps, fmt.Sprintf("%d/%s", port.ContainerPort, port.Protocol))
				}
				return orNone(strings.Join(ps, ","))
			}},
			{Header: "LABELS", Value: func(o *Object) string { return labelString(o.Metadata.Labels) }},
		},
	}
)

// CoreKinds are Namespace and Pod.
func CoreKinds() []Kind { return []Kind{*NamespaceKind, *PodKind} }

// MetadataNameLabel is the label the API server puts on every namespace.
const MetadataNameLabel = "kubernetes.io/metadata.name"

// Namespace is a v1 Namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
}

type namespaceSpec struct {
	Finalizers []string `json:"finalizers,omitempty"`
}

func validateNamespace(obj *Object) ErrorList {
	if len(obj.Spec) > 0 {
		var spec namespaceSpec
		if e := decodeStrict("spec", obj.Spec, &spec); e != nil {
			return ErrorList{e}
		}
	}
	// Like the API server (since Kubernetes 1.21), label every namespace
	// with its name so that selectors can pick namespaces by name.
	if obj.Metadata.Labels == nil {
		obj.Metadata.Labels = map[string]string{}
	}
	obj.Metadata.Labels[MetadataNameLabel] = obj.Metadata.Name
	return nil
}

// NamespaceOf reads a Namespace object.
func NamespaceOf(obj *Object) (*Namespace, error) {
	if obj.Kind != "Namespace" {
		return nil, fmt.Errorf("%s is not a Namespace", obj)
	}
	return &Namespace{Name: obj.Metadata.Name, Labels: obj.Metadata.Labels}, nil
}

// Pod is a v1 Pod, reduced to what networking needs.
type Pod struct {
	Namespace string
	Name      string
	Labels    map[string]string
	Spec      PodSpec
}

// PodSpec is the part of a pod spec Lumen accepts.
type PodSpec struct {
	NodeName   string      `json:"nodeName,omitempty"`
	Containers []Container `json:"containers"`
}

// Container is one container of a pod; Lumen only cares about its ports.
type Container struct {
	Name  string          `json:"name"`
	Image string          `json:"image,omitempty"`
	Ports []ContainerPort `json:"ports,omitempty"`
}

// ContainerPort is a port a container serves.
type ContainerPort struct {
	Name          string `json:"name,omitempty"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"` // TCP (default), UDP or SCTP
}

// Ports returns every container's ports.
func (p *Pod) Ports() []ContainerPort {
	var out []ContainerPort
	for _, c := range p.Spec.Containers {
		out = append(out, c.Ports...)
	}
	return out
}

var protocols = []string{"TCP", "UDP", "SCTP"}

func validatePod(obj *Object) ErrorList {
	var spec PodSpec
	if len(obj.Spec) > 0 {
		if e := decodeStrict("spec", obj.Spec, &spec); e != nil {
			return ErrorList{e}
		}
	}
	var errs ErrorList
	if spec.NodeName != "" {
		errs.add(DNSSubdomain("spec.nodeName", spec.NodeName))
	}
	if len(spec.Containers) == 0 {
		errs.add(Required("spec.containers"))
	}
	names := map[string]bool{}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		cp := fmt.Sprintf("spec.containers[%d]", i)
		if e := DNSLabel(cp+".name", c.Name); e != nil {
			errs.add(e)
		} else if names[c.Name] {
			errs.add(Duplicate(cp+".name", c.Name))
		}
		names[c.Name] = true
		portNames := map[string]bool{}
		for j := range c.Ports {
			p := &c.Ports[j]
			pp := fmt.Sprintf("%s.ports[%d]", cp, j)
			if p.Name != "" {
				if e := PortName(pp+".name", p.Name); e != nil {
					errs.add(e)
				} else if portNames[p.Name] {
					errs.add(Duplicate(pp+".name", p.Name))
				}
				portNames[p.Name] = true
			}
			errs.add(Port(pp+".containerPort", int64(p.ContainerPort)))
			if p.Protocol == "" {
				p.Protocol = "TCP"
			} else if !slices.Contains(protocols, p.Protocol) {
				errs.add(Unsupported(pp+".protocol", p.Protocol, protocols...))
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	// Store the defaulted, normalised spec.
	b, err := json.Marshal(spec)
	if err != nil {
		return ErrorList{{Path: "spec", Msg: err.Error()}}
	}
	obj.Spec = b
	return nil
}

// PodOf reads a Pod object.
func PodOf(obj *Object) (*Pod, error) {
	if obj.Kind != "Pod" {
		return nil, fmt.Errorf("%s is not a Pod", obj)
	}
	p := &Pod{Namespace: obj.Metadata.Namespace, Name: obj.Metadata.Name, Labels: obj.Metadata.Labels}
	if len(obj.Spec) > 0 {
		if err := json.Unmarshal(obj.Spec, &p.Spec); err != nil {
			return nil, fmt.Errorf("decoding spec of %s: %w", obj, err)
		}
	}
	return p, nil
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
