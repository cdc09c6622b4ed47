package lbsync

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lumen-net/lumen/internal/datapath"
	lb "github.com/lumen-net/lumen/internal/loadbalancer"
	"github.com/lumen-net/lumen/internal/loadbalancer/maglev"
	"github.com/lumen-net/lumen/internal/model"
)

// change is one frontend entry to bring from old to new (nil: absent).
type change struct {
	key      fkey
	old, new *programmed
}

// reconcile recomputes the dirty services (all of them when needed) and
// writes what changed: backends first, then each frontend (slots before
// the count that exposes them), then the frontends that are gone, then the
// backends no frontend lists any more.
func (s *Syncer) reconcile() error {
	start := time.Now()
	todo, full, since := s.collect()
	changes, err := s.compute(todo, full)
	stats := SyncStats{Full: full, Services: len(todo)}
	if err == nil {
		err = s.write(changes, full, &stats)
	}
	stats.Took = time.Since(start)
	if !since.IsZero() {
		stats.Latency = time.Since(since)
	}
	s.stMu.Lock()
	s.lastErr, s.last = err, stats
	s.stMu.Unlock()
	if err != nil {
		// What failed is retried with everything: the bookkeeping of a
		// half-done change is not worth being clever about.
		s.mu.Lock()
		s.in.full = true
		s.mu.Unlock()
	}
	if s.afterSync != nil {
		s.afterSync(stats)
	}
	return err
}

// collect takes what changed since the last reconcile: the services to
// recompute, whether that is all of them, and when the first change came.
func (s *Syncer) collect() (todo []string, full bool, since time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := &s.in
	if l := s.opts.Local(); !s.cmp.localSet || !sameNodeInfo(l, s.cmp.local) {
		s.cmp.local, s.cmp.localSet = l, true
		in.full = true
	}
	if in.nodesMoved && !s.opts.ControllerSlices {
		if s.refreshNodes() {
			in.full = true
		}
	}
	in.nodesMoved = false
	full, since = in.full, in.since
	if full {
		for k := range in.services {
			todo = append(todo, k)
		}
		for k := range s.cmp.cands {
			if in.services[k] == nil {
				todo = append(todo, k)
			}
		}
	} else {
		for k := range in.dirty {
			todo = append(todo, k)
		}
	}
	slices.Sort(todo)
	clear(in.dirty)
	in.full, in.since = false, time.Time{}
	return todo, full, since
}

func sameNodeInfo(a, b lb.NodeInfo) bool {
	return a.Name == b.Name && a.Zone == b.Zone && slices.Equal(a.IPs, b.IPs)
}

// refreshNodes reads the node manager's nodes and endpoints, marks the
// services whose pods' endpoints changed dirty, and reports whether the
// nodes changed in a way any service may see (zones and roles feed
// topology hints).
func (s *Syncer) refreshNodes() bool {
	in := &s.in
	nodes, eps := s.nodes.Nodes(), s.nodes.Endpoints()
	sig := nodeSignature(nodes)
	moved := sig != in.nodeSig
	in.nodeSig, in.nodeList = sig, nodes
	byKey := make(map[string]model.Endpoint, len(eps))
	for _, e := range eps {
		byKey[e.Node+"/"+e.ContainerID] = e
	}
	touched := map[string]bool{} // "namespace/pod"
	for k, e := range byKey {
		if o, ok := in.epByKey[k]; !ok || !sameEndpoint(o, e) {
			touched[e.Namespace+"/"+e.PodName] = true
			if ok {
				touched[o.Namespace+"/"+o.PodName] = true
			}
		}
	}
	for k, o := range in.epByKey {
		if _, ok := byKey[k]; !ok {
			touched[o.Namespace+"/"+o.PodName] = true
		}
	}
	if len(touched) > 0 || len(byKey) != len(in.epByKey) {
		in.epByKey = byKey
		clear(in.epByNS)
		for _, e := range eps {
			in.epByNS[e.Namespace] = append(in.epByNS[e.Namespace], e)
		}
	}
	for p := range touched {
		s.markPod(in.pods[p]) // a pod not stored is in no service
	}
	return moved
}

// nodeSignature is what slice derivation reads of the nodes: names, zones
// and control-plane roles.
func nodeSignature(nodes []model.Node) string {
	parts := make([]string, 0, len(nodes))
	for _, n := range nodes {
		_, cp := n.Labels["node-role.kubernetes.io/control-plane"]
		_, master := n.Labels["node-role.kubernetes.io/master"]
		parts = append(parts, fmt.Sprintf("%s\x00%s\x00%t", n.Name, n.Zone, cp || master))
	}
	slices.Sort(parts)
	return strings.Join(parts, "\x01")
}

