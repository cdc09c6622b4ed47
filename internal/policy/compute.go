package policy

import (
	"cmp"
	"fmt"
	"maps"
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

// builder collects (key, verdict, rule) additions; finish sorts them, so
// there is no map per key.
type builder struct {
	adds   []addition
	refs   []RuleRef
	refIdx map[RuleRef]int32
}

type addition struct {
	key  uint64 // packKey: sorts like compareKey
	deny bool
	ref  int32
}

// ref interns a RuleRef.
func (b *builder) ref(r RuleRef) int32 {
	if i, ok := b.refIdx[r]; ok {
		return i
	}
	i := int32(len(b.refs))
	b.refs = append(b.refs, r)
	b.refIdx[r] = i
	return i
}

func (b *builder) add(k Key, deny bool, ref int32) {
	b.adds = append(b.adds, addition{key: packKey(k), deny: deny, ref: ref})
}

// packKey encodes a key in 62 bits, ordered like compareKey.
func packKey(k Key) uint64 {
	var eg uint64
	if k.Egress {
		eg = 1
	}
	return eg<<61 | uint64(k.Identity)<<29 | uint64(k.Proto)<<21 | uint64(k.Port)<<5 | uint64(k.PortBits&31)
}

func unpackKey(p uint64) Key {
	return Key{Egress: p>>61 != 0, Identity: uint32(p >> 29), Proto: uint8(p >> 21), Port: uint16(p >> 5), PortBits: uint8(p & 31)}
}

// derived returns the sorted, deduplicated rules of a run of additions.
func (b *builder) derived(adds []addition) []RuleRef {
	if len(adds) == 1 {
		return []RuleRef{b.refs[adds[0].ref]}
	}
	out := make([]RuleRef, len(adds))
	for i, a := range adds {
		out[i] = b.refs[a.ref]
	}
	return refs(out)
}

// radixSort sorts additions by key (LSD, one byte per pass, skipping bytes
// all keys share): the additions are many and the keys are integers.
func radixSort(a []addition) {
	if len(a) < 2 {
		return
	}
	tmp := make([]addition, len(a))
	src, dst := a, tmp
	for shift := uint(0); shift < 64; shift += 8 {
		var count [257]int
		for _, x := range src {
			count[(x.key>>shift)&0xff+1]++
		}
		if count[(src[0].key>>shift)&0xff+1] == len(src) {
			continue
		}
		for i := 1; i < len(count); i++ {
			count[i] += count[i-1]
		}
		for _, x := range src {
			d := (x.key >> shift) & 0xff
			dst[count[d]] = x
			count[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &a[0] {
		copy(a, src)
	}
}

func refs(rs []RuleRef) []RuleRef {
	slices.SortFunc(rs, compareRef)
	return slices.Compact(rs)
}

// node is one key during finish.
type node struct {
	key           Key
	lo, split, hi int32 // its additions: allows in [lo, split), denies in [split, hi)
	sAnc          int32 // nearest wider entry of the group that survives, or -1
	inS           bool  // survives overriding (a deny, or an allow no deny covers)
	denyAbove     bool  // some wider entry of the group is a deny
	// Identity-0 entries only: a surviving allow / deny at or above.
	allowAtOrAbove, denyAtOrAbove bool
}

// containsKey reports whether a's protocol/port space contains b's (same
// identity group assumed).
func containsKey(a, b Key) bool {
	if a.Proto == ProtoAny {
		return true
	}
	return a.Proto == b.Proto && a.PortBits <= b.PortBits && maskPort(b.Port, a.PortBits) == a.Port
}

// finish turns the additions into the minimal entry set:
//  1. an allow covered by a deny of the same identity group (same key, or a
//     wider protocol/port) is overridden: inside one group the LPM would
//     otherwise prefer the narrower allow;
//  2. an entry whose nearest wider surviving entry of its group has the
//     same verdict is redundant (the LPM falls back to that entry), and so
//     is an entry of a specific identity covered by a surviving
//     wildcard-identity entry with the same verdict (the datapath consults
//     both groups: a wildcard deny already denies; under a wildcard allow,
//     the identity group cannot deny because of step 1).
//
// Keys sorted by (egress, identity, proto, port, bits) list every port
// prefix right before the prefixes it contains, so one pass with a stack
// finds each entry's nearest wider entry.
func (b *builder) finish(out *EndpointPolicy) {
	radixSort(b.adds)
	distinct := 0
	for i, a := range b.adds {
		if i == 0 || a.key != b.adds[i-1].key {
			distinct++
		}
	}
	nodes := make([]node, 0, distinct)
	for i := 0; i < len(b.adds); {
		j := i
		for j < len(b.adds) && b.adds[j].key == b.adds[i].key {
			j++
		}
		// Allows first, then denies.
		run := b.adds[i:j]
		split := i
		for x := range run {
			if !run[x].deny {
				run[x], run[split-i] = run[split-i], run[x]
				split++
			}
		}
		nodes = append(nodes, node{key: unpackKey(b.adds[i].key), lo: int32(i), split: int32(split), hi: int32(j), sAnc: -1})
		i = j
	}

	type protoGroup struct {
		egress bool
		proto  uint8
	}
	wild := map[Key]int32{}             // identity-0 entries
	wildBits := map[protoGroup]uint32{} // their port prefix lengths
	wildRoot := map[bool]int32{}        // identity-0 any-protocol entry per direction
	root := int32(-1)                   // current group's any-protocol entry
	var stack []int32
	for i := range nodes {
		n := &nodes[i]
		k := n.key
		if i == 0 || k.Egress != nodes[i-1].key.Egress || k.Identity != nodes[i-1].key.Identity {
			root, stack = -1, stack[:0]
		}
		parent := int32(-1)
		if k.Proto == ProtoAny {
			root = int32(i)
		} else {
			for len(stack) > 0 && !containsKey(nodes[stack[len(stack)-1]].key, k) {
				stack = stack[:len(stack)-1]
			}
			parent = root
			if len(stack) > 0 {
				parent = stack[len(stack)-1]
			}
		}
		deny := n.hi > n.split
		if parent >= 0 {
			p := &nodes[parent]
			n.denyAbove = p.hi > p.split || p.denyAbove
			n.sAnc = p.sAnc
			if p.inS {
				n.sAnc = parent
			}
		}
		n.inS = deny || !n.denyAbove
		if n.split > n.lo && (deny || !n.inS) {
			out.Overridden = append(out.Overridden, Entry{Key: k, Derived: b.derived(b.adds[n.lo:n.split])})
		}
		if k.Identity == 0 {
			n.allowAtOrAbove = n.inS && !deny
			n.denyAtOrAbove = deny
			if parent >= 0 {
				n.allowAtOrAbove = n.allowAtOrAbove || nodes[parent].allowAtOrAbove
				n.denyAtOrAbove = n.denyAtOrAbove || nodes[parent].denyAtOrAbove
			}
			wild[k] = int32(i)
			if k.Proto == ProtoAny {
				wildRoot[k.Egress] = int32(i)
			} else {
				wildBits[protoGroup{k.Egress, k.Proto}] |= 1 << k.PortBits
			}
		}
		if k.Proto != ProtoAny {
			stack = append(stack, int32(i))
		}
		if !n.inS {
			continue
		}
		redundant := n.sAnc >= 0 && (nodes[n.sAnc].hi > nodes[n.sAnc].split) == deny
		if !redundant && k.Identity != 0 {
			// The nearest identity-0 entry containing k, then its flags.
			w, found := int32(-1), false
			if k.Proto != ProtoAny {
				used := wildBits[protoGroup{k.Egress, k.Proto}]
				for bits := int(k.PortBits); bits >= 0 && !found; bits-- {
					if used&(1<<bits) != 0 {
						w, found = wild[Key{Egress: k.Egress, Proto: k.Proto, Port: maskPort(k.Port, uint8(bits)), PortBits: uint8(bits)}]
					}
				}
			}
			if !found {
				w, found = wildRoot[k.Egress]
			}
			redundant = found && ((deny && nodes[w].denyAtOrAbove) || (!deny && nodes[w].allowAtOrAbove))
		}
		en := Entry{Key: k, Deny: deny}
		if deny {
			en.Derived = b.derived(b.adds[n.split:n.hi])
		} else {
			en.Derived = b.derived(b.adds[n.lo:n.split])
		}
		if redundant {
			out.Shadowed = append(out.Shadowed, en)
		} else {
			out.Entries = append(out.Entries, en)
		}
	}
}
