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
	// Policy is the only writer of the endpoints' policy map entries.
	Policy Policy
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

	// idMu serialises identity changes: each waits for its policy without
	// mu, and none may start from an identity another is replacing.
	idMu sync.Mutex
	// identities is a copy of the endpoints' identities readable without mu:
	// the identity allocator asks for it while Create holds mu.
	identities atomic.Pointer[[]uint32]
}

// New returns a manager that keeps endpoint state files in stateDir.
func New(dp Datapath, stateDir string, hooks Hooks, log *slog.Logger) (*Manager, error) {
	dir := filepath.Join(stateDir, "endpoints")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating endpoint state dir: %w", err)
	}
	return &Manager{dp: dp, hooks: hooks, dir: dir, log: log, eps: map[string]*api.Endpoint{}}, nil
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
	// The policy first (waited for with mu held: the policy writer never
	// takes it), so that a new pod is never reachable without it.
	if m.hooks.Policy != nil {
		pol, err := m.hooks.Policy.Realize(*ep)(ctx)
		if err != nil {
			return api.Endpoint{}, fmt.Errorf("policy of %s/%s (identity %d): %w", req.Namespace, req.PodName, ep.Identity, err)
		}
		ep.Policy = m.realized(ep, pol)
	}
	fail := func(err error) (api.Endpoint, error) {
		m.unwire(ep)
		if m.hooks.Policy != nil {
			m.hooks.Policy.Forget(ep.ContainerID)
		}
		return api.Endpoint{}, err
	}
	if err := m.wire(ep); err != nil {
		return fail(err)
	}
	ep.State = api.EndpointReady
	if err := m.save(ep); err != nil {
		return fail(err)
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
	if m.hooks.Policy != nil {
		m.hooks.Policy.Forget(containerID)
	}
	delete(m.eps, containerID)
	m.snapIdentities()
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
		if m.hooks.Policy != nil {
			// Served once policies are known; until then the policy map
			// keeps what the previous agent wrote.
			m.hooks.Policy.Realize(*ep)
		}
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

// UpdateIdentity moves containerID's endpoint to identity id with pod labels
// labels, after its pod's or namespace's labels changed. The policy of the
// new identity is realized first, so the endpoint is never without policy;
// then the endpoint map entries switch to the new identity, the state is
// persisted and the endpoint announced again (other nodes' ipcache). An
// update to the identity the endpoint already has only records the labels.
func (m *Manager) UpdateIdentity(ctx context.Context, containerID string, id uint32, labels map[string]string) (api.Endpoint, error) {
	m.idMu.Lock()
	defer m.idMu.Unlock()
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
	var wait func(context.Context) (api.EndpointPolicy, error)
	if m.hooks.Policy != nil {
		// Queued under mu: a Delete's Forget comes after it.
		wait = m.hooks.Policy.Realize(next)
	}
	m.mu.Unlock()

	if wait != nil {
		pol, err := wait(ctx)
		if err != nil {
			return api.Endpoint{}, fmt.Errorf("policy of %s/%s for identity %d: %w", next.Namespace, next.PodName, id, err)
		}
		next.Policy = pol
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	ep, ok = m.eps[containerID]
	if !ok {
		// Deleted meanwhile: its Forget followed our request.
		return api.Endpoint{}, fmt.Errorf("endpoint for container %q: %w", containerID, ErrNotFound)
	}
	prev := *ep
	ep.Identity, ep.Labels = next.Identity, next.Labels
	if m.hooks.Policy != nil {
		// The latest result: the writer may have recomputed it already.
		ep.Policy = m.realized(ep, next.Policy)
	}
	m.snapIdentities()
	if err := m.writeMap(ep); err != nil {
		// Back to the old identity and its policy.
		ep.Identity, ep.Labels, ep.Policy = prev.Identity, prev.Labels, prev.Policy
		m.snapIdentities()
		if werr := m.writeMap(ep); werr != nil {
			m.log.Error("restoring endpoint map entry", "container", containerID, "err", werr)
		}
		if m.hooks.Policy != nil {
			if pol, perr := m.hooks.Policy.Realize(*ep)(ctx); perr != nil {
				m.log.Error("restoring the policy of the old identity", "container", containerID, "err", perr)
			} else if err := m.applyPolicy(ep, m.realized(ep, pol)); err != nil {
				m.log.Error("restoring the policy of the old identity", "container", containerID, "err", err)
			}
		}
		return api.Endpoint{}, fmt.Errorf("switching endpoint %d to identity %d: %w", prev.ID, id, err)
	}
	if err := m.save(ep); err != nil {
		// A restarted agent restores the old identity; the label watcher
		// then changes it again.
		m.log.Warn("persisting endpoint identity", "container", containerID, "err", err)
	}
	m.publish(ctx, *ep)
	m.log.Info("endpoint identity changed", "id", ep.ID, "container", containerID, "pod", ep.Namespace+"/"+ep.PodName, "from", old, "to", id)
	return *ep, nil
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
