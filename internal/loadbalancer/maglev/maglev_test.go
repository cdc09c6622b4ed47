package maglev

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.%d.%d.%d:80/TCP", i>>16&255, i>>8&255, i&255)
	}
	return out
}

func mustTable(t testing.TB, backends []string, weights []uint32, m uint64, seed string) []int {
	t.Helper()
	tbl, err := WeightedTable(backends, weights, m, seed)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// owners maps a table of indices to keys.
func owners(tbl []int, backends []string) []string {
	out := make([]string, len(tbl))
	for i, b := range tbl {
		out[i] = backends[b]
	}
	return out
}

func TestDeterministicAndOrderIndependent(t *testing.T) {
	b := keys(50)
	t1 := mustTable(t, b, nil, DefaultTableSize, DefaultSeed)
	t2 := mustTable(t, slices.Clone(b), nil, DefaultTableSize, DefaultSeed)
	if !slices.Equal(t1, t2) {
		t.Fatal("same input, different tables")
	}
	// Pinned: the first entries for this input never change (every node,
	// every version must agree).
	if got, want := fmt.Sprint(owners(t1, b)[:3]), "[10.0.0.48:80/TCP 10.0.0.0:80/TCP 10.0.0.35:80/TCP]"; got != want {
		t.Errorf("first entries %s, want %s (the hash or the algorithm changed)", got, want)
	}
	shuffled := slices.Clone(b)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	t3 := mustTable(t, shuffled, nil, DefaultTableSize, DefaultSeed)
	if !slices.Equal(owners(t1, b), owners(t3, shuffled)) {
		t.Error("input order changed the table")
	}
	t4 := mustTable(t, b, nil, DefaultTableSize, "another seed")
	same := 0
	for i := range t1 {
		if t1[i] == t4[i] {
			same++
		}
	}
	if same > len(t1)/10 {
		t.Errorf("a different seed kept %d of %d slots", same, len(t1))
	}
}

// paperTable is Pseudocode 1 of the Maglev paper written out literally
// (permutation[i][j] = (offset + j*skip) mod M, backends in key order), as
// an oracle for Table's incremental version.
func paperTable(backends []string, m uint64, seed string) []int {
	sorted := slices.Clone(backends)
	slices.Sort(sorted)
	index := map[string]int{}
	for i, b := range backends {
		index[b] = i
	}
	n := len(sorted)
	offset, skip := make([]uint64, n), make([]uint64, n)
	for i, b := range sorted {
		h := sha256.Sum256([]byte(seed + "\x00" + b))
		offset[i] = binary.LittleEndian.Uint64(h[0:8]) % m
		skip[i] = binary.LittleEndian.Uint64(h[8:16])%(m-1) + 1
	}
	next := make([]uint64, n)
	entry := make([]int, m)
	for j := range entry {
		entry[j] = -1
	}
	filled := uint64(0)
	for {
		for i := range n {
			c := (offset[i] + next[i]*skip[i]) % m
			for entry[c] >= 0 {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % m
			}
			entry[c] = index[sorted[i]]
			next[i]++
			filled++
			if filled == m {
				return entry
			}
		}
	}
}

func TestMatchesPaper(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, m := range []uint64{251, 4093, DefaultTableSize} {
		for _, n := range []int{1, 7, 250} {
			if uint64(n) >= m {
				continue
			}
			b := keys(1000)
			r.Shuffle(len(b), func(i, j int) { b[i], b[j] = b[j], b[i] })
			b = b[:n]
			if got, want := mustTable(t, b, nil, m, "seed"), paperTable(b, m, "seed"); !slices.Equal(got, want) {
				t.Errorf("m=%d n=%d: table differs from the paper's algorithm", m, n)
			}
		}
	}
}

func TestBalance(t *testing.T) {
	for _, n := range []int{1, 2, 3, 100, 1000} {
		for _, m := range []uint64{DefaultTableSize, 65521} {
			tbl := mustTable(t, keys(n), nil, m, DefaultSeed)
			counts := make([]int, n)
			for _, b := range tbl {
				if b < 0 || b >= n {
					t.Fatalf("n=%d m=%d: entry %d", n, m, b)
				}
				counts[b]++
			}
			// Every round gives each backend one slot until the table is
			// full, so counts differ by at most one.
			lo, hi := int(m)/n, (int(m)+n-1)/n
			if mn, mx := slices.Min(counts), slices.Max(counts); mn < lo || mx > hi {
				t.Errorf("n=%d m=%d: slots per backend %d..%d, want %d..%d", n, m, mn, mx, lo, hi)
			}
		}
	}
}

// disruption removes backend `gone` of n and returns the share of slots
// that changed owner although their owner was not the removed backend, and
// the removed backend's share.
func disruption(t *testing.T, n, gone int, m uint64, seed string) (extra, own float64) {
	b := keys(n)
	before := owners(mustTable(t, b, nil, m, seed), b)
	rest := slices.Delete(slices.Clone(b), gone, gone+1)
	after := owners(mustTable(t, rest, nil, m, seed), rest)
	moved, owned := 0, 0
	for i := range before {
		switch {
		case before[i] == b[gone]:
			owned++
		case before[i] != after[i]:
			moved++
		}
	}
	return float64(moved) / float64(m), float64(owned) / float64(m)
}

// The brief asks that at most 1% of the slots not owned by the removed
// backend change owner when one of 100 backends goes. The paper's
// algorithm gets there from m = 32749 (m ~ 330 n); at Cilium's default
// m = 16381 (m ~ 164 n) it moves 1.2-1.5% of the other slots, inherent to
// its round-robin fill (the table fills up slower at the end, and a freed
// slot lets the cascade start earlier). Both figures are logged.
func TestDisruption(t *testing.T) {
	for _, tc := range []struct {
		m     uint64
		bound float64
	}{{DefaultTableSize, 0.015}, {32749, 0.01}, {65521, 0.01}} {
		worst := 0.0
		for _, seed := range []string{DefaultSeed, "s1", "s2"} {
			for _, gone := range []int{0, 37, 99} {
				extra, own := disruption(t, 100, gone, tc.m, seed)
				t.Logf("m=%d seed %q, remove #%d of 100: removed backend's slots %.2f%%, other slots moved %.2f%%, total %.2f%%",
					tc.m, seed, gone, own*100, extra*100, (own+extra)*100)
				worst = max(worst, extra)
				if own < 0.0099 || own > 0.0101 {
					t.Errorf("the removed backend owned %.2f%% of the slots, want 1%%", own*100)
				}
			}
		}
		t.Logf("m=%d: worst share of other slots moved %.2f%%", tc.m, worst*100)
		if worst > tc.bound {
			t.Errorf("m=%d: up to %.2f%% of the other slots moved, want <= %.1f%%", tc.m, worst*100, tc.bound*100)
		}
	}
}

func TestWeights(t *testing.T) {
	b := keys(4)
	w := []uint32{1, 2, 4, 0}
	tbl := mustTable(t, b, w, 16381, DefaultSeed)
	counts := make([]int, 4)
	for _, x := range tbl {
		counts[x]++
	}
	if counts[3] != 0 {
		t.Errorf("weight 0 got %d slots", counts[3])
	}
	for i, want := range []float64{1.0 / 7, 2.0 / 7, 4.0 / 7} {
		if got := float64(counts[i]) / 16381; got < want-0.005 || got > want+0.005 {
			t.Errorf("backend %d (weight %d): share %.4f, want %.4f", i, w[i], got, want)
		}
	}
	// Equal weights give the unweighted table.
	if !slices.Equal(mustTable(t, b, []uint32{5, 5, 5, 5}, 16381, "x"), mustTable(t, b, nil, 16381, "x")) {
		t.Error("equal weights differ from no weights")
	}
}

func TestValidation(t *testing.T) {
	for _, tc := range []struct {
		backends []string
		weights  []uint32
		m        uint64
		want     string
	}{
		{keys(2), nil, 16380, "maglev table size 16380: must be a prime number"},
		{keys(2), nil, 1, "must be a prime number"},
		{keys(2), nil, 0, "must be a prime number"},
		{keys(300), nil, 251, "maglev table size 251: must be larger than the number of backends (300)"},
		{keys(251), nil, 251, "must be larger than the number of backends (251)"},
		{keys(2), nil, 2147483647, "must be at most 16777213"},
		{[]string{"a", "b", "a"}, nil, 251, `backend "a" is listed twice`},
		{keys(2), []uint32{1}, 251, "1 weights for 2 backends"},
		{keys(2), []uint32{0, 0}, 251, "every backend has weight 0"},
	} {
		if _, err := WeightedTable(tc.backends, tc.weights, tc.m, ""); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("m=%d: %v, want %q", tc.m, err, tc.want)
		}
	}
	if err := ValidateTableSize(MaxTableSize, 1); err != nil {
		t.Errorf("MaxTableSize: %v", err)
	}
	for _, m := range []uint64{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071} {
		if err := ValidateTableSize(m, 250); err != nil {
			t.Errorf("Cilium's size %d: %v", m, err)
		}
	}
	tbl, err := Table(nil, 251, "")
	if err != nil || len(tbl) != 251 || slices.ContainsFunc(tbl, func(x int) bool { return x != -1 }) {
		t.Errorf("no backends: %v", err)
	}
}

// BenchmarkTable1k builds the table for 1000 backends.
func BenchmarkTable1k(b *testing.B) {
	for _, m := range []uint64{DefaultTableSize, 131071} {
		b.Run(fmt.Sprint("m=", m), func(b *testing.B) {
			backends := keys(1000)
			for b.Loop() {
				if _, err := Table(backends, m, DefaultSeed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
