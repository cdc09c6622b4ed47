package bench

import (
	"testing"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/policy"
	"github.com/lumen-net/lumen/internal/testutil"
)

// The workload is what the benchmark claims: every rule selects the
// endpoint, and the chosen packets get the verdicts the paths are named
// after (checked with the Go model of the datapath).
func TestPolicyWorkload(t *testing.T) {
	w, err := PolicyWorkload(1000, 250)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Docs) != 250 {
		t.Fatalf("%d policies, want 250", len(w.Docs))
	}
	pods := 0
	for id := range w.Identities {
		if id >= firstPodIdentity && id < firstCIDRIdentity {
			pods++
		}
	}
	if pods != 1000 {
		t.Errorf("%d pod identities, want 1000", pods)
	}
	pols, err := decodeAll(w.Docs)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := policy.NewEngine(pols, w.Identities, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := eng.Compute(w.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	if len(ep.SelectedBy) != 250 {
		t.Errorf("endpoint selected by %d policies, want 250", len(ep.SelectedBy))
	}
	if !ep.IngressEnforced || !ep.EgressEnforced {
		t.Errorf("endpoint not enforced both ways: %+v", ep)
	}
	if v := policy.Lookup(ep, w.PeerIdentity, false, policy.ProtoTCP, w.AllowedPort); !v.Allowed || len(v.Matched) == 0 || v.Matched[0].Identity != w.PeerIdentity {
		t.Errorf("ingress from %d to port %d: %+v, want allowed by an entry of that identity", w.PeerIdentity, w.AllowedPort, v)
	}
	if v := policy.Lookup(ep, w.PeerIdentity, false, policy.ProtoTCP, w.DeniedPort); v.Allowed || v.Reason != "default deny" {
		t.Errorf("ingress from %d to port %d: %+v, want default deny", w.PeerIdentity, w.DeniedPort, v)
	}
	if v := policy.Lookup(ep, w.EgressPeerIdentity, true, policy.ProtoTCP, w.EgressPort); !v.Allowed {
		t.Errorf("egress to %d port %d: %+v, want allowed", w.EgressPeerIdentity, w.EgressPort, v)
	}
	if n := len(datapath.ExpandAnyProto(toDatapath(ep.Entries))); n > 16384 {
		t.Errorf("%d map entries: more than the agent's default capacity, it would fail closed", n)
	}
	if _, err := PolicyWorkload(100, 12); err != nil {
		t.Errorf("smallest workload: %v", err)
	}
}

// A small run of the whole benchmark: every path gives the verdict it is
// named after (PolicyBench checks them), the map holds what Compute asked
// for, and every figure is there.
func TestPolicyBench(t *testing.T) {
	testutil.RequirePrivileged(t)
	rep, err := PolicyBench(PolicyOptions{Identities: 200, Rules: 48, Iterations: 2, Packets: 200})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries == 0 || rep.MapEntries < rep.Entries {
		t.Errorf("entries %d, map entries %d", rep.Entries, rep.MapEntries)
	}
	if len(rep.Build) != 6 {
		t.Errorf("%d build phases, want 6", len(rep.Build))
	}
	for _, p := range rep.Build {
		if p.Median <= 0 || p.Min > p.Median {
			t.Errorf("phase %s: %+v", p.Name, p)
		}
	}
	if len(rep.Packets) != 9 {
		t.Fatalf("%d packet paths, want 9", len(rep.Packets))
	}
	for _, p := range rep.Packets {
		if p.Mean <= 0 || p.Empty <= 0 || p.Runs != 200 {
			t.Errorf("path %s: %+v", p.Name, p)
		}
	}
	if rep.Memory.RetainedBytes == 0 || rep.Memory.AllocatedBytes < rep.Memory.RetainedBytes {
		t.Errorf("memory: %+v", rep.Memory)
	}
	if _, err := PolicyBench(PolicyOptions{Identities: 200, Rules: 48, Iterations: 1, Packets: 70000}); err == nil {
		t.Error("70000 distinct packets per path accepted: source ports would repeat")
	}
}

func TestPolicyBenchOptions(t *testing.T) {
	if _, err := PolicyBench(PolicyOptions{Identities: 1, Rules: 250, Iterations: 1, Packets: 100}); err == nil {
		t.Error("1 identity accepted")
	}
}

// go test -bench Policy ./internal/bench (the engine part needs no root).
func BenchmarkPolicyEngine(b *testing.B) {
	w, err := PolicyWorkload(1000, 250)
	if err != nil {
		b.Fatal(err)
	}
	pols, err := decodeAll(w.Docs)
	if err != nil {
		b.Fatal(err)
	}
	var entries int
	for b.Loop() {
		eng, err := policy.NewEngine(pols, w.Identities, policy.Options{AllowLocalhost: true})
		if err != nil {
			b.Fatal(err)
		}
		ep, err := eng.Compute(w.Endpoint)
		if err != nil {
			b.Fatal(err)
		}
		entries = len(ep.Entries)
	}
	b.ReportMetric(float64(entries), "entries")
}

func BenchmarkPolicyMemory(b *testing.B) {
	w, err := PolicyWorkload(1000, 250)
	if err != nil {
		b.Fatal(err)
	}
	var m PolicyMemory
	for b.Loop() {
		if m, err = PolicyEngineMemory(w); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(m.RetainedBytes)/(1<<20), "MiB-retained")
}

// The whole benchmark at its default size, figures as metrics.
func BenchmarkPolicyToMaps(b *testing.B) {
	testutil.RequirePrivileged(b)
	o := DefaultPolicyOptions
	o.Packets = 20000
	for b.Loop() {
		rep, err := PolicyBench(o)
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range rep.Build {
			if p.Name == PolicySetToMap {
				b.ReportMetric(float64(p.Median.Microseconds())/1000, "ms-set-to-map")
			}
		}
		b.ReportMetric(float64(rep.Entries), "entries")
		b.ReportMetric(rep.Packets[1].Mean-rep.Packets[0].Mean, "ns-enforce-new")
		b.ReportMetric(rep.Packets[4].Mean-rep.Packets[3].Mean, "ns-enforce-established")
	}
}
