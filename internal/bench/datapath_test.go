package bench

import (
	"testing"

	"github.com/lumen-net/lumen/internal/testutil"
)

// The benchmark's own paths must do what they claim: redirect for local
// delivery (IPv6 with extension headers and a later fragment too), pass to
// the stack for the unrouted case.
func TestDatapathCostPaths(t *testing.T) {
	testutil.RequirePrivileged(t)
	res, err := DatapathCost(1000, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []uint32{7, 0, 0, 7, 7, 7, 7}
	if len(res) != len(want) {
		t.Fatalf("%d results, want %d", len(res), len(want))
	}
	for i, r := range res {
		if r.Verdict != want[i] {
			t.Errorf("%s: verdict %d, want %d", r.Name, r.Verdict, want[i])
		}
		if r.NsPerPkt <= 0 || r.Baseline <= 0 {
			t.Errorf("%s: no timing: %+v", r.Name, r)
		}
	}
}

func BenchmarkFromContainerLocal(b *testing.B) {
	testutil.RequirePrivileged(b)
	for b.Loop() {
		res, err := DatapathCost(100000, 10000)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res[0].NsPerPkt, "ns/pkt")
		b.ReportMetric(res[0].Ratio, "x-empty")
	}
}
