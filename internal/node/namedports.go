package node

import (
	"slices"
	"strings"

	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/resource"
)

// NamedPort is a named container port of an endpoint's pod (model's).
type NamedPort = model.NamedPort

// PodNamedPorts returns the named container ports of a Pod, sorted by name
// then protocol (so that equal pods announce equal endpoints).
func PodNamedPorts(obj *resource.Object) []NamedPort {
	pod, err := resource.PodOf(obj)
	if err != nil {
		return nil
	}
	var out []NamedPort
	for _, cp := range pod.Ports() {
		if cp.Name == "" || cp.ContainerPort <= 0 || cp.ContainerPort > 65535 {
			continue
		}
		proto := strings.ToUpper(cp.Protocol)
		if proto == "" {
			proto = "TCP"
		}
		np := NamedPort{Name: cp.Name, Port: uint16(cp.ContainerPort), Protocol: proto}
		if !slices.Contains(out, np) {
			out = append(out, np)
		}
	}
	slices.SortFunc(out, func(a, b NamedPort) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Protocol, b.Protocol)
	})
	return out
}

// localNamedPorts returns the named ports of this node's pod namespace/name,
// nil if it is not (yet) in the Pods table.
func (m *Manager) localNamedPorts(namespace, name string) []NamedPort {
	if m.pods == nil || name == "" {
		return nil
	}
	obj, ok := m.pods.Get(resource.Key("Pod", namespace, name))
	if !ok {
		return nil
	}
	return PodNamedPorts(obj)
}
