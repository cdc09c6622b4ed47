// Package lbsync keeps the datapath's load-balancing maps equal to the
// Services and EndpointSlices in the store (EndpointSlices of services with
// a selector are derived from the cluster's endpoints, as the Kubernetes
// EndpointSlice controller would). internal/loadbalancer decides what this
// node programs; this package only writes it, in an order that never sends
// a new connection to a backend that is gone.
package lbsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/kvstore"
	lb "github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/loadbalancer/maglev"
	"github.com/lumen-net/lumen/internal/node"
	"github.com/lumen-net/lumen/internal/resource"
)

// Options configure the syncer.
type Options struct {
	Maglev     bool
	MaglevSize uint64
	MaglevSeed string
	StateDir   string
	Local      func() lb.NodeInfo
	// ControllerSlices says a real EndpointSlice controller (Kubernetes)
	// writes the slices of services with a selector: the syncer then uses
	// them as they are and derives none.
	ControllerSlices bool
}

// Nodes is what the syncer needs of the node manager.
type Nodes interface {
	Nodes() []node.Node
	Endpoints() []node.Endpoint
	Changed() <-chan struct{}
}

// programmed is one frontend as written to the maps.
type programmed struct {
	entry   datapath.ServiceEntry
	service string
	typ     lb.FrontendType
	all     []lb.Backend // active and terminating, for `lumen service list`
	maglev  bool
}

// Syncer converges the load-balancing maps.
type Syncer struct {
	store kvstore.Store
	dp    *datapath.Datapath
	nodes Nodes
	opts  Options
	log   *slog.Logger

	mu       sync.Mutex
	objs     map[string]map[string]*resource.Object // kind -> key -> object
	synced   map[string]bool
	ids      *lb.IDAllocator
	revNats  map[string]uint32 // frontend address key -> service id
	nextRev  uint32
	have     map[string]*programmed // by frontend key incl. scope
	backends map[uint32]lb.Backend
	lastErr  error
	kick     chan struct{}
}

var kinds = []string{"Service", "EndpointSlice", "Pod"}

// New returns a syncer.
func New(store kvstore.Store, dp *datapath.Datapath, nodes Nodes, opts Options, log *slog.Logger) (*Syncer, error) {
	s := &Syncer{
		store: store, dp: dp, nodes: nodes, opts: opts, log: log,
		objs: map[string]map[string]*resource.Object{}, synced: map[string]bool{},
		ids: lb.NewIDAllocator(0), revNats: map[string]uint32{}, nextRev: 1,
		have: map[string]*programmed{}, backends: map[uint32]lb.Backend{}, kick: make(chan struct{}, 1),
	}
	for _, k := range kinds {
		s.objs[k] = map[string]*resource.Object{}
	}
	if opts.ControllerSlices {
		s.synced["Pod"] = true // pods are only needed to derive slices
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

type persisted struct {
	Backends lb.IDState        `json:"backends"`
	RevNats  map[string]uint32 `json:"revNats"`
}

func (s *Syncer) stateFile() string { return filepath.Join(s.opts.StateDir, "loadbalancer.json") }

// load restores backend and service ids, so that a restarted agent keeps
// the ids established connections refer to (conntrack holds them).
func (s *Syncer) load() error {
	b, err := os.ReadFile(s.stateFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st persisted
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("parsing %s: %w", s.stateFile(), err)
	}
	if err := s.ids.Restore(st.Backends); err != nil {
		return err
	}
	for k, v := range st.RevNats {
		s.revNats[k] = v
		s.nextRev = max(s.nextRev, v+1)
	}
	return nil
}

func (s *Syncer) save() error {
	b, err := json.Marshal(persisted{Backends: s.ids.Snapshot(), RevNats: s.revNats})
	if err != nil {
		return err
	}
	tmp := s.stateFile() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.stateFile())
}

// Run follows the store until ctx ends.
func (s *Syncer) Run(ctx context.Context) {
	go s.loop(ctx)
	if s.store == nil {
		s.trigger()
		return
	}
	type upd struct {
		kind string
		u    kvstore.Update
	}
	ch := make(chan upd)
	for _, kind := range kinds {
		if kind == "Pod" && s.opts.ControllerSlices {
			continue
		}
		go func() {
			for u := range s.store.ListAndWatch(ctx, resource.KindPrefix(kind)) {
				select {
				case ch <- upd{kind, u}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.nodes.Changed():
		case x := <-ch:
			s.apply(x.kind, x.u)
		}
		s.trigger()
	}
}

func (s *Syncer) apply(kind string, u kvstore.Update) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.objs[kind]
	if u.Resync {
		clear(m)
		for _, kv := range u.KVs {
			s.put(m, kv)
		}
		s.synced[kind] = true
	}
	for _, ev := range u.Events {
		if ev.Type == kvstore.EventDelete {
			delete(m, ev.KV.Key)
			continue
		}
		s.put(m, ev.KV)
	}
}

func (s *Syncer) put(m map[string]*resource.Object, kv kvstore.KV) {
	obj, err := resource.Unmarshal(kv.Value)
	if err != nil {
		s.log.Error("skipping malformed object in the store", "key", kv.Key, "err", err)
		return
	}
	m[kv.Key] = obj
}

func (s *Syncer) trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Syncer) loop(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-retry.C:
		}
		if !s.isSynced() {
			retry.Reset(200 * time.Millisecond)
			continue
		}
		err := s.reconcile()
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
		if err != nil {
			s.log.Warn("load-balancer sync", "err", err)
			retry.Reset(2 * time.Second)
		}
	}
}

