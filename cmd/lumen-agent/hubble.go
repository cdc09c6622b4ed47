package main

// Flow observability: the ring-buffer reader feeds the Hubble observer,
// which serves the Observer and Peer gRPC services on <state-dir>/hubble.sock
// (and optionally TCP with TLS). The enricher names the endpoints of flows
// from local endpoints, the store's remote endpoints, nodes and identities.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/endpoint"
	"github.com/lumen-net/lumen/internal/hubble"
	hubblemetrics "github.com/lumen-net/lumen/internal/hubble/metrics"
	"github.com/lumen-net/lumen/internal/hubble/observer"
	"github.com/lumen-net/lumen/internal/hubble/parser"
	"github.com/lumen-net/lumen/internal/hubble/peer"
	"github.com/lumen-net/lumen/internal/hubble/reader"
	"github.com/lumen-net/lumen/internal/hubble/transport"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/metrics"
	"github.com/lumen-net/lumen/internal/node"
)

// hubbleConfig holds the agent's Hubble settings (flags and YAML keys).
type hubbleConfig struct {
	EnableHubble              bool     `json:"enable-hubble"`
	HubbleSocketPath          string   `json:"hubble-socket-path"`
	HubbleListenAddress       string   `json:"hubble-listen-address"`
	HubbleTLSCertFile         string   `json:"hubble-tls-cert-file"`
	HubbleTLSKeyFile          string   `json:"hubble-tls-key-file"`
	HubbleTLSClientCAFiles    []string `json:"hubble-tls-client-ca-files"`
	HubbleEventBufferCapacity int      `json:"hubble-event-buffer-capacity"`
	HubbleEventQueueSize      int      `json:"hubble-event-queue-size"`
	HubbleMetrics             string   `json:"hubble-metrics"`
	// MonitorAggregation is Cilium's name for the trace level; when set it
	// wins over trace-level.
	MonitorAggregation string `json:"monitor-aggregation"`
	BPFEventsRingSize  int    `json:"bpf-events-ring-size"`

	hubbleMetricGroups []string
}

// monitorAggregation maps Cilium's monitor aggregation levels to the
// datapath's trace levels.
var monitorAggregation = map[string]uint32{
	"none":    datapath.TraceAll,     // every packet at every observation point
	"low":     datapath.TraceLow,     // every packet, at to-* observation points only
	"medium":  datapath.TraceControl, // per connection: first packet each way, TCP flag changes
	"maximum": datapath.TraceMax,     // connection start and end only
	"max":     datapath.TraceMax,
}

// traceLevels are the older --trace-level names.
var traceLevels = map[string]uint32{
	"none":    datapath.TraceNone,
	"control": datapath.TraceControl,
	"all":     datapath.TraceAll,
}

// datapathTraceLevel is the trace level to program: --monitor-aggregation
// when given, else --trace-level (default control, i.e. medium).
func (c *config) datapathTraceLevel() uint32 {
	if l, ok := monitorAggregation[c.MonitorAggregation]; ok {
		return l
	}
	if l, ok := traceLevels[c.TraceLevel]; ok {
		return l
	}
	return datapath.TraceControl
}

// defaultEventsRing is the events ring buffer's size in bpf/lib/maps.h.
const defaultEventsRing = 4 << 20

func defaultHubbleConfig() hubbleConfig {
	return hubbleConfig{
		EnableHubble:              true,
		HubbleEventBufferCapacity: observer.DefaultCapacity,
		HubbleEventQueueSize:      observer.DefaultQueueSize,
		HubbleMetrics:             strings.Join(hubblemetrics.Default, ","),
		BPFEventsRingSize:         defaultEventsRing,
	}
}

