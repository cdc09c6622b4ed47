package loadbalancer

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
)

// NodeInfo is the node the frontends are computed for.
type NodeInfo struct {
	Name string
	Zone string
	IPs  []netip.Addr // the node's addresses NodePort frontends listen on
}

// FrontendType is how a frontend is reached.
type FrontendType string

// Frontend types.
const (
	FrontendClusterIP    FrontendType = "ClusterIP"
	FrontendNodePort     FrontendType = "NodePort"
	FrontendLoadBalancer FrontendType = "LoadBalancer"
	FrontendExternalIP   FrontendType = "ExternalIP"
)

// Scope says which traffic a frontend's backends are for.
type Scope uint8

const (
	// ScopeExternal: traffic from outside the cluster to a NodePort,
	// LoadBalancer or external IP frontend (externalTrafficPolicy), and all
	// traffic to such a frontend when it has no internal twin.
	ScopeExternal Scope = iota
	// ScopeInternal: ClusterIP frontends (internalTrafficPolicy), and the
	// internal twin of an external frontend whose externalTrafficPolicy is
	// Local: traffic from inside the cluster (a local pod or the node itself)
	// to such an address is subject to neither policy and uses the cluster
	// backends, as kube-proxy's "short-circuit" does.
	ScopeInternal
)

// MarshalText writes the name, for JSON.
func (s Scope) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s Scope) String() string {
	if s == ScopeInternal {
		return "internal"
	}
	return "external"
}

// BackendState is how a frontend may use a backend.
type BackendState uint8

const (
	// StateActive backends take new connections.
	StateActive BackendState = iota
	// StateTerminating backends take no new connections; their established
	// connections keep going until the backend disappears.
	StateTerminating
	// StateQuarantined backends take no new connections (failed health
	// checks). Desired never sets it; it is for the agent's health checker.
	StateQuarantined
)

// MarshalText writes the name, for JSON.
func (s BackendState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s BackendState) String() string {
	switch s {
	case StateActive:
		return "active"
	case StateTerminating:
		return "terminating"
	case StateQuarantined:
		return "quarantined"
	}
	return "state-" + strconv.Itoa(int(s))
}

// DefaultWeight is the weight of an active backend (Cilium's default);
// backends that must not get new connections weigh 0.
const DefaultWeight = 100

// Backend is one backend of a frontend.
type Backend struct {
	Addr     netip.Addr
	Port     uint16
	Proto    Protocol
	NodeName string
	Zone     string
	State    BackendState
	Weight   uint16
}

// Key is the backend's cluster-wide key.
func (b Backend) Key() BackendKey { return BackendKey{Addr: b.Addr, Port: b.Port, Proto: b.Proto} }

// Frontend is one address:port/protocol the node load-balances, with the
// backends it may use.
type Frontend struct {
	Service  string // "namespace/name"
	PortName string
	Type     FrontendType
	// Addr is the frontend address. NodePort frontends come one per node
	// address of the service's families (NodeInfo.IPs); none when the node
	// has no address of that family.
	Addr  netip.Addr
	Port  uint16
	Proto Protocol
	Scope Scope
	// TwoScopes marks both entries of an external frontend that has an
	// internal twin (same address, port and protocol; ScopeExternal and
	// ScopeInternal).
	TwoScopes bool
	// TrafficPolicy is the policy that chose Backends: Cluster or Local.
	TrafficPolicy string
	// AffinityTimeout is the ClientIP session affinity timeout in seconds;
	// 0: no affinity.
	AffinityTimeout uint32
	// HasEndpoints reports whether the service port has usable endpoints
	// anywhere in the cluster. Without an active backend here, traffic is
	// rejected when false and dropped when true (kube-proxy's REJECT vs
	// DROP for Local policies).
	HasEndpoints bool
	// Backends are sorted by address and port: the active ones to choose
	// from for new connections, and the terminating ones still listed so
	// that their established connections keep working.
	Backends []Backend
}

// Key is "10.96.0.10:80/TCP" (an external frontend and its internal twin
// share it; Key and Scope together are unique).
func (f *Frontend) Key() string {
	return netip.AddrPortFrom(f.Addr, f.Port).String() + "/" + f.Proto.String()
}

