package k8s

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/kvstore"
	lb "github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/resource"
)

// resourceObject turns an API object into Lumen's resource form: metadata
// reduced to name, namespace, labels and annotations, kind-specific content
// reduced to what Lumen models (the API server has validated and defaulted
// the rest, and Lumen's decoders reject fields they do not know), then
// validated with the same rules `lumen apply` uses.
func resourceObject(kinds *resource.Registry, u *unstructured.Unstructured) (*resource.Object, error) {
	content := u.UnstructuredContent()
	obj := &resource.Object{
		APIVersion: u.GetAPIVersion(),
		Kind:       u.GetKind(),
		Metadata: resource.Metadata{
			Name: u.GetName(), Namespace: u.GetNamespace(),
			Labels: u.GetLabels(), Annotations: u.GetAnnotations(),
		},
	}
	// Annotations such as kubectl's last-applied-configuration are not
	// qualified names in Lumen's sense of being small; keep only the ones
	// Lumen reads.
	for k := range obj.Metadata.Annotations {
		if !strings.HasPrefix(k, "lumen.io/") && !strings.HasPrefix(k, "service.kubernetes.io/") && !strings.HasPrefix(k, "io.cilium") {
			delete(obj.Metadata.Annotations, k)
		}
	}
	if len(obj.Metadata.Annotations) == 0 {
		obj.Metadata.Annotations = nil
	}
	kind, err := kinds.LookupKind(obj.APIVersion, obj.Kind)
	if err != nil {
		return nil, err
	}
	slim := func(field string, into any) error {
		v, ok := content[field]
		if !ok {
			return nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, into); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		return nil
	}
	set := func(field string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if field == "spec" {
			obj.Spec = b
			return nil
		}
		if obj.Other == nil {
			obj.Other = map[string]json.RawMessage{}
		}
		obj.Other[field] = b
		return nil
	}
	switch obj.Kind {
	case "Pod":
		var spec resource.PodSpec
		if err := slim("spec", &spec); err != nil {
			return nil, err
		}
		if err := set("spec", spec); err != nil {
			return nil, err
		}
	case "Namespace":
		// spec.finalizers only.
	case "Service":
		var spec lb.ServiceSpec
		if err := slim("spec", &spec); err != nil {
			return nil, err
		}
		if err := set("spec", spec); err != nil {
			return nil, err
		}
		// The load balancer's addresses, set by whoever provides them.
		var status lb.ServiceStatus
		if err := slim("status", &status); err != nil {
			return nil, err
		}
		if len(status.LoadBalancer.Ingress) > 0 {
			if err := set("status", status); err != nil {
				return nil, err
			}
		}
	case "EndpointSlice":
		var eps []lb.Endpoint
		var ports []lb.EndpointPort
		var at string
		if err := slim("endpoints", &eps); err != nil {
			return nil, err
		}
		if err := slim("ports", &ports); err != nil {
			return nil, err
		}
		if err := slim("addressType", &at); err != nil {
			return nil, err
		}
		for i := range eps {
			eps[i].TargetRef = nil
		}
		if eps == nil {
			eps = []lb.Endpoint{}
		}
		_ = set("endpoints", eps)
		if ports != nil {
			_ = set("ports", ports)
		}
		_ = set("addressType", at)
	default:
		// Policies and other custom resources: everything but status, as
		// the user wrote it (the CRD schema already checked its shape).
		for k, v := range content {
			switch k {
			case "apiVersion", "kind", "metadata", "status":
				continue
			}
			if !kind.AllowsField(k) {
				continue
			}
			if err := set(k, v); err != nil {
				return nil, err
			}
		}
	}
	if policyKindNames[obj.Kind] {
		// Never skipped for what Lumen cannot enforce: the API server
		// validated the metadata, the policy syncer decodes the rest
		// leniently and fails closed (see policystatus.go).
		return obj, nil
	}
	if err := kinds.Validate(obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// resourceKV converts objects of the kinds of kinds.
func resourceKV(kinds *resource.Registry) converter {
	return func(u *unstructured.Unstructured) ([]kvstore.KV, error) {
		obj, err := resourceObject(kinds, u)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(obj)
		if err != nil {
			return nil, err
		}
		return []kvstore.KV{{Key: obj.Key(), Value: b}}, nil
	}
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), into)
}

