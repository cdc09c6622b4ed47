// Package lbsync keeps the datapath's load-balancing maps equal to the
// Services and EndpointSlices in the store (EndpointSlices of services with
// a selector are derived from the cluster's endpoints, as the Kubernetes
// EndpointSlice controller would). internal/loadbalancer decides what this
// node programs; this package only writes it, in an order that never sends
// a new connection to a backend that is gone.
//
// It works incrementally: an event recomputes only the services it touches
// (the Service, the slices naming it by their kubernetes.io/service-name
// label, the pods and endpoints its selector picks) and writes only the map
// entries that change. A resync of the store, a change of the local node,
// and node changes that can move any service (zones and roles: topology
// hints) recompute everything.
package lbsync

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/kvstore"
	lb "github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/model"
	"github.com/lumen-net/lumen/internal/reconcile"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/state"
)

// Options configure the syncer.
type Options struct {
	Maglev     bool
	MaglevSize uint64
	MaglevSeed string
	// StateDir holds loadbalancer.json and its journal (the ids that must
	// survive a restart); "" keeps them in memory only.
	StateDir string
	Local    func() lb.NodeInfo
	// ControllerSlices says a real EndpointSlice controller (Kubernetes)
	// writes the slices of services with a selector: the syncer then uses
	// them as they are, derives none and does not follow pods.
	ControllerSlices bool
	// RejectFlag is the service flag that makes the datapath reject new
	// connections to a frontend without backends whose service has no
	// endpoint anywhere (kube-proxy's REJECT). 0 while the datapath has
	// none: it then drops them (reason 158, service backend not found).
	RejectFlag uint32
}

// Nodes is what the syncer needs of the node manager.
type Nodes interface {
	Nodes() []model.Node
	Endpoints() []model.Endpoint
	Changed() <-chan struct{}
}

// Maps are the datapath's load-balancing maps (*datapath.Datapath).
type Maps interface {
	UpsertBackend(id uint32, b datapath.Backend) error
	DeleteBackend(id uint32) error
	Backends() (map[uint32]datapath.Backend, error)
	UpsertService(s datapath.ServiceEntry, oldCount uint32) error
	DeleteService(f datapath.Frontend, count uint32) error
	Services() ([]datapath.ServiceEntry, error)
	UpsertRevNat(id uint32, addr netip.Addr, port uint16) error
	SetMaglev(revNat uint32, table []uint32) error
	DeleteMaglev(revNat uint32) error
}

var _ Maps = (*datapath.Datapath)(nil)

// SyncStats describe one reconcile.
type SyncStats struct {
	Full      bool          `json:"full"`
	Services  int           `json:"services"`  // services recomputed
	Frontends int           `json:"frontends"` // frontend entries written or deleted
	Writes    int           `json:"mapWrites"` // map updates and deletes
	Took      time.Duration `json:"tookNs"`    // the reconcile itself
	// Latency is from the arrival of the first change the reconcile
	// handles to the end of its map writes.
	Latency time.Duration `json:"latencyNs"`
}

// Tables are the state tables the syncer reads.
type Tables struct {
	Services, EndpointSlices, Pods *state.Table[*resource.Object]
}

func (t Tables) of(kind string) *state.Table[*resource.Object] {
	switch kind {
	case "Service":
		return t.Services
	case "EndpointSlice":
		return t.EndpointSlices
	}
	return t.Pods
}

// Syncer converges the load-balancing maps.
type Syncer struct {
	store  kvstore.Store // nil: no store (tables are then ignored)
	tables Tables
	dp     Maps
	nodes  Nodes
	opts   Options
	log    *slog.Logger
	kick   chan struct{}

	// in: the store's objects, the node manager's view, and what changed
	// since the last reconcile.
	mu  sync.Mutex
	in  inputs
	cmp computed // the loop goroutine's, also under mu

	// Programmed state: the loop goroutine writes it, the API reads it.
	stMu    sync.Mutex
	st      programmedState
	lastErr error
	last    SyncStats
	// afterSync, when set, sees the stats of every reconcile (tests).
	afterSync func(SyncStats)
}

