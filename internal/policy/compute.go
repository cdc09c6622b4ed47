package policy

import (
	"fmt"
	"maps"
	"slices"
)

// EndpointPolicy is the computed policy of one endpoint. IngressEnforced,
// EgressEnforced and Entries are what the datapath enforces (see Lookup);
// the rest is for explanations and diagnostics.
type EndpointPolicy struct {
	IngressEnforced bool
	EgressEnforced  bool
	// Entries, minimal and sorted (egress, identity, proto, port, bits).
	Entries []Entry

	// Shadowed are entries left out of Entries because a wider entry gives
	// the same verdict for every packet they cover; Overridden are allow
	// entries a deny covers. Explain reads them to name every rule involved.
	Shadowed   []Entry
	Overridden []Entry

	SelectedBy        []string // policies with a rule selecting the endpoint
	IngressEnforcedBy []string // policies putting the endpoint under ingress enforcement
	EgressEnforcedBy  []string
	Warnings          []string // named ports that could not be resolved, ...
}

// EndpointInfo describes the endpoint whose policy is computed.
type EndpointInfo struct {
	Identity  uint32
	Labels    Labels // the identity's labels
	Namespace string // "" for the host and other non-pod endpoints
	// NamedPorts are the endpoint's container ports by name: ingress rules
	// with a named port resolve against them.
	NamedPorts map[string]PortProto
	// IsHost marks the host endpoint: only nodeSelector rules select it.
	IsHost bool
	// PeerNamedPorts resolve named ports of egress rules: the port is the
	// destination's own, so a name resolves per peer identity (identity ->
	// name -> the ports its pods give that name). `port: web` allows 81 to
	// a peer whose pods name 81 "web" and 80 to one naming 80 "web". Peers
	// without pods (world, CIDRs) have no named ports and match nothing.
	// Pods of one identity disagreeing on a name make it ambiguous for that
	// identity: it allows nothing there (fail closed; a warning says so).
	PeerNamedPorts map[uint32]map[string][]PortProto
}

// Options are agent-level settings that add implicit rules.
type Options struct {
	// AllowLocalhost allows ingress from identities labelled reserved:host
	// into every enforced non-host endpoint (Cilium's --allow-localhost=always,
	// Kubernetes' "traffic from the pod's node is always allowed"). It is an
	// allow like any other: a deny rule still wins.
	AllowLocalhost bool
}

// Engine resolves a set of policies against a set of identities once, then
// computes endpoint policies. It is immutable and safe for concurrent use.
type Engine struct {
	policies []*Policy
	ix       *identityIndex
	peerSets map[*peer]bitset
	reqSets  map[*selector]bitset // fromRequires/toRequires
	opts     Options
	hostIdx  []int // identities labelled reserved:host
}

// NewEngine prepares policies and identities (identity -> labels; identity
// 0 is the wildcard and may not appear).
func NewEngine(policies []*Policy, identities map[uint32]Labels, opts Options) (*Engine, error) {
	if _, ok := identities[0]; ok {
		return nil, fmt.Errorf("preparing policy engine: identity 0 is the wildcard identity, not a real identity")
	}
	e := &Engine{ix: newIdentityIndex(identities), peerSets: map[*peer]bitset{}, opts: opts}
	for i, p := range policies {
		if p == nil {
			return nil, fmt.Errorf("preparing policy engine: policy %d is nil", i)
		}
		e.policies = append(e.policies, p)
		for _, r := range p.rules {
			for _, s := range r.sections {
				for _, pe := range s.peers {
					switch pe.kind {
					case peerSelector:
						e.peerSets[pe] = e.ix.selectLabels(pe.sel)
					case peerCIDR:
						e.peerSets[pe] = e.ix.selectCIDR(pe.prefix, pe.except)
					}
				}
				for _, q := range s.requires {
					if e.reqSets == nil {
						e.reqSets = map[*selector]bitset{}
					}
					e.reqSets[q] = e.ix.selectLabels(q)
				}
			}
		}
	}
	hostSel := newSelector(requirement{source: SourceReserved, key: "host", op: opExists})
	e.ix.selectLabels(hostSel).each(func(i int) { e.hostIdx = append(e.hostIdx, i) })
	return e, nil
}

