package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Key is one policy-map key. Identity 0 is the wildcard (any peer). Proto 0
// is any protocol and then always comes with Port 0 and PortBits 0 (the
// datapath cannot wildcard the protocol but not the port). Port is in host
// order with its low 16-PortBits bits zero.
type Key struct {
	Identity uint32
	Egress   bool
	Proto    uint8
	Port     uint16
	PortBits uint8
}

func (k Key) String() string {
	dir := "ingress"
	if k.Egress {
		dir = "egress"
	}
	port := "any"
	if k.Proto != ProtoAny && k.PortBits > 0 {
		port = PortBlock{k.Port, k.PortBits}.String()
	}
	return fmt.Sprintf("%s identity=%d proto=%s port=%s", dir, k.Identity, ProtoName(k.Proto), port)
}

func (b PortBlock) String() string {
	switch {
	case b.Bits == 0:
		return "any"
	case b.Bits >= 16:
		return fmt.Sprint(b.Port)
	}
	return fmt.Sprintf("%d-%d", b.First(), b.Last())
}

// contains reports whether the key's protocol/port space covers proto/port
// (identity and direction are compared by the caller).
func (k Key) contains(proto uint8, port uint16) bool {
	if k.Proto == ProtoAny {
		return true
	}
	return k.Proto == proto && maskPort(port, k.PortBits) == k.Port
}

// RuleRef names the rule, peer and port spec an entry was derived from.
type RuleRef struct {
	Policy    string // "CiliumNetworkPolicy shop/allow-web"
	RuleIndex int    // index of the rule in the policy (spec first, then specs)
	Rule      string // "spec" or "specs[1]"
	Section   string // "ingress[1]", "egressDeny[0]"
	Selector  string // the peer: "fromEndpoints[0] {k8s:app=web, ...}", "toEntities[1] world"
	Ports     string // "TCP/80-90", "ANY/53", "TCP/http", "any"
}

func (r RuleRef) String() string {
	return fmt.Sprintf("%s %s.%s %s ports %s", r.Policy, r.Rule, r.Section, r.Selector, r.Ports)
}

func compareRef(a, b RuleRef) int {
	return cmp.Or(strings.Compare(a.Policy, b.Policy), cmp.Compare(a.RuleIndex, b.RuleIndex),
		strings.Compare(a.Section, b.Section), strings.Compare(a.Selector, b.Selector), strings.Compare(a.Ports, b.Ports))
}

// Entry is one policy-map entry with the rules it comes from.
type Entry struct {
	Key
	Deny    bool
	Derived []RuleRef
}

func (e Entry) String() string {
	if e.Deny {
		return e.Key.String() + " deny"
	}
	return e.Key.String() + " allow"
}

