// Package relay is lumen-relay's core: it connects to every agent's Hubble
// server (static addresses and/or those a Peer service announces), fans
// GetFlows out to all of them, merges the streams in time order and serves
// the same Observer API, with ServerStatus, GetNodes and GetNamespaces
// aggregated over the nodes.
package relay

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lumen-net/lumen/internal/hubble"
	"github.com/lumen-net/lumen/internal/hubble/observer"
	"github.com/lumen-net/lumen/internal/hubble/peer"
	"github.com/lumen-net/lumen/internal/hubble/transport"
)

// Options configure a Relay.
type Options struct {
	// Peers are static agent addresses (unix:///path or host:port).
	Peers []string
	// PeerService is the address of a Peer service to discover agents.
	PeerService string
	// TLS towards agents (TCP addresses only); nil: plaintext.
	TLS *transport.ClientTLS
	// SortWindow bounds how long a followed flow waits for the other
	// nodes' flows before it is sent (default 1s).
	SortWindow time.Duration
	// CallTimeout bounds unary calls to agents (default 5s).
	CallTimeout time.Duration
	Log         *slog.Logger
}

// Relay serves the merged Observer API.
type Relay struct {
	observerpb.UnimplementedObserverServer

	opts    Options
	log     *slog.Logger
	started time.Time

	mu    sync.Mutex
	conns map[string]*agent // by address
	disc  map[string]peer.Peer
}

// agent is one connected Hubble server.
type agent struct {
	addr   string
	name   string // from discovery or from the agent itself
	tls    bool
	conn   *grpc.ClientConn
	client observerpb.ObserverClient
}

// New connects to the static peers (lazily: unreachable ones are reported
// unavailable per call) and returns the relay; Run follows the Peer service.
func New(o Options) (*Relay, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.SortWindow <= 0 {
		o.SortWindow = time.Second
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 5 * time.Second
	}
	if len(o.Peers) == 0 && o.PeerService == "" {
		return nil, fmt.Errorf("no peers: give static peer addresses or a peer service")
	}
	r := &Relay{opts: o, log: o.Log, started: time.Now(), conns: map[string]*agent{}, disc: map[string]peer.Peer{}}
	for _, p := range o.Peers {
		if _, err := transport.Target(p); err != nil {
			return nil, fmt.Errorf("peer: %w", err)
		}
	}
	if o.PeerService != "" {
		if _, err := transport.Target(o.PeerService); err != nil {
			return nil, fmt.Errorf("peer service: %w", err)
		}
	}
	r.sync()
	return r, nil
}

// Run follows the Peer service until ctx ends, then closes connections.
func (r *Relay) Run(ctx context.Context) {
	defer r.close()
	if r.opts.PeerService == "" {
		<-ctx.Done()
		return
	}
	conn, err := transport.Dial(r.opts.PeerService, r.opts.TLS)
	if err != nil {
		r.log.Error("peer service", "err", err)
		<-ctx.Done()
		return
	}
	defer conn.Close()
	peer.Watch(ctx, conn, func(ps []peer.Peer) {
		r.mu.Lock()
		r.disc = map[string]peer.Peer{}
		for _, p := range ps {
			r.disc[p.Address] = p
		}
		r.mu.Unlock()
		r.sync()
		r.log.Info("peers", "count", len(ps))
	}, r.log)
}

// sync makes the connections match the static and discovered peers.
func (r *Relay) sync() {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[string]peer.Peer{}
	for _, a := range r.opts.Peers {
		want[a] = peer.Peer{Address: a}
	}
	for a, p := range r.disc {
		want[a] = p
	}
	for a, c := range r.conns {
		if _, ok := want[a]; !ok {
			c.conn.Close()
			delete(r.conns, a)
		}
	}
	for a, p := range want {
		if c, ok := r.conns[a]; ok {
			if p.Name != "" {
				c.name = p.Name
			}
			continue
		}
		var ctls *transport.ClientTLS
		if r.opts.TLS != nil {
			t := *r.opts.TLS
			if p.TLSServerName != "" {
				t.ServerName = p.TLSServerName
			}
			ctls = &t
		}
		conn, err := transport.Dial(a, ctls)
		if err != nil {
			r.log.Warn("peer", "addr", a, "err", err)
			continue
		}
		r.conns[a] = &agent{addr: a, name: p.Name, tls: ctls != nil && ctls.Enabled, conn: conn, client: observerpb.NewObserverClient(conn)}
	}
}

func (r *Relay) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for a, c := range r.conns {
		c.conn.Close()
		delete(r.conns, a)
	}
}

// agents returns the current agents sorted by address.
func (r *Relay) agents() []*agent {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*agent, 0, len(r.conns))
	for _, c := range r.conns {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].addr < out[j].addr })
	return out
}

// displayName is the agent's node name once known, else its address.
func (a *agent) displayName() string {
	if a.name != "" {
		return a.name
	}
	return a.addr
}

