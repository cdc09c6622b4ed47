package loadbalancer

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/resource"
)

// Pod annotations standing in for the pod status Kubernetes would have, so
// that readiness and graceful termination can be driven in standalone mode:
// `lumen.io/ready: "false"` marks a pod not ready, `lumen.io/terminating:
// "true"` marks it as being deleted (its endpoint turns terminating; deleting
// the pod, or its endpoint, removes it).
const (
	AnnotationReady       = "lumen.io/ready"
	AnnotationTerminating = "lumen.io/terminating"
)

// DerivedSliceSize is how many endpoints a derived slice holds at most (the
// EndpointSlice controller's default --max-endpoints-per-slice).
const DerivedSliceSize = 100

// Node labels that exclude a node from topology capacity, as in Kubernetes.
var controlPlaneLabels = []string{"node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"}

// Pod is what slice derivation needs of a pod: the stored pod (labels for
// the selector, container ports for named target ports) and its
// annotations (readiness and termination markers), which resource.Pod
// does not carry.
type Pod struct {
	resource.Pod
	Annotations map[string]string
}

// PodOf reads a stored Pod object.
func PodOf(obj *resource.Object) (*Pod, error) {
	p, err := resource.PodOf(obj)
	if err != nil {
		return nil, err
	}
	return &Pod{Pod: *p, Annotations: obj.Metadata.Annotations}, nil
}

// IsTerminating reports the terminating marker.
func (p *Pod) IsTerminating() bool { return p.Annotations[AnnotationTerminating] == "true" }

// IsReady reports readiness (ready unless marked not ready; termination
// is separate).
func (p *Pod) IsReady() bool { return p.Annotations[AnnotationReady] != "false" }

