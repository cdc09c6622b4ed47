// Package node keeps the cluster's nodes and remote endpoints in sync: it
// announces the local node in the store, watches the other nodes and their
// endpoints, and converges the ipcache, the routes to other nodes' pod
// CIDRs and the managed neighbour entries of their addresses.
package node

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/bpfconst"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/reconcile"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/state"
)

// Store key prefixes (model's).
const (
	NodesPrefix     = model.NodesPrefix
	EndpointsPrefix = model.EndpointsPrefix
)

// Reserved identities used in the ipcache.
const (
	idHost       = bpfconst.IdentityHost
	idWorld      = bpfconst.IdentityWorld
	idRemoteNode = bpfconst.IdentityRemoteNode
)

// Node and Endpoint are the announcements, defined in model (kept here
// for the manager's callers).
type (
	Node     = model.Node
	Endpoint = model.Endpoint
)

// Route is a route to another node's pod CIDR (native routing).
type Route struct {
	Dst netip.Prefix
	Gw  netip.Addr
}

// Network applies routes and neighbour entries on the node.
type Network interface {
	SyncRoutes(routes []Route) error
	SyncNeighbors(nexthops []netip.Addr) error
}

// IPCache is the part of the datapath the manager writes.
type IPCache interface {
	UpsertIPCache(e datapath.IPCacheEntry) error
	DeleteIPCache(p netip.Prefix) error
	ListIPCache() ([]datapath.IPCacheEntry, error)
}

// Manager converges the node-level state.
type Manager struct {
	local  Node
	store  kvstore.Store // nil: the node is alone
	ipc    IPCache
	net    Network
	tunnel bool
	log    *slog.Logger
	// nodes and eps are the cluster's nodes and endpoints (this node's
	// too), as the store holds them.
	nodes *state.Table[Node]
	eps   *state.Table[Endpoint]
	pods  *state.Table[*resource.Object] // nil: announcements carry no named ports
	loop  *reconcile.Loop

	mu        sync.Mutex
	synced    bool  // the local node was announced
	lastErr   error // of the last announcement
	extra     map[netip.Prefix]uint32
	overrides map[netip.Prefix]uint32
	changed   chan struct{}
	subs      []chan struct{}
	// localEndpoints returns this node's endpoints, which every listing
	// of the store re-publishes where the store lacks them.
	localEndpoints func() []api.Endpoint
	// pending: local endpoints whose last announcement failed, and why.
	pending map[string]error
}

// SetLocalEndpoints tells the manager this node's endpoints; call before Run.
func (m *Manager) SetLocalEndpoints(f func() []api.Endpoint) {
	m.mu.Lock()
	m.localEndpoints = f
	m.mu.Unlock()
}

// New returns a manager. store may be nil (the node is alone: tables are
// then ignored); otherwise tables are fed from it (state.Tables.Run).
func New(local Node, store kvstore.Store, tables Tables, ipc IPCache, nw Network, tunnel bool, log *slog.Logger) *Manager {
	if store == nil || tables.Nodes == nil || tables.Endpoints == nil {
		tables = staticTables()
	}
	m := &Manager{
		local: local, store: store, ipc: ipc, net: nw, tunnel: tunnel, log: log,
		nodes: tables.Nodes, eps: tables.Endpoints, pods: tables.Pods,
		changed: make(chan struct{}, 1), pending: map[string]error{},
	}
	// Nothing is reconciled before both tables listed the store, so that
	// a restarted agent does not flush the routes, neighbours and ipcache
	// entries it inherited.
	m.loop = reconcile.New(reconcile.Config{
		Name: "nodes", Inputs: []reconcile.Input{m.nodes, m.eps}, Reconcile: m.reconcile,
		MaxBackoff: 3 * time.Second, Log: log,
	})
	return m
}

// Local returns the local node.
func (m *Manager) Local() Node { return m.local }

// Nodes returns every known node, the local one included.
func (m *Manager) Nodes() []Node {
	out := []Node{m.local}
	for _, n := range m.nodes.List() {
		if n.Name != m.local.Name {
			out = append(out, n)
		}
	}
	return out
}

// Changed is signalled (coalesced) when nodes or endpoints change.
func (m *Manager) Changed() <-chan struct{} { return m.changed }

// Subscribe returns another channel signalled like Changed, for one more
// consumer (the policy syncer resolves egress named ports per endpoint).
func (m *Manager) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	m.subs = append(m.subs, ch)
	m.mu.Unlock()
	return ch
}

// Endpoints returns every endpoint announced in the store, local ones too.
func (m *Manager) Endpoints() []Endpoint { return m.eps.List() }