func toUnstructured(obj any) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// nodeOf reads a CiliumNode as Lumen's node announcement.
func nodeOf(cn *CiliumNode) model.Node {
	n := model.Node{Name: cn.Name, Labels: cn.Labels, Zone: cn.Labels[ZoneLabel]}
	for _, a := range cn.Spec.Addresses {
		ip, err := netip.ParseAddr(a.IP)
		if err != nil || a.Type != "InternalIP" {
			continue
		}
		if ip.Is4() && n.IPv4 == "" {
			n.IPv4 = ip.String()
		}
		if ip.Is6() && n.IPv6 == "" {
			n.IPv6 = ip.String()
		}
	}
	for _, c := range cn.Spec.IPAM.PodCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			continue
		}
		if p.Addr().Is4() && n.PodCIDRv4 == "" {
			n.PodCIDRv4 = p.String()
		}
		if p.Addr().Is6() && n.PodCIDRv6 == "" {
			n.PodCIDRv6 = p.String()
		}
	}
	return n
}

func nodeKV(u *unstructured.Unstructured) ([]kvstore.KV, error) {
	var cn CiliumNode
	if err := fromUnstructured(u, &cn); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(nodeOf(&cn))
	return []kvstore.KV{{Key: model.NodesPrefix + cn.Name, Value: b}}, nil
}

// ciliumNodeFor is the part of a CiliumNode an agent owns (server-side
// apply): addresses and labels, and the pod CIDRs only when they are
// configured statically (otherwise lumen-operator owns them).
func ciliumNodeFor(n model.Node) *CiliumNode {
	cn := &CiliumNode{}
	cn.APIVersion, cn.Kind = CiliumNodes.GroupVersion().String(), "CiliumNode"
	cn.Name = n.Name
	cn.Labels = map[string]string{}
	for k, v := range n.Labels {
		cn.Labels[k] = v
	}
	if n.Zone != "" {
		cn.Labels[ZoneLabel] = n.Zone
	}
	for _, ip := range []string{n.IPv4, n.IPv6} {
		if ip != "" {
			cn.Spec.Addresses = append(cn.Spec.Addresses, NodeAddress{Type: "InternalIP", IP: ip})
		}
	}
	for _, c := range []string{n.PodCIDRv4, n.PodCIDRv6} {
		if c != "" {
			cn.Spec.IPAM.PodCIDRs = append(cn.Spec.IPAM.PodCIDRs, c)
		}
	}
	return cn
}

// ciliumEndpointFor is the CiliumEndpoint of a local endpoint.
func ciliumEndpointFor(ep model.Endpoint, nodeIP string, labels identity.Labels) *CiliumEndpoint {
	cep := &CiliumEndpoint{}
	cep.APIVersion, cep.Kind = CiliumEndpoints.GroupVersion().String(), "CiliumEndpoint"
	cep.Namespace, cep.Name = cepName(ep)
	cep.Labels = map[string]string{NodeLabel: ep.Node}
	cep.Status = EndpointStatus{
		ExternalIdentifiers: &EndpointIdentifiers{
			ContainerID: ep.ContainerID, K8sNamespace: ep.Namespace, K8sPodName: ep.PodName,
			PodName: ep.Namespace + "/" + ep.PodName,
		},
		Identity:   &EndpointIdentity{ID: int64(ep.Identity), Labels: labels.Strings()},
		Networking: &EndpointNetworking{Addressing: []AddressPair{{IPv4: ep.IPv4, IPv6: ep.IPv6}}, NodeIP: nodeIP},
		State:      "ready",
		NamedPorts: namedPortsOut(ep.NamedPorts),
	}
	return cep
}

