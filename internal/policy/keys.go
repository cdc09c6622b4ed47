package policy

// The policy map's keys and entries as the engine computes them, and their
// ordering.

import (
	"cmp"
	"fmt"
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