// status asks one agent for its status (and learns its name).
func (r *Relay) status(ctx context.Context, a *agent) (*observerpb.ServerStatusResponse, *observerpb.Node, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.CallTimeout)
	defer cancel()
	st, err := a.client.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	if err != nil {
		return nil, nil, err
	}
	var node *observerpb.Node
	if ns, err := a.client.GetNodes(ctx, &observerpb.GetNodesRequest{}); err == nil && len(ns.GetNodes()) == 1 {
		node = ns.GetNodes()[0]
		r.mu.Lock()
		if a.name == "" {
			a.name = node.GetName()
		}
		r.mu.Unlock()
	}
	return st, node, nil
}

type agentStatus struct {
	a    *agent
	st   *observerpb.ServerStatusResponse
	node *observerpb.Node
	err  error
}

func (r *Relay) statuses(ctx context.Context) []agentStatus {
	as := r.agents()
	out := make([]agentStatus, len(as))
	var wg sync.WaitGroup
	for i, a := range as {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, node, err := r.status(ctx, a)
			out[i] = agentStatus{a: a, st: st, node: node, err: err}
		}()
	}
	wg.Wait()
	return out
}

// ServerStatus aggregates the agents' status.
func (r *Relay) ServerStatus(ctx context.Context, _ *observerpb.ServerStatusRequest) (*observerpb.ServerStatusResponse, error) {
	resp := &observerpb.ServerStatusResponse{Version: hubble.Version}
	var connected, unavailable uint32
	for _, s := range r.statuses(ctx) {
		if s.err != nil {
			unavailable++
			resp.UnavailableNodes = append(resp.UnavailableNodes, s.a.displayName())
			continue
		}
		connected++
		resp.NumFlows += s.st.GetNumFlows()
		resp.MaxFlows += s.st.GetMaxFlows()
		resp.SeenFlows += s.st.GetSeenFlows()
		resp.FlowsRate += s.st.GetFlowsRate()
		resp.UptimeNs = max(resp.UptimeNs, s.st.GetUptimeNs())
	}
	resp.NumConnectedNodes = wrapU32(connected)
	resp.NumUnavailableNodes = wrapU32(unavailable)
	return resp, nil
}

// GetNodes lists every agent with its state.
func (r *Relay) GetNodes(ctx context.Context, _ *observerpb.GetNodesRequest) (*observerpb.GetNodesResponse, error) {
	resp := &observerpb.GetNodesResponse{}
	for _, s := range r.statuses(ctx) {
		n := &observerpb.Node{Name: s.a.displayName(), Address: s.a.addr, State: relaypb.NodeState_NODE_CONNECTED}
		if s.a.tls {
			n.Tls = &observerpb.TLS{Enabled: true}
		}
		if s.err != nil {
			n.State = relaypb.NodeState_NODE_UNAVAILABLE
		} else {
			n.Version = s.st.GetVersion()
			n.UptimeNs, n.NumFlows, n.MaxFlows, n.SeenFlows = s.st.GetUptimeNs(), s.st.GetNumFlows(), s.st.GetMaxFlows(), s.st.GetSeenFlows()
		}
		resp.Nodes = append(resp.Nodes, n)
	}
	sort.Slice(resp.Nodes, func(i, j int) bool { return resp.Nodes[i].GetName() < resp.Nodes[j].GetName() })
	return resp, nil
}

// GetNamespaces merges the agents' namespaces.
func (r *Relay) GetNamespaces(ctx context.Context, _ *observerpb.GetNamespacesRequest) (*observerpb.GetNamespacesResponse, error) {
	seen := map[[2]string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range r.agents() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, r.opts.CallTimeout)
			defer cancel()
			ns, err := a.client.GetNamespaces(ctx, &observerpb.GetNamespacesRequest{})
			if err != nil {
				r.log.Debug("namespaces", "node", a.displayName(), "err", err)
				return
			}
			mu.Lock()
			for _, n := range ns.GetNamespaces() {
				seen[[2]string{n.GetCluster(), n.GetNamespace()}] = true
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	resp := &observerpb.GetNamespacesResponse{}
	for k := range seen {
		resp.Namespaces = append(resp.Namespaces, &observerpb.Namespace{Cluster: k[0], Namespace: k[1]})
	}
	sort.Slice(resp.Namespaces, func(i, j int) bool {
		a, b := resp.Namespaces[i], resp.Namespaces[j]
		return a.GetCluster() < b.GetCluster() || a.GetCluster() == b.GetCluster() && a.GetNamespace() < b.GetNamespace()
	})
	return resp, nil
}

// validate checks a request before fanning it out, so that a bad filter is
// reported once, naming the field, as an agent would.
func validate(req *observerpb.GetFlowsRequest) error {
	_, err := observer.NewQuery(req)
	return err
}

func wrapU32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }
