package policysync

import (
	"slices"
	"strings"

	"github.com/lumen-net/lumen/internal/clusterstate"
	"github.com/lumen-net/lumen/internal/node"
	"github.com/lumen-net/lumen/internal/policy"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/state"
)

// portSet resolves named container ports from the Pods table: an
// endpoint's own (ingress rules) and, through the cluster's endpoints, by
// identity (egress rules resolve on the destination). Nothing is listed:
// own is one lookup by key, peers one named-port index lookup per name
// egress rules use.
type portSet struct {
	pods  *state.Table[*resource.Object]
	peers map[uint32]map[string][]policy.PortProto
}

// own returns the named ports of pod namespace/name.
func (p portSet) own(namespace, name string) map[string]policy.PortProto {
	if p.pods == nil || name == "" {
		return nil
	}
	obj, ok := p.pods.Get(resource.Key("Pod", namespace, name))
	if !ok {
		return nil
	}
	return podPorts(obj, nil)
}

// podPorts returns obj's container ports by name (only those in names,
// unless nil).
func podPorts(obj *resource.Object, names []string) map[string]policy.PortProto {
	pod, err := resource.PodOf(obj)
	if err != nil {
		return nil
	}
	var out map[string]policy.PortProto
	for _, cp := range pod.Ports() {
		if cp.Name == "" || (names != nil && !slices.Contains(names, cp.Name)) {
			continue
		}
		if out == nil {
			out = map[string]policy.PortProto{}
		}
		out[cp.Name] = policy.PortProto{Port: uint16(cp.ContainerPort), Proto: protoNumber(cp.Protocol)}
	}
	return out
}

// namedPorts prepares the named ports of this pass.
func (s *Syncer) namedPorts() portSet {
	out := portSet{pods: s.pods, peers: map[uint32]map[string][]policy.PortProto{}}
	if s.pods == nil || s.endpoints == nil {
		return out
	}
	names := s.egressPortNames()
	for _, name := range names {
		for _, obj := range s.pods.Index(clusterstate.ByNamedPort, name) {
			ports := podPorts(obj, []string{name})
			for _, ep := range s.endpoints.Index(node.ByPod, obj.Metadata.Namespace+"/"+obj.Metadata.Name) {
				if ep.Identity == 0 {
					continue
				}
				m := out.peers[ep.Identity]
				if m == nil {
					m = map[string][]policy.PortProto{}
					out.peers[ep.Identity] = m
				}
				if pp, ok := ports[name]; ok && !slices.Contains(m[name], pp) {
					m[name] = append(m[name], pp)
				}
			}
		}
	}
	return out
}

func protoNumber(p string) uint8 {
	switch strings.ToUpper(p) {
	case "UDP":
		return 17
	case "SCTP":
		return 132
	}
	return 6
}