func compareKey(a, b Key) int {
	return cmp.Or(cmpBool(a.Egress, b.Egress), cmp.Compare(a.Identity, b.Identity), cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(a.Port, b.Port), cmp.Compare(a.PortBits, b.PortBits))
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

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
	// PeerNamedPorts resolve named ports of egress rules (the port is the
	// destination's). Like Cilium, the name resolves cluster-wide: give every
	// named port of every pod; a name that maps to different ports for one
	// protocol is ambiguous and allows nothing (a warning says so).
	PeerNamedPorts map[string][]PortProto
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
	out := &EndpointPolicy{}
	b := &builder{entries: map[Key]*pending{}}
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
	for _, r := range selected {
		for _, s := range r.sections {
			ports := e.resolvePorts(s, ep, r, out)
			if len(ports) == 0 {
				continue
			}
			for _, pe := range s.peers {
				for _, rp := range ports {
					ref := RuleRef{Policy: r.policy.String(), RuleIndex: r.index, Rule: r.path, Section: s.name, Selector: pe.desc, Ports: rp.desc}
					add := func(id uint32) {
						for _, blk := range rp.blocks {
							b.add(Key{Identity: id, Egress: s.egress, Proto: rp.proto, Port: blk.Port, PortBits: blk.Bits}, s.deny, ref)
						}
					}
					if pe.kind == peerAll {
						add(0)
						continue
					}
					e.peerSets[pe].each(func(i int) { add(e.ix.ids[i]) })
				}
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
			b.add(Key{Egress: dir == 1}, false, RuleRef{Policy: r.policy.String(), RuleIndex: r.index, Rule: r.path,
				Section: "enableDefaultDeny." + field, Selector: "any peer (default allow)", Ports: "any"})
		}
	}
	if e.opts.AllowLocalhost && !ep.IsHost && out.IngressEnforced {
		for _, i := range e.hostIdx {
			b.add(Key{Identity: e.ix.ids[i]}, false, RuleRef{Policy: "agent option allow-localhost", Rule: "option",
				Section: "ingress", Selector: "reserved:host", Ports: "any"})
		}
	}
	b.finish(out)
	out.SelectedBy = sortedUnique(out.SelectedBy)
	out.IngressEnforcedBy = sortedUnique(out.IngressEnforcedBy)
	out.EgressEnforcedBy = sortedUnique(out.EgressEnforcedBy)
	out.Warnings = sortedUnique(out.Warnings)
	return out, nil
}

func sortedUnique(s []string) []string { return slices.Compact(slices.Sorted(slices.Values(s))) }

// resolvePorts turns a section's port specs into protocol + port blocks,
// resolving named ports.
func (e *Engine) resolvePorts(s *section, ep EndpointInfo, r *rule, out *EndpointPolicy) []resolvedPorts {
	if s.allPorts {
		return []resolvedPorts{{desc: "any", proto: ProtoAny, blocks: []PortBlock{{0, 0}}}}
	}
	var res []resolvedPorts
	for _, ps := range s.ports {
		if ps.name == "" {
			res = append(res, resolvedPorts{desc: ps.desc, proto: ps.proto, blocks: SplitPortRange(ps.lo, ps.hi)})
			continue
		}
		where := fmt.Sprintf("%s %s.%s", r.policy, r.path, s.name)
		if !s.egress {
			pp, ok := ep.NamedPorts[ps.name]
			switch {
			case !ok:
				out.Warnings = append(out.Warnings, fmt.Sprintf("%s: named port %q not found on the endpoint", where, ps.name))
			case ps.proto != ProtoAny && pp.Proto != ps.proto:
				out.Warnings = append(out.Warnings, fmt.Sprintf("%s: named port %q is %s, the rule wants %s", where, ps.name, pp, ProtoName(ps.proto)))
			default:
				res = append(res, resolvedPorts{desc: fmt.Sprintf("%s(%s)", ps.desc, pp), proto: pp.Proto, blocks: []PortBlock{{pp.Port, 16}}})
			}
			continue
		}
		byProto := map[uint8][]uint16{}
		for _, pp := range ep.PeerNamedPorts[ps.name] {
			if ps.proto == ProtoAny || pp.Proto == ps.proto {
				if !slices.Contains(byProto[pp.Proto], pp.Port) {
					byProto[pp.Proto] = append(byProto[pp.Proto], pp.Port)
				}
			}
		}
		if len(byProto) == 0 {
			out.Warnings = append(out.Warnings, fmt.Sprintf("%s: named port %q not found on any peer", where, ps.name))
		}
		for _, proto := range slices.Sorted(func(yield func(uint8) bool) {
			for p := range byProto {
				if !yield(p) {
					return
				}
			}
		}) {
			ports := byProto[proto]
			if len(ports) > 1 {
				slices.Sort(ports)
				out.Warnings = append(out.Warnings, fmt.Sprintf("%s: named port %q is ambiguous for %s (ports %v): ignored", where, ps.name, ProtoName(proto), ports))
				continue
			}
			pp := PortProto{Port: ports[0], Proto: proto}
			res = append(res, resolvedPorts{desc: fmt.Sprintf("%s(%s)", ps.desc, pp), proto: proto, blocks: []PortBlock{{pp.Port, 16}}})
		}
	}
	return res
}

type pending struct {
	allow, deny []RuleRef
}

type builder struct {
	entries map[Key]*pending
}

func (b *builder) add(k Key, deny bool, ref RuleRef) {
	p := b.entries[k]
	if p == nil {
		p = &pending{}
		b.entries[k] = p
	}
	if deny {
		p.deny = append(p.deny, ref)
	} else {
		p.allow = append(p.allow, ref)
	}
}

func refs(rs []RuleRef) []RuleRef {
	slices.SortFunc(rs, compareRef)
	return slices.Compact(rs)
}

// ancestors calls fn with the keys strictly wider than k in the same
// identity group, narrowest first, until fn returns false. bitsUsed[proto]
// has bit b set when some key of that protocol has PortBits b (to skip
// lengths that cannot exist).
func ancestors(k Key, bitsUsed map[uint8]uint32, fn func(Key) bool) {
	if k.Proto == ProtoAny {
		return
	}
	used := bitsUsed[k.Proto]
	for b := int(k.PortBits) - 1; b >= 0; b-- {
		if used&(1<<b) == 0 {
			continue
		}
		if !fn(Key{Identity: k.Identity, Egress: k.Egress, Proto: k.Proto, Port: maskPort(k.Port, uint8(b)), PortBits: uint8(b)}) {
			return
		}
	}
	fn(Key{Identity: k.Identity, Egress: k.Egress})
}

// finish turns the pending entries into the minimal entry set:
//  1. an allow covered by a deny of the same identity group (same key, or a
//     wider protocol/port) is overridden: inside one group the LPM would
//     otherwise prefer the narrower allow;
//  2. an entry whose nearest wider entry of its group has the same verdict
//     is redundant (the LPM falls back to that entry), and so is an entry of
//     a specific identity covered by a wildcard-identity entry with the same
//     verdict (the datapath consults both groups: a wildcard deny already
//     denies; under a wildcard allow, the identity group cannot deny
//     because of step 1).
func (b *builder) finish(out *EndpointPolicy) {
	bitsUsed := map[uint8]uint32{}
	for k := range b.entries {
		bitsUsed[k.Proto] |= 1 << k.PortBits
	}
	isDeny := func(k Key) bool {
		p := b.entries[k]
		return p != nil && len(p.deny) > 0
	}
	// Step 1.
	overridden := map[Key]bool{}
	for k, p := range b.entries {
		if len(p.allow) == 0 {
			continue
		}
		covered := len(p.deny) > 0
		if !covered {
			ancestors(k, bitsUsed, func(a Key) bool {
				covered = isDeny(a)
				return !covered
			})
		}
		if covered {
			out.Overridden = append(out.Overridden, Entry{Key: k, Derived: refs(p.allow)})
			overridden[k] = true
		}
	}
	// inS: the entry survives step 1; verdict: its deny flag.
	inS := func(k Key) (deny, ok bool) {
		p := b.entries[k]
		if p == nil || (len(p.deny) == 0 && overridden[k]) {
			return false, false
		}
		return len(p.deny) > 0, true
	}
	// Step 2.
	for k, p := range b.entries {
		deny, ok := inS(k)
		if !ok {
			continue
		}
		redundant := false
		ancestors(k, bitsUsed, func(a Key) bool {
			if d, ok := inS(a); ok {
				redundant = d == deny
				return false
			}
			return true
		})
		if !redundant && k.Identity != 0 {
			w := k
			w.Identity = 0
			if d, ok := inS(w); ok && d == deny {
				redundant = true
			}
			if !redundant {
				ancestors(w, bitsUsed, func(a Key) bool {
					if d, ok := inS(a); ok && d == deny {
						redundant = true
					}
					return !redundant
				})
			}
		}
		en := Entry{Key: k, Deny: deny}
		if deny {
			en.Derived = refs(p.deny)
		} else {
			en.Derived = refs(p.allow)
		}
		if redundant {
			out.Shadowed = append(out.Shadowed, en)
		} else {
			out.Entries = append(out.Entries, en)
		}
	}
	for _, l := range [][]Entry{out.Entries, out.Shadowed, out.Overridden} {
		slices.SortFunc(l, func(a, b Entry) int { return compareKey(a.Key, b.Key) })
	}
}
