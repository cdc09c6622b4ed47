// Package endpoint manages the node's endpoints (pods): it wires a plugged-in
// pod into the datapath (endpoint map, host routes, programs on its veth),
// persists each endpoint so a restarted agent adopts it, and announces it
// to the rest of the cluster.
package endpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
)

// ErrExists is returned for a second registration of the same container.
var ErrExists = errors.New("already exists")

// ErrNotFound is returned for an unknown container.
var ErrNotFound = errors.New("not found")

// ErrInvalid wraps a malformed request.
var ErrInvalid = errors.New("invalid endpoint request")

// Datapath is what the manager needs from the loaded programs.
type Datapath interface {
	UpsertEndpoint(ip netip.Addr, ep datapath.EndpointInfo) error
	DeleteEndpoint(ip netip.Addr) error
	Attach(h datapath.Hook, ifindex int) error
	Detach(h datapath.Hook, ifindex int) error
}

// Hooks connect the manager to the rest of the agent. Every field is optional.
type Hooks struct {
	// Identity resolves an endpoint's labels and security identity.
	Identity func(ctx context.Context, req *api.EndpointRequest) (uint32, map[string]string, error)
	// Owns reports whether the IPs were handed to containerID by IPAM.
	Owns func(containerID string, ips []netip.Addr) bool
	// AddRoute / DelRoute manage the host route to a pod through its veth.
	AddRoute func(ip netip.Addr, ifindex int) error
	DelRoute func(ip netip.Addr, ifindex int) error
	// Policy computes the endpoint's policy, writes its policy map entries
	// and returns its enforcement state; called before the endpoint is
	// wired, so that a new pod is never reachable before its policy is in
	// force.
	Policy func(ctx context.Context, ep api.Endpoint) (api.EndpointPolicy, error)
	// Publish / Unpublish announce the endpoint to other nodes.
	Publish   func(ctx context.Context, ep api.Endpoint) error
	Unpublish func(ctx context.Context, ep api.Endpoint) error
}

// Manager owns the endpoints of one node.
type Manager struct {
	mu    sync.Mutex
	dp    Datapath
	hooks Hooks
	dir   string
	log   *slog.Logger
	eps   map[string]*api.Endpoint

	// policyGen counts the policy results applied to each endpoint, so that
	// UpdateIdentity notices one applied while it computed its own.
	policyGen map[string]uint64
	// identities is a copy of the endpoints' identities readable without mu:
	// the identity allocator asks for it while Create holds mu.
	identities atomic.Pointer[[]uint32]
	// recheck marks endpoints whose identity changed: the next SetPolicy may
	// carry a policy computed for the old identity (the policy syncer
	// listed the endpoint before the change) and is recomputed instead.
	recheck map[string]bool
}

// New returns a manager that keeps endpoint state files in stateDir.
func New(dp Datapath, stateDir string, hooks Hooks, log *slog.Logger) (*Manager, error) {
	dir := filepath.Join(stateDir, "endpoints")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating endpoint state dir: %w", err)
	}
	return &Manager{dp: dp, hooks: hooks, dir: dir, log: log, eps: map[string]*api.Endpoint{},
		policyGen: map[string]uint64{}, recheck: map[string]bool{}}, nil
}

