package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Verdict is the datapath's decision for one packet.
type Verdict struct {
	Allowed bool
	// Reason: "not enforced", "allowed", "denied" (a deny entry matched) or
	// "default deny" (the direction is enforced and nothing matched).
	Reason string
	// Matched are the entries the two lookups found: the peer identity's
	// first, then the wildcard identity's.
	Matched []Entry
}

// lpm is one longest-prefix-match lookup among the entries of one identity
// group: direction exact, protocol exact beats protocol any, then the
// longest port prefix containing the port. On a (malformed) duplicate key
// the deny wins. entries must be sorted as Compute sorts them.
func lpm(entries []Entry, identity uint32, egress bool, proto uint8, port uint16) (Entry, bool) {
	// Entries are sorted by (egress, identity, ...): find the group.
	group := func(e Entry) int { return cmp.Or(cmpBool(e.Egress, egress), cmp.Compare(e.Identity, identity)) }
	lo, _ := slices.BinarySearchFunc(entries, 0, func(e Entry, _ int) int {
		if group(e) < 0 {
			return -1
		}
		return 1
	})
	best, bestLen := -1, -1
	for i := lo; i < len(entries) && group(entries[i]) == 0; i++ {
		e := entries[i]
		if !e.contains(proto, port) {
			continue
		}
		l := 0
		if e.Proto != ProtoAny {
			l = 1 + int(e.PortBits)
		}
		if l > bestLen || (l == bestLen && e.Deny && !entries[best].Deny) {
			best, bestLen = i, l
		}
	}
	if best < 0 {
		return Entry{}, false
	}
	return entries[best], true
}

// Lookup runs the datapath algorithm on an endpoint policy, for a packet
// from (ingress) or to (egress) a peer identity. If the direction is not
// enforced the packet is allowed. Otherwise one LPM lookup among the
// entries of the peer's identity and one among the wildcard (identity 0)
// entries: a deny from either denies, else an allow from either allows,
// else default deny. The BPF program implements the same.
func Lookup(ep *EndpointPolicy, identity uint32, egress bool, proto uint8, port uint16) Verdict {
	enforced := ep.IngressEnforced
	if egress {
		enforced = ep.EgressEnforced
	}
	if !enforced {
		return Verdict{Allowed: true, Reason: "not enforced"}
	}
	var v Verdict
	if e, ok := lpm(ep.Entries, identity, egress, proto, port); ok {
		v.Matched = append(v.Matched, e)
	}
	if identity != 0 {
		if e, ok := lpm(ep.Entries, 0, egress, proto, port); ok {
			v.Matched = append(v.Matched, e)
		}
	}
	for _, e := range v.Matched {
		if e.Deny {
			v.Reason = "denied"
			return v
		}
	}
	if len(v.Matched) > 0 {
		v.Allowed, v.Reason = true, "allowed"
		return v
	}
	v.Reason = "default deny"
	return v
}

// Explanation says why a packet is allowed or denied, from the same entries
// the datapath uses.
type Explanation struct {
	Verdict Verdict
	Peer    uint32
	Egress  bool
	Proto   uint8
	Port    uint16
	// Reason in one sentence: "allowed: no policy selects the endpoint",
	// "default deny: endpoint is enforced by NetworkPolicy shop/deny-all", ...
	Reason string
	// Rules that allow the packet (when allowed) or deny it (when a deny
	// matched): every rule whose entries cover the packet, not only the
	// entry the LPM picked.
	Rules []RuleRef
	// Overridden are allow rules covering the packet that a deny beat.
	Overridden []RuleRef
	EnforcedBy []string // policies enforcing this direction on the endpoint
	SelectedBy []string
	Warnings   []string // the endpoint policy's (unresolved named ports, ...)
}

// Allowed is the verdict.
func (x Explanation) Allowed() bool { return x.Verdict.Allowed }

func (x Explanation) String() string {
	var b strings.Builder
	b.WriteString(x.Reason)
	for _, r := range x.Rules {
		b.WriteString("\n  " + r.String())
	}
	if len(x.Overridden) > 0 {
		b.WriteString("\n  overridden allows:")
		for _, r := range x.Overridden {
			b.WriteString("\n  " + r.String())
		}
	}
	for _, w := range x.Warnings {
		b.WriteString("\n  warning: " + w)
	}
	return b.String()
}