func (h *hubbleConfig) flags(fs *flag.FlagSet) {
	fs.BoolVar(&h.EnableHubble, "enable-hubble", h.EnableHubble, "serve flows (Hubble API) on hubble.sock")
	fs.StringVar(&h.HubbleSocketPath, "hubble-socket-path", h.HubbleSocketPath, "Hubble API unix socket (default <state-dir>/hubble.sock)")
	fs.StringVar(&h.HubbleListenAddress, "hubble-listen-address", h.HubbleListenAddress, "also serve the Hubble API on this TCP address (e.g. :4244)")
	fs.StringVar(&h.HubbleTLSCertFile, "hubble-tls-cert-file", h.HubbleTLSCertFile, "TLS certificate of the TCP listener")
	fs.StringVar(&h.HubbleTLSKeyFile, "hubble-tls-key-file", h.HubbleTLSKeyFile, "TLS key of the TCP listener")
	fs.Func("hubble-tls-client-ca-files", "comma-separated CAs of client certificates: mutual TLS", func(s string) error {
		h.HubbleTLSClientCAFiles = strings.Split(s, ",")
		return nil
	})
	fs.IntVar(&h.HubbleEventBufferCapacity, "hubble-event-buffer-capacity", h.HubbleEventBufferCapacity, "number of flows kept in memory")
	fs.IntVar(&h.HubbleEventQueueSize, "hubble-event-queue-size", h.HubbleEventQueueSize, "datapath events waiting to be parsed before they are dropped")
	fs.StringVar(&h.HubbleMetrics, "hubble-metrics", h.HubbleMetrics, "flow metric groups ("+strings.Join(hubblemetrics.Groups, ",")+"); empty: none")
	fs.StringVar(&h.MonitorAggregation, "monitor-aggregation", h.MonitorAggregation,
		"trace events: none (every packet), low (every packet at to-* points), medium (per connection and TCP flag changes) or maximum (connection start and end); wins over --trace-level (default medium)")
	fs.IntVar(&h.BPFEventsRingSize, "bpf-events-ring-size", h.BPFEventsRingSize, "bytes of the datapath's events ring buffer (a power of two, at least 4096); a change replaces the ring on restart")
}

func (h *hubbleConfig) validate(stateDir string) error {
	if h.HubbleSocketPath == "" {
		h.HubbleSocketPath = filepath.Join(stateDir, "hubble.sock")
	}
	if (h.HubbleTLSCertFile == "") != (h.HubbleTLSKeyFile == "") {
		return errors.New("hubble-tls-cert-file, hubble-tls-key-file: give both or neither")
	}
	if len(h.HubbleTLSClientCAFiles) > 0 && h.HubbleTLSCertFile == "" {
		return errors.New("hubble-tls-client-ca-files: mutual TLS needs hubble-tls-cert-file and hubble-tls-key-file")
	}
	if h.HubbleTLSCertFile != "" && h.HubbleListenAddress == "" {
		return errors.New("hubble-tls-cert-file: TLS applies to hubble-listen-address, which is not set")
	}
	if h.HubbleListenAddress != "" {
		if _, _, err := net.SplitHostPort(h.HubbleListenAddress); err != nil {
			return fmt.Errorf("hubble-listen-address: invalid value %q: want host:port or :port", h.HubbleListenAddress)
		}
	}
	if h.HubbleEventBufferCapacity < 1 {
		return fmt.Errorf("hubble-event-buffer-capacity: invalid value %d: want at least 1", h.HubbleEventBufferCapacity)
	}
	if h.HubbleEventQueueSize < 1 {
		return fmt.Errorf("hubble-event-queue-size: invalid value %d: want at least 1", h.HubbleEventQueueSize)
	}
	if _, ok := monitorAggregation[h.MonitorAggregation]; !ok && h.MonitorAggregation != "" {
		return fmt.Errorf("monitor-aggregation: invalid value %q: want none, low, medium or maximum", h.MonitorAggregation)
	}
	if n := h.BPFEventsRingSize; n < 4096 || n > 1<<30 || n&(n-1) != 0 {
		return fmt.Errorf("bpf-events-ring-size: invalid value %d: want a power of two from 4096 to %d", n, 1<<30)
	}
	var err error
	if h.hubbleMetricGroups, err = hubblemetrics.Parse(h.HubbleMetrics); err != nil {
		return fmt.Errorf("hubble-metrics: %w", err)
	}
	return nil
}