func sameEndpoint(a, b model.Endpoint) bool {
	return a.Node == b.Node && a.ContainerID == b.ContainerID && a.PodName == b.PodName &&
		a.Namespace == b.Namespace && a.IPv4 == b.IPv4 && a.IPv6 == b.IPv6
}

// frontendsOf computes one service's frontends (mu held).
func (s *Syncer) frontendsOf(key string) []lb.Frontend {
	in := &s.in
	svc := in.services[key]
	if svc == nil {
		return nil
	}
	// Stored slices in key order: collectEndpoints keeps the first of equal
	// duplicates, so the order must not depend on map iteration.
	var sl []*lb.EndpointSlice
	keys := make([]string, 0, len(in.slicesOf[key]))
	for k := range in.slicesOf[key] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		sl = append(sl, in.slicesOf[key][k])
	}
	if !s.opts.ControllerSlices {
		sl = append(sl, lb.SlicesFor(svc, in.epByNS[svc.Namespace], in.pods, in.nodeList)...)
	}
	return lb.ServiceFrontends(svc, sl, s.cmp.local)
}

// compute recomputes the services in todo, updates which service claims
// which frontend, and returns the entries to change. Ids of new backends
// and frontends are allocated here (and journaled before any map write).
func (s *Syncer) compute(todo []string, full bool) ([]change, error) {
	s.mu.Lock()
	fresh := make(map[string][]lb.Frontend, len(todo))
	for _, k := range todo {
		fresh[k] = s.frontendsOf(k)
	}
	s.mu.Unlock()

	affected := map[fkey]bool{}
	for _, svc := range todo {
		old := s.cmp.cands[svc]
		var now map[fkey]*lb.Frontend
		if fes := fresh[svc]; len(fes) > 0 {
			now = make(map[fkey]*lb.Frontend, len(fes))
			for i := range fes {
				now[frontendKey(&fes[i])] = &fes[i] // a duplicate within a service: the last wins
			}
		}
		for k := range old {
			if _, ok := now[k]; !ok {
				s.unclaim(k, svc)
			}
			affected[k] = true
		}
		for k := range now {
			if _, ok := old[k]; !ok {
				s.claim(k, svc)
			}
			affected[k] = true
		}
		if now == nil {
			delete(s.cmp.cands, svc)
		} else {
			s.cmp.cands[svc] = now
		}
	}

	s.stMu.Lock()
	defer s.stMu.Unlock()
	if err := s.seed(); err != nil {
		return nil, err
	}
	if full {
		for k := range s.st.have {
			affected[k] = true
		}
	}
	keys := make([]fkey, 0, len(affected))
	for k := range affected {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b fkey) int {
		return cmp.Or(a.addr.Compare(b.addr), cmp.Compare(a.port, b.port), cmp.Compare(a.proto, b.proto), cmp.Compare(a.scope, b.scope))
	})
	var changes []change
	for _, k := range keys {
		old := s.st.have[k]
		var now *programmed
		if owners := s.cmp.claims[k]; len(owners) > 0 {
			now = s.program(k, s.cmp.cands[owners[0]][k])
		}
		if old == nil && now == nil {
			continue
		}
		changes = append(changes, change{key: k, old: old, new: now})
	}
	return changes, nil
}

func (s *Syncer) claim(k fkey, svc string) {
	owners := s.cmp.claims[k]
	i, found := slices.BinarySearch(owners, svc)
	if !found {
		s.cmp.claims[k] = slices.Insert(owners, i, svc)
	}
}

func (s *Syncer) unclaim(k fkey, svc string) {
	owners := s.cmp.claims[k]
	if i, found := slices.BinarySearch(owners, svc); found {
		owners = slices.Delete(owners, i, i+1)
	}
	if len(owners) == 0 {
		delete(s.cmp.claims, k)
	} else {
		s.cmp.claims[k] = owners
	}
}

