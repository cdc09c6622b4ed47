package parser

import (
	"fmt"
	"sort"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/lumen-net/lumen/internal/bpfconst"
)

// Reserved security identities (Cilium's numbers).
const (
	IdentityUnknown     = bpfconst.IdentityUnknown
	IdentityHost        = bpfconst.IdentityHost
	IdentityWorld       = bpfconst.IdentityWorld
	IdentityUnmanaged   = bpfconst.IdentityUnmanaged
	IdentityHealth      = bpfconst.IdentityHealth
	IdentityInit        = bpfconst.IdentityInit
	IdentityRemoteNode  = bpfconst.IdentityRemoteNode
	IdentityKubeAPI     = bpfconst.IdentityKubeAPIServer
	IdentityIngress     = bpfconst.IdentityIngress
	IdentityWorldIPv4   = bpfconst.IdentityWorldIPv4
	IdentityWorldIPv6   = bpfconst.IdentityWorldIPv6
	MinClusterIdentity  = 256
	reservedLabelPrefix = "reserved:"
)

var reservedNames = map[uint32]string{
	IdentityHost: "host", IdentityWorld: "world", IdentityUnmanaged: "unmanaged", IdentityHealth: "health",
	IdentityInit: "init", IdentityRemoteNode: "remote-node", IdentityKubeAPI: "kube-apiserver",
	IdentityIngress: "ingress", IdentityWorldIPv4: "world-ipv4", IdentityWorldIPv6: "world-ipv6",
}

var reservedEndpoints = func() map[uint32]*flowpb.Endpoint {
	m := map[uint32]*flowpb.Endpoint{}
	for id, name := range reservedNames {
		m[id] = &flowpb.Endpoint{Identity: id, Labels: []string{reservedLabelPrefix + name}}
	}
	return m
}()

// reservedEndpoint returns the shared endpoint of a reserved identity other
// than init (init endpoints are pods whose labels are not resolved yet).
func reservedEndpoint(id uint32) *flowpb.Endpoint {
	if id == IdentityInit {
		return nil
	}
	return reservedEndpoints[id]
}

// ReservedEndpoint returns the shared endpoint of a reserved identity
// ("reserved:world"...), or nil for other identities.
func ReservedEndpoint(id uint32) *flowpb.Endpoint { return reservedEndpoints[id] }

// ReservedName names a reserved identity ("world"), or "".
func ReservedName(id uint32) string { return reservedNames[id] }

// PodLabels formats a pod's labels as Cilium does for its identity:
// "k8s:key=value", sorted, with the namespace label added.
func PodLabels(namespace string, labels map[string]string) []string {
	out := make([]string, 0, len(labels)+1)
	for k, v := range labels {
		out = append(out, "k8s:"+k+"="+v)
	}
	if _, ok := labels["io.kubernetes.pod.namespace"]; !ok && namespace != "" {
		out = append(out, "k8s:io.kubernetes.pod.namespace="+namespace)
	}
	sort.Strings(out)
	return out
}

// traceNames are Cilium's monitor names of trace observation points, by
// event subtype (to-endpoint is 0 there).
var traceNames = map[int32]string{
	0: "to-endpoint", 1: "to-proxy", 2: "to-host", 3: "to-stack", 4: "to-overlay", 5: "from-endpoint",
	6: "from-proxy", 7: "from-host", 8: "from-stack", 9: "from-overlay", 10: "from-network", 11: "to-network",
	12: "from-crypto", 13: "to-crypto",
}

// TraceName names a trace event's subtype as the hubble CLI does.
func TraceName(sub int32) string {
	if n, ok := traceNames[sub]; ok {
		return n
	}
	return fmt.Sprintf("point-%d", sub)
}

// TraceSubtype is the event subtype of a named observation point.
func TraceSubtype(name string) (int32, bool) {
	for sub, n := range traceNames {
		if n == name {
			return sub, true
		}
	}
	return 0, false
}