// Compute computes the policy of one endpoint from policies and identities
// with default Options. See Engine.Compute.
func Compute(policies []*Policy, identities map[uint32]Labels, ep EndpointInfo) (*EndpointPolicy, error) {
	e, err := NewEngine(policies, identities, Options{})
	if err != nil {
		return nil, err
	}
	return e.Compute(ep)
}

func (r *rule) selects(ep EndpointInfo, ns string) bool {
	if r.noSubject {
		return false
	}
	switch r.subjectKind {
	case subjectNode:
		return ep.IsHost && r.subject.matches(ep.Labels)
	case subjectPods:
		return !ep.IsHost && ns != "" && ns == r.namespace && r.subject.matches(ep.Labels)
	default:
		if ep.IsHost || (r.namespace != "" && ns != r.namespace) {
			return false
		}
		return r.subject.matches(ep.Labels)
	}
}

type resolvedPorts struct {
	desc   string
	proto  uint8
	blocks []PortBlock
}

// Compute returns the endpoint's enforcement flags and policy-map entries:
// the entries of every section of every rule selecting it, per peer
// identity (0 for any peer) and prefix-aligned port block; then an allow
// covered by a deny of the same identity is overridden and entries that a
// wider one makes redundant are dropped, so that Lookup on the result
// gives exactly the union-of-allows-minus-denies semantics.
func (e *Engine) Compute(ep EndpointInfo) (*EndpointPolicy, error) {
	ns := ep.Namespace
	if v, ok := ep.Labels.Get(SourceK8s, PodNamespaceLabel); ok {
		if ns != "" && ns != v {
			return nil, fmt.Errorf("computing policy of endpoint %d: namespace %q does not match its label %s=%s", ep.Identity, ns, PodNamespaceLabel, v)
		}
		ns = v
	}
	if ns != "" && !ep.Labels.Has(SourceK8s, PodNamespaceLabel) {
		// Selectors see the namespace as a label, as on every pod identity.
		ep.Labels = NewLabels(append(slices.Clone(ep.Labels), Label{SourceK8s, PodNamespaceLabel, ns})...)
	}
	out := &EndpointPolicy{}
	b := &builder{refIdx: map[RuleRef]int32{}}
	var selected []*rule
	defaultDeny := [2]bool{}
	var noDefaultDeny [2][]*rule
	for _, p := range e.policies {
		for _, r := range p.rules {
			if !r.selects(ep, ns) {
				continue
			}
			selected = append(selected, r)
			out.SelectedBy = append(out.SelectedBy, p.String())
			if r.ingress {
				out.IngressEnforced = true
				out.IngressEnforcedBy = append(out.IngressEnforcedBy, p.String())
				if r.ingressDefaultDeny {
					defaultDeny[0] = true
				} else {
					noDefaultDeny[0] = append(noDefaultDeny[0], r)
				}
			}
			if r.egress {
				out.EgressEnforced = true
				out.EgressEnforcedBy = append(out.EgressEnforcedBy, p.String())
				if r.egressDefaultDeny {
					defaultDeny[1] = true
				} else {
					noDefaultDeny[1] = append(noDefaultDeny[1], r)
				}
			}
		}
	}
	type work struct {
		r     *rule
		s     *section
		ports []resolvedPorts
		named []portSpec // egress named ports, resolved per peer identity
	}
	var todo []work
	size := 0
	required := e.requirements(selected)
	peerSet := func(s *section, pe *peer) bitset {
		req := required[reqGroup{s.egress, s.deny}]
		if !pe.endpoints || req == nil {
			return e.peerSets[pe]
		}
		b := e.peerSets[pe].clone()
		b.and(req)
		return b
	}
	for _, r := range selected {
		for _, s := range r.sections {
			ports, named := e.resolvePorts(s, ep, r, out)
			blocks := 0
			for _, rp := range ports {
				blocks += len(rp.blocks)
			}
			for _, pe := range s.peers {
				if pe.kind == peerAll {
					size += blocks
				} else {
					size += blocks * peerSet(s, pe).count()
				}
			}
			todo = append(todo, work{r, s, ports, named})
		}
	}
	b.adds = make([]addition, 0, size+len(e.hostIdx)+2)
	for _, wk := range todo {
		s := wk.s
		for _, pe := range s.peers {
			for _, rp := range wk.ports {
				ref := b.ref(RuleRef{Policy: wk.r.policy.String(), RuleIndex: wk.r.index, Rule: wk.r.path, Section: s.name, Selector: pe.desc, Ports: rp.desc})
				add := func(id uint32) {
					for _, blk := range rp.blocks {
						b.add(Key{Identity: id, Egress: s.egress, Proto: rp.proto, Port: blk.Port, PortBits: blk.Bits}, s.deny, ref)
					}
				}
				if pe.kind == peerAll {
					add(0)
					continue
				}
				peerSet(s, pe).each(func(i int) { add(e.ix.ids[i]) })
			}
			for _, ps := range wk.named {
				e.addEgressNamed(b, out, ep, wk.r, s, pe, ps)
			}
		}
	}
	// Rules with enableDefaultDeny false enforce a direction without default
	// deny: unless another rule asks for it, everything not denied is allowed.
	for dir, rules := range noDefaultDeny {
		if defaultDeny[dir] {
			continue
		}
		for _, r := range rules {
			field := "ingress"
			if dir == 1 {
				field = "egress"
			}
			b.add(Key{Egress: dir == 1}, false, b.ref(RuleRef{Policy: r.policy.String(), RuleIndex: r.index, Rule: r.path,
				Section: "enableDefaultDeny." + field, Selector: "any peer (default allow)", Ports: "any"}))
		}
	}
	if e.opts.AllowLocalhost && !ep.IsHost && out.IngressEnforced {
		ref := b.ref(RuleRef{Policy: "agent option allow-localhost", Rule: "option", Section: "ingress", Selector: "reserved:host", Ports: "any"})
		for _, i := range e.hostIdx {
			b.add(Key{Identity: e.ix.ids[i]}, false, ref)
		}
	}
	b.finish(out)
	out.SelectedBy = sortedUnique(out.SelectedBy)
	out.IngressEnforcedBy = sortedUnique(out.IngressEnforcedBy)
	out.EgressEnforcedBy = sortedUnique(out.EgressEnforcedBy)
	out.Warnings = sortedUnique(out.Warnings)
	return out, nil
}

