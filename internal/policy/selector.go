package policy

import (
	"math/bits"
	"net/netip"
	"slices"
	"strings"
)

// Label selector operators.
const (
	opIn           = "In"
	opNotIn        = "NotIn"
	opExists       = "Exists"
	opDoesNotExist = "DoesNotExist"
)

// requirement is one normalized selector term: the source is explicit
// ("k8s", "reserved", ... or "any").
type requirement struct {
	source string
	key    string
	op     string
	values []string // sorted, deduplicated
}

func (r requirement) label() string { return r.source + ":" + r.key }

func (r requirement) String() string {
	switch r.op {
	case opIn:
		if len(r.values) == 1 {
			if r.values[0] == "" {
				return r.label()
			}
			return r.label() + "=" + r.values[0]
		}
		return r.label() + " in (" + strings.Join(r.values, ",") + ")"
	case opNotIn:
		return r.label() + " notin (" + strings.Join(r.values, ",") + ")"
	case opExists:
		return "has(" + r.label() + ")"
	default:
		return "!has(" + r.label() + ")"
	}
}

func (r requirement) matches(ls Labels) bool {
	found, in := false, false
	for _, l := range ls {
		if l.Key != r.key || (r.source != SourceAny && l.Source != r.source) {
			continue
		}
		found = true
		if slices.Contains(r.values, l.Value) {
			in = true
		}
	}
	switch r.op {
	case opIn:
		return in
	case opNotIn:
		return !in
	case opExists:
		return found
	default:
		return !found
	}
}

// selector is a conjunction of requirements; no requirement selects
// everything.
type selector struct {
	reqs []requirement // sorted by String
}

func newSelector(reqs ...requirement) *selector {
	s := &selector{}
	for _, r := range reqs {
		s.add(r)
	}
	return s
}

func (s *selector) add(r requirement) {
	r.values = slices.Compact(slices.Sorted(slices.Values(r.values)))
	s.reqs = append(s.reqs, r)
	slices.SortFunc(s.reqs, func(a, b requirement) int { return strings.Compare(a.String(), b.String()) })
	s.reqs = slices.CompactFunc(s.reqs, func(a, b requirement) bool { return a.String() == b.String() })
}

// hasKey reports whether some requirement is about key with source k8s or any.
func (s *selector) hasKey(key string) bool {
	for _, r := range s.reqs {
		if r.key == key && (r.source == SourceK8s || r.source == SourceAny) {
			return true
		}
	}
	return false
}

func (s *selector) hasSource(src string) bool {
	for _, r := range s.reqs {
		if r.source == src {
			return true
		}
	}
	return false
}

func (s *selector) hasKeyPrefix(prefix string) bool {
	for _, r := range s.reqs {
		if strings.HasPrefix(r.key, prefix) && (r.source == SourceK8s || r.source == SourceAny) {
			return true
		}
	}
	return false
}

func (s *selector) String() string {
	parts := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		parts[i] = r.String()
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func (s *selector) matches(ls Labels) bool {
	for _, r := range s.reqs {
		if !r.matches(ls) {
			return false
		}
	}
	return true
}

// bitset is a set of identity indexes (positions in identityIndex.ids).
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) set(i int)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i int) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) or(o bitset) {
	for i := range b {
		b[i] |= o[i]
	}
}
func (b bitset) and(o bitset) {
	for i := range b {
		b[i] &= o[i]
	}
}
func (b bitset) andNot(o bitset) {
	for i := range b {
		b[i] &^= o[i]
	}
}
func (b bitset) clone() bitset { return slices.Clone(b) }

func (b bitset) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// each calls fn for every member, in increasing order.
func (b bitset) each(fn func(i int)) {
	for w, word := range b {
		for word != 0 {
			t := bits.TrailingZeros64(word)
			fn(w*64 + t)
			word &= word - 1
		}
	}
}

// identityIndex answers selector queries over all identities at once.
type identityIndex struct {
	ids    []uint32 // sorted
	labels []Labels
	all    bitset
	world  bitset                       // identities with reserved:world
	byKey  map[string]map[string]bitset // "source:key" -> value -> identities
	anyKey map[string]map[string]bitset // "key" -> value -> identities (any source)
	cidrs  []cidrLabel
}

type cidrLabel struct {
	prefix netip.Prefix
	idx    int
}

func newIdentityIndex(identities map[uint32]Labels) *identityIndex {
	ix := &identityIndex{
		byKey:  map[string]map[string]bitset{},
		anyKey: map[string]map[string]bitset{},
	}
	for id := range identities {
		ix.ids = append(ix.ids, id)
	}
	slices.Sort(ix.ids)
	n := len(ix.ids)
	ix.all, ix.world = newBitset(n), newBitset(n)
	ix.labels = make([]Labels, n)
	add := func(m map[string]map[string]bitset, k, v string, i int) {
		vals := m[k]
		if vals == nil {
			vals = map[string]bitset{}
			m[k] = vals
		}
		b := vals[v]
		if b == nil {
			b = newBitset(n)
			vals[v] = b
		}
		b.set(i)
	}
	for i, id := range ix.ids {
		ls := identities[id]
		ix.labels[i] = ls
		ix.all.set(i)
		for _, l := range ls {
			add(ix.byKey, l.Source+":"+l.Key, l.Value, i)
			add(ix.anyKey, l.Key, l.Value, i)
			if l.Source == SourceReserved && l.Key == "world" {
				ix.world.set(i)
			}
			if l.Source == SourceCIDR {
				if p, ok := parseCIDRLabel(l.Key); ok {
					ix.cidrs = append(ix.cidrs, cidrLabel{p, i})
				}
			}
		}
	}
	return ix
}

func (ix *identityIndex) values(r requirement) map[string]bitset {
	if r.source == SourceAny {
		return ix.anyKey[r.key]
	}
	return ix.byKey[r.label()]
}

func (ix *identityIndex) eval(r requirement) bitset {
	out := newBitset(len(ix.ids))
	vals := ix.values(r)
	switch r.op {
	case opIn, opNotIn:
		for _, v := range r.values {
			if b, ok := vals[v]; ok {
				out.or(b)
			}
		}
	default:
		for _, b := range vals {
			out.or(b)
		}
	}
	if r.op == opNotIn || r.op == opDoesNotExist {
		neg := ix.all.clone()
		neg.andNot(out)
		return neg
	}
	return out
}

func (ix *identityIndex) selectLabels(s *selector) bitset {
	out := ix.all.clone()
	for _, r := range s.reqs {
		out.and(ix.eval(r))
	}
	return out
}