func (s *Syncer) isSynced() bool {
	if s.store == nil {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range kinds {
		if !s.synced[k] {
			return false
		}
	}
	return true
}

// desired computes this node's frontends from the store's objects.
func (s *Syncer) desired() []lb.Frontend {
	s.mu.Lock()
	var svcs []*lb.Service
	var slices []*lb.EndpointSlice
	pods := map[string]*lb.Pod{}
	for key, obj := range s.objs["Service"] {
		svc, err := lb.ServiceOf(obj)
		if err != nil {
			s.log.Error("skipping invalid service", "key", key, "err", err)
			continue
		}
		svcs = append(svcs, svc)
	}
	for key, obj := range s.objs["EndpointSlice"] {
		sl, err := lb.EndpointSliceOf(obj)
		if err != nil {
			s.log.Error("skipping invalid endpoint slice", "key", key, "err", err)
			continue
		}
		slices = append(slices, sl)
	}
	for _, obj := range s.objs["Pod"] {
		if p, err := lb.PodOf(obj); err == nil {
			pods[p.Namespace+"/"+p.Name] = p
		}
	}
	s.mu.Unlock()
	eps, nodes := s.nodes.Endpoints(), s.nodes.Nodes()
	if !s.opts.ControllerSlices {
		for _, svc := range svcs {
			slices = append(slices, lb.SlicesFor(svc, eps, pods, nodes)...)
		}
	}
	return lb.Desired(svcs, slices, s.opts.Local())
}

func feKey(addr netip.Addr, port uint16, proto uint8) string {
	return fmt.Sprintf("%s/%d", netip.AddrPortFrom(addr, port), proto)
}

// reconcile writes the desired frontends: backends first, then each
// frontend (slots before the count that exposes them), then what is gone.
func (s *Syncer) reconcile() error {
	want := map[string]*programmed{}
	wantBackends := map[uint32]lb.Backend{}
	var errs []error
	for _, fe := range s.desired() {
		p := s.program(fe, wantBackends)
		want[fmt.Sprintf("%s/%d", feKey(p.entry.Addr, p.entry.Port, p.entry.Proto), p.entry.Scope)] = p
	}
	for id, b := range wantBackends {
		if err := s.dp.UpsertBackend(id, datapath.Backend{Addr: b.Addr, Port: b.Port, Proto: uint8(b.Proto), Terminating: b.State != lb.StateActive}); err != nil {
			errs = append(errs, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, p := range want {
		old := uint32(0)
		if h, ok := s.have[key]; ok {
			old = uint32(len(h.entry.Backends))
		}
		if err := s.dp.UpsertRevNat(p.entry.RevNat, p.entry.Addr, p.entry.Port); err != nil {
			errs = append(errs, err)
		}
		if p.maglev {
			if err := s.installMaglev(p); err != nil {
				errs = append(errs, err)
			}
		}
		if err := s.dp.UpsertService(p.entry, old); err != nil {
			errs = append(errs, err)
			continue
		}
		s.have[key] = p
	}
	for key, h := range s.have {
		if _, ok := want[key]; ok {
			continue
		}
		if err := s.dp.DeleteService(h.entry.Frontend, uint32(len(h.entry.Backends))); err != nil {
			errs = append(errs, err)
			continue
		}
		_ = s.dp.DeleteMaglev(h.entry.RevNat)
		delete(s.have, key)
	}
	// Backends nobody lists any more: deleted last, after no slot points at
	// them. Their ids are released for reuse (after every other id).
	for id, b := range s.backends {
		if _, ok := wantBackends[id]; !ok {
			if err := s.dp.DeleteBackend(id); err != nil {
				errs = append(errs, err)
				continue
			}
			s.ids.Release(b.Key())
		}
	}
	s.backends = wantBackends
	if err := s.save(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// program turns one frontend into its map entry. Backends on other nodes
// are reached from outside through SNAT (the datapath does it), so the
// backends are Desired's as they are.
func (s *Syncer) program(fe lb.Frontend, wantBackends map[uint32]lb.Backend) *programmed {
	p := &programmed{service: fe.Service, typ: fe.Type, all: fe.Backends}
	scope := uint8(datapath.ScopeExternal)
	if fe.Scope == lb.ScopeInternal {
		scope = datapath.ScopeInternal
	}
	p.entry.Frontend = datapath.Frontend{Addr: fe.Addr, Port: fe.Port, Proto: uint8(fe.Proto), Scope: scope}
	p.entry.RevNat = s.revNat(feKey(fe.Addr, fe.Port, uint8(fe.Proto)))
	p.entry.AffinityTimeout = fe.AffinityTimeout
	if fe.AffinityTimeout > 0 {
		p.entry.Flags |= datapath.ServiceAffinity
	}
	if fe.Type != lb.FrontendClusterIP {
		p.entry.Flags |= datapath.ServiceNodePort
	}
	for _, b := range fe.Backends {
		id, err := s.ids.Acquire(b.Key())
		if err != nil {
			s.log.Error("backend id", "backend", b.Key(), "err", err)
			continue
		}
		wantBackends[uint32(id)] = b
		if b.State == lb.StateActive {
			p.entry.Backends = append(p.entry.Backends, uint32(id))
		}
	}
	p.maglev = s.opts.Maglev && len(p.entry.Backends) > 0
	if p.maglev {
		p.entry.Flags |= datapath.ServiceMaglev
	}
	return p
}

func (s *Syncer) revNat(key string) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.revNats[key]; ok {
		return id
	}
	id := s.nextRev
	s.nextRev++
	s.revNats[key] = id
	return id
}

func (s *Syncer) installMaglev(p *programmed) error {
	keys := make([]string, len(p.entry.Backends))
	for i, id := range p.entry.Backends {
		b := s.backendOf(id, p)
		keys[i] = b.Key().String()
	}
	idx, err := maglev.Table(keys, s.opts.MaglevSize, s.opts.MaglevSeed)
	if err != nil {
		return fmt.Errorf("maglev table of %s: %w", p.entry.Frontend, err)
	}
	table := make([]uint32, len(idx))
	for i, j := range idx {
		if j >= 0 {
			table[i] = p.entry.Backends[j]
		}
	}
	return s.dp.SetMaglev(p.entry.RevNat, table)
}

func (s *Syncer) backendOf(id uint32, p *programmed) lb.Backend {
	for _, b := range p.all {
		if bid, ok := s.ids.Lookup(b.Key()); ok && uint32(bid) == id {
			return b
		}
	}
	return lb.Backend{}
}

// Services describes what is programmed, for `lumen service list`.
func (s *Syncer) Services() []api.Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []api.Service{}
	for _, p := range s.have {
		row := api.Service{
			Service: p.service, Type: string(p.typ),
			Frontend: netip.AddrPortFrom(p.entry.Addr, p.entry.Port).String(), Protocol: lb.Protocol(p.entry.Proto).String(),
			Scope: lb.Scope(p.entry.Scope).String(), ID: p.entry.RevNat, Maglev: p.maglev, AffinityTimeout: p.entry.AffinityTimeout,
		}
		for _, b := range p.all {
			id, _ := s.ids.Lookup(b.Key())
			row.Backends = append(row.Backends, api.ServiceBackend{
				ID: uint32(id), Address: netip.AddrPortFrom(b.Addr, b.Port).String(), Node: b.NodeName, Zone: b.Zone, State: b.State.String(),
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

// Health reports the syncer's state.
func (s *Syncer) Health() api.SubsystemStatus {
	synced := s.isSynced()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := api.SubsystemStatus{Name: "load-balancer", State: api.StateOK, Message: fmt.Sprintf("%d frontends, %d backends", len(s.have), len(s.backends))}
	switch {
	case !synced:
		st.State, st.Message = api.StateDegraded, "waiting for services from the kvstore"
	case s.lastErr != nil:
		st.State, st.Message = api.StateDegraded, s.lastErr.Error()
	}
	return st
}
