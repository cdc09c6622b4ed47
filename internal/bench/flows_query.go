package bench

// The parse, memory and query parts of the flows benchmark: the Hubble
// parser's rate, a full flow ring's memory and GetFlows latency.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lumen-net/lumen/internal/bpfconst"
	"github.com/lumen-net/lumen/internal/datapath"
	hubblemetrics "github.com/lumen-net/lumen/internal/hubble/metrics"
	"github.com/lumen-net/lumen/internal/hubble/observer"
	"github.com/lumen-net/lumen/internal/hubble/parser"
	"github.com/lumen-net/lumen/internal/hubble/transport"
)

// syntheticEvents are n events as a busy node reports them: traces at the
// pod hooks and towards the network (TCP with all kinds of flags, DNS,
// ICMP), drops (policy, invalid source) and policy verdicts, between the
// synthetic cluster's pods and the world, a microsecond apart.
func syntheticEvents(n int) ([]datapath.Event, staticEnricher) {
	pods := benchPods()
	enr := staticEnricher{}
	for _, p := range pods {
		enr[p.ip] = p.ep
	}
	world := []netip.Addr{netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("2606:2800:220:1::248"), netip.MustParseAddr("1.1.1.1")}
	rng := rand.New(rand.NewPCG(3, 4))
	flags := []uint8{0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x10, 0x18}
	evs := make([]datapath.Event, n)
	for i := range evs {
		// benchPods alternates IPv4 and IPv6: b has a's family.
		ai := rng.IntN(len(pods))
		a, b := pods[ai], pods[rng.IntN(len(pods)/2)*2+ai%2]
		ev := datapath.Event{
			Timestamp: uint64(i) * 1000, Type: datapath.EventTrace, Subtype: 5, Direction: 1, Proto: 6,
			TCPFlags: flags[rng.IntN(len(flags))], EndpointID: uint16(a.ep.ID), IfIndex: uint32(10 + a.ep.ID),
			SrcIdentity: a.ep.Identity, DstIdentity: b.ep.Identity, Length: uint32(60 + rng.IntN(1400)),
			Src: a.ip, Dst: b.ip, SrcPort: uint16(32768 + rng.IntN(28000)), DstPort: 8080, Flags: datapath.EventFlagCTKnown,
		}
		switch r := rng.IntN(100); {
		case r < 35: // from-endpoint, as generated
		case r < 65: // to-endpoint, the reply direction half the time
			ev.Subtype, ev.Direction = 101, 0
			if rng.IntN(2) == 0 {
				ev.Src, ev.Dst, ev.SrcPort, ev.DstPort = ev.Dst, ev.Src, ev.DstPort, ev.SrcPort
				ev.SrcIdentity, ev.DstIdentity = ev.DstIdentity, ev.SrcIdentity
				ev.Flags |= datapath.EventFlagReply
			}
		case r < 75: // to the world
			ev.Subtype, ev.DstIdentity, ev.DstPort = 11, parser.IdentityWorld, 443
			ev.Dst = world[1]
			if a.ip.Is4() {
				ev.Dst = world[rng.IntN(2)*2] // 0 or 2: both IPv4
			}
		case r < 82: // DNS
			ev.Proto, ev.TCPFlags, ev.DstPort = 17, 0, 53
		case r < 84: // ping
			ev.Proto, ev.TCPFlags, ev.SrcPort, ev.DstPort, ev.ICMPType = 1, 0, 0, 0, 8
			if !a.ip.Is4() {
				ev.Proto, ev.ICMPType = 58, 128
			}
		case r < 94: // policy drop at the receiver
			ev.Type, ev.Subtype, ev.Direction, ev.TCPFlags = datapath.EventDrop, bpfconst.DropPolicy, 0, 0x02
			if rng.IntN(4) == 0 {
				ev.Subtype = bpfconst.DropPolicyDeny
			}
		case r < 95: // spoofed source
			ev.Type, ev.Subtype, ev.SrcIdentity = datapath.EventDrop, 132, parser.IdentityUnmanaged
		default: // policy verdict
			ev.Type, ev.Subtype, ev.TCPFlags = datapath.EventPolicy, datapath.MatchL3L4, 0x02
		}
		evs[i] = ev
	}
	return evs, enr
}

// ParseResult is the observer's per-event cost: parse, metrics, ring.
type ParseResult struct {
	Events int    `json:"events"`
	Flows  uint64 `json:"flows"` // in the ring's count: must equal Events
	// PerCPUSecond is events over the process's CPU time (GC included):
	// what one core sustains, however busy the machine is.
	PerCPUSecond float64 `json:"perCPUSecond"`
	PerSecond    float64 `json:"perSecond"` // by the wall clock
}

// ParseRate runs n synthetic events through the agent's parser and
// observer (default metrics, default ring) in one goroutine.
func ParseRate(n int) ParseResult {
	evs, enr := syntheticEvents(min(n, 65535))
	hm, err := hubblemetrics.New(hubblemetrics.Default)
	if err != nil {
		panic(err) // the default groups are valid
	}
	p := parser.New(parser.Options{NodeName: "bench", Enricher: enr, Clock: parser.FixedClock(0)})
	obs := observer.New(observer.Options{NodeName: "bench", Parser: p, Metrics: hm})
	runtime.GC()
	cpu0, start := cpuTime(), time.Now()
	for i := range n {
		f, err := p.Parse(&evs[i%len(evs)])
		if err != nil {
			panic(fmt.Sprintf("synthetic event %+v: %v", evs[i%len(evs)], err))
		}
		obs.Publish(f)
	}
	wall, cpu := time.Since(start), cpuTime()-cpu0
	return ParseResult{Events: n, Flows: obs.Stats().SeenFlows, PerCPUSecond: float64(n) / max(cpu.Seconds(), 1e-9), PerSecond: float64(n) / wall.Seconds()}
}