// startHubble starts reading datapath events; with Hubble enabled it also
// starts the observer and its gRPC server. It returns once listening.
func startHubble(ctx context.Context, cfg *config, dp *datapath.Datapath, reg *metrics.Registry, eps *endpoint.Manager,
	nodes *node.Manager, ids *identity.Allocator, store kvstore.Store, log *slog.Logger) error {
	rd, err := dp.OpenEvents()
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); rd.Close() }()
	if !cfg.EnableHubble {
		go readEvents(ctx, rd, reg, nil, log)
		return nil
	}
	log = log.With("subsys", "hubble")
	hm, err := hubblemetrics.New(cfg.hubbleMetricGroups)
	if err != nil {
		return err
	}
	if err := reg.Register(hm.Collectors()...); err != nil {
		return fmt.Errorf("registering hubble metrics: %w", err)
	}
	enr := newEnricher(cfg, eps, nodes, ids, store, log)
	go enr.run(ctx)
	p := parser.New(parser.Options{NodeName: cfg.NodeName, Enricher: enr, InterfaceName: interfaceName, NodeLabels: flowNodeLabels(cfg)})
	self := peer.Peer{Name: cfg.NodeName, Address: "unix://" + cfg.HubbleSocketPath}
	var tlsFiles *transport.ServerTLS
	if cfg.HubbleListenAddress != "" {
		self.Address = tcpPeerAddress(cfg.HubbleListenAddress, nodes.Local())
		if cfg.HubbleTLSCertFile != "" {
			tlsFiles = &transport.ServerTLS{CertFile: cfg.HubbleTLSCertFile, KeyFile: cfg.HubbleTLSKeyFile, ClientCAFiles: cfg.HubbleTLSClientCAFiles}
			self.TLSServerName = cfg.NodeName
		}
	}
	obs := observer.New(observer.Options{
		NodeName: cfg.NodeName, Address: self.Address, Parser: p, Capacity: cfg.HubbleEventBufferCapacity,
		QueueSize: cfg.HubbleEventQueueSize, Metrics: hm, Log: log,
	})
	go obs.Run(ctx)
	peers := peer.NewService()
	peers.Set([]peer.Peer{self})
	srv, err := transport.Start(transport.ServerOptions{
		UnixSocket: cfg.HubbleSocketPath, TCPAddress: cfg.HubbleListenAddress, TLS: tlsFiles, Log: log,
	}, transport.Services{Observer: obs, Peer: peers})
	if err != nil {
		return fmt.Errorf("hubble: %w", err)
	}
	go func() { <-ctx.Done(); srv.Stop() }()
	go announcePeers(ctx, store, peers, self, log)
	go readEvents(ctx, rd, reg, obs, log)
	go watchRingLoss(ctx, dp, obs, hm, log)
	log.Info("hubble ready", "listen", srv.Addrs(), "capacity", cfg.HubbleEventBufferCapacity, "metrics", cfg.hubbleMetricGroups)
	return nil
}

// readEvents drains the ring buffer: events are only decoded there;
// parsing happens in the observer's goroutine. When the parser falls behind
// the reader waits, so that events wait in the ring buffer (4 MiB by
// default) rather than being dropped from the smaller queue.
func readEvents(ctx context.Context, rd *ringbuf.Reader, reg *metrics.Registry, obs *observer.Observer, log *slog.Logger) {
	var counters [256]prometheus.Counter
	counters[datapath.EventTrace] = reg.Events.WithLabelValues("trace")
	counters[datapath.EventDrop] = reg.Events.WithLabelValues("drop")
	counters[datapath.EventPolicy] = reg.Events.WithLabelValues("policy")
	o := reader.Options{Log: log, Count: func(typ uint8) {
		if c := counters[typ]; c != nil {
			c.Inc()
		}
	}}
	if obs != nil {
		o.Sink = func(ev *datapath.Event) { obs.EnqueueWait(ctx, ev) }
	}
	if err := reader.Run(ctx, rd, o); err != nil {
		log.Error("reading events", "err", err)
	}
}