// List returns the endpoints sorted by ID.
func (m *Manager) List() []api.Endpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.Endpoint, 0, len(m.eps))
	for _, ep := range m.eps {
		out = append(out, *ep)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Get returns the endpoint of containerID.
func (m *Manager) Get(containerID string) (api.Endpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ep, ok := m.eps[containerID]
	if !ok {
		return api.Endpoint{}, fmt.Errorf("endpoint for container %q: %w", containerID, ErrNotFound)
	}
	return *ep, nil
}

// Create registers a plugged-in pod and wires it into the datapath. On
// failure nothing of it is left behind.
func (m *Manager) Create(ctx context.Context, req *api.EndpointRequest) (api.Endpoint, error) {
	ips, err := validate(req)
	if err != nil {
		return api.Endpoint{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.eps[req.ContainerID]; ok {
		return api.Endpoint{}, fmt.Errorf("containerID %q: endpoint %w (duplicate ADD?)", req.ContainerID, ErrExists)
	}
	for _, other := range m.eps {
		for _, ip := range ips {
			if other.IPv4 == ip.String() || other.IPv6 == ip.String() {
				return api.Endpoint{}, fmt.Errorf("ip %s: already used by container %q", ip, other.ContainerID)
			}
		}
	}
	if m.hooks.Owns != nil && !m.hooks.Owns(req.ContainerID, ips) {
		return api.Endpoint{}, fmt.Errorf("containerID %q: addresses %v were not allocated to it by this node's IPAM", req.ContainerID, ips)
	}
	link, err := netlink.LinkByName(req.HostIfName)
	if err != nil {
		return api.Endpoint{}, fmt.Errorf("hostIfName %q: %w", req.HostIfName, err)
	}
	if link.Type() != "veth" {
		return api.Endpoint{}, fmt.Errorf("hostIfName %q: %w: a %s device, not a pod's veth", req.HostIfName, ErrInvalid, link.Type())
	}
	ep := &api.Endpoint{
		ID:          m.freeID(),
		ContainerID: req.ContainerID,
		PodName:     req.PodName,
		Namespace:   req.Namespace,
		NetNS:       req.NetNS,
		IfName:      req.IfName,
		HostIfName:  req.HostIfName,
		HostIfIndex: link.Attrs().Index,
		IPv4:        req.IPv4,
		IPv6:        req.IPv6,
		MAC:         req.MAC,
		HostMAC:     link.Attrs().HardwareAddr.String(),
		Labels:      req.Labels,
		State:       api.EndpointNotReady,
		Created:     time.Now().UTC(),
	}
	ep.Identity = 5 // reserved:init until labels resolve
	if m.hooks.Identity != nil {
		id, labels, err := m.hooks.Identity(ctx, req)
		if err != nil {
			return api.Endpoint{}, fmt.Errorf("resolving identity of %s/%s: %w", req.Namespace, req.PodName, err)
		}
		ep.Identity, ep.Labels = id, labels
	}
	if m.hooks.Policy != nil {
		pol, err := m.hooks.Policy(ctx, *ep)
		if err != nil {
			return api.Endpoint{}, fmt.Errorf("computing policy of %s/%s: %w", req.Namespace, req.PodName, err)
		}
		ep.Policy = pol
	}
	if err := m.wire(ep); err != nil {
		m.unwire(ep)
		return api.Endpoint{}, err
	}
	ep.State = api.EndpointReady
	if err := m.save(ep); err != nil {
		m.unwire(ep)
		return api.Endpoint{}, err
	}
	m.eps[ep.ContainerID] = ep
	m.snapIdentities()
	m.publish(ctx, *ep)
	m.log.Info("endpoint created", "id", ep.ID, "container", ep.ContainerID, "pod", ep.Namespace+"/"+ep.PodName, "ipv4", ep.IPv4, "ipv6", ep.IPv6, "identity", ep.Identity)
	return *ep, nil
}

// Delete removes containerID's endpoint from the datapath.
func (m *Manager) Delete(ctx context.Context, containerID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ep, ok := m.eps[containerID]
	if !ok {
		return fmt.Errorf("endpoint for container %q: %w", containerID, ErrNotFound)
	}
	m.unwire(ep)
	delete(m.eps, containerID)
	m.snapIdentities()
	delete(m.policyGen, containerID)
	delete(m.recheck, containerID)
	if err := os.Remove(m.file(containerID)); err != nil && !os.IsNotExist(err) {
		m.log.Warn("removing endpoint state", "container", containerID, "err", err)
	}
	if m.hooks.Unpublish != nil {
		if err := m.hooks.Unpublish(ctx, *ep); err != nil {
			m.log.Warn("unpublishing endpoint", "container", containerID, "err", err)
		}
	}
	m.log.Info("endpoint deleted", "id", ep.ID, "container", containerID)
	return nil
}

// Restore adopts the endpoints an earlier agent persisted. Programs are
// replaced in place on their veths and map entries rewritten, so traffic
// never stops. Endpoints whose veth is gone are dropped and returned, so
// the caller can release their addresses. Nothing here talks to the store:
// the datapath comes back at once even when the store is unreachable, and
// the node manager announces the endpoints when it lists the store.
func (m *Manager) Restore() (gone []api.Endpoint, err error) {
	files, err := filepath.Glob(filepath.Join(m.dir, "*.json"))
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading endpoint state: %w", err)
		}
		ep := &api.Endpoint{}
		if err := json.Unmarshal(b, ep); err != nil {
			m.log.Error("skipping corrupt endpoint state", "file", f, "err", err)
			continue
		}
		link, lerr := netlink.LinkByName(ep.HostIfName)
		if lerr != nil || link.Attrs().Index != ep.HostIfIndex {
			m.log.Info("endpoint's veth is gone, dropping it", "container", ep.ContainerID, "hostIfName", ep.HostIfName)
			m.unwire(ep)
			_ = os.Remove(f)
			gone = append(gone, *ep)
			continue
		}
		ep.State = api.EndpointRestoring
		if err := m.wire(ep); err != nil {
			return gone, fmt.Errorf("restoring endpoint %d (%s): %w", ep.ID, ep.ContainerID, err)
		}
		ep.State = api.EndpointReady
		m.eps[ep.ContainerID] = ep
		m.snapIdentities()
		m.log.Info("endpoint restored", "id", ep.ID, "container", ep.ContainerID, "pod", ep.Namespace+"/"+ep.PodName)
	}
	return gone, nil
}

// Identities returns the identity of every endpoint (in no order). It does
// not take the manager's lock: hooks called during Create may use it.
func (m *Manager) Identities() []uint32 {
	if p := m.identities.Load(); p != nil {
		return *p
	}
	return nil
}

// snapIdentities refreshes the lock-free copy. Called with mu held.
func (m *Manager) snapIdentities() {
	ids := make([]uint32, 0, len(m.eps))
	for _, ep := range m.eps {
		ids = append(ids, ep.Identity)
	}
	m.identities.Store(&ids)
}

// IfIndexes returns the host-side ifindexes of all endpoints.
func (m *Manager) IfIndexes() map[int]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[int]bool{}
	for _, ep := range m.eps {
		out[ep.HostIfIndex] = true
	}
	return out
}