// Active returns the backends that take new connections.
func (f *Frontend) Active() []Backend {
	var out []Backend
	for _, b := range f.Backends {
		if b.State == StateActive {
			out = append(out, b)
		}
	}
	return out
}

// LoadBalancerAddrs are the service's load balancer addresses: the status'
// ingress IPs (not those in ipMode Proxy: that load balancer forwards to
// the nodes rather than delivering to its address), and spec.loadBalancerIP
// (standalone mode has no load balancer controller to copy it into the
// status, so a requested address is taken as assigned).
func (s *Service) LoadBalancerAddrs() []netip.Addr {
	if s.Spec.Type != TypeLoadBalancer {
		return nil
	}
	var out []netip.Addr
	add := func(ip string) {
		if a, err := parseIP(ip); err == nil && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	add(s.Spec.LoadBalancerIP)
	for _, in := range s.Status.LoadBalancer.Ingress {
		if in.IPMode != IPModeProxy {
			add(in.IP)
		}
	}
	return out
}

func externalAddrStrings(s *Service) []string {
	var out []string
	out = append(out, s.Spec.ExternalIPs...)
	for _, a := range s.LoadBalancerAddrs() {
		out = append(out, a.String())
	}
	return out
}

// epInfo is an endpoint of one service port and family, conditions resolved.
type epInfo struct {
	addr                        netip.Addr
	port                        uint16
	node, zone                  string
	ready, serving, terminating bool
	zoneHints                   []string
	hinted                      bool // has a hints field with zones
}

// Desired computes the frontends the local node must serve and their backends, from
// the services and the EndpointSlices (stored ones, and those SlicesFor
// derives; a slice belongs to the service named by its
// kubernetes.io/service-name label in its namespace). It follows
// kube-proxy:
//
//   - Frontends per service port and IP family: each cluster IP (ScopeInternal,
//     internalTrafficPolicy); each external IP, load balancer address (type
//     LoadBalancer) and, with a node port, each node address (ScopeExternal,
//     externalTrafficPolicy). With externalTrafficPolicy Local an external
//     frontend also gets an internal twin with the cluster backends.
//     Headless services have no frontends; a service without families (no
//     cluster IP allocated) gets its external frontends in both families.
//   - Backends of a port come from the slices' ports with the same name and
//     protocol (a nil port is ignored), each endpoint's first address, of
//     the frontend's family. A duplicate address keeps its best conditions.
//   - Cluster policy: the ready endpoints, narrowed by topology hints when
//     every ready endpoint has zone hints and at least one is hinted for
//     this node's zone (else all ready ones); when no endpoint is ready
//     anywhere, the serving terminating ones become active.
//   - Local policy: this node's ready endpoints, else its serving
//     terminating ones; none means no active backend (traffic dropped).
//   - Terminating endpoints that are not active stay listed as
//     StateTerminating (weight 0) among the endpoints the policy could
//     reach (all for Cluster, this node's for Local), topology aside, so
//     that established connections survive. Not ready, not serving, not
//     terminating endpoints are left out.
//
// Frontends come sorted by service, port name, type, address, port, scope.
func Desired(services []*Service, slices_ []*EndpointSlice, local NodeInfo) []Frontend {
	byService := map[string][]*EndpointSlice{}
	for _, s := range slices_ {
		if k := s.ServiceKey(); k != "" {
			byService[k] = append(byService[k], s)
		}
	}
	var out []Frontend
	for _, svc := range services {
		if svc.Unproxied() {
			continue
		}
		out = append(out, serviceFrontends(svc, byService[svc.Key()], local)...)
	}
	sortFrontends(out)
	return out
}

// ServiceFrontends is Desired for one service: svcSlices are the slices
// that belong to it (the caller indexes them by their service name label).
// It lets a caller recompute only the services an event touches.
func ServiceFrontends(svc *Service, svcSlices []*EndpointSlice, local NodeInfo) []Frontend {
	if svc.Unproxied() {
		return nil
	}
	out := serviceFrontends(svc, svcSlices, local)
	sortFrontends(out)
	return out
}

func sortFrontends(out []Frontend) {
	slices.SortFunc(out, func(a, b Frontend) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.PortName, b.PortName),
			cmp.Compare(a.Type, b.Type), a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port),
			cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Scope, b.Scope))
	})
}