// inputs are what the frontends are computed from.
type inputs struct {
	synced   map[string]bool
	services map[string]*lb.Service                  // "namespace/name"
	byNS     map[string]map[string]*lb.Service       // namespace -> key -> service
	slices   map[string]*lb.EndpointSlice            // store key
	slicesOf map[string]map[string]*lb.EndpointSlice // service -> store key -> slice
	pods     map[string]*lb.Pod                      // "namespace/name"

	dirty      map[string]bool // services to recompute
	full       bool            // recompute every service
	nodesMoved bool            // the node manager signalled a change
	since      time.Time       // the first change not handled yet

	// The cluster as the node manager announces it (standalone slice
	// derivation only).
	epByKey  map[string]model.Endpoint   // node/containerID
	epByNS   map[string][]model.Endpoint // namespace -> endpoints
	nodeList []model.Node
	nodeSig  string // what derivation reads of the nodes
}

// computed are the frontends computed per service, and which services
// claim each frontend key (a duplicate goes to the first by name).
type computed struct {
	local    lb.NodeInfo
	localSet bool
	cands    map[string]map[fkey]*lb.Frontend // service -> key -> frontend
	claims   map[fkey][]string                // key -> services, sorted
}

var kinds = []string{"Service", "EndpointSlice", "Pod"}

// Kinds are the resource kinds lbsync reads.
var Kinds = append([]string(nil), kinds...)

// nodesListed is the synced flag of the node manager's first listing.
const nodesListed = "nodes"

// New returns a syncer reading tables (fed from store; store nil: no
// store). Nothing is written before Run has read the tables' listings.
func New(store kvstore.Store, tables Tables, dp Maps, nodes Nodes, opts Options, log *slog.Logger) (*Syncer, error) {
	if store != nil && (tables.Services == nil || tables.EndpointSlices == nil || (tables.Pods == nil && !opts.ControllerSlices)) {
		return nil, fmt.Errorf("lbsync: tables of Services, EndpointSlices and Pods are needed with a store: %+v", tables)
	}
	s := &Syncer{
		store: store, tables: tables, dp: dp, nodes: nodes, opts: opts, log: log, kick: make(chan struct{}, 1),
		in: inputs{
			synced: map[string]bool{}, services: map[string]*lb.Service{}, byNS: map[string]map[string]*lb.Service{},
			slices: map[string]*lb.EndpointSlice{}, slicesOf: map[string]map[string]*lb.EndpointSlice{},
			pods: map[string]*lb.Pod{}, dirty: map[string]bool{}, full: true, nodesMoved: true,
			epByKey: map[string]model.Endpoint{}, epByNS: map[string][]model.Endpoint{},
		},
		cmp: computed{cands: map[string]map[fkey]*lb.Frontend{}, claims: map[fkey][]string{}},
	}
	// Pods, nodes and endpoints are only needed to derive slices.
	if opts.ControllerSlices {
		s.in.synced["Pod"] = true
	}
	if opts.ControllerSlices || store == nil {
		s.in.synced[nodesListed] = true
	}
	if err := s.st.init(opts.StateDir); err != nil {
		return nil, err
	}
	return s, nil
}

// Run follows the tables until ctx ends.
func (s *Syncer) Run(ctx context.Context) {
	// Writes wait until every input is in (isSynced): the loop's first
	// passes before that do nothing, the listings kick it again.
	loop := reconcile.New(reconcile.Config{
		Name: "load-balancer", Triggers: []<-chan struct{}{s.kick},
		Reconcile: func(context.Context) error {
			if !s.isSynced() {
				return nil
			}
			return s.reconcile()
		},
		MaxBackoff: 2 * time.Second, Log: s.log,
	})
	go loop.Run(ctx)
	if s.store == nil {
		return
	}
	if !s.opts.ControllerSlices {
		go s.awaitNodeListing(ctx)
	}
	svcs, slices := s.tables.Services.Subscribe(), s.tables.EndpointSlices.Subscribe()
	var pods <-chan struct{} // nil: not followed
	var podSub *state.Subscription
	if !s.opts.ControllerSlices {
		podSub = s.tables.Pods.Subscribe()
		pods = podSub.Changed()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.nodes.Changed():
			s.nodesChanged()
		case <-svcs.Changed():
			s.applyTable("Service", svcs)
		case <-slices.Changed():
			s.applyTable("EndpointSlice", slices)
		case <-pods:
			s.applyTable("Pod", podSub)
		}
		s.trigger()
	}
}

