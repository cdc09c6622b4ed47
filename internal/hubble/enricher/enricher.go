// Package enricher names the endpoints of flows: local endpoints, the
// cluster's remote endpoints, nodes and identities, by address.
package enricher

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/hubble/parser"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/node"
	"github.com/lumen-net/lumen/internal/state"
)

// Endpoints lists this node's endpoints.
type Endpoints interface{ List() []api.Endpoint }

// Nodes lists the cluster's nodes.
type Nodes interface{ Nodes() []node.Node }

// Deps are where the enricher reads names from.
type Deps struct {
	NodeName string
	// PodCIDRs are this node's: an unknown address there is a new pod.
	PodCIDRs   []netip.Prefix
	Endpoints  Endpoints
	Nodes      Nodes
	Identities *identity.Allocator // nil: labels from the endpoints only
	// Remote is the cluster's endpoints (the table of node.EndpointsPrefix);
	// nil: none.
	Remote *state.Table[node.Endpoint]
}

// Enricher maps addresses to flow endpoints from an immutable snapshot,
// rebuilt when remote endpoints change, every few seconds, and at once
// (rate limited) when an address of this node's pod CIDRs is unknown, so a
// new pod's first packets are named.
type Enricher struct {
	d    Deps
	snap atomic.Pointer[map[netip.Addr]*flowpb.Endpoint]
	mu   sync.Mutex // serializes rebuilds; guards last
	last time.Time
}

// New returns an enricher with a first snapshot.
func New(d Deps) *Enricher {
	e := &Enricher{d: d}
	e.rebuild()
	return e
}

// EndpointByIP implements parser.Enricher.
func (e *Enricher) EndpointByIP(ip netip.Addr) *flowpb.Endpoint {
	ip = ip.Unmap()
	if ep, ok := (*e.snap.Load())[ip]; ok {
		return ep
	}
	if e.local(ip) && e.rebuildIfStale(200*time.Millisecond) {
		if ep, ok := (*e.snap.Load())[ip]; ok {
			return ep
		}
	}
	return parser.ReservedEndpoint(parser.IdentityWorld)
}

func (e *Enricher) local(ip netip.Addr) bool {
	for _, p := range e.d.PodCIDRs {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Run rebuilds when the cluster's endpoints change and every few seconds
// (local endpoints and nodes) until ctx ends.
func (e *Enricher) Run(ctx context.Context) error {
	var changed <-chan struct{}
	if e.d.Remote != nil {
		changed = e.d.Remote.Changed()
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-t.C:
		}
		e.rebuild()
	}
}

func (e *Enricher) rebuildIfStale(age time.Duration) bool {
	e.mu.Lock()
	stale := time.Since(e.last) >= age
	e.mu.Unlock()
	if stale {
		e.rebuild()
	}
	return stale
}

func (e *Enricher) rebuild() {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := map[netip.Addr]*flowpb.Endpoint{}
	add := func(ip string, ep *flowpb.Endpoint) {
		if a, err := netip.ParseAddr(ip); err == nil {
			m[a.Unmap()] = ep
		}
	}
	for _, n := range e.d.Nodes.Nodes() {
		id := uint32(parser.IdentityRemoteNode)
		if n.Name == e.d.NodeName {
			id = parser.IdentityHost
		}
		add(n.IPv4, parser.ReservedEndpoint(id))
		add(n.IPv6, parser.ReservedEndpoint(id))
	}
	var remote []node.Endpoint
	if e.d.Remote != nil {
		remote = e.d.Remote.List()
	}
	for _, r := range remote {
		if r.Node == e.d.NodeName {
			continue // the local list below is authoritative
		}
		ep := &flowpb.Endpoint{Identity: r.Identity, ClusterName: "default", Namespace: r.Namespace, PodName: r.PodName,
			Labels: e.labels(r.Identity, r.Namespace, r.Labels)}
		add(r.IPv4, ep)
		add(r.IPv6, ep)
	}
	for _, l := range e.d.Endpoints.List() {
		ep := &flowpb.Endpoint{ID: uint32(l.ID), Identity: l.Identity, ClusterName: "default", Namespace: l.Namespace, PodName: l.PodName,
			Labels: e.labels(l.Identity, l.Namespace, l.Labels)}
		add(l.IPv4, ep)
		add(l.IPv6, ep)
	}
	e.snap.Store(&m)
	e.last = time.Now()
}

// labels are the identity's labels when known, else the pod's own.
func (e *Enricher) labels(id uint32, ns string, pod map[string]string) []string {
	if e.d.Identities != nil {
		if ls, ok := e.d.Identities.Lookup(identity.ID(id)); ok {
			return ls.Strings()
		}
	}
	if ls, ok := identity.ReservedLabels(identity.ID(id)); ok && id != parser.IdentityInit {
		return ls.Strings()
	}
	return parser.PodLabels(ns, pod)
}

// Make sure the enricher stays what the parser expects.
var _ parser.Enricher = (*Enricher)(nil)