// seed reads the maps back once, before the first write: a restarted
// agent then rewrites only what differs and removes what nothing claims
// (stMu held).
func (s *Syncer) seed() error {
	if s.st.seeded {
		return nil
	}
	svcs, err := s.dp.Services()
	if err != nil {
		return fmt.Errorf("reading the service map back: %w", err)
	}
	bes, err := s.dp.Backends()
	if err != nil {
		return fmt.Errorf("reading the backend map back: %w", err)
	}
	for id, b := range bes {
		s.st.backends[id] = &backendState{key: lb.BackendKey{Addr: b.Addr, Port: b.Port, Proto: lb.Protocol(b.Proto)}, inMap: true, written: b}
	}
	for _, e := range svcs {
		p := &programmed{entry: e, seeded: true, tableUnknown: true, maglev: e.Flags&datapath.ServiceMaglev != 0}
		s.st.have[keyOf(e.Frontend)] = p
		for _, id := range e.Backends {
			if b := s.st.backends[id]; b != nil {
				b.refs++
			}
		}
	}
	s.st.seeded = true
	return nil
}

// program turns a frontend into its map entry (stMu held). Backends on
// other nodes are reached from outside through SNAT (the datapath does
// it), so the backends are Desired's as they are.
func (s *Syncer) program(k fkey, fe *lb.Frontend) *programmed {
	p := &programmed{fe: *fe, ids: make([]uint32, len(fe.Backends))}
	p.entry.Frontend = datapath.Frontend{Addr: k.addr, Port: k.port, Proto: k.proto, Scope: k.scope}
	p.entry.RevNat = s.st.revNat(k)
	p.entry.AffinityTimeout = fe.AffinityTimeout
	if fe.AffinityTimeout > 0 {
		p.entry.Flags |= datapath.ServiceAffinity
	}
	if fe.Type != lb.FrontendClusterIP {
		p.entry.Flags |= datapath.ServiceNodePort
	}
	for i, b := range fe.Backends {
		id, err := s.st.backendID(b.Key())
		if err != nil {
			s.log.Error("backend id", "backend", b.Key(), "err", err)
			continue
		}
		p.ids[i] = id
		if b.State == lb.StateActive {
			p.entry.Backends = append(p.entry.Backends, id)
		}
	}
	p.maglev = s.opts.Maglev && len(p.entry.Backends) > 0
	if p.maglev {
		p.entry.Flags |= datapath.ServiceMaglev
	}
	if len(p.entry.Backends) == 0 && fe.NoBackends() == lb.NoBackendsReject {
		p.entry.Flags |= s.opts.RejectFlag
	}
	return p
}

func sameEntry(a, b *datapath.ServiceEntry) bool {
	return a.Frontend == b.Frontend && a.RevNat == b.RevNat && a.Flags == b.Flags &&
		a.AffinityTimeout == b.AffinityTimeout && slices.Equal(a.Backends, b.Backends)
}