// IPs returns every endpoint address.
func (m *Manager) IPs() map[netip.Addr]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[netip.Addr]bool{}
	for _, ep := range m.eps {
		for _, ip := range epIPs(ep) {
			out[ip] = true
		}
	}
	return out
}

func (m *Manager) publish(ctx context.Context, ep api.Endpoint) {
	if m.hooks.Publish == nil {
		return
	}
	if err := m.hooks.Publish(ctx, ep); err != nil {
		m.log.Warn("publishing endpoint", "container", ep.ContainerID, "err", err)
	}
}

// wire writes the endpoint into the datapath: map entries first, so that
// the programs find it from their first packet, then routes and programs.
func (m *Manager) wire(ep *api.Endpoint) error {
	if err := m.writeMap(ep); err != nil {
		return err
	}
	for _, ip := range epIPs(ep) {
		if m.hooks.AddRoute != nil {
			if err := m.hooks.AddRoute(ip, ep.HostIfIndex); err != nil {
				return fmt.Errorf("route to %s: %w", ip, err)
			}
		}
	}
	if err := m.dp.Attach(datapath.HookFromContainer, ep.HostIfIndex); err != nil {
		return err
	}
	return m.dp.Attach(datapath.HookToContainer, ep.HostIfIndex)
}

// policyFlags are the datapath flags of an endpoint's enforcement state.
func policyFlags(p api.EndpointPolicy) uint16 {
	var f uint16
	if p.IngressEnforced {
		f |= datapath.EndpointIngressEnforced
	}
	if p.EgressEnforced {
		f |= datapath.EndpointEgressEnforced
	}
	if p.Audit {
		f |= datapath.EndpointAudit
	}
	return f
}

