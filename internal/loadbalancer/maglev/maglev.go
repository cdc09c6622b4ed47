// Package maglev builds Maglev consistent-hashing lookup tables (Eisenbud
// et al., "Maglev: A Fast and Reliable Software Network Load Balancer",
// NSDI 2016), as Cilium's kube-proxy replacement uses them: every node
// builds the same table from the same backends, table size and seed, so a
// flow reaches the same backend whichever node it enters, and removing a
// backend moves few flows besides its own.
package maglev

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"slices"
)

// DefaultTableSize is Cilium's default M.
const DefaultTableSize = 16381

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
// on the order of backends. Keys must be distinct.
func Table(backends []string, m uint64, seed string) ([]int, error) {
	return WeightedTable(backends, nil, m, seed)
}

// WeightedTable is Table with weights: a backend's share of the slots is
// proportional to its weight; weight 0 gives it none. nil weights means
// all equal.
//
// Each backend gets a permutation of the slots, starting at offset
// h1(key) mod m with step skip = h2(key) mod (m-1) + 1, both hashes taken
// from SHA-256 of seed, a zero byte and key. Backends take turns in key
// order, each claiming the next slot of its permutation still free. With
// weights, in round r a backend of weight w takes
// floor((r+1)*w/W) - floor(r*w/W) turns, W the largest weight, so the
// heaviest backend takes one per round and the others proportionally.
func WeightedTable(backends []string, weights []uint32, m uint64, seed string) ([]int, error) {
	if weights != nil && len(weights) != len(backends) {
		return nil, fmt.Errorf("maglev: %d weights for %d backends", len(weights), len(backends))
	}
	if err := ValidateTableSize(m, len(backends)); err != nil {
		return nil, err
	}
	// Key order makes the table independent of the input order.
	order := make([]int, len(backends))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		switch {
		case backends[a] < backends[b]:
			return -1
		case backends[a] > backends[b]:
			return 1
		}
		return 0
	})
	for i := 1; i < len(order); i++ {
		if backends[order[i]] == backends[order[i-1]] {
			return nil, fmt.Errorf("maglev: backend %q is listed twice", backends[order[i]])
		}
	}
	type perm struct {
		index       int    // in backends
		pos, skip   uint64 // next slot of its permutation, step
		weight      uint64
		prevCredits uint64 // floor(r*w/W) of the previous round
	}
	perms := make([]perm, 0, len(order))
	var wmax uint64
	for _, i := range order {
		w := uint64(1)
		if weights != nil {
			w = uint64(weights[i])
		}
		if w == 0 {
			continue
		}
		wmax = max(wmax, w)
		h := sha256.Sum256(append(append([]byte(seed), 0), backends[i]...))
		perms = append(perms, perm{
			index:  i,
			pos:    binary.LittleEndian.Uint64(h[0:8]) % m,
			skip:   binary.LittleEndian.Uint64(h[8:16])%(m-1) + 1,
			weight: w,
		})
	}
	table := make([]int, m)
	for i := range table {
		table[i] = -1
	}
	if len(perms) == 0 {
		if len(backends) > 0 {
			return nil, errors.New("maglev: every backend has weight 0")
		}
		return table, nil
	}
	filled := uint64(0)
	for round := uint64(0); ; round++ {
		for j := range perms {
			p := &perms[j]
			turns := uint64(1)
			if p.weight != wmax {
				credits := (round + 1) * p.weight / wmax
				turns = credits - p.prevCredits
				p.prevCredits = credits
			}
			for ; turns > 0; turns-- {
				for table[p.pos] >= 0 {
					p.pos += p.skip
					if p.pos >= m {
						p.pos -= m
					}
				}
				table[p.pos] = p.index
				filled++
				if filled == m {
					return table, nil
				}
			}
		}
	}
}
