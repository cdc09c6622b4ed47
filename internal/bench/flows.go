package bench

// Flow observability benchmarks (`lumen bench flows`):
//
//   - the sustained datapath event rate the agent's reader and parser keep
//     up with at the default ring size without losing an event, against a
//     bare reader that only decodes records;
//   - the heap of a flow ring of 65535 realistic flows, against their
//     protobuf wire size;
//   - GetFlows latency for the last 1000 flows matching a namespace and a
//     verdict over the real gRPC server on a unix socket, against the same
//     request without a filter.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lumen-net/lumen/internal/bpfconst"
	"github.com/lumen-net/lumen/internal/datapath"
	hubblemetrics "github.com/lumen-net/lumen/internal/hubble/metrics"
	"github.com/lumen-net/lumen/internal/hubble/observer"
	"github.com/lumen-net/lumen/internal/hubble/parser"
	"github.com/lumen-net/lumen/internal/hubble/reader"
	"github.com/lumen-net/lumen/internal/hubble/transport"
	"github.com/lumen-net/lumen/internal/netnsutil"
)

// FlowsOptions configure FlowsBench.
type FlowsOptions struct {
	// StepDuration is how long each rate is sustained.
	StepDuration time.Duration `json:"stepDuration"`
	// StartRate is the first rate tried (events/s); each step doubles it
	// up to MaxRate, until a step loses events (and once more).
	StartRate float64 `json:"startRate"`
	MaxRate   float64 `json:"maxRate"`
	// RingFlows is the flow ring's capacity for the memory and GetFlows
	// measurements.
	RingFlows int `json:"ringFlows"`
	// Requests is the number of GetFlows requests per query.
	Requests int `json:"requests"`
	// Last is the number of flows each GetFlows request asks for.
	Last int `json:"last"`
	// Refine is the number of bisection steps between the last lossless
	// rate and the first lossy one.
	Refine int `json:"refine"`
	// SkipRate leaves out the datapath part (which needs root).
	SkipRate bool `json:"skipRate"`
}

// Validate names the first invalid option by its `lumen bench flows` flag.
func (o FlowsOptions) Validate() error {
	switch {
	case o.StepDuration <= 0:
		return fmt.Errorf("step: invalid value %s: want a positive duration", o.StepDuration)
	case o.StartRate <= 0:
		return fmt.Errorf("start-rate: invalid value %g: want a positive rate", o.StartRate)
	case o.MaxRate < o.StartRate:
		return fmt.Errorf("max-rate: invalid value %g: want at least start-rate (%g)", o.MaxRate, o.StartRate)
	case o.RingFlows < o.Last:
		return fmt.Errorf("flows: invalid value %d: want at least last (%d)", o.RingFlows, o.Last)
	case o.Requests < 1:
		return fmt.Errorf("requests: invalid value %d: want at least 1", o.Requests)
	case o.Last < 1:
		return fmt.Errorf("last: invalid value %d: want at least 1", o.Last)
	case o.Refine < 0:
		return fmt.Errorf("refine: invalid value %d: want 0 or more", o.Refine)
	}
	return nil
}

// DefaultFlowsOptions are the `lumen bench flows` defaults.
var DefaultFlowsOptions = FlowsOptions{
	StepDuration: 2 * time.Second, StartRate: 25_000, MaxRate: 3_200_000,
	RingFlows: 65535, Requests: 50, Last: 1000, Refine: 3,
}

// FlowsGoal is the goal for the sustained lossless event rate.
const FlowsGoal = 100_000

// RateStep is one sustained rate.
type RateStep struct {
	Target    float64 `json:"targetPerSecond"`
	Generated uint64  `json:"generated"`
	// Achieved is Generated over the step's duration: below Target when
	// the generator itself ran out of CPU.
	Achieved  float64 `json:"generatedPerSecond"`
	Delivered uint64  `json:"delivered"`   // flows (pipeline) or records (bare reader)
	RingLost  uint64  `json:"ringLost"`    // the datapath's lost-events counter (metrics index 255)
	QueueLost uint64  `json:"queueLost"`   // the observer's queue overflowed
	Unsettled uint64  `json:"unaccounted"` // neither delivered nor counted lost when the wait ended
}

