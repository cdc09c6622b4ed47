// Package maglev builds Maglev consistent-hashing lookup tables (Eisenbud
// et al., "Maglev: A Fast and Reliable Software Network Load Balancer",
// NSDI 2016), as Cilium's kube-proxy replacement uses them: every node
// builds the same table from the same backends, table size and seed, so a
// flow reaches the same backend whichever node it enters, and removing a
// backend moves few flows besides its own.
//
// # Permutations
//
// As in the paper, every backend has a permutation of the M slots (M
// prime): it starts at offset h1 mod M and steps by skip = h2 mod (M-1) + 1,
// h1 and h2 taken from SHA-256 of the seed, a zero byte and the backend's
// key. The position of a slot in a backend's permutation is the backend's
// preference for it ("depth": 0 is its favourite slot).
//
// # Fill: by depth with exact quotas (differs from the paper)
//
// The paper fills round-robin: in each round every backend claims the next
// slot of its permutation still free, however deep it has to look. Near the
// end of the fill the last free slots are scattered, backends claim slots
// very deep in their permutations, and who gets which depends on every
// earlier claim: removing one of 100 backends at M = 16381 moves 1.2-1.6 %
// of the slots the removed backend did not own, above the 1 % we promise.
//
// Here every backend first gets a quota: M split in proportion to the
// weights by largest remainder (equal weights: floor(M/N) or ceil(M/N)),
// the leftover slots going to the backends first in rank order (rank:
// another 64 bits of the same SHA-256, so the input order does not matter
// and removing a backend does not reorder the others). Then all backends walk their
// permutations together: step k of a backend of weight w happens at time
// k/w (equal weights: depth k, all backends side by side), ties heavier
// first, then in rank order; at each step the backend takes the slot if it
// is still free, and it stops once it holds its quota.
//
// A slot thus goes to the backend that prefers it most (lowest depth, for
// equal weights) among those not yet full when they reach it: the result
// is the backend-optimal stable assignment of slots to backends under these
// quotas (deferred acceptance, each slot preferring the backend that
// reaches it first), in which each backend keeps its earliest permutation
// positions. When a backend is
// removed, its slots go to the backends that prefer them most; other slots
// move only to even out the quotas (each remaining backend needs one or two
// more slots while the freed slots land on them unevenly). Measured over 20
// seeds, each of 100 backends removed in turn, M = 16381: 0.63 % of the
// other slots move on average, 0.86 % at worst (paper's fill: 1.32 %,
// 1.55 %; the tests keep the paper's fill to compare). Building costs about
// the same as the paper's fill (both look at 8-10 slots per table entry,
// most of them hunting the last free slots): 1.4 ms of CPU for 1000
// backends at M = 16381. Weights cost little when few distinct weights
// exist (backends of one weight step together); 1000 distinct weights
// take about 10 ms there.
package maglev

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/lumen-net/lumen/internal/bpfconst"
)

// DefaultTableSize is Cilium's default M.
const DefaultTableSize = bpfconst.MaglevTableSize

// MaxTableSize bounds M (a table is M ints; Cilium's largest is 131071).
const MaxTableSize = 1<<24 - 3 // 16777213, the largest prime below 2^24

// DefaultSeed is used when no seed is configured; every node of a cluster
// must use the same seed.
const DefaultSeed = "lumen-maglev-v1"

// ValidateTableSize checks that m is a prime larger than the number of
// backends (the permutation needs a prime; the table must give every
// backend a slot). Cilium recommends m >= 100 * backends for low
// disruption.
func ValidateTableSize(m uint64, backends int) error {
	switch {
	case m < 2 || !new(big.Int).SetUint64(m).ProbablyPrime(0):
		return fmt.Errorf("maglev table size %d: must be a prime number (e.g. 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)", m)
	case m > MaxTableSize:
		return fmt.Errorf("maglev table size %d: must be at most %d", m, MaxTableSize)
	case uint64(backends) >= m:
		return fmt.Errorf("maglev table size %d: must be larger than the number of backends (%d)", m, backends)
	}
	return nil
}

// Table returns the lookup table of size m for the backends, identified by
// stable keys (e.g. "10.0.0.5:80/TCP"): entry i is the index in backends of
// the backend flows hashing to i go to, -1 for every entry when there are
// no backends. The table depends only on the set of keys, m and seed, not
// on the order of backends; every backend gets floor(m/n) or ceil(m/n)
// entries. Keys must be distinct.
func Table(backends []string, m uint64, seed string) ([]int, error) {
	return WeightedTable(backends, nil, m, seed)
}

// WeightedTable is Table with weights: a backend gets floor or ceil of
// m*weight/sum(weights) entries (so none when that is below one, and none
// for weight 0). nil weights means all equal. The package comment describes the algorithm.
func WeightedTable(backends []string, weights []uint32, m uint64, seed string) ([]int, error) {
	if weights != nil && len(weights) != len(backends) {
		return nil, fmt.Errorf("maglev: %d weights for %d backends", len(weights), len(backends))
	}
	if err := ValidateTableSize(m, len(backends)); err != nil {
		return nil, err
	}
	table := make([]int, m)
	for i := range table {
		table[i] = -1
	}
	bs, err := backendsOf(backends, weights, m, seed)
	if err != nil {
		return nil, err
	}
	if len(bs) == 0 {
		return table, nil
	}
	setQuotas(bs, m)
	fill(bs, table)
	return table, nil
}

