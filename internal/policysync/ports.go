package policysync

import (
	"slices"

	"github.com/lumen-net/lumen/internal/ipproto"

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

// namedPorts prepares the named ports of this pass. A peer's ports come
// from its endpoint's announcement (which carries them, as Cilium's
// CiliumEndpoint does: in Kubernetes mode the Pods table holds only this
// node's Pods) and, for announcements without them (agents that predate
// them), from its Pod when this node has it.
func (s *Syncer) namedPorts() portSet {
	out := portSet{pods: s.pods, peers: map[uint32]map[string][]policy.PortProto{}}
	if s.endpoints == nil {
		return out
	}
	add := func(id uint32, name string, pp policy.PortProto) {
		m := out.peers[id]
		if m == nil {
			m = map[string][]policy.PortProto{}
			out.peers[id] = m
		}
		if !slices.Contains(m[name], pp) {
			m[name] = append(m[name], pp)
		}
	}
	for _, name := range s.egressPortNames() {
		for _, ep := range s.endpoints.Index(node.ByNamedPort, name) {
			if ep.Identity == 0 {
				continue
			}
			for _, np := range ep.NamedPorts {
				if np.Name == name {
					add(ep.Identity, name, policy.PortProto{Port: np.Port, Proto: protoNumber(np.Protocol)})
				}
			}
		}
		if s.pods == nil {
			continue
		}
		for _, obj := range s.pods.Index(clusterstate.ByNamedPort, name) {
			pp, ok := podPorts(obj, []string{name})[name]
			if !ok {
				continue
			}
			for _, ep := range s.endpoints.Index(node.ByPod, obj.Metadata.Namespace+"/"+obj.Metadata.Name) {
				if ep.Identity != 0 && len(ep.NamedPorts) == 0 {
					add(ep.Identity, name, pp)
				}
			}
		}
	}
	return out
}

// protoNumber reads a container port's protocol; TCP unless UDP or SCTP.
func protoNumber(p string) uint8 {
	if n, ok := ipproto.Parse(p); ok && (n == ipproto.UDP || n == ipproto.SCTP) {
		return n
	}
	return ipproto.TCP
}
