package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/lumen-net/lumen/internal/hubble/transport"
	"github.com/lumen-net/lumen/internal/testutil"
)

// The rate search accounts for every event it generated: delivered as a
// flow or counted lost, and never more than generated.
func TestRingRatesAccounting(t *testing.T) {
	testutil.RequirePrivileged(t)
	o := DefaultFlowsOptions
	o.StepDuration, o.StartRate, o.MaxRate = 200*time.Millisecond, 20_000, 40_000
	rates, ringBytes, err := RingRates(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if ringBytes != 4<<20 {
		t.Errorf("ring of %d bytes, want the default 4 MiB", ringBytes)
	}
	if len(rates) != 2 || rates[0].Consumer != ConsumerPipeline || rates[1].Consumer != ConsumerBare {
		t.Fatalf("consumers %+v", rates)
	}
	for _, r := range rates {
		if len(r.Steps) == 0 {
			t.Fatalf("%s: no steps", r.Consumer)
		}
		for _, s := range r.Steps {
			if s.Generated == 0 || s.Delivered == 0 {
				t.Errorf("%s: step %+v generated or delivered nothing", r.Consumer, s)
			}
			if s.Delivered+s.RingLost+s.QueueLost+s.Unsettled != s.Generated {
				t.Errorf("%s: step %+v: delivered + lost != generated", r.Consumer, s)
			}
			if s.Lost() == 0 && s.Achieved > r.MaxLossless {
				t.Errorf("%s: lossless step at %.0f/s above the reported maximum %.0f/s", r.Consumer, s.Achieved, r.MaxLossless)
			}
		}
	}
}

// The synthetic flows the memory and GetFlows figures use are realistic:
// every kind of event parses, names resolve, and the filtered query has
// enough matches to answer.
func TestSyntheticFlows(t *testing.T) {
	obs, m := FillRing(65535)
	if m.HeapBytes == 0 || m.BytesPerFlow < m.WireBytesPerFlow/2 || m.WireBytesPerFlow < 100 {
		t.Errorf("memory figures %+v", m)
	}
	kinds := map[string]int{}
	ring := obs.Ring()
	oldest, next := ring.Bounds()
	if next-oldest != 65535 {
		t.Fatalf("%d flows in the ring, want 65535", next-oldest)
	}
	for seq := oldest; seq < next; seq++ {
		e, _, _ := ring.Read(seq)
		f := e.Flow
		kinds[fmt.Sprintf("%s/%d/%d", f.GetVerdict(), f.GetEventType().GetType(), f.GetEventType().GetSubType())]++
		if f.GetSource().GetIdentity() != 3 && f.GetSource().GetPodName() == "" {
			t.Fatalf("flow without source pod: %v", f)
		}
	}
	// from-endpoint, to-endpoint, to-network traces, policy drops, spoofed
	// sources, policy verdicts.
	for _, want := range []string{"FORWARDED/4/5", "FORWARDED/4/0", "FORWARDED/4/11", "DROPPED/1/133", "DROPPED/1/181", "DROPPED/1/132", "FORWARDED/5/0"} {
		if kinds[want] == 0 {
			t.Errorf("no %q flows in %v", want, kinds)
		}
	}
	got, err := LastMatching(obs, FilteredRequest(BenchFilterNamespace, 1000), 1000)
	if err != nil || len(got) != 1000 {
		t.Fatalf("%d flows match the filtered query (%v), want 1000", len(got), err)
	}
}

// GetFlows over the unix socket answers the filtered query with exactly
// the last 1000 matching flows, in order, and times both queries.
func TestMeasureGetFlows(t *testing.T) {
	obs, _ := FillRing(65535)
	qs, err := MeasureGetFlows(context.Background(), obs, 1000, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 2 || qs[0].Name != QueryFiltered || qs[1].Name != QueryUnfiltered {
		t.Fatalf("queries %+v", qs)
	}
	for _, q := range qs {
		if q.Flows != 1000 || q.Requests != 3 || q.P50 <= 0 || q.Max < q.P50 {
			t.Errorf("query %+v", q)
		}
	}
	if qs[0].Scanned <= qs[1].Scanned || qs[1].Scanned != 1000 {
		t.Errorf("scanned %d (filtered) and %d (unfiltered): the filter must walk further than 1000", qs[0].Scanned, qs[1].Scanned)
	}

	// What the server sent is what it had to send.
	want, err := LastMatching(obs, FilteredRequest(BenchFilterNamespace, 1000), 1000)
	if err != nil {
		t.Fatal(err)
	}
	got := serveAndCollect(t, obs, FilteredRequest(BenchFilterNamespace, 1000))
	if len(got) != len(want) {
		t.Fatalf("%d flows, want %d", len(got), len(want))
	}
	ns := BenchFilterNamespace
	for i := range got {
		f := got[i]
		if f.GetVerdict() != flowpb.Verdict_DROPPED || (f.GetSource().GetNamespace() != ns && f.GetDestination().GetNamespace() != ns) {
			t.Fatalf("flow %d does not match the filter: %v", i, f)
		}
		if !f.GetTime().AsTime().Equal(want[i].GetTime().AsTime()) {
			t.Fatalf("flow %d at %v, want %v (the last matching flows, oldest first)", i, f.GetTime().AsTime(), want[i].GetTime().AsTime())
		}
	}
}

func serveAndCollect(t *testing.T, obs interface {
	observerpb.ObserverServer
}, req *observerpb.GetFlowsRequest) []*flowpb.Flow {
	t.Helper()
	sock := t.TempDir() + "/h.sock"
	srv, err := transport.Start(transport.ServerOptions{UnixSocket: sock}, transport.Services{Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	conn, err := transport.Dial("unix://"+sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := observerpb.NewObserverClient(conn).GetFlows(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	var out []*flowpb.Flow
	for {
		r, err := st.Recv()
		if err != nil {
			break
		}
		if r.GetFlow() != nil {
			out = append(out, r.GetFlow())
		}
	}
	return out
}

// BenchmarkSustainedEvents drives the datapath at the goal rate
// (100k events/s) for b.N events while the agent's reader and parser
// consume, at the default ring size; it reports the lost events (goal 0).
func BenchmarkSustainedEvents(b *testing.B) {
	testutil.RequirePrivileged(b)
	env, err := newFlowsEnv()
	if err != nil {
		b.Fatal(err)
	}
	defer env.close()
	c, err := startConsumer(env.dp, env.enr, false)
	if err != nil {
		b.Fatal(err)
	}
	defer c.stop()
	b.ResetTimer()
	s, err := env.step(c, FlowsGoal, time.Duration(b.N)*time.Second/FlowsGoal)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(s.Achieved, "events/s")
	b.ReportMetric(float64(s.Delivered), "flows")
	b.ReportMetric(float64(s.Lost()), "lost")
}

// BenchmarkFlowRingMemory fills a 65535-flow ring with realistic flows and
// reports the heap per flow.
func BenchmarkFlowRingMemory(b *testing.B) {
	var m MemoryResult
	for b.Loop() {
		_, m = FillRing(65535)
	}
	b.ReportMetric(m.BytesPerFlow, "heap-B/flow")
	b.ReportMetric(m.WireBytesPerFlow, "wire-B/flow")
}

// BenchmarkGetFlowsLast1000 is one GetFlows request over the unix socket
// against a full 65535-flow ring, with the namespace + verdict filter and
// without.
func BenchmarkGetFlowsLast1000(b *testing.B) {
	obs, _ := FillRing(65535)
	sock := b.TempDir() + "/h.sock"
	srv, err := transport.Start(transport.ServerOptions{UnixSocket: sock}, transport.Services{Observer: obs})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	conn, err := transport.Dial("unix://"+sock, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := observerpb.NewObserverClient(conn)
	for _, q := range []struct {
		name string
		req  *observerpb.GetFlowsRequest
	}{
		{"filtered", FilteredRequest(BenchFilterNamespace, 1000)},
		{"unfiltered", &observerpb.GetFlowsRequest{Number: 1000}},
	} {
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				n, err := getFlows(context.Background(), client, q.req)
				if err != nil || n != 1000 {
					b.Fatalf("%d flows, %v", n, err)
				}
			}
		})
	}
}

// The parse rate measures what it says: every event became a flow.
func TestParseRate(t *testing.T) {
	r := ParseRate(20000)
	if r.Events != 20000 || r.Flows != 20000 || r.PerCPUSecond <= 0 || r.PerSecond <= 0 {
		t.Errorf("parse rate %+v", r)
	}
}

func TestFlowsOptionsValidate(t *testing.T) {
	if err := DefaultFlowsOptions.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range []struct {
		edit func(*FlowsOptions)
		want string
	}{
		{func(o *FlowsOptions) { o.StepDuration = 0 }, "step: invalid value 0s"},
		{func(o *FlowsOptions) { o.StartRate = -1 }, "start-rate: invalid value -1"},
		{func(o *FlowsOptions) { o.MaxRate = 10 }, "max-rate: invalid value 10"},
		{func(o *FlowsOptions) { o.RingFlows = 999 }, "flows: invalid value 999"},
		{func(o *FlowsOptions) { o.Requests = 0 }, "requests: invalid value 0"},
		{func(o *FlowsOptions) { o.Last = 0 }, "last: invalid value 0"},
		{func(o *FlowsOptions) { o.Refine = -2 }, "refine: invalid value -2"},
	} {
		o := DefaultFlowsOptions
		c.edit(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
}