// NoBackends says what happens to a new connection to a frontend without
// an active backend, as kube-proxy does it: "reject" (ICMP unreachable /
// TCP RST) when the service port has no usable endpoint anywhere, "drop"
// when it has some elsewhere that its traffic policy (Local) excludes; ""
// when it has an active backend.
func (f *Frontend) NoBackends() string {
	switch {
	case slices.ContainsFunc(f.Backends, func(b Backend) bool { return b.State == StateActive }):
		return ""
	case f.HasEndpoints:
		return NoBackendsDrop
	}
	return NoBackendsReject
}

// What NoBackends reports.
const (
	NoBackendsReject = "reject"
	NoBackendsDrop   = "drop"
)

func serviceFrontends(svc *Service, svcSlices []*EndpointSlice, local NodeInfo) []Frontend {
	var out []Frontend
	etpLocal := svc.Spec.ExternalTrafficPolicy == PolicyLocal
	itpLocal := svc.Spec.InternalTrafficPolicy == PolicyLocal
	affinity := svc.AffinityTimeout()
	lbAddrs := svc.LoadBalancerAddrs()
	for _, sp := range svc.Spec.Ports {
		proto, err := ParseProtocol(sp.Protocol)
		if err != nil || sp.Port < 1 || sp.Port > 65535 {
			continue
		}
		fams := svc.Families()
		if len(fams) == 0 {
			// Not allocated (it did not go through the Allocator): its external
			// frontends still work, in both families.
			fams = []string{IPv4, IPv6}
		}
		for _, fam := range fams {
			eps := collectEndpoints(svcSlices, sp.Name, sp.Protocol, fam)
			cluster, hasAny := selectCluster(eps, local, proto)
			localSel := selectLocal(eps, local, proto)
			base := Frontend{
				Service: svc.Key(), PortName: sp.Name, Port: uint16(sp.Port), Proto: proto,
				AffinityTimeout: affinity, HasEndpoints: hasAny,
			}
			internal, internalPolicy := cluster, PolicyCluster
			if itpLocal {
				internal, internalPolicy = localSel, PolicyLocal
			}
			for _, a := range svc.ClusterAddrs() {
				if family(a) != fam {
					continue
				}
				f := base
				f.Type, f.Addr, f.Scope, f.TrafficPolicy, f.Backends = FrontendClusterIP, a, ScopeInternal, internalPolicy, slices.Clone(internal)
				out = append(out, f)
			}
			external := func(t FrontendType, a netip.Addr, port uint16) {
				f := base
				f.Type, f.Addr, f.Port, f.Scope = t, a, port, ScopeExternal
				if !etpLocal {
					f.TrafficPolicy, f.Backends = PolicyCluster, slices.Clone(cluster)
					out = append(out, f)
					return
				}
				f.TrafficPolicy, f.Backends, f.TwoScopes = PolicyLocal, slices.Clone(localSel), true
				twin := f
				twin.Scope, twin.TrafficPolicy, twin.Backends = ScopeInternal, PolicyCluster, slices.Clone(cluster)
				out = append(out, f, twin)
			}
			for _, ip := range svc.Spec.ExternalIPs {
				if a, err := parseIP(ip); err == nil && family(a) == fam {
					external(FrontendExternalIP, a, uint16(sp.Port))
				}
			}
			for _, a := range lbAddrs {
				if family(a) == fam {
					external(FrontendLoadBalancer, a, uint16(sp.Port))
				}
			}
			if (svc.Spec.Type == TypeNodePort || svc.Spec.Type == TypeLoadBalancer) && sp.NodePort > 0 && sp.NodePort <= 65535 {
				seen := map[netip.Addr]bool{}
				for _, a := range local.IPs {
					a = a.Unmap()
					if a.IsValid() && family(a) == fam && !seen[a] {
						seen[a] = true
						external(FrontendNodePort, a, uint16(sp.NodePort))
					}
				}
			}
		}
	}
	return out
}