// SelectorMatches reports whether every key=value of selector is in labels.
// An empty selector matches nothing here: services without a selector get
// their endpoints from EndpointSlices applied by hand.
func SelectorMatches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// SlicesFor derives a service's EndpointSlices in standalone mode, doing
// what the Kubernetes EndpointSlice controller does:
//
//   - the endpoints are the announced endpoints (model.Endpoint) of the pods
//     in the service's namespace whose labels match its selector (pods is
//     keyed "namespace/name"; an endpoint without a stored pod is skipped);
//     a service without a selector gets no slices;
//   - one slice family per address type of the service (its ipFamilies, or
//     both when it has none yet), with the pod's address of that family;
//   - target ports are resolved per pod: a number as is, a name through the
//     pod's container ports of the same name and protocol; a port a pod
//     cannot resolve is left out of its endpoint, a pod resolving none is
//     left out. Endpoints with the same resolved ports share slices of at
//     most DerivedSliceSize endpoints;
//   - conditions: terminating from the lumen.io/terminating marker, serving
//     = the pod is ready (lumen.io/ready is not "false"), ready = serving and
//     not terminating; publishNotReadyAddresses makes every endpoint ready
//     and serving;
//   - nodeName is the node announcing the endpoint, zone that node's zone;
//   - topology hints when the service asks for them (TopologyAware): see
//     assignHints.
//
// Slice names are "<service>-<ipv4|ipv6>-<hash of the port set>-<n>", so
// they are stable while the port mapping is. Slices come sorted by name.
func SlicesFor(svc *Service, endpoints []model.Endpoint, pods map[string]*Pod, nodes []model.Node) []*EndpointSlice {
	if len(svc.Spec.Selector) == 0 {
		return nil
	}
	zoneOf := map[string]string{}
	for _, n := range nodes {
		zoneOf[n.Name] = n.Zone
	}
	fams := svc.Families()
	if len(fams) == 0 {
		fams = []string{IPv4, IPv6}
	}
	eps := slices.Clone(endpoints)
	slices.SortFunc(eps, func(a, b model.Endpoint) int {
		return cmp.Or(cmp.Compare(a.PodName, b.PodName), cmp.Compare(a.Node, b.Node), cmp.Compare(a.ContainerID, b.ContainerID))
	})
	var out []*EndpointSlice
	for _, fam := range fams {
		type group struct {
			ports []EndpointPort
			eps   []Endpoint
		}
		groups := map[string]*group{}
		seen := map[netip.Addr]bool{}
		for _, ep := range eps {
			if ep.Namespace != svc.Namespace {
				continue
			}
			pod := pods[ep.Namespace+"/"+ep.PodName]
			if pod == nil || !SelectorMatches(svc.Spec.Selector, pod.Labels) {
				continue
			}
			raw := ep.IPv4
			if fam == IPv6 {
				raw = ep.IPv6
			}
			addr, err := parseIP(raw)
			if err != nil || family(addr) != fam || seen[addr] {
				continue
			}
			ports := resolvePorts(svc, pod)
			if len(ports) == 0 && len(svc.Spec.Ports) > 0 {
				continue
			}
			seen[addr] = true
			gk := portsKey(ports)
			g := groups[gk]
			if g == nil {
				g = &group{ports: ports}
				groups[gk] = g
			}
			g.eps = append(g.eps, Endpoint{
				Addresses:  []string{addr.String()},
				Conditions: podConditions(svc, pod),
				NodeName:   ep.Node,
				Zone:       zoneOf[ep.Node],
				TargetRef:  &ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name},
			})
		}
		var all []*Endpoint // every endpoint of this family, for hints
		var famSlices []*EndpointSlice
		for _, gk := range sortedKeys(groups) {
			g := groups[gk]
			slices.SortFunc(g.eps, func(a, b Endpoint) int {
				return netip.MustParseAddr(a.Addresses[0]).Compare(netip.MustParseAddr(b.Addresses[0]))
			})
			for i := 0; i < len(g.eps); i += DerivedSliceSize {
				chunk := g.eps[i:min(i+DerivedSliceSize, len(g.eps))]
				s := &EndpointSlice{
					Namespace:   svc.Namespace,
					Name:        fmt.Sprintf("%s-%s-%s-%d", svc.Name, strings.ToLower(fam), hashString(gk), i/DerivedSliceSize),
					Labels:      map[string]string{LabelServiceName: svc.Name, LabelManagedBy: ManagedBy},
					AddressType: fam,
					Endpoints:   chunk,
					Ports:       g.ports,
				}
				for j := range s.Endpoints {
					all = append(all, &s.Endpoints[j])
				}
				famSlices = append(famSlices, s)
			}
		}
		if svc.TopologyAware() {
			assignHints(all, nodes)
		}
		out = append(out, famSlices...)
	}
	slices.SortFunc(out, func(a, b *EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func podConditions(svc *Service, pod *Pod) EndpointConditions {
	terminating := pod.IsTerminating()
	serving := pod.IsReady() || svc.Spec.PublishNotReadyAddresses
	ready := serving && (!terminating || svc.Spec.PublishNotReadyAddresses)
	return EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating}
}

// resolvePorts maps the service's ports to the pod's (FindPort in Kubernetes).
func resolvePorts(svc *Service, pod *Pod) []EndpointPort {
	var out []EndpointPort
	for _, sp := range svc.Spec.Ports {
		proto := cmp.Or(sp.Protocol, "TCP")
		var port int32
		switch tp := sp.TargetPort; {
		case tp.IsStr:
			for _, cp := range pod.Ports() {
				if cp.Name == tp.StrVal && cmp.Or(cp.Protocol, "TCP") == proto {
					port = cp.ContainerPort
					break
				}
			}
		case tp.IntVal != 0:
			port = tp.IntVal
		default:
			port = sp.Port
		}
		if port < 1 || port > 65535 {
			continue
		}
		out = append(out, EndpointPort{Name: sp.Name, Protocol: proto, Port: &port})
	}
	return out
}

func portsKey(ps []EndpointPort) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%s/%s/%d;", p.Name, p.Protocol, *p.Port)
	}
	return b.String()
}

