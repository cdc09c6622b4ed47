package observer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/hubble"
	hubblemetrics "github.com/lumen-net/lumen/internal/hubble/metrics"
	"github.com/lumen-net/lumen/internal/hubble/parser"
	"github.com/lumen-net/lumen/internal/hubble/transport"
)

// base is the wall time of the first test flow.
var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// flowAt makes a flow i seconds after base.
func flowAt(i int, ns, pod string, verdict flowpb.Verdict, dport uint32) *flowpb.Flow {
	return &flowpb.Flow{
		Time:     timestamppb.New(base.Add(time.Duration(i) * time.Second)),
		NodeName: "n1", Verdict: verdict,
		IP:          &flowpb.IP{Source: fmt.Sprintf("10.0.0.%d", i%250+1), Destination: "10.0.1.1", IpVersion: flowpb.IPVersion_IPv4},
		L4:          &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: uint32(30000 + i), DestinationPort: dport}}},
		Source:      &flowpb.Endpoint{Namespace: ns, PodName: pod, Identity: 1000},
		Destination: &flowpb.Endpoint{Namespace: "shop", PodName: "catalog", Identity: 2000},
		EventType:   &flowpb.CiliumEventType{Type: 4, SubType: 5},
		Summary:     fmt.Sprintf("flow %d", i),
	}
}

// serve starts an observer behind a unix socket and returns a client.
func serve(t *testing.T, o *Observer) observerpb.ObserverClient {
	t.Helper()
	return observerpb.NewObserverClient(serveConn(t, o))
}

func serveConn(t *testing.T, o *Observer) *grpc.ClientConn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "hubble.sock")
	s, err := transport.Start(transport.ServerOptions{UnixSocket: sock}, transport.Services{Observer: o})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	conn, err := transport.Dial("unix://"+sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func collect(t *testing.T, c observerpb.ObserverClient, req *observerpb.GetFlowsRequest) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.GetFlows(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []string
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if f := r.GetFlow(); f != nil {
			out = append(out, f.GetSummary())
		}
	}
}

func names(is ...int) string {
	var s []string
	for _, i := range is {
		s = append(s, fmt.Sprintf("flow %d", i))
	}
	return strings.Join(s, ",")
}

func TestGetFlowsSelection(t *testing.T) {
	o := New(Options{NodeName: "n1", Capacity: 8})
	// 10 flows into a ring of 8: flows 0 and 1 are gone.
	for i := range 10 {
		verdict := flowpb.Verdict_FORWARDED
		if i%3 == 0 {
			verdict = flowpb.Verdict_DROPPED
		}
		ns := "shop"
		if i%2 == 1 {
			ns = "tools"
		}
		o.Publish(flowAt(i, ns, fmt.Sprintf("pod-%d", i), verdict, 80))
	}
	c := serve(t, o)
	ts := func(i int) *timestamppb.Timestamp { return timestamppb.New(base.Add(time.Duration(i) * time.Second)) }
	dropped := []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}
	cases := []struct {
		name string
		req  *observerpb.GetFlowsRequest
		want string
	}{
		{"all", &observerpb.GetFlowsRequest{}, names(2, 3, 4, 5, 6, 7, 8, 9)},
		{"last 3", &observerpb.GetFlowsRequest{Number: 3}, names(7, 8, 9)},
		{"first 3", &observerpb.GetFlowsRequest{Number: 3, First: true}, names(2, 3, 4)},
		{"last 2 dropped", &observerpb.GetFlowsRequest{Number: 2, Whitelist: dropped}, names(6, 9)},
		{"first 2 dropped", &observerpb.GetFlowsRequest{Number: 2, First: true, Whitelist: dropped}, names(3, 6)},
		{"since", &observerpb.GetFlowsRequest{Since: ts(7)}, names(7, 8, 9)},
		{"until", &observerpb.GetFlowsRequest{Until: ts(4)}, names(2, 3, 4)},
		{"since until", &observerpb.GetFlowsRequest{Since: ts(4), Until: ts(6)}, names(4, 5, 6)},
		{"last 2 until", &observerpb.GetFlowsRequest{Number: 2, Until: ts(6)}, names(5, 6)},
		{"deny", &observerpb.GetFlowsRequest{Blacklist: []*flowpb.FlowFilter{{SourcePod: []string{"tools/"}}}}, names(2, 4, 6, 8)},
		{"allow minus deny", &observerpb.GetFlowsRequest{Whitelist: dropped, Blacklist: []*flowpb.FlowFilter{{SourcePod: []string{"tools/"}}}}, names(6)},
		{"pod prefix", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{SourcePod: []string{"tools/pod-7", "shop/pod-2"}}}}, names(2, 7)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := collect(t, c, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if g := strings.Join(got, ","); g != tc.want {
				t.Errorf("got %s\nwant %s", g, tc.want)
			}
		})
	}
}