// watchRingLoss turns the datapath's count of events it could not put in
// the ring buffer into lost-event reports.
func watchRingLoss(ctx context.Context, dp *datapath.Datapath, obs *observer.Observer, hm *hubblemetrics.Metrics, log *slog.Logger) {
	var last uint64
	first := true
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := dp.EventsLost()
		if err != nil {
			log.Debug("reading datapath counters", "err", err)
			continue
		}
		// The counter survives agent restarts: report only what is new.
		if !first && n > last {
			obs.RecordLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, n-last)
			hm.OnLost(hubblemetrics.LostRingBuffer, n-last)
		}
		last, first = n, false
	}
}

// tcpPeerAddress is how other hosts reach this node's TCP listener.
func tcpPeerAddress(listen string, local node.Node) string {
	host, port, _ := net.SplitHostPort(listen)
	if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
		return net.JoinHostPort(host, port)
	}
	switch {
	case local.IPv4 != "":
		return net.JoinHostPort(local.IPv4, port)
	case local.IPv6 != "":
		return net.JoinHostPort(local.IPv6, port)
	}
	return net.JoinHostPort("localhost", port)
}

// announcePeers writes this node's Hubble address to the store and keeps
// the Peer service equal to every node's announcement.
func announcePeers(ctx context.Context, store kvstore.Store, svc *peer.Service, self peer.Peer, log *slog.Logger) {
	if store == nil {
		return
	}
	b, _ := json.Marshal(self)
	peers := map[string]peer.Peer{}
	for u := range store.ListAndWatch(ctx, peer.StorePrefix) {
		if u.Resync {
			peers = map[string]peer.Peer{}
			for _, kv := range u.KVs {
				putPeer(peers, kv, log)
			}
			// (Re)announce on every listing: the store may have lost it.
			if _, err := store.Put(ctx, peer.StorePrefix+self.Name, b); err != nil && ctx.Err() == nil {
				log.Warn("announcing hubble peer", "err", err)
			}
			peers[self.Name] = self
		}
		for _, e := range u.Events {
			if e.Type == kvstore.EventDelete {
				delete(peers, strings.TrimPrefix(e.KV.Key, peer.StorePrefix))
				continue
			}
			putPeer(peers, e.KV, log)
		}
		list := make([]peer.Peer, 0, len(peers))
		for _, p := range peers {
			list = append(list, p)
		}
		svc.Set(list)
	}
}

func putPeer(peers map[string]peer.Peer, kv kvstore.KV, log *slog.Logger) {
	var p peer.Peer
	if err := json.Unmarshal(kv.Value, &p); err != nil || p.Name == "" || p.Address == "" {
		log.Warn("skipping malformed hubble peer", "key", kv.Key, "err", err)
		return
	}
	peers[p.Name] = p
}

