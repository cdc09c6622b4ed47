// Package server is the agent's flow observability: the ring-buffer reader
// feeds the Hubble observer, which serves the Observer and Peer gRPC
// services on a unix socket (and optionally TCP with TLS). Without Hubble
// the reader only counts events.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/hubble/announce"
	"github.com/lumen-net/lumen/internal/hubble/enricher"
	hubblemetrics "github.com/lumen-net/lumen/internal/hubble/metrics"
	"github.com/lumen-net/lumen/internal/hubble/observer"
	"github.com/lumen-net/lumen/internal/hubble/parser"
	"github.com/lumen-net/lumen/internal/hubble/peer"
	"github.com/lumen-net/lumen/internal/hubble/reader"
	"github.com/lumen-net/lumen/internal/hubble/ringloss"
	"github.com/lumen-net/lumen/internal/hubble/transport"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/metrics"
	"github.com/lumen-net/lumen/internal/node"
	"github.com/lumen-net/lumen/internal/state"
)

// Config is the agent's Hubble settings.
type Config struct {
	Enabled       bool
	NodeName      string
	Zone          string
	NodeLabels    map[string]string // the node's labels, as flows carry them
	SocketPath    string
	ListenAddress string // "" or host:port
	TLS           *transport.ServerTLS
	Capacity      int // flows kept
	QueueSize     int // events waiting to be parsed
	MetricGroups  []string
}

// Nodes is what the server reads of the cluster's nodes.
type Nodes interface {
	Local() node.Node
	Nodes() []node.Node
}

// Deps are the agent's parts the server reads.
type Deps struct {
	Datapath   *datapath.Datapath
	Registry   *metrics.Registry
	Endpoints  enricher.Endpoints
	Nodes      Nodes
	Identities *identity.Allocator
	Store      kvstore.Store // where this node announces itself; nil: nowhere
	// Peers and RemoteEndpoints are the cluster's Hubble announcements and
	// endpoints.
	Peers           *state.Table[peer.Peer]
	RemoteEndpoints *state.Table[node.Endpoint]
	PodCIDRs        []netip.Prefix
	Log             *slog.Logger
}

// Server holds the event reader and, with Hubble, the observer, its gRPC
// listeners and their helpers.
type Server struct {
	rd       *ringbuf.Reader
	reg      *metrics.Registry
	log      *slog.Logger
	enricher *enricher.Enricher
	obs      *observer.Observer
	srv      *transport.Server
	announce *announce.Announcer
	ringLoss *ringloss.Watcher
}

// New opens the events ring; with Hubble enabled it also registers the
// flow metrics and starts listening, so clients can connect once it
// returns. Run serves until ctx ends.
func New(cfg Config, d Deps) (*Server, error) {
	rd, err := d.Datapath.OpenEvents()
	if err != nil {
		return nil, err
	}
	s := &Server{rd: rd, reg: d.Registry, log: d.Log}
	if !cfg.Enabled {
		return s, nil
	}
	s.log = d.Log.With("subsys", "hubble")
	hm, err := hubblemetrics.New(cfg.MetricGroups)
	if err != nil {
		rd.Close()
		return nil, err
	}
	if err := d.Registry.Register(hm.Collectors()...); err != nil {
		rd.Close()
		return nil, fmt.Errorf("registering hubble metrics: %w", err)
	}
	s.enricher = enricher.New(enricher.Deps{NodeName: cfg.NodeName, PodCIDRs: d.PodCIDRs, Endpoints: d.Endpoints,
		Nodes: d.Nodes, Identities: d.Identities, Remote: d.RemoteEndpoints})
	p := parser.New(parser.Options{NodeName: cfg.NodeName, Enricher: s.enricher, InterfaceName: interfaceName, NodeLabels: flowNodeLabels(cfg)})
	self := peer.Peer{Name: cfg.NodeName, Address: "unix://" + cfg.SocketPath}
	if cfg.ListenAddress != "" {
		self.Address = tcpPeerAddress(cfg.ListenAddress, d.Nodes.Local())
		if cfg.TLS != nil {
			self.TLSServerName = cfg.NodeName
		}
	}
	s.obs = observer.New(observer.Options{
		NodeName: cfg.NodeName, Address: self.Address, Parser: p, Capacity: cfg.Capacity,
		QueueSize: cfg.QueueSize, Metrics: hm, Log: s.log,
	})
	peers := peer.NewService()
	peers.Set([]peer.Peer{self})
	s.srv, err = transport.Start(transport.ServerOptions{
		UnixSocket: cfg.SocketPath, TCPAddress: cfg.ListenAddress, TLS: cfg.TLS, Log: s.log,
	}, transport.Services{Observer: s.obs, Peer: peers})
	if err != nil {
		rd.Close()
		return nil, fmt.Errorf("hubble: %w", err)
	}
	s.announce = announce.New(d.Store, d.Peers, peers, self, s.log)
	s.ringLoss = ringloss.New(d.Datapath, s.obs, hm, s.log)
	s.log.Info("hubble ready", "listen", s.srv.Addrs(), "capacity", cfg.Capacity, "metrics", cfg.MetricGroups)
	return s, nil
}

// Run reads events (and serves flows) until ctx ends; it returns once
// every goroutine it started has.
func (s *Server) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-ctx.Done()
		s.rd.Close()
		if s.srv != nil {
			s.srv.Stop()
		}
		return nil
	})
	g.Go(func() error { s.readEvents(ctx); return nil })
	if s.obs != nil {
		g.Go(func() error { return s.enricher.Run(ctx) })
		g.Go(func() error { s.obs.Run(ctx); return nil })
		g.Go(func() error { return s.announce.Run(ctx) })
		g.Go(func() error { return s.ringLoss.Run(ctx) })
	}
	return g.Wait()
}

// readEvents drains the ring buffer: events are only decoded there;
// parsing happens in the observer's goroutine. When the parser falls behind
// the reader waits, so that events wait in the ring buffer (4 MiB by
// default) rather than being dropped from the smaller queue.
func (s *Server) readEvents(ctx context.Context) {
	var counters [256]prometheus.Counter
	counters[datapath.EventTrace] = s.reg.Events.WithLabelValues("trace")
	counters[datapath.EventDrop] = s.reg.Events.WithLabelValues("drop")
	counters[datapath.EventPolicy] = s.reg.Events.WithLabelValues("policy")
	o := reader.Options{Log: s.log, Count: func(typ uint8) {
		if c := counters[typ]; c != nil {
			c.Inc()
		}
	}}
	if s.obs != nil {
		o.Sink = func(ev *datapath.Event) { s.obs.EnqueueWait(ctx, ev) }
	}
	if err := reader.Run(ctx, s.rd, o); err != nil {
		s.log.Error("reading events", "err", err)
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

// flowNodeLabels are the node's labels as flows carry them ("key=value",
// sorted), with its zone as the Kubernetes topology label.
func flowNodeLabels(cfg Config) []string {
	ls := map[string]string{}
	if cfg.Zone != "" {
		ls["topology.kubernetes.io/zone"] = cfg.Zone
	}
	for k, v := range cfg.NodeLabels {
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
