package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/lumen-net/lumen/internal/api"
)

// announce (re)writes the local node; called on every listing so that a
// store that lost its data learns the node again.
func (m *Manager) announce(ctx context.Context) {
	b, _ := json.Marshal(m.local)
	if _, err := m.store.Put(ctx, NodesPrefix+m.local.Name, b); err != nil {
		err = fmt.Errorf("announcing node: %w", err)
		m.log.Warn("node sync", "err", err)
		m.mu.Lock()
		m.lastErr = err
		m.mu.Unlock()
		return
	}
	m.mu.Lock()
	m.synced, m.lastErr = true, nil
	m.mu.Unlock()
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
// CiliumEndpointSlice, keyed by pod) as the same pod of this node.
func (m *Manager) storeHas(want Endpoint) bool {
	same := func(have Endpoint) bool {
		return have.IPv4 == want.IPv4 && have.IPv6 == want.IPv6 && have.Identity == want.Identity
	}
	if have, ok := m.eps.Get(m.endpointKey(want.ContainerID)); ok {
		return same(have) && have.Node == want.Node
	}
	for _, have := range m.eps.Index(ByPod, want.Namespace+"/"+want.PodName) {
		if have.ContainerID == "" &&
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