func hashString(s string) string {
	h := fnv.New32a()
	h.Write([]byte(s))
	return fmt.Sprintf("%08x", h.Sum32())
}

// assignHints sets the zone hints of one address family's endpoints like
// the EndpointSlice controller's "Auto" topology mode, with one difference:
// Lumen nodes carry no CPU count, so a zone's share of the traffic is its
// share of the nodes (the KEP's fallback), control-plane nodes excluded.
//
//   - No hints at all when: a node has no zone, fewer than 2 zones, fewer
//     ready endpoints than zones, a ready endpoint has no zone, or the
//     minimum allocation cannot keep every zone under 20% overload
//     (minimum = ceil(share*ready / 1.2)).
//   - Otherwise every ready endpoint is first hinted for its own zone; zones
//     with more than their share then give endpoints to zones with less
//     (rounding as the controller does), deterministically: zones and
//     endpoints in sorted order.
//   - Endpoints that are not ready get no hints (proxies ignore them for
//     hints; the ready ones decide).
//
// With evenly spread nodes and endpoints this is simply "each endpoint is
// hinted for its own zone".
func assignHints(eps []*Endpoint, nodes []model.Node) {
	for _, ep := range eps {
		ep.Hints = nil
	}
	nodesByZone := map[string]int{}
	total := 0
	for _, n := range nodes {
		if slices.ContainsFunc(controlPlaneLabels, func(l string) bool { _, ok := n.Labels[l]; return ok }) {
			continue
		}
		if n.Zone == "" {
			return
		}
		nodesByZone[n.Zone]++
		total++
	}
	var ready []*Endpoint
	for _, ep := range eps {
		if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
			if ep.Zone == "" {
				return
			}
			ready = append(ready, ep)
		}
	}
	zones := sortedKeys(nodesByZone)
	n := len(ready)
	if len(zones) < 2 || len(zones) > n {
		return
	}
	type alloc struct {
		minimum int
		desired float64
	}
	allocs := map[string]alloc{}
	remaining := n
	for _, z := range zones {
		desired := float64(nodesByZone[z]) / float64(total) * float64(n)
		minimum := int(math.Ceil(desired / (1 + overloadThreshold)))
		allocs[z] = alloc{minimum: minimum, desired: math.Max(desired, float64(minimum))}
		remaining -= minimum
		if remaining < 0 {
			return
		}
	}
	allocated := map[string]int{}
	for _, ep := range ready {
		ep.Hints = &EndpointHints{ForZones: []ForZone{{Name: ep.Zone}}}
		allocated[ep.Zone]++
	}
	giving, receiving := map[string]float64{}, map[string]float64{}
	for _, z := range zones {
		switch d := float64(allocated[z]) - allocs[z].desired; {
		case d > 0:
			giving[z] = d
		case d < 0:
			receiving[z] = -d
		}
	}
	give, take := map[string]int{}, map[string]int{}
	for {
		gz, g := most(giving)
		rz, r := most(receiving)
		if gz == "" || rz == "" || (g < 1 && r < 1) || g < 0.5 || r < 0.5 {
			break
		}
		give[gz]++
		giving[gz]--
		take[rz]++
		receiving[rz]--
	}
	for _, ep := range ready {
		if give[ep.Zone] == 0 {
			continue
		}
		for _, z := range zones {
			if take[z] > 0 {
				ep.Hints = &EndpointHints{ForZones: []ForZone{{Name: z}}}
				give[ep.Zone]--
				take[z]--
				break
			}
		}
	}
}

// overloadThreshold is the overload a zone may see before hints are dropped.
const overloadThreshold = 0.2

// most returns the key with the largest value (the first in sorted order on ties).
func most(m map[string]float64) (string, float64) {
	best, v := "", 0.0
	for _, k := range sortedKeys(m) {
		if m[k] > v {
			best, v = k, m[k]
		}
	}
	return best, v
}