// SetPolicy records an endpoint's enforcement state and writes its flags
// into the endpoint map. The state is persisted, so a restarted agent
// enforces from its first packet.
//
// The first call after an identity change recomputes the policy through
// Hooks.Policy instead of trusting p: the caller may have computed p (and
// written its map entries) for the endpoint as it was before the change.
func (m *Manager) SetPolicy(containerID string, p api.EndpointPolicy) error {
	m.mu.Lock()
	if m.recheck[containerID] && m.hooks.Policy != nil {
		delete(m.recheck, containerID)
		m.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := m.refreshPolicy(ctx, containerID)
		if err == nil || errors.Is(err, ErrNotFound) {
			return err
		}
		m.log.Warn("recomputing policy after an identity change", "container", containerID, "err", err)
		m.mu.Lock()
		m.recheck[containerID] = true // the next round tries again
	}
	defer m.mu.Unlock()
	ep, ok := m.eps[containerID]
	if !ok {
		return fmt.Errorf("endpoint for container %q: %w", containerID, ErrNotFound)
	}
	return m.applyPolicy(ep, p)
}

// applyPolicy records p as ep's enforcement state. Called with mu held.
func (m *Manager) applyPolicy(ep *api.Endpoint, p api.EndpointPolicy) error {
	m.policyGen[ep.ContainerID]++
	changedFlags := policyFlags(ep.Policy) != policyFlags(p)
	ep.Policy = p
	if changedFlags {
		if err := m.writeMap(ep); err != nil {
			return err
		}
	}
	return m.save(ep)
}

// refreshPolicy computes containerID's policy for the endpoint as it is now
// and applies it.
func (m *Manager) refreshPolicy(ctx context.Context, containerID string) error {
	for range 3 {
		m.mu.Lock()
		ep, ok := m.eps[containerID]
		if !ok {
			m.mu.Unlock()
			return fmt.Errorf("endpoint for container %q: %w", containerID, ErrNotFound)
		}
		snap, gen := *ep, m.policyGen[containerID]
		m.mu.Unlock()
		pol, err := m.hooks.Policy(ctx, snap)
		if err != nil {
			return fmt.Errorf("computing policy of %s/%s: %w", snap.Namespace, snap.PodName, err)
		}
		m.mu.Lock()
		ep, ok = m.eps[containerID]
		switch {
		case !ok:
			// Deleted meanwhile: an endpoint that reuses its id gets its
			// policy recomputed at the next SetPolicy.
			if owner := m.ownerOf(snap.ID); owner != "" {
				m.recheck[owner] = true
			}
			m.mu.Unlock()
			return fmt.Errorf("endpoint for container %q: %w", containerID, ErrNotFound)
		case ep.Identity != snap.Identity || m.policyGen[containerID] != gen:
			// Changed meanwhile: what we wrote may be outdated already.
			m.mu.Unlock()
			continue
		}
		err = m.applyPolicy(ep, pol)
		m.mu.Unlock()
		return err
	}
	return fmt.Errorf("endpoint for container %q: changed during every policy computation", containerID)
}