// cepName is where an endpoint's CiliumEndpoint lives: its pod's namespace
// and name (an endpoint without a pod is named after its container).
func cepName(ep model.Endpoint) (namespace, name string) {
	namespace, name = ep.Namespace, ep.PodName
	if namespace == "" {
		namespace = "default"
	}
	if name == "" {
		id := ep.ContainerID
		if len(id) > 12 {
			id = id[:12]
		}
		name = "endpoint-" + strings.ToLower(id)
	}
	return namespace, name
}

// endpointOf reads a CiliumEndpoint as Lumen's endpoint announcement.
func endpointOf(cep *CiliumEndpoint) (model.Endpoint, error) {
	ep := model.Endpoint{Node: cep.Labels[NodeLabel], Namespace: cep.Namespace, PodName: cep.Name}
	st := cep.Status
	if x := st.ExternalIdentifiers; x != nil {
		ep.ContainerID = x.ContainerID
	}
	if st.Identity == nil || st.Identity.ID <= 0 || st.Identity.ID > int64(^uint32(0)) {
		return ep, fmt.Errorf("status.identity.id: missing or out of range")
	}
	ep.Identity = uint32(st.Identity.ID)
	ep.Labels = podLabels(st.Identity.Labels)
	ep.NamedPorts = namedPortsIn(st.NamedPorts)
	if st.Networking != nil {
		ep.NodeIP = st.Networking.NodeIP
		if err := addressing(&ep, st.Networking.Addressing); err != nil {
			return ep, err
		}
	}
	return ep, nil
}

func addressing(ep *model.Endpoint, pairs []AddressPair) error {
	for i, p := range pairs {
		if p.IPv4 != "" {
			if a, err := netip.ParseAddr(p.IPv4); err != nil || !a.Is4() {
				return fmt.Errorf("networking.addressing[%d].ipv4: invalid %q", i, p.IPv4)
			}
			ep.IPv4 = p.IPv4
		}
		if p.IPv6 != "" {
			if a, err := netip.ParseAddr(p.IPv6); err != nil || !a.Is6() {
				return fmt.Errorf("networking.addressing[%d].ipv6: invalid %q", i, p.IPv6)
			}
			ep.IPv6 = p.IPv6
		}
	}
	return nil
}

// namedPortsOut writes an endpoint's named ports as Cilium's status does.
func namedPortsOut(ps []model.NamedPort) []NamedPort {
	if len(ps) == 0 {
		return nil
	}
	out := make([]NamedPort, len(ps))
	for i, p := range ps {
		out[i] = NamedPort{Name: p.Name, Port: p.Port, Protocol: p.Protocol}
	}
	return out
}

// namedPortsIn reads Cilium's named ports; nameless or zero ports (written
// by someone else) cannot be referred to and are left out.
func namedPortsIn(ps []NamedPort) []model.NamedPort {
	var out []model.NamedPort
	for _, p := range ps {
		if p.Name == "" || p.Port == 0 {
			continue
		}
		proto := strings.ToUpper(p.Protocol)
		if proto == "" {
			proto = "TCP"
		}
		out = append(out, model.NamedPort{Name: p.Name, Port: p.Port, Protocol: proto})
	}
	return out
}

// podLabels recovers a pod's own labels from its identity's labels.
func podLabels(ls []string) map[string]string {
	out := map[string]string{}
	for _, s := range ls {
		l, err := identity.ParseLabel(s)
		if err != nil || l.Source != identity.SourceK8s || l.Key == identity.PodNamespaceLabel ||
			strings.HasPrefix(l.Key, identity.NamespaceLabelPrefix) {
			continue
		}
		out[l.Key] = l.Value
	}
	return out
}

func cepKV(u *unstructured.Unstructured) ([]kvstore.KV, error) {
	var cep CiliumEndpoint
	if err := fromUnstructured(u, &cep); err != nil {
		return nil, err
	}
	ep, err := endpointOf(&cep)
	if err != nil {
		return nil, err
	}
	if ep.Node == "" || ep.ContainerID == "" {
		return nil, fmt.Errorf("metadata.labels[%s] and status.external-identifiers.container-id are required", NodeLabel)
	}
	b, _ := json.Marshal(ep)
	return []kvstore.KV{{Key: model.EndpointsPrefix + ep.Node + "/" + ep.ContainerID, Value: b}}, nil
}

