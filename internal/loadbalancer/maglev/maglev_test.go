package maglev

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
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

// hashes is the literal derivation of a backend's permutation and rank.
func hashes(key string, m uint64, seed string) (offset, skip, rank uint64) {
	h := sha256.Sum256([]byte(seed + "\x00" + key))
	return binary.LittleEndian.Uint64(h[0:8]) % m, binary.LittleEndian.Uint64(h[8:16])%(m-1) + 1, binary.LittleEndian.Uint64(h[16:24])
}

// definitionTable is the package comment written out literally, as an
// oracle: quotas by largest remainder (ties by rank), then every (backend,
// depth) pair in order of depth/weight, ties by rank, the backend taking
// the slot at that depth of its permutation if it is free and the backend
// is short of its quota. Ties: heavier first, then rank order.
func definitionTable(backends []string, weights []uint32, m uint64, seed string) []int {
	type be struct {
		index               int
		offset, skip, rank  uint64
		weight, quota, held uint64
	}
	var bs []be
	var sum uint64
	for i, k := range backends {
		w := uint64(1)
		if weights != nil {
			w = uint64(weights[i])
		}
		if w == 0 {
			continue
		}
		o, s, r := hashes(k, m, seed)
		bs = append(bs, be{index: i, offset: o, skip: s, rank: r, weight: w})
		sum += w
	}
	slices.SortFunc(bs, func(a, b be) int { return cmpU(a.rank, b.rank) })
	left := m
	for i := range bs {
		bs[i].quota = m * bs[i].weight / sum
		left -= bs[i].quota
	}
	byRem := make([]int, len(bs))
	for i := range byRem {
		byRem[i] = i
	}
	slices.SortFunc(byRem, func(a, b int) int {
		if c := cmpU(m*bs[b].weight%sum, m*bs[a].weight%sum); c != 0 {
			return c
		}
		return a - b // rank order
	})
	for _, i := range byRem[:left] {
		bs[i].quota++
	}
	type pair struct{ b, depth int }
	var pairs []pair
	for b := range bs {
		for d := range int(m) {
			pairs = append(pairs, pair{b, d})
		}
	}
	slices.SortFunc(pairs, func(x, y pair) int {
		// depth/weight, exactly.
		if c := cmpU(uint64(x.depth)*bs[y.b].weight, uint64(y.depth)*bs[x.b].weight); c != 0 {
			return c
		}
		if c := cmpU(bs[y.b].weight, bs[x.b].weight); c != 0 {
			return c
		}
		return x.b - y.b
	})
	table := make([]int, m)
	for i := range table {
		table[i] = -1
	}
	for _, p := range pairs {
		b := &bs[p.b]
		slot := (b.offset + uint64(p.depth)*b.skip) % m
		if table[slot] < 0 && b.held < b.quota {
			table[slot] = b.index
			b.held++
		}
	}
	return table
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// paperTable is Pseudocode 1 of the Maglev paper written out literally
// (permutation[i][j] = (offset + j*skip) mod M, round-robin, backends in
// key order): the fill this package replaced, kept to compare disruption.
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
		offset[i], skip[i], _ = hashes(b, m, seed)
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

func TestDeterministicAndOrderIndependent(t *testing.T) {
	b := keys(50)
	t1 := mustTable(t, b, nil, DefaultTableSize, DefaultSeed)
	t2 := mustTable(t, slices.Clone(b), nil, DefaultTableSize, DefaultSeed)
	if !slices.Equal(t1, t2) {
		t.Fatal("same input, different tables")
	}
	// Pinned: these entries for this input never change (every node, every
	// version must agree).
	got := fmt.Sprintf("%v %v", owners(t1, b)[:3], owners(t1, b)[DefaultTableSize-1])
	if want := "[10.0.0.48:80/TCP 10.0.0.0:80/TCP 10.0.0.35:80/TCP] 10.0.0.31:80/TCP"; got != want {
		t.Errorf("entries %s, want %s (the hash or the algorithm changed)", got, want)
	}
	r := rand.New(rand.NewPCG(1, 2))
	shuffled := slices.Clone(b)
	r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	t3 := mustTable(t, shuffled, nil, DefaultTableSize, DefaultSeed)
	if !slices.Equal(owners(t1, b), owners(t3, shuffled)) {
		t.Error("input order changed the table")
	}
	// Weighted, shuffling keys and weights together.
	w := make([]uint32, len(b))
	for i := range w {
		w[i] = uint32(i%5) + 1
	}
	tw := owners(mustTable(t, b, w, DefaultTableSize, DefaultSeed), b)
	perm := r.Perm(len(b))
	sb, sw := make([]string, len(b)), make([]uint32, len(b))
	for i, j := range perm {
		sb[i], sw[i] = b[j], w[j]
	}
	if !slices.Equal(tw, owners(mustTable(t, sb, sw, DefaultTableSize, DefaultSeed), sb)) {
		t.Error("input order changed the weighted table")
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

// TestMatchesDefinition checks the fill (one weight class or several)
// against the literal definition.
func TestMatchesDefinition(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, m := range []uint64{251, 1021, 4093} {
		for _, n := range []int{1, 2, 7, 40} {
			b := keys(1000)
			r.Shuffle(len(b), func(i, j int) { b[i], b[j] = b[j], b[i] })
			b = b[:n]
			w := make([]uint32, n)
			for i := range w {
				w[i] = uint32(r.IntN(4)) // some zeros
			}
			w[0] = max(w[0], 1)
			for _, tc := range []struct {
				name    string
				weights []uint32
			}{{"equal", nil}, {"weighted", w}} {
				if !slices.Equal(mustTable(t, b, tc.weights, m, "seed"), definitionTable(b, tc.weights, m, "seed")) {
					t.Errorf("m=%d n=%d %s: table differs from the definition", m, n, tc.name)
				}
			}
		}
	}
}

// counts returns how many slots each backend holds, failing on entries out
// of range.
func counts(t *testing.T, tbl []int, n int) []int {
	t.Helper()
	c := make([]int, n)
	for i, b := range tbl {
		if b < 0 || b >= n {
			t.Fatalf("entry %d: backend %d of %d", i, b, n)
		}
		c[b]++
	}
	return c
}

func TestBalance(t *testing.T) {
	for _, n := range []int{1, 2, 3, 99, 100, 1000} {
		for _, m := range []uint64{251, DefaultTableSize, 65521} {
			if uint64(n) >= m {
				continue
			}
			c := counts(t, mustTable(t, keys(n), nil, m, DefaultSeed), n)
			lo, hi := int(m)/n, (int(m)+n-1)/n
			if mn, mx := slices.Min(c), slices.Max(c); mn < lo || mx > hi {
				t.Errorf("n=%d m=%d: slots per backend %d..%d, want %d..%d", n, m, mn, mx, lo, hi)
			}
		}
	}
}

func TestWeights(t *testing.T) {
	check := func(w []uint32, m uint64) {
		t.Helper()
		b := keys(len(w))
		c := counts(t, mustTable(t, b, w, m, DefaultSeed), len(w))
		var sum uint64
		for _, x := range w {
			sum += uint64(x)
		}
		for i := range w {
			share := float64(m) * float64(w[i]) / float64(sum)
			if lo, hi := int(math.Floor(share)), int(math.Ceil(share)); c[i] < lo || c[i] > hi {
				t.Errorf("weights %v m=%d: backend %d (weight %d) has %d slots, want %d..%d", w, m, i, w[i], c[i], lo, hi)
			}
		}
	}
	check([]uint32{1, 2, 4, 0}, 16381)
	check([]uint32{0, 7, 0}, 251)
	check([]uint32{1, math.MaxUint32, 3, 1000}, 16381) // extreme ratio: must not spin
	check([]uint32{math.MaxUint32, math.MaxUint32 - 1}, 131071)
	r := rand.New(rand.NewPCG(5, 6))
	w := make([]uint32, 300)
	for i := range w {
		w[i] = uint32(r.IntN(100))
	}
	check(w, DefaultTableSize)
	// Equal weights give the unweighted table.
	b := keys(4)
	if !slices.Equal(mustTable(t, b, []uint32{5, 5, 5, 5}, 16381, "x"), mustTable(t, b, nil, 16381, "x")) {
		t.Error("equal weights differ from no weights")
	}
}

// disruption returns, for each backend of b removed in turn (those listed
// in gone), the share of the slots that changed owner although their owner
// was not the removed backend, and checks the removed backend owned its
// share.
func disruption(t *testing.T, fill func([]string) []int, b []string, gone []int) []float64 {
	t.Helper()
	before := owners(fill(b), b)
	var out []float64
	for _, g := range gone {
		rest := slices.Delete(slices.Clone(b), g, g+1)
		after := owners(fill(rest), rest)
		moved, owned := 0, 0
		for i := range before {
			switch {
			case before[i] == b[g]:
				owned++
			case before[i] != after[i]:
				moved++
			}
		}
		if lo, hi := len(before)/len(b), (len(before)+len(b)-1)/len(b); owned < lo || owned > hi {
			t.Errorf("the removed backend #%d owned %d slots, want %d..%d", g, owned, lo, hi)
		}
		out = append(out, float64(moved)/float64(len(before)))
	}
	return out
}

// The requirement: when one of 100 backends is removed, at most 1 % of the
// slots not owned by the removed backend change owner, at the default table
// size, whatever the seed and the backend removed. The paper's fill does
// not meet it at m = 16381 (logged for comparison).
func TestDisruption(t *testing.T) {
	seeds := []string{DefaultSeed, "s1", "s2", "s3", "s4"}
	backends := func(si int) []string {
		b := keys(100)
		if si%2 == 1 { // other key shapes too
			for i := range b {
				b[i] = fmt.Sprintf("[fd00::%x]:443/TCP", i*7919)
			}
		}
		return b
	}
	for _, m := range []uint64{DefaultTableSize, 32749, 65521} {
		var worst, total float64
		cases := 0
		for si, seed := range seeds {
			// Every position for the default size and seed, a sample otherwise.
			gone := []int{0, 1, 37, 50, 98, 99}
			if m == DefaultTableSize && si == 0 {
				gone = nil
				for i := range 100 {
					gone = append(gone, i)
				}
			} else if m != DefaultTableSize {
				gone = gone[2:4]
			}
			fill := func(b []string) []int { return mustTable(t, b, nil, m, seed) }
			for i, extra := range disruption(t, fill, backends(si), gone) {
				if extra > 0.01 {
					t.Errorf("m=%d seed %q, remove #%d of 100: %.2f%% of the other slots moved, want <= 1%%", m, seed, gone[i], extra*100)
				}
				worst = max(worst, extra)
				total += extra
				cases++
			}
		}
		t.Logf("m=%d, 100 backends, one removed (%d cases): other slots moved %.2f%% on average, %.2f%% at worst", m, cases, total/float64(cases)*100, worst*100)
	}
	// The paper's fill, for comparison.
	var worst float64
	for si, seed := range seeds[:3] {
		fill := func(b []string) []int { return paperTable(b, DefaultTableSize, seed) }
		for _, extra := range disruption(t, fill, backends(si), []int{0, 37, 99}) {
			worst = max(worst, extra)
		}
	}
	t.Logf("paper's fill, m=%d: %.2f%% of the other slots moved at worst", uint64(DefaultTableSize), worst*100)
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
		{[]string{"a", "b", "a"}, []uint32{1, 1, 2}, 251, `backend "a" is listed twice`},
		{[]string{"a", "b", "a"}, []uint32{0, 1, 2}, 251, `backend "a" is listed twice`},
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

// FuzzWeightedTable checks the invariants on arbitrary small inputs: the
// definition, proportional shares, input-order independence.
func FuzzWeightedTable(f *testing.F) {
	f.Add(uint8(3), "a,b,c", []byte{1, 2, 3}, "seed")
	f.Add(uint8(0), "x", []byte{0}, "")
	f.Add(uint8(1), "10.0.0.1:80/TCP,10.0.0.2:80/TCP", []byte{255, 1}, "lumen")
	f.Add(uint8(2), "a,b,c,d,e,f,g", []byte(nil), "s")
	primes := []uint64{11, 13, 251, 509, 1021}
	f.Fuzz(func(t *testing.T, mi uint8, list string, wb []byte, seed string) {
		m := primes[int(mi)%len(primes)]
		b := strings.Split(list, ",")
		var w []uint32
		if wb != nil {
			w = make([]uint32, len(b))
			for i := range w {
				if i < len(wb) {
					w[i] = uint32(wb[i])
				}
			}
		}
		got, err := WeightedTable(b, w, m, seed)
		if err != nil {
			return // duplicates, too many backends, all weights 0: checked elsewhere
		}
		if want := definitionTable(b, w, m, seed); !slices.Equal(got, want) {
			t.Fatalf("table differs from the definition")
		}
		rb, rw := slices.Clone(b), slices.Clone(w)
		slices.Reverse(rb)
		slices.Reverse(rw)
		if rev := mustTable(t, rb, rw, m, seed); !slices.Equal(owners(got, b), owners(rev, rb)) {
			t.Fatalf("input order changed the table")
		}
	})
}

// BenchmarkTable builds tables for 100 and 1000 backends: equal weights,
// three weights (3 classes stepping in lockstep), all weights distinct (a
// heap step per backend step, the slowest case).
func BenchmarkTable(b *testing.B) {
	for _, n := range []int{100, 1000} {
		for _, m := range []uint64{DefaultTableSize, 131071} {
			backends := keys(n)
			weights, distinct := make([]uint32, n), make([]uint32, n)
			for i := range weights {
				weights[i] = uint32(i%3) + 1
				distinct[i] = uint32(i) + 1
			}
			b.Run(fmt.Sprintf("n=%d/m=%d", n, m), func(b *testing.B) {
				for b.Loop() {
					if _, err := Table(backends, m, DefaultSeed); err != nil {
						b.Fatal(err)
					}
				}
			})
			for name, w := range map[string][]uint32{"3weights": weights, "distinct": distinct} {
				b.Run(fmt.Sprintf("n=%d/m=%d/%s", n, m, name), func(b *testing.B) {
					for b.Loop() {
						if _, err := WeightedTable(backends, w, m, DefaultSeed); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// BenchmarkPaperFill is the paper's fill, for comparison with
// BenchmarkTable (the oracle is written for clarity, not speed).
func BenchmarkPaperFill(b *testing.B) {
	backends := keys(1000)
	for b.Loop() {
		paperTable(backends, DefaultTableSize, DefaultSeed)
	}
}