// Lost is every event of the step that did not become a flow.
func (s RateStep) Lost() uint64 { return s.RingLost + s.QueueLost + s.Unsettled }

// RateResult is the rate search for one consumer of the ring.
type RateResult struct {
	Consumer string     `json:"consumer"`
	Steps    []RateStep `json:"steps"`
	// MaxLossless is the highest generated rate of a step without any loss.
	MaxLossless float64 `json:"maxLosslessPerSecond"`
	// GeneratorBound: the search ended because the generator could not
	// reach its target (no CPU left on the machine): MaxLossless is a lower
	// bound.
	GeneratorBound bool `json:"generatorBound"`
}

// MemoryResult is the flow ring's memory.
type MemoryResult struct {
	Flows        int     `json:"flows"`
	HeapBytes    uint64  `json:"heapBytes"`
	BytesPerFlow float64 `json:"bytesPerFlow"`
	// WireBytesPerFlow is the mean protobuf size of the same flows.
	WireBytesPerFlow float64 `json:"wireBytesPerFlow"`
	Ratio            float64 `json:"heapToWireRatio"`
}

// QueryResult is the latency of one GetFlows query.
type QueryResult struct {
	Name     string        `json:"name"`
	Flows    int           `json:"flowsPerResponse"`
	Scanned  int           `json:"flowsScanned"` // ring entries the server walks through
	Requests int           `json:"requests"`
	P50      time.Duration `json:"p50"`
	P90      time.Duration `json:"p90"`
	Max      time.Duration `json:"max"`
	Mean     time.Duration `json:"mean"`
}

// FlowsReport is the outcome of FlowsBench.
type FlowsReport struct {
	Options    FlowsOptions  `json:"options"`
	RingBytes  int           `json:"ringBytes"`
	RecordSize int           `json:"recordBytes"`
	Rates      []RateResult  `json:"rates,omitempty"`
	Parse      ParseResult   `json:"parse"`
	Memory     MemoryResult  `json:"memory"`
	Queries    []QueryResult `json:"getFlows"`
	Method     string        `json:"method"`
	// CPUs and LoadAverage (1 minute, before the run) tell how busy the
	// machine was: the rates depend on it.
	CPUs        int    `json:"cpus"`
	LoadAverage string `json:"loadAverage"`
}

// Consumers of the ring in the rate search.
const (
	ConsumerPipeline = "agent pipeline (reader, parser, metrics, flow ring)"
	ConsumerBare     = "bare reader (decode only)"
)

// Query names.
const (
	QueryFiltered   = "namespace + verdict filter"
	QueryUnfiltered = "no filter"
)

// FlowsBench runs the flow benchmarks.
func FlowsBench(ctx context.Context, o FlowsOptions) (*FlowsReport, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	rep := &FlowsReport{Options: o, RecordSize: 8 + datapath.EventSize,
		Method: "events: to_container run by BPF_PROG_TEST_RUN (repeat) at trace level all, paced in batches of about 1 ms, " +
			"while the agent's reader (internal/hubble/reader) and observer consume them in the same process; a step counts as lossless when " +
			"the datapath's lost counter, the observer's queue and the delivered count all agree on zero loss"}
	rep.CPUs = runtime.NumCPU()
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			rep.LoadAverage = f[0]
		}
	}
	if !o.SkipRate {
		rates, ringBytes, err := RingRates(ctx, o)
		if err != nil {
			return nil, err
		}
		rep.Rates, rep.RingBytes = rates, ringBytes
	}
	rep.Parse = ParseRate(1_000_000)
	obs, mem := FillRing(o.RingFlows)
	rep.Memory = mem
	qs, err := MeasureGetFlows(ctx, obs, o.Last, o.Requests)
	if err != nil {
		return nil, err
	}
	rep.Queries = qs
	return rep, nil
}

// flowsEnv is a datapath in a throwaway namespace with server pods behind
// one veth and client pods in several namespaces.
type flowsEnv struct {
	dp      *datapath.Datapath
	ifindex int
	pkts    [][]byte
	enr     staticEnricher
	close   func()
}