// Health reports the manager's state for /v1/status.
func (m *Manager) Health() api.SubsystemStatus {
	local := 0
	isLocal := map[string]bool{}
	if f := m.localFunc(); f != nil {
		for _, ep := range f() {
			isLocal[ep.ContainerID] = true
		}
		local = len(isLocal)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// A failed announcement of an endpoint deleted since (a republish
	// racing the pod's deletion, its namespace terminating) is moot: it
	// must not keep the agent degraded (and unready) for good.
	for cid := range m.pending {
		if !isLocal[cid] {
			delete(m.pending, cid)
		}
	}
	st := api.SubsystemStatus{Name: "cluster", State: api.StateOK}
	lastErr := m.lastErr
	if lastErr == nil {
		lastErr = m.loop.Err()
	}
	switch {
	case m.store == nil:
		st.State, st.Message = api.StateDisabled, "no kvstore: single node"
		return st
	case lastErr != nil:
		st.State, st.Message = api.StateDegraded, lastErr.Error()
	case !m.synced:
		st.State, st.Message = api.StateDegraded, "waiting for the kvstore"
	default:
		st.Message = fmt.Sprintf("%d nodes, %d remote endpoints", m.nodes.Len(), m.remoteEndpointCount())
	}
	var why string
	switch {
	case !m.eps.IsSynced() && local > 0:
		why = fmt.Sprintf("%d local endpoints not announced yet (endpoints not listed from the kvstore)", local)
	case len(m.pending) > 0:
		ids := slices.Sorted(maps.Keys(m.pending))
		why = fmt.Sprintf("%d local endpoints not announced: %s: %v", len(ids), ids[0], m.pending[ids[0]])
	}
	if why != "" {
		st.State, st.Message = api.StateDegraded, why+"; "+st.Message
	}
	return st
}

func (m *Manager) localFunc() func() []api.Endpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.localEndpoints
}

func (m *Manager) remoteEndpointCount() int {
	return m.eps.Len() - len(m.eps.Index(ByNode, m.local.Name))
}

// Run announces the node and follows the store until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	go m.loop.Run(ctx)
	if m.store == nil {
		return
	}
	nodes, eps := m.nodes.Subscribe(), m.eps.Subscribe()
	// A pod's named ports are announced with its endpoint: a Pod that
	// arrives after its endpoint, or changes, is announced again.
	var podsChanged <-chan struct{}
	if m.pods != nil {
		podsChanged = m.pods.Changed()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-podsChanged:
			if m.eps.IsSynced() {
				m.republish(ctx)
			}
			continue
		case <-nodes.Changed():
			// Announced at every listing: a store that lost its data
			// learns the node again.
			if _, listed := nodes.Drain(); listed {
				m.announce(ctx)
			}
		case <-eps.Changed():
			if keys, listed := eps.Drain(); listed || m.lostLocal(keys) {
				m.republish(ctx)
			}
		}
		select {
		case m.changed <- struct{}{}:
		default:
		}
		m.mu.Lock()
		for _, ch := range m.subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		m.mu.Unlock()
	}
}

// lostLocal reports whether one of keys, changed, is a deleted endpoint
// of this node (it may still be live: announced again).
func (m *Manager) lostLocal(keys []string) bool {
	for _, k := range keys {
		if _, ok := m.eps.Get(k); !ok && strings.HasPrefix(k, EndpointsPrefix+m.local.Name+"/") {
			return true
		}
	}
	return false
}

// SetExtraIPCache sets the ipcache entries other subsystems need (CIDR
// identities of policies, the kube-apiserver's addresses). Entries for
// nodes and endpoints win on the same prefix.
func (m *Manager) SetExtraIPCache(entries map[netip.Prefix]uint32) {
	m.mu.Lock()
	m.extra = entries
	m.mu.Unlock()
	m.loop.Kick()
}

// SetIPCacheOverrides sets entries that win over node and endpoint entries
// of the same prefix (the kube-apiserver's addresses, whose identity also
// carries the host or remote-node label).
func (m *Manager) SetIPCacheOverrides(entries map[netip.Prefix]uint32) {
	m.mu.Lock()
	m.overrides = entries
	m.mu.Unlock()
	m.loop.Kick()
}

// IsRemoteNodeIP reports whether a is the address of another known node.
func (m *Manager) IsRemoteNodeIP(a netip.Addr) bool {
	for _, n := range m.nodes.Index(ByIP, a.String()) {
		if n.Name != m.local.Name {
			return true
		}
	}
	return false
}