// backend is one backend's state during the fill.
type backend struct {
	index       int    // in the caller's slice
	rank        uint64 // tie-breaker, from the key's hash
	pos, skip   uint64 // next slot of its permutation, step
	weight      uint64
	quota, held uint64
}

// backendsOf returns the backends of non-zero weight in rank order,
// checking that keys are distinct.
func backendsOf(keys []string, weights []uint32, m uint64, seed string) ([]backend, error) {
	bs := make([]backend, 0, len(keys))
	for i, key := range keys {
		w := uint64(1)
		if weights != nil {
			w = uint64(weights[i])
		}
		h := sha256.Sum256(append(append([]byte(seed), 0), key...))
		bs = append(bs, backend{
			index:  i,
			pos:    binary.LittleEndian.Uint64(h[0:8]) % m,
			skip:   binary.LittleEndian.Uint64(h[8:16])%(m-1) + 1,
			rank:   binary.LittleEndian.Uint64(h[16:24]),
			weight: w,
		})
	}
	// Rank order (then key order, for a total order) makes the table
	// independent of the input order; duplicates end up next to each other.
	slices.SortFunc(bs, func(a, b backend) int {
		if c := cmpUint(a.rank, b.rank); c != 0 {
			return c
		}
		return strings.Compare(keys[a.index], keys[b.index])
	})
	for i := 1; i < len(bs); i++ {
		if keys[bs[i].index] == keys[bs[i-1].index] {
			return nil, fmt.Errorf("maglev: backend %q is listed twice", keys[bs[i].index])
		}
	}
	bs = slices.DeleteFunc(bs, func(b backend) bool { return b.weight == 0 })
	if len(bs) == 0 && len(keys) > 0 {
		return nil, errors.New("maglev: every backend has weight 0")
	}
	return bs, nil
}

// setQuotas splits m among the backends in proportion to their weights by
// largest remainder, ties in rank order (bs is sorted by rank). m*w fits in
// 64 bits: m < 2^24, w < 2^32.
func setQuotas(bs []backend, m uint64) {
	var sum uint64
	for _, b := range bs {
		sum += b.weight
	}
	left := m
	for i := range bs {
		bs[i].quota = m * bs[i].weight / sum
		left -= bs[i].quota
	}
	if left == 0 {
		return
	}
	order := make([]int, len(bs))
	for i := range order {
		order[i] = i
	}
	// Stable: equal remainders keep rank order.
	slices.SortStableFunc(order, func(a, b int) int {
		return cmpUint(m*bs[b].weight%sum, m*bs[a].weight%sum)
	})
	for _, i := range order[:left] {
		bs[i].quota++
	}
}

// step lets b look at the next slot of its permutation and take it if it is
// free; it reports whether b holds its quota.
func step(b *backend, table []int) bool {
	m := uint64(len(table))
	if table[b.pos] < 0 {
		table[b.pos] = b.index
		b.held++
	}
	b.pos += b.skip
	if b.pos >= m {
		b.pos -= m
	}
	return b.held >= b.quota
}

// class is the backends of one weight still short of their quota, in rank
// order; they step in lockstep.
type class struct {
	weight uint64
	active []*backend
}

// fill takes the steps of all backends in order of time steps/weight, ties
// heavier first, then in rank order. Backends of equal weight step
// together, so it keeps a binary min-heap of weight classes and lets every
// backend of the earliest class take one step (equal weights: one class,
// every backend steps once per pass). A backend never looks at more than m
// slots (a slot, once taken, stays taken, and one is free while a backend is
// short of its quota), so steps*weight < 2^24 * 2^32 fits in 64 bits.
func fill(bs []backend, table []int) {
	var classes []*class
	byWeight := map[uint64]*class{}
	for i := range bs { // rank order
		b := &bs[i]
		if b.quota == 0 {
			continue
		}
		c := byWeight[b.weight]
		if c == nil {
			c = &class{weight: b.weight}
			byWeight[b.weight] = c
			classes = append(classes, c)
		}
		c.active = append(c.active, b)
	}
	// All at time 0: heaviest first is a valid heap.
	slices.SortFunc(classes, func(a, b *class) int { return cmpUint(b.weight, a.weight) })
	// The heap holds each class's time (steps/weight) inline, so sifting
	// does not chase pointers.
	type entry struct {
		steps, weight uint64
		c             *class
	}
	less := func(a, b *entry) bool {
		ta, tb := a.steps*b.weight, b.steps*a.weight
		return ta < tb || ta == tb && a.weight > b.weight
	}
	heap := make([]entry, len(classes))
	for i, c := range classes {
		heap[i] = entry{weight: c.weight, c: c}
	}
	for len(heap) > 0 {
		top := heap[0]
		c := top.c
		k := 0
		for _, b := range c.active {
			if !step(b, table) {
				c.active[k] = b
				k++
			}
		}
		c.active = c.active[:k]
		top.steps++
		if k == 0 {
			top = heap[len(heap)-1]
			heap = heap[:len(heap)-1]
			if len(heap) == 0 {
				break
			}
		}
		// Sift top down from the root.
		i := 0
		for {
			j := 2*i + 1
			if j >= len(heap) {
				break
			}
			if j+1 < len(heap) && less(&heap[j+1], &heap[j]) {
				j++
			}
			if !less(&heap[j], &top) {
				break
			}
			heap[i] = heap[j]
			i = j
		}
		heap[i] = top
	}
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