type reqGroup struct{ egress, deny bool }

// requirements intersects the fromRequires/toRequires of every rule
// selecting the endpoint, per direction and verdict (Cilium: an allow
// section's requirements restrict the endpoint peers of every allow
// section of that direction, a deny section's those of every deny section).
func (e *Engine) requirements(selected []*rule) map[reqGroup]bitset {
	var out map[reqGroup]bitset
	for _, r := range selected {
		for _, s := range r.sections {
			for _, q := range s.requires {
				if out == nil {
					out = map[reqGroup]bitset{}
				}
				g := reqGroup{s.egress, s.deny}
				if out[g] == nil {
					out[g] = e.reqSets[q].clone()
				} else {
					out[g].and(e.reqSets[q])
				}
			}
		}
	}
	return out
}

func sortedUnique(s []string) []string { return slices.Compact(slices.Sorted(slices.Values(s))) }

// resolvePorts turns a section's port specs into protocol + port blocks,
// resolving ingress named ports against the endpoint's own; egress named
// ports come back as they are, to be resolved per peer (addEgressNamed).
func (e *Engine) resolvePorts(s *section, ep EndpointInfo, r *rule, out *EndpointPolicy) ([]resolvedPorts, []portSpec) {
	if s.allPorts {
		return []resolvedPorts{{desc: "any", proto: ProtoAny, blocks: []PortBlock{{0, 0}}}}, nil
	}
	var res []resolvedPorts
	var named []portSpec
	for _, ps := range s.ports {
		if ps.name == "" {
			res = append(res, resolvedPorts{desc: ps.desc, proto: ps.proto, blocks: SplitPortRange(ps.lo, ps.hi)})
			continue
		}
		if s.egress {
			named = append(named, ps)
			continue
		}
		where := fmt.Sprintf("%s %s.%s", r.policy, r.path, s.name)
		pp, ok := ep.NamedPorts[ps.name]
		switch {
		case !ok:
			out.Warnings = append(out.Warnings, fmt.Sprintf("%s: named port %q not found on the endpoint", where, ps.name))
		case ps.proto != ProtoAny && pp.Proto != ps.proto:
			out.Warnings = append(out.Warnings, fmt.Sprintf("%s: named port %q is %s, the rule wants %s", where, ps.name, pp, ProtoName(ps.proto)))
		default:
			res = append(res, resolvedPorts{desc: fmt.Sprintf("%s(%s)", ps.desc, pp), proto: pp.Proto, blocks: []PortBlock{{pp.Port, 16}}})
		}
	}
	return res, named
}

