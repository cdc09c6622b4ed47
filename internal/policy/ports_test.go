package policy

import (
	"math/rand/v2"
	"testing"
)

func TestSplitPortRangeExample(t *testing.T) {
	got := SplitPortRange(80, 90)
	want := []PortBlock{{80, 13}, {88, 15}, {90, 16}}
	if len(got) != len(want) {
		t.Fatalf("SplitPortRange(80, 90) = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("SplitPortRange(80, 90) = %v, want %v", got, want)
		}
	}
	if got := SplitPortRange(0, 65535); len(got) != 1 || got[0] != (PortBlock{0, 0}) {
		t.Errorf("SplitPortRange(0, 65535) = %v, want [0/0]", got)
	}
	if got := SplitPortRange(9, 8); got != nil {
		t.Errorf("SplitPortRange(9, 8) = %v, want nil", got)
	}
}

// checkSplit asserts that the blocks are aligned, disjoint, in order and
// cover exactly [lo, hi], and that no two neighbours could merge.
func checkSplit(t *testing.T, lo, hi uint16) {
	t.Helper()
	blocks := SplitPortRange(lo, hi)
	next := uint32(lo)
	for i, b := range blocks {
		if b.Bits > 16 || b.Port != maskPort(b.Port, b.Bits) {
			t.Fatalf("[%d,%d]: block %d %+v not aligned", lo, hi, i, b)
		}
		if uint32(b.First()) != next {
			t.Fatalf("[%d,%d]: block %d %+v starts at %d, want %d", lo, hi, i, b, b.First(), next)
		}
		next = uint32(b.Last()) + 1
		if i > 0 {
			p := blocks[i-1]
			if p.Bits == b.Bits && p.Bits > 0 && maskPort(p.Port, p.Bits-1) == maskPort(b.Port, b.Bits-1) {
				t.Fatalf("[%d,%d]: blocks %+v and %+v could merge", lo, hi, p, b)
			}
		}
	}
	if next != uint32(hi)+1 {
		t.Fatalf("[%d,%d]: blocks end at %d", lo, hi, next-1)
	}
}

func TestSplitPortRangeRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		a, b := uint16(r.UintN(65536)), uint16(r.UintN(65536))
		if r.IntN(4) == 0 { // short ranges too
			b = a + uint16(r.UintN(300))
			if b < a {
				b = 65535
			}
		}
		if a > b {
			a, b = b, a
		}
		checkSplit(t, a, b)
	}
	for _, c := range [][2]uint16{{0, 0}, {65535, 65535}, {0, 65535}, {1, 65535}, {0, 65534}, {1, 65534}, {32768, 65535}, {1024, 2047}} {
		checkSplit(t, c[0], c[1])
	}
}

// TestSplitPortRangeMembership checks every port of small windows against
// Contains, exhaustively.
func TestSplitPortRangeMembership(t *testing.T) {
	for lo := 0; lo < 130; lo++ {
		for hi := lo; hi < 130; hi++ {
			blocks := SplitPortRange(uint16(lo), uint16(hi))
			for p := 0; p < 200; p++ {
				n := 0
				for _, b := range blocks {
					if b.Contains(uint16(p)) {
						n++
					}
				}
				want := 0
				if p >= lo && p <= hi {
					want = 1
				}
				if n != want {
					t.Fatalf("[%d,%d]: port %d in %d blocks, want %d (%v)", lo, hi, p, n, want, blocks)
				}
			}
		}
	}
}