func TestGetFlowsInvalid(t *testing.T) {
	o := New(Options{NodeName: "n1"})
	c := serve(t, o)
	cases := []struct {
		req   *observerpb.GetFlowsRequest
		field string
	}{
		{&observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{SourceIp: []string{"not-an-ip"}}}}, "whitelist[0].source_ip[0]"},
		{&observerpb.GetFlowsRequest{Blacklist: []*flowpb.FlowFilter{{}, {DestinationPort: []string{"99999"}}}}, "blacklist[1].destination_port[0]"},
		{&observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{HttpPath: []string{"/"}}}}, "whitelist[0].http_path"},
		{&observerpb.GetFlowsRequest{First: true, Follow: true}, "first"},
		{&observerpb.GetFlowsRequest{Since: timestamppb.New(base.Add(time.Hour)), Until: timestamppb.New(base)}, "since"},
		{&observerpb.GetFlowsRequest{Until: &timestamppb.Timestamp{Nanos: -1}}, "until"},
		{&observerpb.GetFlowsRequest{FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"nope"}}}, "field_mask"},
	}
	for _, tc := range cases {
		_, err := collect(t, c, tc.req)
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tc.field+": ") {
			t.Errorf("%s: got %v, want InvalidArgument naming the field", tc.field, err)
		}
	}
}

func TestFieldMaskAndStatus(t *testing.T) {
	o := New(Options{NodeName: "n1", Capacity: 100, Address: "unix:///x"})
	for i := range 5 {
		o.Publish(flowAt(i, "shop", "a", flowpb.Verdict_FORWARDED, 80))
	}
	conn := serveConn(t, o)
	c := observerpb.NewObserverClient(conn)
	ctx := context.Background()
	st, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{Number: 1, FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"source.pod_name", "Summary"}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if f := r.GetFlow(); f.GetSummary() != "flow 4" || f.GetSource().GetPodName() != "a" || f.GetSource().GetIdentity() != 0 || f.GetIP() != nil {
		t.Errorf("masked flow %v", f)
	}
	if r.GetNodeName() != "n1" || !r.GetTime().AsTime().Equal(base.Add(4*time.Second)) {
		t.Errorf("response node %q time %v", r.GetNodeName(), r.GetTime().AsTime())
	}
	ss, err := c.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ss.GetNumFlows() != 5 || ss.GetMaxFlows() != 100 || ss.GetSeenFlows() != 5 || ss.GetVersion() != hubble.Version {
		t.Errorf("status %v", ss)
	}
	nodes, err := c.GetNodes(ctx, &observerpb.GetNodesRequest{})
	if err != nil || len(nodes.GetNodes()) != 1 || nodes.GetNodes()[0].GetName() != "n1" || nodes.GetNodes()[0].GetAddress() != "unix:///x" {
		t.Errorf("nodes %v %v", nodes, err)
	}
	hc := healthpb.NewHealthClient(conn)
	h, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: hubble.ObserverServiceName})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health %v %v", h, err)
	}
}

