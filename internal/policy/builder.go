package policy

// builder turns an endpoint's rules into the minimal set of policy map
// entries: derived keys, radix-sorted, pruned where a wider key decides the
// same.

import (
	"slices"
)

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
