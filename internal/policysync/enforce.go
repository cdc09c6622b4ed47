package policysync

import (
	"errors"
	"fmt"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/policy"
)

// enforce computes one endpoint's policy and writes its map entries.
// Failures fail closed.
func (s *Syncer) enforce(eng *policy.Engine, ep api.Endpoint, named map[string]policy.PortProto, peers map[uint32]map[string][]policy.PortProto) api.EndpointPolicy {
	s.mu.Lock()
	lbls := s.idents[ep.Identity]
	s.mu.Unlock()
	info := policy.EndpointInfo{Identity: ep.Identity, Labels: lbls, Namespace: ep.Namespace, NamedPorts: named, PeerNamedPorts: peers}
	closed := api.EndpointPolicy{IngressEnforced: true, EgressEnforced: true}
	pol, err := eng.Compute(info)
	if err != nil {
		closed.Error = err.Error()
		s.log.Error("computing endpoint policy: denying all its traffic", "endpoint", ep.ID, "err", err)
		_ = s.pm.Sync(ep.ID, nil)
		return closed
	}
	entries := make([]datapath.PolicyEntry, 0, len(pol.Entries))
	for _, e := range pol.Entries {
		entries = append(entries, datapath.PolicyEntry{Identity: e.Identity, Egress: e.Egress, Proto: e.Proto, Port: e.Port, PortBits: e.PortBits, Deny: e.Deny})
	}
	if n := len(datapath.ExpandAnyProto(entries)); n > s.opts.MaxEntries {
		s.Overflows.Add(1)
		closed.Error = fmt.Sprintf("policy needs %d map entries, more than the per-endpoint capacity of %d (--policy-map-max-entries): all traffic denied", n, s.opts.MaxEntries)
		s.log.Error("policy map overflow", "endpoint", ep.ID, "pod", ep.Namespace+"/"+ep.PodName, "entries", n, "max", s.opts.MaxEntries)
		_ = s.pm.Sync(ep.ID, nil)
		return closed
	}
	st := api.EndpointPolicy{
		IngressEnforced: pol.IngressEnforced, EgressEnforced: pol.EgressEnforced,
		Audit: s.opts.Audit && (pol.IngressEnforced || pol.EgressEnforced), Entries: len(entries), SelectedBy: pol.SelectedBy,
		Warnings: pol.Warnings,
	}
	s.logWarnings(ep, pol.Warnings)
	if err := s.pm.Sync(ep.ID, entries); err != nil {
		closed.Error = err.Error()
		s.log.Error("writing policy map: denying all traffic of the endpoint", "endpoint", ep.ID, "err", err)
		_ = s.pm.Sync(ep.ID, nil)
		return closed
	}
	return st
}

// hostInfo describes the host endpoint to the engine.
func (s *Syncer) hostInfo() policy.EndpointInfo {
	lbls := []policy.Label{{Source: "reserved", Key: "host"}}
	for k, v := range s.opts.HostLabels {
		lbls = append(lbls, policy.Label{Source: "k8s", Key: k, Value: v})
	}
	return policy.EndpointInfo{Identity: uint32(identity.Host), Labels: policy.NewLabels(lbls...), IsHost: true}
}

// enforceHost computes the host endpoint's policy (host firewall): map
// entries first, then the flags that turn enforcement on.
func (s *Syncer) enforceHost(eng *policy.Engine) error {
	if s.opts.SetHostFlags == nil {
		return nil
	}
	var flags uint16
	pol, err := eng.Compute(s.hostInfo())
	if err == nil {
		entries := make([]datapath.PolicyEntry, 0, len(pol.Entries))
		for _, e := range pol.Entries {
			entries = append(entries, datapath.PolicyEntry{Identity: e.Identity, Egress: e.Egress, Proto: e.Proto, Port: e.Port, PortBits: e.PortBits, Deny: e.Deny})
		}
		if n := len(datapath.ExpandAnyProto(entries)); n > s.opts.MaxEntries {
			err = fmt.Errorf("host policy needs %d map entries, more than %d", n, s.opts.MaxEntries)
		} else {
			err = s.pm.Sync(datapath.HostEndpointID, entries)
		}
		if pol.IngressEnforced {
			flags |= datapath.EndpointIngressEnforced
		}
		if pol.EgressEnforced {
			flags |= datapath.EndpointEgressEnforced
		}
	}
	if err != nil {
		// Fail closed, but keep the node reachable for its operators:
		// audit mode reports instead of locking everybody out.
		s.log.Error("host firewall policy failed: enforcing with no entries in audit mode", "err", err)
		_ = s.pm.Sync(datapath.HostEndpointID, nil)
		return errors.Join(err, s.opts.SetHostFlags(datapath.EndpointIngressEnforced|datapath.EndpointEgressEnforced|datapath.EndpointAudit))
	}
	if flags != 0 && s.opts.Audit {
		flags |= datapath.EndpointAudit
	}
	s.mu.Lock()
	s.hostPolicy = pol
	s.mu.Unlock()
	return s.opts.SetHostFlags(flags)
}