// addEgressNamed adds the entries of one egress named port for one peer of
// a section: for each identity the peer stands for, the port its own pods
// give that name. Peers without the name get nothing (fail closed).
func (e *Engine) addEgressNamed(b *builder, out *EndpointPolicy, ep EndpointInfo, r *rule, s *section, pe *peer, ps portSpec) {
	where := fmt.Sprintf("%s %s.%s %s", r.policy, r.path, s.name, pe.desc)
	resolved := false
	addFor := func(id uint32) {
		byProto := map[uint8][]uint16{}
		for _, pp := range ep.PeerNamedPorts[id][ps.name] {
			if (ps.proto == ProtoAny || pp.Proto == ps.proto) && !slices.Contains(byProto[pp.Proto], pp.Port) {
				byProto[pp.Proto] = append(byProto[pp.Proto], pp.Port)
			}
		}
		for _, proto := range []uint8{ProtoTCP, ProtoUDP, ProtoSCTP} {
			ports := byProto[proto]
			switch {
			case len(ports) == 0:
				continue
			case len(ports) > 1:
				slices.Sort(ports)
				if !s.deny {
					out.Warnings = append(out.Warnings, fmt.Sprintf("%s: named port %q is ambiguous for %s on peer identity %d (its pods give it ports %v): nothing allowed there",
						where, ps.name, ProtoName(proto), id, ports))
					continue
				}
				// A deny covers every port the name may mean.
				out.Warnings = append(out.Warnings, fmt.Sprintf("%s: named port %q is ambiguous for %s on peer identity %d (its pods give it ports %v): all denied",
					where, ps.name, ProtoName(proto), id, ports))
			}
			for _, port := range ports {
				pp := PortProto{Port: port, Proto: proto}
				ref := b.ref(RuleRef{Policy: r.policy.String(), RuleIndex: r.index, Rule: r.path, Section: s.name, Selector: pe.desc, Ports: fmt.Sprintf("%s(%s)", ps.desc, pp)})
				b.add(Key{Identity: id, Egress: true, Proto: proto, Port: port, PortBits: 16}, s.deny, ref)
				resolved = true
			}
		}
	}
	if pe.kind == peerAll {
		for _, id := range slices.Sorted(maps.Keys(ep.PeerNamedPorts)) {
			if id != 0 {
				addFor(id)
			}
		}
	} else {
		e.peerSets[pe].each(func(i int) { addFor(e.ix.ids[i]) })
	}
	if !resolved {
		out.Warnings = append(out.Warnings, fmt.Sprintf("%s: named port %q not found on any peer the rule selects", where, ps.name))
	}
}