// Explain explains the verdict of Lookup for one packet.
func (ep *EndpointPolicy) Explain(peer uint32, egress bool, proto uint8, port uint16) Explanation {
	v := Lookup(ep, peer, egress, proto, port)
	x := Explanation{Verdict: v, Peer: peer, Egress: egress, Proto: proto, Port: port, SelectedBy: ep.SelectedBy, Warnings: ep.Warnings}
	dir := "ingress"
	x.EnforcedBy = ep.IngressEnforcedBy
	if egress {
		dir = "egress"
		x.EnforcedBy = ep.EgressEnforcedBy
	}
	covers := func(e Entry) bool {
		return e.Egress == egress && (e.Identity == peer || e.Identity == 0) && e.contains(proto, port)
	}
	collect := func(deny bool, lists ...[]Entry) []RuleRef {
		var out []RuleRef
		for _, l := range lists {
			for _, e := range l {
				if e.Deny == deny && covers(e) {
					out = append(out, e.Derived...)
				}
			}
		}
		return refs(out)
	}
	switch v.Reason {
	case "not enforced":
		if len(ep.SelectedBy) == 0 {
			x.Reason = "allowed: no policy selects the endpoint"
		} else {
			x.Reason = fmt.Sprintf("allowed: %s not enforced: no rule selecting the endpoint has %s rules (selected by %s)",
				dir, dir, strings.Join(ep.SelectedBy, ", "))
		}
	case "allowed":
		x.Rules = collect(false, ep.Entries, ep.Shadowed)
		x.Reason = fmt.Sprintf("allowed by %d rule(s)", len(x.Rules))
	case "denied":
		x.Rules = collect(true, ep.Entries, ep.Shadowed)
		x.Overridden = collect(false, ep.Entries, ep.Shadowed, ep.Overridden)
		x.Reason = fmt.Sprintf("denied by %d deny rule(s)", len(x.Rules))
	default:
		x.Reason = "default deny: endpoint is enforced by " + strings.Join(x.EnforcedBy, ", ")
	}
	return x
}

// ExplainQuery asks about one packet between an endpoint and a peer.
type ExplainQuery struct {
	// Endpoint is the one whose policy decides: the destination for
	// ingress, the source for egress.
	Endpoint EndpointInfo
	Peer     uint32 // the other side's identity
	Egress   bool
	Proto    uint8
	Port     uint16
	Options  Options
}

// Explain computes the endpoint's policy and explains the packet's verdict.
func Explain(policies []*Policy, identities map[uint32]Labels, q ExplainQuery) (Explanation, error) {
	e, err := NewEngine(policies, identities, q.Options)
	if err != nil {
		return Explanation{}, err
	}
	ep, err := e.Compute(q.Endpoint)
	if err != nil {
		return Explanation{}, err
	}
	return ep.Explain(q.Peer, q.Egress, q.Proto, q.Port), nil
}

// Side is one end of a connection: a Lumen endpoint, whose policy applies,
// or only an identity (world, a CIDR, a remote node, a pod elsewhere).
type Side struct {
	Endpoint *EndpointInfo // nil: no local policy applies on this side
	Identity uint32        // used when Endpoint is nil
}

func (s Side) identity() uint32 {
	if s.Endpoint != nil {
		return s.Endpoint.Identity
	}
	return s.Identity
}

// ConnectionExplanation explains a connection from one side to the other:
// the source's egress policy and the destination's ingress policy must
// both allow it.
type ConnectionExplanation struct {
	Allowed bool
	Egress  *Explanation // the source endpoint's egress verdict; nil if the source is not an endpoint
	Ingress *Explanation // the destination endpoint's ingress verdict; nil if the destination is not an endpoint
}

func (c ConnectionExplanation) String() string {
	verdict := "denied"
	if c.Allowed {
		verdict = "allowed"
	}
	var b strings.Builder
	b.WriteString(verdict)
	if c.Egress != nil {
		b.WriteString("\negress at the source: " + c.Egress.String())
	}
	if c.Ingress != nil {
		b.WriteString("\ningress at the destination: " + c.Ingress.String())
	}
	return b.String()
}

// ExplainConnection explains a connection from one side to the other on
// proto/port (the destination port).
func (e *Engine) ExplainConnection(from, to Side, proto uint8, port uint16) (ConnectionExplanation, error) {
	c := ConnectionExplanation{Allowed: true}
	if from.Endpoint != nil {
		pol, err := e.Compute(*from.Endpoint)
		if err != nil {
			return c, err
		}
		x := pol.Explain(to.identity(), true, proto, port)
		c.Egress, c.Allowed = &x, x.Allowed()
	}
	if to.Endpoint != nil {
		pol, err := e.Compute(*to.Endpoint)
		if err != nil {
			return c, err
		}
		x := pol.Explain(from.identity(), false, proto, port)
		c.Ingress, c.Allowed = &x, c.Allowed && x.Allowed()
	}
	return c, nil
}