// applyTable records the changes of one table and marks what they touch
// dirty; a listing replaces everything of the kind.
func (s *Syncer) applyTable(kind string, sub *state.Subscription) {
	keys, listed := sub.Drain()
	t := s.tables.of(kind)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noteChange()
	if listed {
		s.clearKind(kind)
		for key, obj := range t.All() {
			s.putObject(kind, key, obj)
		}
		s.in.synced[kind] = true
		s.in.full = true
		return
	}
	for _, key := range keys {
		if obj, ok := t.Get(key); ok {
			s.putObject(kind, key, obj)
		} else {
			s.remove(kind, key)
		}
	}
}

// nodesChanged notes that the node manager's nodes or endpoints changed.
func (s *Syncer) nodesChanged() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.ControllerSlices {
		return // only slice derivation reads them
	}
	s.in.nodesMoved = true
	s.noteChange()
}

func (s *Syncer) noteChange() {
	if s.in.since.IsZero() {
		s.in.since = time.Now()
	}
}

// objectName is "namespace/name" of a resource key of kind.
func objectName(kind, key string) string {
	return strings.TrimPrefix(key, resource.KindPrefix(kind))
}

// apply records a raw store update and marks what it touches dirty, like
// applyTable does for table changes: the unit tests and benchmarks drive
// the syncer with it, without a store.
func (s *Syncer) apply(kind string, u kvstore.Update) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := &s.in
	s.noteChange()
	if u.Resync {
		s.clearKind(kind)
		for _, kv := range u.KVs {
			s.put(kind, kv)
		}
		in.synced[kind] = true
		in.full = true
	}
	for _, ev := range u.Events {
		if ev.Type == kvstore.EventDelete {
			s.remove(kind, ev.KV.Key)
			continue
		}
		s.put(kind, ev.KV)
	}
}

// clearKind forgets every object of kind. Called with mu held.
func (s *Syncer) clearKind(kind string) {
	in := &s.in
	switch kind {
	case "Service":
		clear(in.services)
		clear(in.byNS)
	case "EndpointSlice":
		clear(in.slices)
		clear(in.slicesOf)
	case "Pod":
		clear(in.pods)
	}
}

func (s *Syncer) decode(kind string, kv kvstore.KV) (*resource.Object, bool) {
	obj, err := resource.Unmarshal(kv.Value)
	if err != nil {
		s.log.Error("skipping malformed object in the store", "key", kv.Key, "err", err)
		return nil, false
	}
	return obj, true
}

func (s *Syncer) put(kind string, kv kvstore.KV) {
	obj, ok := s.decode(kind, kv)
	if !ok {
		s.remove(kind, kv.Key)
		return
	}
	s.putObject(kind, kv.Key, obj)
}

// putObject records one object of kind stored under key. Called with mu held.
func (s *Syncer) putObject(kind, key string, obj *resource.Object) {
	in := &s.in
	switch kind {
	case "Service":
		svc, err := lb.ServiceOf(obj)
		if err != nil {
			s.log.Error("skipping invalid service", "key", key, "err", err)
			s.remove(kind, key)
			return
		}
		in.services[svc.Key()] = svc
		if in.byNS[svc.Namespace] == nil {
			in.byNS[svc.Namespace] = map[string]*lb.Service{}
		}
		in.byNS[svc.Namespace][svc.Key()] = svc
		in.dirty[svc.Key()] = true
	case "EndpointSlice":
		sl, err := lb.EndpointSliceOf(obj)
		if err != nil {
			s.log.Error("skipping invalid endpoint slice", "key", key, "err", err)
			s.remove(kind, key)
			return
		}
		s.remove(kind, key) // it may have moved to another service
		in.slices[key] = sl
		if svc := sl.ServiceKey(); svc != "" {
			if in.slicesOf[svc] == nil {
				in.slicesOf[svc] = map[string]*lb.EndpointSlice{}
			}
			in.slicesOf[svc][key] = sl
			in.dirty[svc] = true
		}
	case "Pod":
		p, err := lb.PodOf(obj)
		if err != nil {
			s.remove(kind, key)
			return
		}
		name := p.Namespace + "/" + p.Name
		s.markPod(in.pods[name])
		in.pods[name] = p
		s.markPod(p)
	}
}