// UpdateIdentity moves containerID's endpoint to identity id with pod labels
// labels, after its pod's or namespace's labels changed. The policy of the
// new identity is computed and written first, so the endpoint is never
// without policy; then the endpoint map entries switch to the new identity,
// the state is persisted and the endpoint announced again (other nodes'
// ipcache). An update to the identity the endpoint already has only records
// the labels.
func (m *Manager) UpdateIdentity(ctx context.Context, containerID string, id uint32, labels map[string]string) (api.Endpoint, error) {
	m.mu.Lock()
	ep, ok := m.eps[containerID]
	if !ok {
		m.mu.Unlock()
		return api.Endpoint{}, fmt.Errorf("endpoint for container %q: %w", containerID, ErrNotFound)
	}
	if ep.Identity == id {
		defer m.mu.Unlock()
		if maps.Equal(ep.Labels, labels) {
			return *ep, nil
		}
		ep.Labels = maps.Clone(labels)
		if err := m.save(ep); err != nil {
			m.log.Warn("persisting endpoint labels", "container", containerID, "err", err)
		}
		m.publish(ctx, *ep)
		return *ep, nil
	}
	old := ep.Identity
	next := *ep
	next.Identity, next.Labels = id, maps.Clone(labels)
	gen := m.policyGen[containerID]
	m.mu.Unlock()

	// The policy is computed without the lock: the policy syncer lists
	// endpoints meanwhile. Whatever it writes for the old identity is
	// caught by policyGen (before the swap) or recheck (after it).
	if m.hooks.Policy != nil {
		pol, err := m.hooks.Policy(ctx, next)
		if err != nil {
			return api.Endpoint{}, fmt.Errorf("computing policy of %s/%s for identity %d: %w", next.Namespace, next.PodName, id, err)
		}
		next.Policy = pol
	}

	m.mu.Lock()
	ep, ok = m.eps[containerID]
	if !ok || ep.Identity != old {
		// Deleted (its id maybe reused already) or changed meanwhile: the
		// entries just written belong to nobody. Whoever has the id now
		// gets its own policy again.
		owner := m.ownerOf(next.ID)
		m.mu.Unlock()
		if owner != "" && m.hooks.Policy != nil {
			if err := m.refreshPolicy(ctx, owner); err != nil && !errors.Is(err, ErrNotFound) {
				m.log.Warn("recomputing policy", "container", owner, "err", err)
			}
		}
		if !ok {
			return api.Endpoint{}, fmt.Errorf("endpoint for container %q: %w", containerID, ErrNotFound)
		}
		return api.Endpoint{}, fmt.Errorf("endpoint for container %q: identity changed concurrently", containerID)
	}
	raced := m.policyGen[containerID] != gen
	prev := *ep
	ep.Identity, ep.Labels, ep.Policy = next.Identity, next.Labels, next.Policy
	m.snapIdentities()
	if err := m.writeMap(ep); err != nil {
		// Back to the old identity; its policy is computed again below.
		ep.Identity, ep.Labels, ep.Policy = prev.Identity, prev.Labels, prev.Policy
		m.snapIdentities()
		if werr := m.writeMap(ep); werr != nil {
			m.log.Error("restoring endpoint map entry", "container", containerID, "err", werr)
		}
		m.mu.Unlock()
		if m.hooks.Policy != nil {
			if perr := m.refreshPolicy(ctx, containerID); perr != nil {
				m.log.Error("restoring the policy of the old identity", "container", containerID, "err", perr)
			}
		}
		return api.Endpoint{}, fmt.Errorf("switching endpoint %d to identity %d: %w", prev.ID, id, err)
	}
	m.policyGen[containerID]++
	if err := m.save(ep); err != nil {
		// A restarted agent restores the old identity; the label watcher
		// then changes it again.
		m.log.Warn("persisting endpoint identity", "container", containerID, "err", err)
	}
	if m.hooks.Policy != nil {
		m.recheck[containerID] = true
	}
	m.publish(ctx, *ep)
	out := *ep
	m.mu.Unlock()
	m.log.Info("endpoint identity changed", "id", out.ID, "container", containerID, "pod", out.Namespace+"/"+out.PodName, "from", old, "to", id)
	if raced {
		// A policy computed for the old identity was applied while we
		// computed the new one, and may have overwritten its entries.
		if err := m.refreshPolicy(ctx, containerID); err != nil {
			return out, fmt.Errorf("recomputing policy of endpoint %d after its identity change: %w", out.ID, err)
		}
		out, _ = m.Get(containerID)
	}
	return out, nil
}