// cpuTime is the user and system time of this process.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// FillRing parses RingFlows synthetic events into an observer's ring and
// measures the heap the ring keeps alive.
func FillRing(flows int) (*observer.Observer, MemoryResult) {
	evs, enr := syntheticEvents(flows)
	clock := parser.FixedClock(time.Duration(time.Now().Add(-time.Minute).UnixNano()))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	p := parser.New(parser.Options{NodeName: "bench", Enricher: enr, Clock: clock})
	obs := observer.New(observer.Options{NodeName: "bench", Parser: p, Capacity: flows})
	for i := range evs {
		f, err := p.Parse(&evs[i])
		if err != nil {
			panic(fmt.Sprintf("synthetic event %+v: %v", evs[i], err)) // a bug in syntheticEvents
		}
		obs.Publish(f)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(p)
	m := MemoryResult{Flows: flows}
	if after.HeapAlloc > before.HeapAlloc {
		m.HeapBytes = after.HeapAlloc - before.HeapAlloc
	}
	m.BytesPerFlow = float64(m.HeapBytes) / float64(flows)
	var wire int
	ring := obs.Ring()
	oldest, next := ring.Bounds()
	for seq := oldest; seq < next; seq++ {
		e, _, _ := ring.Read(seq)
		wire += proto.Size(e.Flow)
	}
	m.WireBytesPerFlow = float64(wire) / float64(next-oldest)
	m.Ratio = m.BytesPerFlow / m.WireBytesPerFlow
	return obs, m
}

// FilteredRequest asks for the last n dropped flows from or to namespace
// ns, as `hubble observe --namespace ns --verdict DROPPED --last n` does.
func FilteredRequest(ns string, n int) *observerpb.GetFlowsRequest {
	v := []flowpb.Verdict{flowpb.Verdict_DROPPED}
	return &observerpb.GetFlowsRequest{Number: uint64(n), Whitelist: []*flowpb.FlowFilter{
		{SourcePod: []string{ns + "/"}, Verdict: v},
		{DestinationPod: []string{ns + "/"}, Verdict: v},
	}}
}

// BenchFilterNamespace is the namespace the filtered query asks for.
var BenchFilterNamespace = benchNamespace(3)

// MeasureGetFlows serves obs over gRPC on a unix socket and times the last
// `last` flows with and without a filter, requests times each.
func MeasureGetFlows(ctx context.Context, obs *observer.Observer, last, requests int) ([]QueryResult, error) {
	dir, err := os.MkdirTemp("", "lumen-bench-getflows-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "hubble.sock")
	srv, err := transport.Start(transport.ServerOptions{UnixSocket: sock}, transport.Services{Observer: obs})
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	conn, err := transport.Dial("unix://"+sock, nil)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	client := observerpb.NewObserverClient(conn)

	var out []QueryResult
	for _, q := range []struct {
		name string
		req  *observerpb.GetFlowsRequest
	}{
		{QueryFiltered, FilteredRequest(BenchFilterNamespace, last)},
		{QueryUnfiltered, &observerpb.GetFlowsRequest{Number: uint64(last)}},
	} {
		r := QueryResult{Name: q.name, Requests: requests, Scanned: scanned(obs, q.req)}
		var times []time.Duration
		// One warm-up request: connection and code paths.
		if _, err := getFlows(ctx, client, q.req); err != nil {
			return nil, err
		}
		for range requests {
			start := time.Now()
			n, err := getFlows(ctx, client, q.req)
			if err != nil {
				return nil, err
			}
			times = append(times, time.Since(start))
			r.Flows = n
		}
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		var sum time.Duration
		for _, t := range times {
			sum += t
		}
		r.P50, r.P90, r.Max = times[len(times)/2], times[len(times)*9/10], times[len(times)-1]
		r.Mean = sum / time.Duration(len(times))
		out = append(out, r)
	}
	return out, nil
}

// getFlows runs one request to its end and returns the flows received.
func getFlows(ctx context.Context, client observerpb.ObserverClient, req *observerpb.GetFlowsRequest) (int, error) {
	st, err := client.GetFlows(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("GetFlows: %w", err)
	}
	n := 0
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("GetFlows: %w", err)
		}
		if r.GetFlow() != nil {
			n++
		}
	}
}

// scanned is how many ring entries, newest first, the server walks to
// find the request's flows.
func scanned(obs *observer.Observer, req *observerpb.GetFlowsRequest) int {
	q, err := observer.NewQuery(req)
	if err != nil {
		return 0
	}
	ring := obs.Ring()
	oldest, next := ring.Bounds()
	found, walked := 0, 0
	for seq := next; seq > oldest && found < int(req.GetNumber()); {
		seq--
		walked++
		if e, ok, _ := ring.Read(seq); ok && e.Flow != nil && q.Filters.Match(e.Flow) {
			found++
		}
	}
	return walked
}

// LastMatching returns, oldest first, the last n flows of obs's ring that
// match req's filters (what GetFlows must answer).
func LastMatching(obs *observer.Observer, req *observerpb.GetFlowsRequest, n int) ([]*flowpb.Flow, error) {
	q, err := observer.NewQuery(req)
	if err != nil {
		return nil, err
	}
	ring := obs.Ring()
	oldest, next := ring.Bounds()
	var out []*flowpb.Flow
	for seq := next; seq > oldest && len(out) < n; {
		seq--
		if e, ok, _ := ring.Read(seq); ok && e.Flow != nil && q.Filters.Match(e.Flow) {
			out = append(out, e.Flow)
		}
	}
	slices.Reverse(out)
	return out, nil
}