// refDelta is how a change moves the reference counts of backends.
func refDelta(c change, apply func(id uint32, refs, inactive int, key lb.BackendKey)) {
	if c.old != nil {
		if c.old.seeded {
			for _, id := range c.old.entry.Backends {
				apply(id, -1, 0, lb.BackendKey{})
			}
		} else {
			for i, id := range c.old.ids {
				if id != 0 {
					apply(id, -1, -boolInt(c.old.fe.Backends[i].State != lb.StateActive), c.old.fe.Backends[i].Key())
				}
			}
		}
	}
	if c.new != nil {
		for i, id := range c.new.ids {
			if id != 0 {
				apply(id, 1, boolInt(c.new.fe.Backends[i].State != lb.StateActive), c.new.fe.Backends[i].Key())
			}
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// write applies the changes to the maps in the safe order and persists
// new ids before the maps refer to them.
func (s *Syncer) write(changes []change, full bool, stats *SyncStats) error {
	s.stMu.Lock()
	defer s.stMu.Unlock()
	st := &s.st
	if err := st.flush(false); err != nil {
		return err
	}
	// 1. Backends the changes add or turn (not) terminating, before any slot
	// refers to them: the counts as they will be once every change is in.
	after := map[uint32]*backendState{}
	for _, c := range changes {
		refDelta(c, func(id uint32, refs, inactive int, key lb.BackendKey) {
			b := after[id]
			if b == nil {
				b = &backendState{}
				if cur := st.backends[id]; cur != nil {
					*b = *cur
				}
				after[id] = b
			}
			b.refs += refs
			b.inactive += inactive
			if key.Addr.IsValid() {
				b.key = key
			}
		})
	}
	ids := make([]uint32, 0, len(after))
	for id := range after {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		b := after[id]
		if b.refs <= 0 || (b.inMap && b.written == b.value()) {
			continue
		}
		v := b.value()
		if err := s.dp.UpsertBackend(id, v); err != nil {
			return err
		}
		stats.Writes++
		cur := st.backends[id]
		if cur == nil {
			cur = &backendState{key: b.key}
			st.backends[id] = cur
		}
		cur.key, cur.inMap, cur.written = b.key, true, v
	}

	// 2. Frontends, new and changed, then 3. those that are gone.
	var errs []error
	commit := func(c change) {
		refDelta(c, func(id uint32, refs, inactive int, key lb.BackendKey) {
			b := st.backends[id]
			if b == nil {
				b = &backendState{key: key}
				st.backends[id] = b
			}
			b.refs += refs
			b.inactive += inactive
		})
		if c.new == nil {
			delete(st.have, c.key)
		} else {
			st.have[c.key] = c.new
		}
	}
	for _, c := range changes {
		if c.new == nil {
			continue
		}
		n, w, err := s.writeFrontend(c.old, c.new)
		stats.Writes += w
		stats.Frontends += n
		if err != nil {
			errs = append(errs, err)
			continue
		}
		commit(c)
	}
	for _, c := range changes {
		if c.new != nil {
			continue
		}
		if err := s.dp.DeleteService(c.old.entry.Frontend, c.old.count()); err != nil {
			errs = append(errs, err)
			continue
		}
		stats.Writes += int(c.old.count()) + 1
		stats.Frontends++
		if c.old.maglev || c.old.tableUnknown {
			_ = s.dp.DeleteMaglev(c.old.entry.RevNat)
			stats.Writes++
		}
		commit(c)
	}

	// 4. Backends nobody lists any more: deleted last, after no slot
	// points at them; their ids are released for reuse (after every other
	// id). A full pass also looks at every backend, and releases ids the
	// allocator holds for no backend.
	var gone []uint32
	if full {
		for id := range st.backends {
			gone = append(gone, id)
		}
	} else {
		gone = ids
	}
	for _, id := range gone {
		b := st.backends[id]
		if b == nil || b.refs > 0 {
			continue
		}
		if b.inMap {
			if err := s.dp.DeleteBackend(id); err != nil {
				errs = append(errs, err)
				continue
			}
			stats.Writes++
		}
		delete(st.backends, id)
		if bid, ok := st.ids.Lookup(b.key); ok && uint32(bid) == id {
			st.release(b.key)
		}
	}
	if full && len(errs) == 0 {
		for k, id := range st.ids.Snapshot().IDs {
			if st.backends[uint32(id)] == nil {
				if key, err := lb.ParseBackendKey(k); err == nil {
					st.release(key)
				}
			}
		}
	}
	if err := st.flush(full); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// writeFrontend writes one new or changed frontend: its reverse NAT entry,
// its Maglev table, then the entry (slots before the count). It returns
// whether the entry was written and the number of map writes. When the
// entry cannot be written, a table installed for it is removed again (the
// datapath then picks among the slots it has), so that no table names a
// backend the slots do not.
func (s *Syncer) writeFrontend(old, p *programmed) (int, int, error) {
	writes := 0
	if old == nil || old.seeded || old.entry.RevNat != p.entry.RevNat {
		if err := s.dp.UpsertRevNat(p.entry.RevNat, p.entry.Addr, p.entry.Port); err != nil {
			return 0, writes, err
		}
		writes++
	}
	tableSet := false
	if p.maglev && (old == nil || old.tableUnknown || !old.maglev || old.entry.RevNat != p.entry.RevNat || !slices.Equal(old.entry.Backends, p.entry.Backends)) {
		if err := s.installMaglev(p); err != nil {
			if old != nil {
				old.tableUnknown = true
			}
			return 0, writes, err
		}
		tableSet = true
		writes++
	}
	written := 0
	if old == nil || !sameEntry(&old.entry, &p.entry) {
		if err := s.dp.UpsertService(p.entry, old.count()); err != nil {
			if tableSet {
				_ = s.dp.DeleteMaglev(p.entry.RevNat)
			}
			if old != nil {
				old.tableUnknown = true
			}
			return 0, writes, err
		}
		written = 1
		writes += len(p.entry.Backends) + 1 + max(0, int(old.count())-len(p.entry.Backends))
	}
	if old != nil && (old.maglev || old.tableUnknown) && (!p.maglev || old.entry.RevNat != p.entry.RevNat) {
		_ = s.dp.DeleteMaglev(old.entry.RevNat)
		writes++
	}
	return written, writes, nil
}

func (s *Syncer) installMaglev(p *programmed) error {
	keys := make([]string, 0, len(p.entry.Backends))
	for i, id := range p.ids {
		if id != 0 && p.fe.Backends[i].State == lb.StateActive {
			keys = append(keys, p.fe.Backends[i].Key().String())
		}
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