func (m *Manager) writeMap(ep *api.Endpoint) error {
	mac, err := net.ParseMAC(ep.MAC)
	if err != nil {
		return fmt.Errorf("mac %q: %w", ep.MAC, err)
	}
	hmac, err := net.ParseMAC(ep.HostMAC)
	if err != nil {
		return fmt.Errorf("host mac %q: %w", ep.HostMAC, err)
	}
	info := datapath.EndpointInfo{IfIndex: uint32(ep.HostIfIndex), ID: ep.ID, Flags: policyFlags(ep.Policy), Identity: ep.Identity, MAC: mac, HostMAC: hmac}
	for _, ip := range epIPs(ep) {
		if err := m.dp.UpsertEndpoint(ip, info); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manager) unwire(ep *api.Endpoint) {
	for _, ip := range epIPs(ep) {
		if err := m.dp.DeleteEndpoint(ip); err != nil {
			m.log.Warn("unwiring endpoint", "ip", ip, "err", err)
		}
		if m.hooks.DelRoute != nil {
			_ = m.hooks.DelRoute(ip, ep.HostIfIndex)
		}
	}
	_ = m.dp.Detach(datapath.HookFromContainer, ep.HostIfIndex)
	_ = m.dp.Detach(datapath.HookToContainer, ep.HostIfIndex)
}

// ownerOf returns the container of endpoint id, "" if none. Called with mu
// held.
func (m *Manager) ownerOf(id uint16) string {
	for cid, ep := range m.eps {
		if ep.ID == id {
			return cid
		}
	}
	return ""
}

func (m *Manager) freeID() uint16 {
	used := map[uint16]bool{}
	for _, ep := range m.eps {
		used[ep.ID] = true
	}
	for id := uint16(1); id != 0; id++ {
		if !used[id] {
			return id
		}
	}
	return 0
}

func (m *Manager) file(containerID string) string {
	return filepath.Join(m.dir, containerID+".json")
}

func (m *Manager) save(ep *api.Endpoint) error {
	b, err := json.MarshalIndent(ep, "", "  ")
	if err != nil {
		return err
	}
	tmp := m.file(ep.ContainerID) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing endpoint state: %w", err)
	}
	return os.Rename(tmp, m.file(ep.ContainerID))
}

func epIPs(ep *api.Endpoint) []netip.Addr {
	var out []netip.Addr
	for _, s := range []string{ep.IPv4, ep.IPv6} {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// validate checks a request and returns its addresses.
func validate(req *api.EndpointRequest) ([]netip.Addr, error) {
	if req.ContainerID == "" {
		return nil, errors.New("containerID: must not be empty")
	}
	if strings.ContainsAny(req.ContainerID, "/\\") || req.ContainerID == "." || req.ContainerID == ".." {
		return nil, fmt.Errorf("containerID %q: must not contain path separators", req.ContainerID)
	}
	if err := api.ValidateHostIfName(req.ContainerID, req.HostIfName); err != nil {
		return nil, err
	}
	if _, err := net.ParseMAC(req.MAC); err != nil {
		return nil, fmt.Errorf("mac %q: invalid", req.MAC)
	}
	var ips []netip.Addr
	if req.IPv4 != "" {
		a, err := netip.ParseAddr(req.IPv4)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("ipv4 %q: not an IPv4 address", req.IPv4)
		}
		ips = append(ips, a)
	}
	if req.IPv6 != "" {
		a, err := netip.ParseAddr(req.IPv6)
		if err != nil || !a.Is6() || a.Is4In6() {
			return nil, fmt.Errorf("ipv6 %q: not an IPv6 address", req.IPv6)
		}
		ips = append(ips, a)
	}
	if len(ips) == 0 {
		return nil, errors.New("ipv4, ipv6: at least one address is required")
	}
	return ips, nil
}
