// Package node keeps the cluster's nodes and remote endpoints in sync: it
// announces the local node in the store, watches the other nodes and their
// endpoints, and converges the ipcache, the routes to other nodes' pod
// CIDRs and the managed neighbour entries of their addresses.
package node

import (
	"context"
	"encoding/json"
	"errors"
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
)

// Store key prefixes.
const (
	NodesPrefix     = "/lumen/v1/nodes/"
	EndpointsPrefix = "/lumen/v1/endpoints/"
)

// Reserved identities used in the ipcache.
const (
	idHost       = bpfconst.IdentityHost
	idWorld      = bpfconst.IdentityWorld
	idRemoteNode = bpfconst.IdentityRemoteNode
)

// Node is a node as announced in the store.
type Node struct {
	Name      string            `json:"name"`
	Zone      string            `json:"zone,omitempty"`
	IPv4      string            `json:"ipv4,omitempty"`
	IPv6      string            `json:"ipv6,omitempty"`
	PodCIDRv4 string            `json:"podCIDRv4,omitempty"`
	PodCIDRv6 string            `json:"podCIDRv6,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// Endpoint is an endpoint as announced in the store.
type Endpoint struct {
	Node        string            `json:"node"`
	ContainerID string            `json:"containerID"`
	PodName     string            `json:"podName,omitempty"`
	Namespace   string            `json:"namespace,omitempty"`
	IPv4        string            `json:"ipv4,omitempty"`
	IPv6        string            `json:"ipv6,omitempty"`
	Identity    uint32            `json:"identity"`
	Labels      map[string]string `json:"labels,omitempty"`
	// NodeIP is the node's address when only that is known (Kubernetes
	// CiliumEndpointSlices); Node may then be empty.
	NodeIP string `json:"nodeIP,omitempty"`
}

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

	mu        sync.Mutex
	nodes     map[string]Node
	endpoints map[string]Endpoint // by store key
	synced    bool
	// listedNodes and listedEndpoints: the store was listed once. Until
	// both, nothing is reconciled, so that a restarted agent does not
	// flush the routes, neighbours and ipcache entries it inherited.
	listedNodes, listedEndpoints bool
	lastErr                      error
	kick                         chan struct{}
	extra                        map[netip.Prefix]uint32
	overrides                    map[netip.Prefix]uint32
	changed                      chan struct{}
	subs                         []chan struct{}
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

// New returns a manager; store may be nil.
func New(local Node, store kvstore.Store, ipc IPCache, nw Network, tunnel bool, log *slog.Logger) *Manager {
	return &Manager{
		local: local, store: store, ipc: ipc, net: nw, tunnel: tunnel, log: log,
		nodes: map[string]Node{}, endpoints: map[string]Endpoint{}, kick: make(chan struct{}, 1),
		changed: make(chan struct{}, 1), pending: map[string]error{},
	}
}

// Local returns the local node.
func (m *Manager) Local() Node { return m.local }

// Nodes returns every known node, the local one included.
func (m *Manager) Nodes() []Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []Node{m.local}
	for name, n := range m.nodes {
		if name != m.local.Name {
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
func (m *Manager) Endpoints() []Endpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Endpoint, 0, len(m.endpoints))
	for _, ep := range m.endpoints {
		out = append(out, ep)
	}
	return out
}

// Health reports the manager's state for /v1/status.
func (m *Manager) Health() api.SubsystemStatus {
	local := 0
	if f := m.localFunc(); f != nil {
		local = len(f())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := api.SubsystemStatus{Name: "cluster", State: api.StateOK}
	switch {
	case m.store == nil:
		st.State, st.Message = api.StateDisabled, "no kvstore: single node"
		return st
	case m.lastErr != nil:
		st.State, st.Message = api.StateDegraded, m.lastErr.Error()
	case !m.synced:
		st.State, st.Message = api.StateDegraded, "waiting for the kvstore"
	default:
		st.Message = fmt.Sprintf("%d nodes, %d remote endpoints", len(m.nodes), m.remoteEndpointCount())
	}
	var why string
	switch {
	case !m.listedEndpoints && local > 0:
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

// unannounced returns the local endpoints the store (as last listed and
// watched) does not hold as this node has them.
func (m *Manager) unannounced() []api.Endpoint {
	f := m.localFunc()
	if f == nil || m.store == nil {
		return nil
	}
	local := f()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []api.Endpoint
	for _, ep := range local {
		if !m.storeHas(m.announcement(ep)) {
			out = append(out, ep)
		}
	}
	return out
}

// storeHas reports whether the store announces want: under its key, or (a
// CiliumEndpointSlice, keyed by pod) as the same pod of this node. Called
// with mu held.
func (m *Manager) storeHas(want Endpoint) bool {
	same := func(have Endpoint) bool {
		return have.IPv4 == want.IPv4 && have.IPv6 == want.IPv6 && have.Identity == want.Identity
	}
	if have, ok := m.endpoints[m.endpointKey(want.ContainerID)]; ok {
		return same(have) && have.Node == want.Node
	}
	for _, have := range m.endpoints {
		if have.ContainerID == "" && have.Namespace == want.Namespace && have.PodName == want.PodName &&
			(have.Node == m.local.Name || (have.NodeIP != "" && (have.NodeIP == m.local.IPv4 || have.NodeIP == m.local.IPv6))) {
			return same(have)
		}
	}
	return false
}

// republish announces again every local endpoint the store does not hold as
// this node has it (after the store lost its data, or an agent restarted
// while it was unreachable).
func (m *Manager) republish(ctx context.Context) {
	var errs []error
	n := 0
	for _, ep := range m.unannounced() {
		if err := m.Publish(ctx, ep); err != nil {
			errs = append(errs, fmt.Errorf("announcing endpoint %s: %w", ep.ContainerID, err))
			continue
		}
		n++
	}
	if n > 0 {
		m.log.Info("re-announced local endpoints the store lacked", "endpoints", n)
	}
	if len(errs) > 0 {
		m.log.Warn("re-announcing local endpoints", "err", errors.Join(errs...))
	}
}

func (m *Manager) remoteEndpointCount() int {
	n := 0
	for _, ep := range m.endpoints {
		if ep.Node != m.local.Name {
			n++
		}
	}
	return n
}

// Run announces the node and follows the store until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	go m.reconcileLoop(ctx)
	m.trigger()
	if m.store == nil {
		return
	}
	nodes := m.store.ListAndWatch(ctx, NodesPrefix)
	eps := m.store.ListAndWatch(ctx, EndpointsPrefix)
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-nodes:
			if !ok {
				return
			}
			m.applyNodes(u)
			if u.Resync {
				m.announce(ctx)
			}
		case u, ok := <-eps:
			if !ok {
				return
			}
			if m.applyEndpoints(u) {
				m.republish(ctx)
			}
		}
		m.trigger()
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

// announce (re)writes the local node; called on every listing so that a
// store that lost its data learns the node again.
func (m *Manager) announce(ctx context.Context) {
	b, _ := json.Marshal(m.local)
	if _, err := m.store.Put(ctx, NodesPrefix+m.local.Name, b); err != nil {
		m.setErr(fmt.Errorf("announcing node: %w", err))
		return
	}
	m.mu.Lock()
	m.synced = true
	m.mu.Unlock()
}

func (m *Manager) applyNodes(u kvstore.Update) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if u.Resync {
		m.listedNodes = true
		m.nodes = map[string]Node{}
		for _, kv := range u.KVs {
			m.putNode(kv)
		}
	}
	for _, ev := range u.Events {
		if ev.Type == kvstore.EventDelete {
			delete(m.nodes, strings.TrimPrefix(ev.KV.Key, NodesPrefix))
			continue
		}
		m.putNode(ev.KV)
	}
}

func (m *Manager) putNode(kv kvstore.KV) {
	var n Node
	if err := json.Unmarshal(kv.Value, &n); err != nil || n.Name == "" {
		m.log.Warn("skipping malformed node in store", "key", kv.Key, "err", err)
		return
	}
	m.nodes[n.Name] = n
}

// applyEndpoints applies one update and reports whether it may have left
// local endpoints unannounced (a listing, a deletion of one of ours).
func (m *Manager) applyEndpoints(u kvstore.Update) (check bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	check = u.Resync
	if u.Resync {
		m.listedEndpoints = true
		m.endpoints = map[string]Endpoint{}
		for _, kv := range u.KVs {
			m.putEndpoint(kv)
		}
	}
	for _, ev := range u.Events {
		if ev.Type == kvstore.EventDelete {
			delete(m.endpoints, ev.KV.Key)
			check = check || strings.HasPrefix(ev.KV.Key, EndpointsPrefix+m.local.Name+"/")
			continue
		}
		m.putEndpoint(ev.KV)
	}
	return check
}

func (m *Manager) putEndpoint(kv kvstore.KV) {
	var ep Endpoint
	if err := json.Unmarshal(kv.Value, &ep); err != nil {
		m.log.Warn("skipping malformed endpoint in store", "key", kv.Key, "err", err)
		return
	}
	m.endpoints[kv.Key] = ep
}

// SetExtraIPCache sets the ipcache entries other subsystems need (CIDR
// identities of policies, the kube-apiserver's addresses). Entries for
// nodes and endpoints win on the same prefix.
func (m *Manager) SetExtraIPCache(entries map[netip.Prefix]uint32) {
	m.mu.Lock()
	m.extra = entries
	m.mu.Unlock()
	m.trigger()
}

// SetIPCacheOverrides sets entries that win over node and endpoint entries
// of the same prefix (the kube-apiserver's addresses, whose identity also
// carries the host or remote-node label).
func (m *Manager) SetIPCacheOverrides(entries map[netip.Prefix]uint32) {
	m.mu.Lock()
	m.overrides = entries
	m.mu.Unlock()
	m.trigger()
}

// IsRemoteNodeIP reports whether a is the address of another known node.
func (m *Manager) IsRemoteNodeIP(a netip.Addr) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, n := range m.nodes {
		if name != m.local.Name && (n.IPv4 == a.String() || n.IPv6 == a.String()) {
			return true
		}
	}
	return false
}

// Publish announces a local endpoint.
func (m *Manager) Publish(ctx context.Context, ep api.Endpoint) error {
	if m.store == nil {
		return nil
	}
	b, _ := json.Marshal(m.announcement(ep))
	_, err := m.store.Put(ctx, m.endpointKey(ep.ContainerID), b)
	m.mu.Lock()
	if err != nil {
		m.pending[ep.ContainerID] = err
	} else {
		delete(m.pending, ep.ContainerID)
	}
	m.mu.Unlock()
	return err
}

func (m *Manager) announcement(ep api.Endpoint) Endpoint {
	return Endpoint{
		Node: m.local.Name, ContainerID: ep.ContainerID, PodName: ep.PodName, Namespace: ep.Namespace,
		IPv4: ep.IPv4, IPv6: ep.IPv6, Identity: ep.Identity, Labels: ep.Labels,
	}
}

// Unpublish withdraws a local endpoint.
func (m *Manager) Unpublish(ctx context.Context, ep api.Endpoint) error {
	if m.store == nil {
		return nil
	}
	m.mu.Lock()
	delete(m.pending, ep.ContainerID)
	m.mu.Unlock()
	_, err := m.store.Delete(ctx, m.endpointKey(ep.ContainerID))
	return err
}

// PruneEndpoints removes this node's announced endpoints that are not in keep
// (left behind by a crash between a pod's deletion and its withdrawal).
func (m *Manager) PruneEndpoints(ctx context.Context, keep map[string]bool) error {
	if m.store == nil {
		return nil
	}
	kvs, _, err := m.store.List(ctx, EndpointsPrefix+m.local.Name+"/")
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		if !keep[strings.TrimPrefix(kv.Key, EndpointsPrefix+m.local.Name+"/")] {
			_, _ = m.store.Delete(ctx, kv.Key)
		}
	}
	return nil
}

func (m *Manager) endpointKey(containerID string) string {
	return EndpointsPrefix + m.local.Name + "/" + containerID
}

func (m *Manager) trigger() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *Manager) setErr(err error) {
	m.mu.Lock()
	m.lastErr = err
	m.mu.Unlock()
	if err != nil {
		m.log.Warn("node sync", "err", err)
	}
}

// reconcileLoop converges on every change, and retries every few seconds
// after a failure.
func (m *Manager) reconcileLoop(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		case <-retry.C:
		}
		m.mu.Lock()
		ready := m.store == nil || (m.listedNodes && m.listedEndpoints)
		m.mu.Unlock()
		if !ready {
			retry.Reset(200 * time.Millisecond)
			continue
		}
		err := m.reconcile()
		m.setErr(err)
		if err != nil {
			retry.Reset(3 * time.Second)
		}
	}
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
	for name, n := range m.nodes {
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
	for _, ep := range m.endpoints {
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

func (m *Manager) reconcile() error {
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