// desired computes the ipcache, routes and next hops from the known nodes
// and endpoints.
func (m *Manager) desired() (map[netip.Prefix]datapath.IPCacheEntry, []Route, []netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ipc := map[netip.Prefix]datapath.IPCacheEntry{}
	for p, id := range m.extra {
		ipc[p.Masked()] = datapath.IPCacheEntry{Prefix: p.Masked(), Identity: id}
	}
	add := func(s string, bits4, bits6 int, id uint32, tunnel netip.Addr) {
		var p netip.Prefix
		if a, err := netip.ParseAddr(s); err == nil {
			bits := bits4
			if a.Is6() {
				bits = bits6
			}
			p = netip.PrefixFrom(a, bits)
		} else if pp, err := netip.ParsePrefix(s); err == nil {
			p = pp.Masked()
		} else {
			return
		}
		ipc[p] = datapath.IPCacheEntry{Prefix: p, Identity: id, Tunnel: tunnel}
	}
	add(m.local.IPv4, 32, 128, idHost, netip.Addr{})
	add(m.local.IPv6, 32, 128, idHost, netip.Addr{})

	var routes []Route
	var hops []netip.Addr
	var nodeAddrs [][2]netip.Addr // address, its node's IPv4
	tunnels := map[string]netip.Addr{}
	for _, n := range m.nodes.List() {
		name := n.Name
		if name == m.local.Name {
			continue
		}
		v4, _ := netip.ParseAddr(n.IPv4)
		v6, _ := netip.ParseAddr(n.IPv6)
		var tun netip.Addr
		if m.tunnel {
			tun = v4
		}
		tunnels[name] = tun
		if n.IPv4 != "" {
			tunnels["ip:"+n.IPv4] = tun
		}
		if n.IPv6 != "" {
			tunnels["ip:"+n.IPv6] = tun
		}
		add(n.IPv4, 32, 128, idRemoteNode, netip.Addr{})
		add(n.IPv6, 32, 128, idRemoteNode, netip.Addr{})
		for _, a := range []netip.Addr{v4, v6} {
			if a.IsValid() {
				nodeAddrs = append(nodeAddrs, [2]netip.Addr{a, v4})
			}
		}
		add(n.PodCIDRv4, 32, 128, idWorld, tun)
		add(n.PodCIDRv6, 32, 128, idWorld, tun)
		for _, a := range []netip.Addr{v4, v6} {
			if a.IsValid() {
				hops = append(hops, a)
			}
		}
		// Routes in tunnel mode too: they bring the node's own packets to
		// the device where to_netdev encapsulates them.
		if p, err := netip.ParsePrefix(n.PodCIDRv4); err == nil && v4.IsValid() {
			routes = append(routes, Route{Dst: p.Masked(), Gw: v4})
		}
		if p, err := netip.ParsePrefix(n.PodCIDRv6); err == nil && v6.IsValid() {
			routes = append(routes, Route{Dst: p.Masked(), Gw: v6})
		}
	}
	for _, ep := range m.eps.List() {
		if ep.Node == m.local.Name {
			continue
		}
		tun, known := tunnels[ep.Node]
		if !known && ep.NodeIP != "" {
			// CiliumEndpointSlices name the node by its address only.
			tun, known = tunnels["ip:"+ep.NodeIP]
			if local := m.local.IPv4 == ep.NodeIP || m.local.IPv6 == ep.NodeIP; local {
				continue
			}
		}
		if !known {
			continue // its node is gone or not seen yet
		}
		add(ep.IPv4, 32, 128, ep.Identity, tun)
		add(ep.IPv6, 32, 128, ep.Identity, tun)
	}
	// A node's addresses are marked as such, with the node that owns them
	// (in any routing mode): the overlay accepts encapsulated packets only
	// from nodes, and a node's address as inner source only from that node.
	for _, na := range nodeAddrs {
		p := netip.PrefixFrom(na[0], na[0].BitLen())
		e := ipc[p]
		e.Node, e.Tunnel = true, na[1]
		ipc[p] = e
	}
	for p, id := range m.overrides {
		e := ipc[p.Masked()]
		e.Prefix, e.Identity = p.Masked(), id
		ipc[p.Masked()] = e
	}
	return ipc, routes, hops
}

func (m *Manager) reconcile(context.Context) error {
	want, routes, hops := m.desired()
	have, err := m.ipc.ListIPCache()
	if err != nil {
		return fmt.Errorf("listing ipcache: %w", err)
	}
	// Add and update first, then delete: a moving entry is never missing.
	for _, e := range want {
		if err := m.ipc.UpsertIPCache(e); err != nil {
			return err
		}
	}
	for _, e := range have {
		if _, ok := want[e.Prefix]; !ok {
			if err := m.ipc.DeleteIPCache(e.Prefix); err != nil {
				return err
			}
		}
	}
	if m.net != nil {
		if err := m.net.SyncNeighbors(hops); err != nil {
			return fmt.Errorf("syncing neighbours: %w", err)
		}
		if err := m.net.SyncRoutes(routes); err != nil {
			return fmt.Errorf("syncing routes: %w", err)
		}
	}
	return nil
}
