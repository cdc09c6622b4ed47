package endpoint

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
)

// Policy is the only writer of endpoints' policy map entries
// (internal/policysync). It serves requests one at a time in the order they
// were queued, and never calls into the manager: the manager queues
// requests while holding its lock, so their order is the order of its own
// changes, and pulls results (Realized) when Changed fires.
type Policy interface {
	// Realize queues the writing of ep's policy for ep.Identity. wait
	// returns once it is in force, or an error after a bounded wait; on
	// error nothing was changed.
	Realize(ep api.Endpoint) (wait func(context.Context) (api.EndpointPolicy, error))
	// Forget queues the removal of containerID's policy.
	Forget(containerID string)
	// Realized returns containerID's enforcement state as last written and
	// the identity it was computed for.
	Realized(containerID string) (api.EndpointPolicy, uint32, bool)
	// Changed signals that a Realized result may have changed.
	Changed() <-chan struct{}
}

// Run applies the enforcement state the policy writer realizes to the
// endpoint map and the persisted endpoints until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	if m.hooks.Policy == nil {
		return
	}
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.hooks.Policy.Changed():
		case <-retry.C:
		}
		m.mu.Lock()
		err := m.pullPolicies()
		m.mu.Unlock()
		if err != nil {
			m.log.Warn("applying endpoint enforcement state", "err", err)
			retry.Reset(2 * time.Second)
		}
	}
}

// pullPolicies records each endpoint's realized enforcement state; a
// result for another identity than the endpoint's is left for the
// identity change that asked for it. Called with mu held.
func (m *Manager) pullPolicies() error {
	var errs []error
	for _, ep := range m.eps {
		p, id, ok := m.hooks.Policy.Realized(ep.ContainerID)
		if !ok || id != ep.Identity || reflect.DeepEqual(p, ep.Policy) {
			continue
		}
		errs = append(errs, m.applyPolicy(ep, p))
	}
	return errors.Join(errs...)
}

// realized returns ep's enforcement state as last realized, def when none
// is for its identity. Called with mu held.
func (m *Manager) realized(ep *api.Endpoint, def api.EndpointPolicy) api.EndpointPolicy {
	if p, id, ok := m.hooks.Policy.Realized(ep.ContainerID); ok && id == ep.Identity {
		return p
	}
	return def
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

// applyPolicy records p as ep's enforcement state: flags into the endpoint
// map, state persisted, so a restarted agent enforces from its first
// packet. On failure ep keeps its state, so the next pull tries again.
// Called with mu held.
func (m *Manager) applyPolicy(ep *api.Endpoint, p api.EndpointPolicy) error {
	prev := ep.Policy
	ep.Policy = p
	if policyFlags(prev) != policyFlags(p) {
		if err := m.writeMap(ep); err != nil {
			ep.Policy = prev
			return fmt.Errorf("endpoint %d: %w", ep.ID, err)
		}
	}
	return m.save(ep)
}