// newFlowsEnv locks the calling goroutine to its thread and switches the
// thread into a new namespace; close switches it back (see netnsutil.Enter).
func newFlowsEnv() (env *flowsEnv, err error) {
	name := fmt.Sprintf("lmn-bench-flows-%d", os.Getpid())
	ns, err := netnsutil.NewNamed(name)
	if err != nil {
		return nil, err
	}
	exit, err := netnsutil.Enter(ns)
	if err != nil {
		ns.Close()
		_ = netns.DeleteNamed(name)
		return nil, err
	}
	var dp *datapath.Datapath
	var dir string
	cleanup := func() {
		if dp != nil {
			dp.Close()
			_ = unix.Unmount(filepath.Join(dir, "bpf"), 0)
		}
		if dir != "" {
			os.RemoveAll(dir)
		}
		_ = exit()
		ns.Close()
		_ = netns.DeleteNamed(name)
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	if dir, err = os.MkdirTemp("", "lumen-bench-flows-"); err != nil {
		return nil, err
	}
	bpffs := filepath.Join(dir, "bpf")
	// The default ring size: what is measured.
	if dp, err = datapath.Load(datapath.Options{BPFFS: bpffs}); err != nil {
		return nil, err
	}
	if err := dp.SetConfig(datapath.RuntimeConfig{TraceLevel: datapath.TraceAll}); err != nil {
		return nil, err
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lxcflows"}, PeerName: "lxcflowsp"}); err != nil {
		return nil, fmt.Errorf("creating veth: %w", err)
	}
	l, err := netlink.LinkByName("lxcflows")
	if err != nil {
		return nil, err
	}
	env = &flowsEnv{dp: dp, ifindex: l.Attrs().Index, enr: staticEnricher{}}
	pods := benchPods()
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	for i, p := range pods {
		ifindex := uint32(9999) // clients: only their identity matters
		if p.server {
			ifindex = uint32(env.ifindex)
		}
		if err := dp.UpsertEndpoint(p.ip, datapath.EndpointInfo{IfIndex: ifindex, ID: uint16(i + 1), Identity: p.ep.Identity, MAC: mac, HostMAC: mac}); err != nil {
			return nil, err
		}
		env.enr[p.ip] = p.ep
	}
	// Packets into the server pods from clients: TCP with the flags of an
	// established connection, and DNS-like UDP.
	rng := rand.New(rand.NewPCG(1, 2))
	var servers, clients []benchPod
	for _, p := range pods {
		if p.server {
			servers = append(servers, p)
		} else {
			clients = append(clients, p)
		}
	}
	for i := range 256 {
		// Both lists alternate IPv4 and IPv6: s has c's family.
		ci := rng.IntN(len(clients))
		c, s := clients[ci], servers[rng.IntN(len(servers)/2)*2+ci%2]
		pk := datapath.Packet{SrcMAC: mac, DstMAC: mac, Src: c.ip, Dst: s.ip, Proto: 6, SrcPort: uint16(32768 + i), DstPort: 8080, TCPFlags: 0x18}
		if i%8 == 0 {
			pk.Proto, pk.DstPort, pk.TCPFlags = 17, 53, 0
		}
		env.pkts = append(env.pkts, pk.Bytes())
	}
	env.close = cleanup
	return env, nil
}

// run runs to_container n times on one packet: n events.
func (e *flowsEnv) run(prog *ebpf.Program, pkt []byte, out []byte, n uint32) error {
	ctx := skbContext{IngressIfindex: uint32(e.ifindex), Ifindex: uint32(e.ifindex)}
	_, err := prog.Run(&ebpf.RunOptions{Data: pkt, DataOut: out, Repeat: n, Context: ctx})
	return err
}

// generate produces events at rate per second for d, in batches of about a
// millisecond's worth, and returns how many it produced and how long it
// took. It runs on the calling (locked, in-namespace) thread.
func (e *flowsEnv) generate(rate float64, d time.Duration) (uint64, time.Duration, error) {
	prog := e.dp.Program(datapath.HookToContainer)
	out := make([]byte, 512)
	maxBatch := uint64(min(max(rate/1000, 16), 8192))
	var sent uint64
	start := time.Now()
	for i := 0; ; i++ {
		el := time.Since(start)
		if el >= d {
			return sent, el, nil
		}
		due := uint64(rate * el.Seconds())
		if sent >= due {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		n := min(due-sent, maxBatch)
		if err := e.run(prog, e.pkts[i%len(e.pkts)], out, uint32(n)); err != nil {
			return sent, time.Since(start), fmt.Errorf("running to_container: %w", err)
		}
		sent += n
	}
}

// forwarded is the datapath's count of forwarded packets: one per run of
// to_container, each of which emits one event or counts it lost.
func (e *flowsEnv) forwarded() (uint64, error) {
	cs, err := e.dp.Counters()
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range cs {
		if c.Reason == 0 {
			n += c.Packets
		}
	}
	return n, nil
}

// consumer reads the events ring as the agent does.
type consumer struct {
	obs       *observer.Observer // nil: bare reader
	delivered atomic.Uint64      // bare reader
	stop      func()
}

func startConsumer(dp *datapath.Datapath, enr staticEnricher, bare bool) (*consumer, error) {
	rd, err := dp.OpenEvents()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{}
	var wg sync.WaitGroup
	o := reader.Options{}
	if bare {
		o.Sink = func(*datapath.Event) { c.delivered.Add(1) }
	} else {
		// As the agent: counters by type, parser with enrichment, the
		// default flow metrics and ring.
		events := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bench_events_total"}, []string{"type"})
		var counters [256]prometheus.Counter
		counters[datapath.EventTrace] = events.WithLabelValues("trace")
		counters[datapath.EventDrop] = events.WithLabelValues("drop")
		counters[datapath.EventPolicy] = events.WithLabelValues("policy")
		o.Count = func(t uint8) {
			if c := counters[t]; c != nil {
				c.Inc()
			}
		}
		hm, err := hubblemetrics.New(hubblemetrics.Default)
		if err != nil {
			cancel()
			rd.Close()
			return nil, err
		}
		p := parser.New(parser.Options{NodeName: "bench", Enricher: enr})
		c.obs = observer.New(observer.Options{NodeName: "bench", Parser: p, Metrics: hm})
		wg.Add(1)
		go func() { defer wg.Done(); c.obs.Run(ctx) }()
		o.Sink = func(ev *datapath.Event) { c.obs.EnqueueWait(ctx, ev) }
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = reader.Run(ctx, rd, o) }()
	c.stop = func() { cancel(); rd.Close(); wg.Wait() }
	return c, nil
}

// counts returns delivered and queue-lost so far.
func (c *consumer) counts() (delivered, queueLost uint64) {
	if c.obs == nil {
		return c.delivered.Load(), 0
	}
	st := c.obs.Stats()
	return st.SeenFlows + st.ParseErrors, st.QueueLost
}

// RingRates searches, for the agent's pipeline and for a bare reader, the
// highest event rate sustained without loss at the default ring size. It
// needs root (a network namespace, BPF).
func RingRates(ctx context.Context, o FlowsOptions) ([]RateResult, int, error) {
	env, err := newFlowsEnv()
	if err != nil {
		return nil, 0, err
	}
	defer env.close()
	ringBytes := int(env.dp.Events.MaxEntries())
	var out []RateResult
	for _, bare := range []bool{false, true} {
		res, err := env.rateSearch(ctx, o, bare)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, res)
	}
	return out, ringBytes, nil
}

func (e *flowsEnv) rateSearch(ctx context.Context, o FlowsOptions, bare bool) (RateResult, error) {
	res := RateResult{Consumer: ConsumerPipeline}
	if bare {
		res.Consumer = ConsumerBare
	}
	c, err := startConsumer(e.dp, e.enr, bare)
	if err != nil {
		return res, err
	}
	defer c.stop()
	step := func(rate float64) (RateStep, error) {
		if err := ctx.Err(); err != nil {
			return RateStep{}, err
		}
		s, err := e.step(c, rate, o.StepDuration)
		if err != nil {
			return s, err
		}
		res.Steps = append(res.Steps, s)
		if s.Lost() == 0 {
			res.MaxLossless = max(res.MaxLossless, s.Achieved)
		}
		return s, nil
	}
	// Double until a step loses events, and once more for the loss at a
	// higher rate; then bisect between the last lossless rate and the
	// first lossy one.
	good, bad := 0.0, 0.0
	for rate := o.StartRate; rate <= o.MaxRate; rate *= 2 {
		s, err := step(rate)
		if err != nil {
			return res, err
		}
		if s.Lost() > 0 {
			if bad != 0 {
				break
			}
			bad = rate
		} else if bad == 0 {
			good = rate
		}
		// The generator is out of CPU: higher targets measure nothing new.
		if s.Achieved < 0.8*rate {
			res.GeneratorBound = true
			break
		}
	}
	if good == 0 || bad == 0 {
		return res, nil
	}
	for range o.Refine {
		mid := (good + bad) / 2
		s, err := step(mid)
		if err != nil {
			return res, err
		}
		switch {
		case s.Achieved < 0.8*mid:
			res.GeneratorBound = true // out of CPU: nothing to learn
			return res, nil
		case s.Lost() == 0:
			good = mid
		default:
			bad = mid
		}
	}
	return res, nil
}

// step sustains rate for d and waits until every event generated is
// delivered or counted lost.
func (e *flowsEnv) step(c *consumer, rate float64, d time.Duration) (RateStep, error) {
	runtime.GC() // every step starts from the same heap state
	lost0, err := e.dp.EventsLost()
	if err != nil {
		return RateStep{}, err
	}
	del0, q0 := c.counts()
	fwd0, err := e.forwarded()
	if err != nil {
		return RateStep{}, err
	}
	_, el, err := e.generate(rate, d)
	if err != nil {
		return RateStep{}, err
	}
	// What the program ran, by its own count: cilium/ebpf restarts a test
	// run the Go runtime's preemption signal interrupted, so some packets
	// run twice.
	fwd, err := e.forwarded()
	if err != nil {
		return RateStep{}, err
	}
	sent := fwd - fwd0
	var s RateStep
	deadline := time.Now().Add(30 * time.Second)
	for {
		lost, err := e.dp.EventsLost()
		if err != nil {
			return s, err
		}
		del, q := c.counts()
		s = RateStep{Target: rate, Generated: sent, Achieved: float64(sent) / el.Seconds(),
			Delivered: del - del0, RingLost: lost - lost0, QueueLost: q - q0}
		if s.Delivered+s.RingLost+s.QueueLost >= sent || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if acc := s.Delivered + s.RingLost + s.QueueLost; acc < sent {
		s.Unsettled = sent - acc
	}
	return s, nil
}

// benchPod is a pod of the synthetic cluster.
type benchPod struct {
	ip     netip.Addr
	ep     *flowpb.Endpoint
	server bool
}

// Namespaces and pods of the synthetic cluster: 8 namespaces of 32 pods,
// the first 4 of each namespace serving.
const (
	benchNamespaces = 8
	benchPodsPerNS  = 32
	benchServers    = 4
)

func benchNamespace(i int) string { return fmt.Sprintf("team-%d", i) }

func benchPods() []benchPod {
	var out []benchPod
	for n := range benchNamespaces {
		ns := benchNamespace(n)
		for p := range benchPodsPerNS {
			app := fmt.Sprintf("app-%d", p%6)
			ep := &flowpb.Endpoint{
				ID: uint32(n*benchPodsPerNS + p + 1), Identity: uint32(20000 + n*8 + p%6), ClusterName: "default",
				Namespace: ns, PodName: fmt.Sprintf("%s-%x", app, 0x5f7c9d4b00+n*100+p),
				Labels: parser.PodLabels(ns, map[string]string{"app": app, "tier": []string{"web", "api", "db"}[p%3]}),
			}
			out = append(out, benchPod{ip: netip.AddrFrom4([4]byte{10, 200, byte(n), byte(10 + p)}), ep: ep, server: p < benchServers})
			out = append(out, benchPod{ip: netip.MustParseAddr(fmt.Sprintf("fd00:10:200:%x::%x", n, 10+p)), ep: ep, server: p < benchServers})
		}
	}
	return out
}

type staticEnricher map[netip.Addr]*flowpb.Endpoint

func (s staticEnricher) EndpointByIP(ip netip.Addr) *flowpb.Endpoint {
	if ep, ok := s[ip.Unmap()]; ok {
		return ep
	}
	return parser.ReservedEndpoint(parser.IdentityWorld)
}

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