// flowNodeLabels are the node's labels as flows carry them ("key=value",
// sorted), with its zone as the Kubernetes topology label.
func flowNodeLabels(cfg *config) []string {
	ls := map[string]string{}
	if cfg.Zone != "" {
		ls["topology.kubernetes.io/zone"] = cfg.Zone
	}
	for k, v := range cfg.nodeLabels {
		ls[k] = v
	}
	out := make([]string, 0, len(ls))
	for k, v := range ls {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func interfaceName(ifindex int) string {
	if i, err := net.InterfaceByIndex(ifindex); err == nil {
		return i.Name
	}
	return ""
}

// enricher maps addresses to flow endpoints from an immutable snapshot,
// rebuilt when remote endpoints change, every few seconds, and at once
// (rate limited) when an address of this node's pod CIDRs is unknown, so a
// new pod's first packets are named.
type enricher struct {
	cfg    *config
	eps    *endpoint.Manager
	nodes  *node.Manager
	ids    *identity.Allocator
	store  kvstore.Store
	log    *slog.Logger
	snap   atomic.Pointer[map[netip.Addr]*flowpb.Endpoint]
	mu     sync.Mutex // serializes rebuilds; guards remote and last
	remote map[string]node.Endpoint
	last   time.Time
}

func newEnricher(cfg *config, eps *endpoint.Manager, nodes *node.Manager, ids *identity.Allocator, store kvstore.Store, log *slog.Logger) *enricher {
	e := &enricher{cfg: cfg, eps: eps, nodes: nodes, ids: ids, store: store, log: log, remote: map[string]node.Endpoint{}}
	e.rebuild()
	return e
}

// EndpointByIP implements parser.Enricher.
func (e *enricher) EndpointByIP(ip netip.Addr) *flowpb.Endpoint {
	ip = ip.Unmap()
	if ep, ok := (*e.snap.Load())[ip]; ok {
		return ep
	}
	if (e.cfg.v4.Contains(ip) || e.cfg.v6.Contains(ip)) && e.rebuildIfStale(200*time.Millisecond) {
		if ep, ok := (*e.snap.Load())[ip]; ok {
			return ep
		}
	}
	return parser.ReservedEndpoint(parser.IdentityWorld)
}

func (e *enricher) run(ctx context.Context) {
	var updates <-chan kvstore.Update
	if e.store != nil {
		updates = e.store.ListAndWatch(ctx, node.EndpointsPrefix)
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			e.applyRemote(u)
		case <-t.C:
		}
		e.rebuild()
	}
}

func (e *enricher) applyRemote(u kvstore.Update) {
	e.mu.Lock()
	defer e.mu.Unlock()
	put := func(kv kvstore.KV) {
		var ep node.Endpoint
		if err := json.Unmarshal(kv.Value, &ep); err == nil {
			e.remote[kv.Key] = ep
		}
	}
	if u.Resync {
		e.remote = map[string]node.Endpoint{}
		for _, kv := range u.KVs {
			put(kv)
		}
	}
	for _, ev := range u.Events {
		if ev.Type == kvstore.EventDelete {
			delete(e.remote, ev.KV.Key)
			continue
		}
		put(ev.KV)
	}
}

func (e *enricher) rebuildIfStale(age time.Duration) bool {
	e.mu.Lock()
	stale := time.Since(e.last) >= age
	e.mu.Unlock()
	if stale {
		e.rebuild()
	}
	return stale
}

func (e *enricher) rebuild() {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := map[netip.Addr]*flowpb.Endpoint{}
	add := func(ip string, ep *flowpb.Endpoint) {
		if a, err := netip.ParseAddr(ip); err == nil {
			m[a.Unmap()] = ep
		}
	}
	for _, n := range e.nodes.Nodes() {
		id := uint32(parser.IdentityRemoteNode)
		if n.Name == e.cfg.NodeName {
			id = parser.IdentityHost
		}
		add(n.IPv4, parser.ReservedEndpoint(id))
		add(n.IPv6, parser.ReservedEndpoint(id))
	}
	for _, r := range e.remote {
		if r.Node == e.cfg.NodeName {
			continue // the local list below is authoritative
		}
		ep := &flowpb.Endpoint{Identity: r.Identity, ClusterName: "default", Namespace: r.Namespace, PodName: r.PodName,
			Labels: e.labels(r.Identity, r.Namespace, r.Labels)}
		add(r.IPv4, ep)
		add(r.IPv6, ep)
	}
	for _, l := range e.eps.List() {
		ep := &flowpb.Endpoint{ID: uint32(l.ID), Identity: l.Identity, ClusterName: "default", Namespace: l.Namespace, PodName: l.PodName,
			Labels: e.labels(l.Identity, l.Namespace, l.Labels)}
		add(l.IPv4, ep)
		add(l.IPv6, ep)
	}
	e.snap.Store(&m)
	e.last = time.Now()
}

// labels are the identity's labels when known, else the pod's own.
func (e *enricher) labels(id uint32, ns string, pod map[string]string) []string {
	if e.ids != nil {
		if ls, ok := e.ids.Lookup(identity.ID(id)); ok {
			return ls.Strings()
		}
	}
	if ls, ok := identity.ReservedLabels(identity.ID(id)); ok && id != parser.IdentityInit {
		return ls.Strings()
	}
	return parser.PodLabels(ns, pod)
}

// Make sure the enricher stays what the parser expects.
var _ parser.Enricher = (*enricher)(nil)

// The version reported to Hubble clients follows the agent's.
func init() { hubble.Version = "lumen-" + version }