// cesKVs reads a CiliumEndpointSlice as one announcement per endpoint. The
// slice names nodes by address: nodeName maps it back when it can.
func cesKVs(nodeName func(ip string) string) converter {
	return func(u *unstructured.Unstructured) ([]kvstore.KV, error) {
		var ces CiliumEndpointSlice
		if err := fromUnstructured(u, &ces); err != nil {
			return nil, err
		}
		var out []kvstore.KV
		for i, ce := range ces.Endpoints {
			ep := model.Endpoint{Namespace: ces.Namespace, PodName: ce.Name}
			if ce.IdentityID <= 0 || ce.IdentityID > int64(^uint32(0)) {
				return nil, fmt.Errorf("endpoints[%d].id: out of range: %d", i, ce.IdentityID)
			}
			ep.Identity = uint32(ce.IdentityID)
			ep.NamedPorts = namedPortsIn(ce.NamedPorts)
			if ce.Networking != nil {
				ep.NodeIP = ce.Networking.NodeIP
				if err := addressing(&ep, ce.Networking.Addressing); err != nil {
					return nil, fmt.Errorf("endpoints[%d].%w", i, err)
				}
			}
			ep.Node = nodeName(ep.NodeIP)
			b, _ := json.Marshal(ep)
			// Keyed by pod: a slice does not carry container ids.
			out = append(out, kvstore.KV{Key: model.EndpointsPrefix + "ces/" + ces.Namespace + "/" + ce.Name, Value: b})
		}
		return out, nil
	}
}

// Identity entries, in the allocator's store format.
type idValue struct {
	Labels []string `json:"labels"`
}

type labelsValue struct {
	ID identity.ID `json:"id"`
}

// securityLabels writes labels as CiliumIdentity does: "k8s:app" -> "web".
func securityLabels(ls identity.Labels) map[string]string {
	out := make(map[string]string, len(ls))
	for _, l := range ls {
		out[l.Source+":"+l.Key] = l.Value
	}
	return out
}

func labelsOf(ci *CiliumIdentity) (identity.Labels, error) {
	var ls []identity.Label
	for k, v := range ci.SecurityLabels {
		src, key, ok := strings.Cut(k, ":")
		if !ok {
			return nil, fmt.Errorf("security-labels: key %q has no source", k)
		}
		ls = append(ls, identity.Label{Source: src, Key: key, Value: v})
	}
	return identity.NewLabels(ls...), nil
}

func identityOf(u *unstructured.Unstructured) (identity.ID, identity.Labels, error) {
	var ci CiliumIdentity
	if err := fromUnstructured(u, &ci); err != nil {
		return 0, nil, err
	}
	n, err := strconv.ParseUint(ci.Name, 10, 32)
	if err != nil || identity.ID(n) < identity.MinCluster {
		return 0, nil, fmt.Errorf("metadata.name: %q is not a cluster identity number", ci.Name)
	}
	ls, err := labelsOf(&ci)
	if err != nil {
		return 0, nil, err
	}
	return identity.ID(n), ls, nil
}

func identityKV(u *unstructured.Unstructured) ([]kvstore.KV, error) {
	id, ls, err := identityOf(u)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(idValue{Labels: ls.Strings()})
	return []kvstore.KV{{Key: identity.IDsPrefix + strconv.FormatUint(uint64(id), 10), Value: b}}, nil
}

// peerKV reads a node's Hubble peer announcement from its CiliumNode.
func peerKV(prefix string) converter {
	return func(u *unstructured.Unstructured) ([]kvstore.KV, error) {
		v, ok := u.GetAnnotations()[HubblePeerAnnotation]
		if !ok {
			return nil, nil
		}
		return []kvstore.KV{{Key: prefix + u.GetName(), Value: []byte(v)}}, nil
	}
}