func TestNamespaces(t *testing.T) {
	o := New(Options{NodeName: "n1"})
	now := time.Now()
	for i, ns := range []string{"tools", "shop", "shop", ""} {
		f := flowAt(i, ns, "p", flowpb.Verdict_FORWARDED, 80)
		f.Time = timestamppb.New(now)
		o.Publish(f)
	}
	old := flowAt(0, "gone", "p", flowpb.Verdict_FORWARDED, 80)
	old.Destination = nil
	old.Time = timestamppb.New(now.Add(-2 * time.Hour))
	o.Publish(old)
	resp, err := o.GetNamespaces(context.Background(), &observerpb.GetNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range resp.GetNamespaces() {
		got = append(got, n.GetCluster()+"/"+n.GetNamespace())
	}
	if g := strings.Join(got, " "); g != "default/shop default/tools" {
		t.Errorf("namespaces %s", g)
	}
}

// TestStuckClient: a client that stops reading must not delay the writer
// nor another client; when it reads again it learns what it lost.
func TestStuckClient(t *testing.T) {
	o := New(Options{NodeName: "n1", Capacity: 64})
	c := serve(t, o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Last 1 + follow: the marker arrives whether the stream starts before
	// or after it is published.
	stuck, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{Number: 1, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	healthy, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{Number: 1, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	// A marker flow tells both streams are being served.
	o.Publish(flowAt(0, "shop", "marker", flowpb.Verdict_FORWARDED, 1))
	for _, s := range []observerpb.Observer_GetFlowsClient{stuck, healthy} {
		if r, err := s.Recv(); err != nil || r.GetFlow().GetSummary() != "flow 0" {
			t.Fatalf("marker: %v %v", r, err)
		}
	}

	// The healthy client reads everything; the stuck one reads nothing.
	const total = 20000
	got := make(chan int, total)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(got)
		for i := 0; i < total; i++ {
			r, err := healthy.Recv()
			if err != nil {
				t.Errorf("healthy client: %v", err)
				return
			}
			if r.GetLostEvents() != nil {
				t.Errorf("healthy client lost events: %v", r.GetLostEvents())
				return
			}
			var n int
			fmt.Sscanf(r.GetFlow().GetSummary(), "flow %d", &n)
			got <- n
		}
	}()
	pad := strings.Repeat("x", 512) // fill the stuck stream's flow-control window quickly
	next, seen := 1, 0
	for next <= total {
		// Publish a batch no larger than the ring, then let the healthy
		// client catch up, so only the stuck client can be lapped.
		end := min(next+32, total+1)
		for ; next < end; next++ {
			f := flowAt(next, "shop", "a", flowpb.Verdict_FORWARDED, 80)
			f.Summary = fmt.Sprintf("flow %d", next)
			f.NodeLabels = []string{pad}
			o.Publish(f)
		}
		for seen < next-1 {
			n, ok := <-got
			if !ok {
				t.Fatal("healthy client stopped")
			}
			if n != seen+1 {
				t.Fatalf("healthy client got flow %d after %d", n, seen)
			}
			seen = n
		}
	}
	wg.Wait()

	// Now the stuck client reads: buffered flows, then a gap report.
	var lost uint64
	for read := 0; lost == 0; read++ {
		if read > total {
			t.Fatal("the stuck client read everything without a gap: was it never lapped?")
		}
		r, err := stuck.Recv()
		if err != nil {
			t.Fatalf("stuck client: %v", err)
		}
		if le := r.GetLostEvents(); le != nil {
			if le.GetSource() != flowpb.LostEventSource_HUBBLE_RING_BUFFER {
				t.Fatalf("lost event source %v", le.GetSource())
			}
			lost = le.GetNumEventsLost()
		}
	}
	if st := o.Stats(); st.ClientLost < lost || st.SeenFlows != total+1 {
		t.Errorf("stats %+v after a gap of %d", st, lost)
	}
}

// TestEnqueue: events flow from the queue through the parser into the
// ring; a full queue counts lost events and reports them in the stream.
func TestEnqueue(t *testing.T) {
	p := parser.New(parser.Options{NodeName: "n1", Clock: parser.FixedClock(0)})
	o := New(Options{NodeName: "n1", Parser: p, QueueSize: 5, Capacity: 100})
	ev := datapath.Event{Timestamp: uint64(base.UnixNano()), Type: datapath.EventTrace, Subtype: 5, Proto: 17,
		Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 1, DstPort: 2}
	bad := ev
	bad.Type = 77
	o.Enqueue(&bad)
	for range 6 {
		o.Enqueue(&ev) // two do not fit: nobody parses yet
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go o.Run(ctx)
	c := serve(t, o)
	var flows, lost int
	deadline := time.Now().Add(30 * time.Second)
	for flows < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		st, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		flows, lost = 0, 0
		for {
			r, err := st.Recv()
			if err != nil {
				break
			}
			if r.GetFlow() != nil {
				flows++
			}
			if le := r.GetLostEvents(); le != nil && le.GetSource() == flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE {
				lost += int(le.GetNumEventsLost())
			}
		}
	}
	if flows != 4 || lost != 2 {
		t.Errorf("%d flows and %d lost, want 4 and 2", flows, lost)
	}
	if st := o.Stats(); st.QueueLost != 2 || st.ParseErrors != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestEnqueueWait: a full queue makes the ring-buffer reader wait instead
// of losing events; it lets go when the parser makes room or ctx ends.
func TestEnqueueWait(t *testing.T) {
	p := parser.New(parser.Options{NodeName: "n1", Clock: parser.FixedClock(0)})
	o := New(Options{NodeName: "n1", Parser: p, QueueSize: 2, Capacity: 100})
	ev := datapath.Event{Timestamp: uint64(base.UnixNano()), Type: datapath.EventTrace, Subtype: 5, Proto: 17,
		Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 1, DstPort: 2}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		if !o.EnqueueWait(ctx, &ev) {
			t.Fatal("EnqueueWait refused an event with room in the queue")
		}
	}
	done := make(chan bool)
	go func() { done <- o.EnqueueWait(ctx, &ev) }()
	select {
	case <-done:
		t.Fatal("EnqueueWait returned with the queue full and nobody parsing")
	case <-time.After(50 * time.Millisecond):
	}
	go o.Run(ctx)
	if !<-done {
		t.Fatal("EnqueueWait failed once the parser made room")
	}
	for deadline := time.Now().Add(30 * time.Second); o.Stats().SeenFlows < 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if st := o.Stats(); st.SeenFlows != 3 || st.QueueLost != 0 {
		t.Errorf("stats %+v, want 3 flows and nothing lost", st)
	}

	// A full queue and a cancelled context: EnqueueWait gives up.
	o2 := New(Options{NodeName: "n1", Parser: p, QueueSize: 1})
	ctx2, cancel2 := context.WithCancel(context.Background())
	o2.EnqueueWait(ctx2, &ev)
	go func() { done <- o2.EnqueueWait(ctx2, &ev) }()
	cancel2()
	if <-done {
		t.Error("EnqueueWait reported success after its context ended")
	}
}

// BenchmarkPipeline measures what the observer's goroutine does per event:
// parse, metrics, ring; the ring's size matters through the GC (the flows it
// holds are live). Run with -cpu 1 for a per-core figure.
func BenchmarkPipeline(b *testing.B) {
	for _, capacity := range []int{DefaultCapacity, 65535} {
		b.Run(fmt.Sprintf("ring=%d", capacity), func(b *testing.B) { benchPipeline(b, capacity) })
	}
}

func benchPipeline(b *testing.B, capacity int) {
	p := parser.New(parser.Options{NodeName: "n1", Clock: parser.FixedClock(0)})
	m, err := hubblemetrics.New(hubblemetrics.Default)
	if err != nil {
		b.Fatal(err)
	}
	o := New(Options{NodeName: "n1", Parser: p, Metrics: m, Capacity: capacity})
	evs := []datapath.Event{
		{Timestamp: 1, Type: datapath.EventTrace, Subtype: 5, Proto: 6, TCPFlags: 2, Direction: 1, IfIndex: 4,
			Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 40000, DstPort: 80},
		{Timestamp: 2, Type: datapath.EventTrace, Subtype: 101, Proto: 17, Direction: 0, IfIndex: 4,
			Src: netip.MustParseAddr("fd00::2"), Dst: netip.MustParseAddr("fd00::1"), SrcPort: 53, DstPort: 40000},
		{Timestamp: 3, Type: datapath.EventDrop, Subtype: 133, Proto: 6, TCPFlags: 2, Direction: 0,
			Src: netip.MustParseAddr("10.0.0.3"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 1, DstPort: 80},
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	i := 0
	for b.Loop() {
		f, err := p.Parse(&evs[i%len(evs)])
		if err != nil {
			b.Fatal(err)
		}
		o.Publish(f)
		i++
	}
	// Per CPU-second of the process (GC included): stable on a busy machine.
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "events/cpu-s")
	}
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
