// Package observer is the agent's flow observer: datapath events are queued
// (the ring-buffer reader waits for room, so that a parser falling behind
// leaves them in the larger ring buffer), parsed into flows, counted in
// metrics and kept in a ring of the most recent flows, which the Observer
// gRPC service (GetFlows, ServerStatus, GetNodes, GetNamespaces) serves.
// Clients read the ring at their own pace: a slow or stuck client never
// delays the agent or other clients, it only loses what was overwritten and
// is told so with a LostEvent.
package observer

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/hubble"
	"github.com/lumen-net/lumen/internal/hubble/metrics"
	"github.com/lumen-net/lumen/internal/hubble/parser"
)

// Defaults.
const (
	DefaultCapacity  = 4095
	DefaultQueueSize = 16384
	namespaceTTL     = time.Hour
	refreshEvery     = 5 * time.Second
)

// Options configure an Observer.
type Options struct {
	NodeName    string
	ClusterName string // default "default"
	// Address is where this observer is served, reported by GetNodes.
	Address string
	// Parser converts events; required for Enqueue.
	Parser *parser.Parser
	// Capacity of the flow ring (default 4095).
	Capacity int
	// QueueSize is the number of events waiting to be parsed (default 16384).
	QueueSize int
	// Metrics counts flows and lost events; optional.
	Metrics *metrics.Metrics
	Log     *slog.Logger
}

// Observer records flows and serves them.
type Observer struct {
	observerpb.UnimplementedObserverServer

	opts    Options
	ring    *Ring
	queue   chan datapath.Event
	started time.Time
	log     *slog.Logger

	seen        atomic.Uint64 // flows written
	queueLost   atomic.Uint64 // events the queue refused
	queueNoted  uint64        // queueLost already reported in the ring (Run only)
	parseErrors atomic.Uint64
	lapped      atomic.Uint64 // entries clients missed

	rate rateCounter

	nsMu       sync.Mutex
	namespaces map[string]int64 // namespace -> last seen (unix seconds)
}