// collectEndpoints gathers the endpoints serving a service port in one family.
func collectEndpoints(svcSlices []*EndpointSlice, portName, protocol, fam string) []epInfo {
	best := map[netip.Addr]epInfo{}
	for _, s := range svcSlices {
		if s.AddressType != fam || s.Unproxied() {
			continue
		}
		var port int32
		for _, p := range s.Ports {
			if p.Name == portName && cmp.Or(p.Protocol, "TCP") == protocol && p.Port != nil {
				port = *p.Port
			}
		}
		if port < 1 || port > 65535 {
			continue
		}
		for _, ep := range s.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			a, err := parseIP(ep.Addresses[0])
			if err != nil || family(a) != fam {
				continue
			}
			e := epInfo{
				addr: a, port: uint16(port), node: ep.NodeName, zone: ep.Zone,
				ready: ep.Conditions.IsReady(), serving: ep.Conditions.IsServing(), terminating: ep.Conditions.IsTerminating(),
			}
			if ep.Hints != nil {
				for _, z := range ep.Hints.ForZones {
					e.zoneHints = append(e.zoneHints, z.Name)
				}
				e.hinted = len(e.zoneHints) > 0
			}
			// Kubernetes keys endpoints by address and port; the same pair in
			// two slices (a slice being rewritten) keeps the better one.
			if old, dup := best[a]; !dup || rank(e) > rank(old) || (rank(e) == rank(old) && e.port < old.port) {
				best[a] = e
			}
		}
	}
	out := make([]epInfo, 0, len(best))
	for _, e := range best {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b epInfo) int { return cmp.Or(a.addr.Compare(b.addr), cmp.Compare(a.port, b.port)) })
	return out
}

func rank(e epInfo) int {
	switch {
	case e.ready:
		return 3
	case e.serving && e.terminating:
		return 2
	case e.terminating:
		return 1
	}
	return 0
}

func backendOf(e epInfo, proto Protocol, state BackendState) Backend {
	w := uint16(DefaultWeight)
	if state != StateActive {
		w = 0
	}
	return Backend{Addr: e.addr, Port: e.port, Proto: proto, NodeName: e.node, Zone: e.zone, State: state, Weight: w}
}

// useTopology decides kube-proxy's PreferSameZone: every ready endpoint
// has zone hints and one of them is for this node's zone.
func useTopology(eps []epInfo, zone string) bool {
	anyReady, forZone := false, false
	for _, e := range eps {
		if !e.ready {
			continue
		}
		anyReady = true
		if !e.hinted {
			return false
		}
		if zone != "" && slices.Contains(e.zoneHints, zone) {
			forZone = true
		}
	}
	return anyReady && forZone
}

// selectCluster picks the Cluster-policy backends; hasAny reports usable
// endpoints anywhere.
func selectCluster(eps []epInfo, local NodeInfo, proto Protocol) ([]Backend, bool) {
	topo := useTopology(eps, local.Zone)
	var out []Backend
	for _, e := range eps {
		if e.ready && (!topo || slices.Contains(e.zoneHints, local.Zone)) {
			out = append(out, backendOf(e, proto, StateActive))
		}
	}
	fallback := len(out) == 0
	for _, e := range eps {
		switch {
		case e.ready:
		case fallback && e.serving && e.terminating:
			out = append(out, backendOf(e, proto, StateActive))
		case e.terminating:
			out = append(out, backendOf(e, proto, StateTerminating))
		}
	}
	sortBackends(out)
	return out, slices.ContainsFunc(out, func(b Backend) bool { return b.State == StateActive })
}

// selectLocal picks the Local-policy backends.
func selectLocal(eps []epInfo, local NodeInfo, proto Protocol) []Backend {
	var mine []epInfo
	for _, e := range eps {
		if e.node != "" && e.node == local.Name {
			mine = append(mine, e)
		}
	}
	anyReady := slices.ContainsFunc(mine, func(e epInfo) bool { return e.ready })
	var out []Backend
	for _, e := range mine {
		switch {
		case e.ready:
			out = append(out, backendOf(e, proto, StateActive))
		case !anyReady && e.serving && e.terminating:
			out = append(out, backendOf(e, proto, StateActive))
		case e.terminating:
			out = append(out, backendOf(e, proto, StateTerminating))
		}
	}
	sortBackends(out)
	return out
}

func sortBackends(bs []Backend) {
	slices.SortFunc(bs, func(a, b Backend) int { return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port)) })
}
