package bench

// The ring-rate part of the flows benchmark: a datapath in a throwaway
// namespace producing events at a set rate while a consumer reads them.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/datapath"
	hubblemetrics "github.com/lumen-net/lumen/internal/hubble/metrics"
	"github.com/lumen-net/lumen/internal/hubble/observer"
	"github.com/lumen-net/lumen/internal/hubble/parser"
	"github.com/lumen-net/lumen/internal/hubble/reader"
	"github.com/lumen-net/lumen/internal/netnsutil"
)

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