func (s *Syncer) remove(kind, key string) {
	in := &s.in
	switch kind {
	case "Service":
		name := objectName(kind, key)
		if svc := in.services[name]; svc != nil {
			delete(in.byNS[svc.Namespace], name)
			if len(in.byNS[svc.Namespace]) == 0 {
				delete(in.byNS, svc.Namespace)
			}
		}
		delete(in.services, name)
		in.dirty[name] = true
	case "EndpointSlice":
		sl := in.slices[key]
		if sl == nil {
			return
		}
		delete(in.slices, key)
		if svc := sl.ServiceKey(); svc != "" {
			delete(in.slicesOf[svc], key)
			if len(in.slicesOf[svc]) == 0 {
				delete(in.slicesOf, svc)
			}
			in.dirty[svc] = true
		}
	case "Pod":
		name := objectName(kind, key)
		s.markPod(in.pods[name])
		delete(in.pods, name)
	}
}

// markPod makes the services whose selector picks pod dirty.
func (s *Syncer) markPod(p *lb.Pod) {
	if p == nil || s.opts.ControllerSlices {
		return
	}
	for key, svc := range s.in.byNS[p.Namespace] {
		if lb.SelectorMatches(svc.Spec.Selector, p.Labels) {
			s.in.dirty[key] = true
		}
	}
}

func (s *Syncer) trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Syncer) isSynced() bool {
	if s.store == nil {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range append(kinds, nodesListed) {
		if !s.in.synced[k] {
			return false
		}
	}
	return true
}

// Services describes what is programmed, for `lumen service list`.
func (s *Syncer) Services() []api.Service {
	s.stMu.Lock()
	defer s.stMu.Unlock()
	out := []api.Service{}
	for _, p := range s.st.have {
		if p.seeded {
			continue // not reconciled yet: nothing known but the entry
		}
		row := api.Service{
			Service: p.fe.Service, Type: string(p.fe.Type),
			Frontend: netip.AddrPortFrom(p.entry.Addr, p.entry.Port).String(), Protocol: lb.Protocol(p.entry.Proto).String(),
			Scope: lb.Scope(p.entry.Scope).String(), ID: p.entry.RevNat, Maglev: p.maglev, AffinityTimeout: p.entry.AffinityTimeout,
		}
		switch p.fe.NoBackends() {
		case lb.NoBackendsReject:
			row.NoBackends, row.NewConnections = "no endpoints", "drop"
			if s.opts.RejectFlag != 0 {
				row.NewConnections = "reject"
			}
		case lb.NoBackendsDrop:
			row.NoBackends, row.NewConnections = "no local endpoints", "drop"
		}
		for i, b := range p.fe.Backends {
			row.Backends = append(row.Backends, api.ServiceBackend{
				ID: p.ids[i], Address: netip.AddrPortFrom(b.Addr, b.Port).String(), Node: b.NodeName, Zone: b.Zone, State: b.State.String(),
			})
		}
		out = append(out, row)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Frontend != out[j].Frontend {
			return out[i].Frontend < out[j].Frontend
		}
		return out[i].Scope < out[j].Scope
	})
	return out
}

// LastSync returns the stats of the last reconcile.
func (s *Syncer) LastSync() SyncStats {
	s.stMu.Lock()
	defer s.stMu.Unlock()
	return s.last
}

// Health reports the syncer's state: "N frontends, M backends" and the
// last reconcile.
func (s *Syncer) Health() api.SubsystemStatus {
	synced := s.isSynced()
	s.stMu.Lock()
	defer s.stMu.Unlock()
	msg := fmt.Sprintf("%d frontends, %d backends", len(s.st.have), len(s.st.backends))
	if l := s.last; l.Took > 0 {
		what := "change"
		if l.Full {
			what = "full sync"
		}
		msg += fmt.Sprintf("; last %s: %d services, %d map writes in %s, %s after the event", what, l.Services, l.Writes,
			l.Took.Round(time.Microsecond), l.Latency.Round(time.Microsecond))
	}
	st := api.SubsystemStatus{Name: "load-balancer", State: api.StateOK, Message: msg}
	switch {
	case !synced:
		st.State, st.Message = api.StateDegraded, "waiting for services from the kvstore"
	case s.lastErr != nil:
		st.State, st.Message = api.StateDegraded, s.lastErr.Error()
	}
	return st
}
