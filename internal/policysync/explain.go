package policysync

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/policy"
)

// ErrBadRequest marks an explain request that names no usable endpoint,
// peer, protocol or direction.
type ErrBadRequest struct{ error }

// BadRequest tells the API server to answer 400.
func (ErrBadRequest) BadRequest() bool { return true }

// Explain answers why a packet between a local endpoint and a peer is
// allowed or denied, from the same computation that fills the maps.
func (s *Syncer) Explain(ctx context.Context, node string, req *api.ExplainRequest, identityOf func(netip.Addr) uint32) (*api.Explanation, error) {
	var egress bool
	switch req.Direction {
	case "egress":
		egress = true
	case "ingress":
	default:
		return nil, ErrBadRequest{fmt.Errorf("direction %q: want ingress or egress", req.Direction)}
	}
	// ICMP: the port is the message type, as in the policy map.
	proto, ok := map[string]uint8{"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58, "any": 0, "": 6}[strings.ToLower(req.Protocol)]
	if !ok {
		return nil, ErrBadRequest{fmt.Errorf("protocol %q: want tcp, udp, sctp, icmp, icmpv6 or any", req.Protocol)}
	}
	peer, err := netip.ParseAddr(req.Peer)
	if err != nil {
		return nil, ErrBadRequest{fmt.Errorf("peer %q: not an IP address", req.Peer)}
	}
	isHost := req.Endpoint == "host"
	if s.opts.LocalNodeIPs != nil {
		for _, a := range s.opts.LocalNodeIPs() {
			isHost = isHost || a.String() == req.Endpoint
		}
	}
	if isHost {
		return s.explainHost(ctx, node, req, peer, egress, proto, identityOf)
	}
	var ep *api.Endpoint
	for _, e := range s.Endpoints() {
		if strconv.Itoa(int(e.ID)) == req.Endpoint || e.ContainerID == req.Endpoint || e.Namespace+"/"+e.PodName == req.Endpoint ||
			e.IPv4 == req.Endpoint || e.IPv6 == req.Endpoint {
			e := e
			ep = &e
			break
		}
	}
	if ep == nil {
		return nil, ErrBadRequest{fmt.Errorf("endpoint %q: not an endpoint of node %s", req.Endpoint, node)}
	}
	eng, err := s.rebuild(ctx)
	if err != nil {
		return nil, err
	}
	ports := s.namedPorts()
	s.mu.Lock()
	lbls := s.idents[ep.Identity]
	audit := false
	if r := s.records[ep.ContainerID]; r != nil {
		audit = r.pol.Audit
	}
	peerID := identityOf(peer)
	peerLabels := s.idents[peerID]
	s.mu.Unlock()
	pol, err := eng.Compute(policy.EndpointInfo{Identity: ep.Identity, Labels: lbls, Namespace: ep.Namespace,
		NamedPorts: ports.own(ep.Namespace, ep.PodName), PeerNamedPorts: ports.peers})
	if err != nil {
		return nil, err
	}
	x := pol.Explain(peerID, egress, proto, req.Port)
	out := &api.Explanation{
		Node: node, Endpoint: ep.Namespace + "/" + ep.PodName, EndpointID: ep.ID, EndpointIdentity: ep.Identity,
		Peer: peer.String(), PeerIdentity: peerID, PeerLabels: peerLabels.Strings(),
		Direction: req.Direction, Protocol: policy.ProtoName(proto), Port: req.Port,
		Allowed: x.Allowed(), Reason: x.Reason, Rules: rules(x.Rules), Overridden: rules(x.Overridden),
		EnforcedBy: x.EnforcedBy, SelectedBy: x.SelectedBy, Warnings: x.Warnings,
	}
	if audit && !out.Allowed {
		out.Reason += " (audit mode: reported, not dropped)"
	}
	return out, nil
}

// explainHost explains the host firewall's verdict.
func (s *Syncer) explainHost(ctx context.Context, node string, req *api.ExplainRequest, peer netip.Addr, egress bool, proto uint8, identityOf func(netip.Addr) uint32) (*api.Explanation, error) {
	eng, err := s.rebuild(ctx)
	if err != nil {
		return nil, err
	}
	pol, err := eng.Compute(s.hostInfo())
	if err != nil {
		return nil, err
	}
	peerID := identityOf(peer)
	s.mu.Lock()
	peerLabels := s.idents[peerID]
	s.mu.Unlock()
	x := pol.Explain(peerID, egress, proto, req.Port)
	out := &api.Explanation{
		Node: node, Endpoint: "host " + node, EndpointID: 0xffff, EndpointIdentity: 1,
		Peer: peer.String(), PeerIdentity: peerID, PeerLabels: peerLabels.Strings(),
		Direction: req.Direction, Protocol: policy.ProtoName(proto), Port: req.Port,
		Allowed: x.Allowed(), Reason: x.Reason, Rules: rules(x.Rules), Overridden: rules(x.Overridden),
		EnforcedBy: x.EnforcedBy, SelectedBy: x.SelectedBy, Warnings: x.Warnings,
	}
	if s.opts.Audit && !out.Allowed {
		out.Reason += " (audit mode: reported, not dropped)"
	}
	return out, nil
}

func rules(refs []policy.RuleRef) []api.ExplainRule {
	var out []api.ExplainRule
	for _, r := range refs {
		out = append(out, api.ExplainRule{Policy: r.Policy, Rule: r.Rule, Section: r.Section, Selector: r.Selector, Ports: r.Ports})
	}
	return out
}