// New returns an observer; call Run to start parsing.
func New(o Options) *Observer {
	if o.Capacity <= 0 {
		o.Capacity = DefaultCapacity
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.ClusterName == "" {
		o.ClusterName = "default"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Observer{
		opts: o, ring: NewRing(o.Capacity), queue: make(chan datapath.Event, o.QueueSize),
		started: time.Now(), log: o.Log, namespaces: map[string]int64{},
	}
}

// Ring returns the flow ring.
func (o *Observer) Ring() *Ring { return o.ring }

// Enqueue hands an event to the parser without blocking; when the queue is
// full the event is counted as lost.
func (o *Observer) Enqueue(ev *datapath.Event) bool {
	select {
	case o.queue <- *ev:
		return true
	default:
		o.queueLost.Add(1)
		o.opts.Metrics.OnLost(metrics.LostQueue, 1)
		return false
	}
}

// EnqueueWait hands an event to the parser, waiting while the queue is
// full: the ring-buffer reader uses it, so that a parser that falls behind
// leaves events in the ring buffer, which holds more, instead of losing
// them here; the datapath counts what the ring cannot take. It returns
// false when ctx ends first.
func (o *Observer) EnqueueWait(ctx context.Context, ev *datapath.Event) bool {
	select {
	case o.queue <- *ev:
		return true
	default:
	}
	select {
	case o.queue <- *ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// Run parses queued events until ctx ends.
func (o *Observer) Run(ctx context.Context) {
	tick := time.NewTicker(refreshEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-o.queue:
			o.reportQueueLoss()
			f, err := o.opts.Parser.Parse(&ev)
			if err != nil {
				if n := o.parseErrors.Add(1); n <= 10 || n%10000 == 0 {
					o.log.Warn("unparsable datapath event", "err", err, "count", n)
				}
				o.opts.Metrics.OnLost(metrics.LostParse, 1)
				continue
			}
			o.Publish(f)
		case <-tick.C:
			o.opts.Parser.Refresh()
			o.reportQueueLoss()
		}
	}
}

// reportQueueLoss puts a LostEvent in the ring for events the queue refused
// since the last report, so that clients see the gap where it happened.
func (o *Observer) reportQueueLoss() {
	if n := o.queueLost.Load(); n != o.queueNoted {
		o.RecordLost(flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, n-o.queueNoted)
		o.queueNoted = n
	}
}

// RecordLost puts a LostEvent into the ring (the caller counts it in
// metrics where it is detected). Safe for concurrent use.
func (o *Observer) RecordLost(source flowpb.LostEventSource, n uint64) {
	if n == 0 {
		return
	}
	now := timestamppb.Now()
	o.ring.Write(Entry{Lost: &flowpb.LostEvent{Source: source, NumEventsLost: n, First: now, Last: now}})
}

// Publish records a flow: metrics, namespaces, ring. Flows must not be
// modified afterwards.
func (o *Observer) Publish(f *flowpb.Flow) {
	o.opts.Metrics.OnFlow(f)
	sec := f.GetTime().GetSeconds()
	o.rate.add(sec)
	o.noteNamespace(f.GetSource().GetNamespace(), sec)
	o.noteNamespace(f.GetDestination().GetNamespace(), sec)
	o.ring.Write(Entry{Flow: f})
	o.seen.Add(1)
}

func (o *Observer) noteNamespace(ns string, sec int64) {
	if ns == "" {
		return
	}
	o.nsMu.Lock()
	if o.namespaces[ns] < sec {
		o.namespaces[ns] = sec
	}
	o.nsMu.Unlock()
}

// Stats are the observer's counters.
type Stats struct {
	NumFlows, MaxFlows, SeenFlows uint64
	QueueLost, ParseErrors        uint64
	ClientLost                    uint64 // ring entries clients missed
	Uptime                        time.Duration
	FlowsRate                     float64 // per second over the last minute
}

// Stats returns the current counters.
func (o *Observer) Stats() Stats {
	oldest, next := o.ring.Bounds()
	return Stats{
		NumFlows: next - oldest, MaxFlows: uint64(o.ring.Cap()), SeenFlows: o.seen.Load(),
		QueueLost: o.queueLost.Load(), ParseErrors: o.parseErrors.Load(), ClientLost: o.lapped.Load(),
		Uptime: time.Since(o.started), FlowsRate: o.rate.perSecond(time.Now().Unix()),
	}
}

// ServerStatus implements observer.Observer.
func (o *Observer) ServerStatus(context.Context, *observerpb.ServerStatusRequest) (*observerpb.ServerStatusResponse, error) {
	st := o.Stats()
	return &observerpb.ServerStatusResponse{
		NumFlows: st.NumFlows, MaxFlows: st.MaxFlows, SeenFlows: st.SeenFlows,
		UptimeNs: uint64(st.Uptime.Nanoseconds()), Version: hubble.Version, FlowsRate: st.FlowsRate,
	}, nil
}

// GetNodes implements observer.Observer: an agent knows only itself.
func (o *Observer) GetNodes(context.Context, *observerpb.GetNodesRequest) (*observerpb.GetNodesResponse, error) {
	st := o.Stats()
	return &observerpb.GetNodesResponse{Nodes: []*observerpb.Node{{
		Name: o.opts.NodeName, Version: hubble.Version, Address: o.opts.Address,
		State: relaypb.NodeState_NODE_CONNECTED, UptimeNs: uint64(st.Uptime.Nanoseconds()),
		NumFlows: st.NumFlows, MaxFlows: st.MaxFlows, SeenFlows: st.SeenFlows,
	}}}, nil
}

// GetNamespaces implements observer.Observer: the namespaces seen in flows
// of the last hour.
func (o *Observer) GetNamespaces(context.Context, *observerpb.GetNamespacesRequest) (*observerpb.GetNamespacesResponse, error) {
	cutoff := time.Now().Add(-namespaceTTL).Unix()
	o.nsMu.Lock()
	var names []string
	for ns, last := range o.namespaces {
		if last < cutoff {
			delete(o.namespaces, ns)
			continue
		}
		names = append(names, ns)
	}
	o.nsMu.Unlock()
	sort.Strings(names)
	resp := &observerpb.GetNamespacesResponse{}
	for _, ns := range names {
		resp.Namespaces = append(resp.Namespaces, &observerpb.Namespace{Cluster: o.opts.ClusterName, Namespace: ns})
	}
	return resp, nil
}

// rateCounter counts flows per second of flow time over the last minute.
type rateCounter struct {
	buckets [61]struct {
		sec atomic.Int64
		n   atomic.Uint64
	}
}

func (r *rateCounter) add(sec int64) {
	b := &r.buckets[uint64(sec)%61]
	if b.sec.Load() != sec {
		b.sec.Store(sec)
		b.n.Store(0)
	}
	b.n.Add(1)
}

func (r *rateCounter) perSecond(now int64) float64 {
	var total uint64
	for i := range r.buckets {
		b := &r.buckets[i]
		if s := b.sec.Load(); s > now-60 && s <= now {
			total += b.n.Load()
		}
	}
	return float64(total) / 60
}
