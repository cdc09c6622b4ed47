package policysync

import (
	"context"
	"slices"
	"strings"

	"github.com/lumen-net/lumen/internal/policy"
	"github.com/lumen-net/lumen/internal/resource"
)

// portSet holds the named container ports policies resolve: each pod's
// own (ingress) and, through the cluster's endpoints, by identity (egress
// named ports resolve on the destination).
type portSet struct {
	byPod map[string]map[string]policy.PortProto // namespace/name -> name -> port
	peers map[uint32]map[string][]policy.PortProto
}

// own returns the named ports of pod namespace/name.
func (p portSet) own(namespace, name string) map[string]policy.PortProto {
	return p.byPod[namespace+"/"+name]
}

// namedPorts reads the container ports of every stored pod.
func (s *Syncer) namedPorts(ctx context.Context) portSet {
	out := portSet{byPod: map[string]map[string]policy.PortProto{}, peers: map[uint32]map[string][]policy.PortProto{}}
	if s.store == nil {
		return out
	}
	kind, err := resource.ResolveKind("Pod")
	if err != nil {
		return out
	}
	objs, err := resource.List(ctx, s.store, kind, "")
	if err != nil {
		s.log.Warn("listing pods for named ports", "err", err)
		return out
	}
	for i := range objs {
		pod, err := resource.PodOf(&objs[i])
		if err != nil {
			continue
		}
		for _, cp := range pod.Ports() {
			if cp.Name == "" {
				continue
			}
			key := pod.Namespace + "/" + pod.Name
			if out.byPod[key] == nil {
				out.byPod[key] = map[string]policy.PortProto{}
			}
			out.byPod[key][cp.Name] = policy.PortProto{Port: uint16(cp.ContainerPort), Proto: protoNumber(cp.Protocol)}
		}
	}
	// Every endpoint, local ones included, keyed by its pod.
	for _, ep := range s.ipc.Endpoints() {
		ports := out.byPod[ep.Namespace+"/"+ep.PodName]
		if ep.Identity == 0 || ep.PodName == "" || len(ports) == 0 {
			continue
		}
		m := out.peers[ep.Identity]
		if m == nil {
			m = map[string][]policy.PortProto{}
			out.peers[ep.Identity] = m
		}
		for name, pp := range ports {
			if !slices.Contains(m[name], pp) {
				m[name] = append(m[name], pp)
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
