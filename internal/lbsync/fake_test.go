package lbsync

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/lumen-net/lumen/internal/datapath"
	"github.com/lumen-net/lumen/internal/model"
)

// fakeMaps is the load-balancing maps in Go. Every write checks the order
// the datapath relies on: a slot (or Maglev entry) only ever names a
// backend in the backend map, a master entry is written after its slots
// and its reverse NAT entry, the count the syncer believes is the map's,
// and a backend is deleted only when nothing names it.
type fakeMaps struct {
	t        testing.TB
	backends map[uint32]datapath.Backend
	masters  map[fkey]datapath.ServiceEntry // Backends unused
	slots    map[fkey]map[uint32]uint32     // slot -> backend id (stale ones too)
	revnat   map[uint32]netip.AddrPort
	maglev   map[uint32][]uint32
	writes   int
	fail     func(op string) error // injected failures
}

func newFakeMaps(t testing.TB) *fakeMaps {
	return &fakeMaps{
		t: t, backends: map[uint32]datapath.Backend{}, masters: map[fkey]datapath.ServiceEntry{},
		slots: map[fkey]map[uint32]uint32{}, revnat: map[uint32]netip.AddrPort{}, maglev: map[uint32][]uint32{},
	}
}

func (f *fakeMaps) injected(op string) error {
	if f.fail != nil {
		return f.fail(op)
	}
	return nil
}

func (f *fakeMaps) UpsertBackend(id uint32, b datapath.Backend) error {
	if err := f.injected("UpsertBackend"); err != nil {
		return err
	}
	if id == 0 {
		f.t.Errorf("backend id 0 written")
	}
	f.backends[id] = b
	f.writes++
	return nil
}

func (f *fakeMaps) DeleteBackend(id uint32) error {
	if err := f.injected("DeleteBackend"); err != nil {
		return err
	}
	for k := range f.masters {
		if i := slices.Index(f.liveSlots(k), id); i >= 0 {
			f.t.Errorf("backend %d deleted while slot %d of %v names it", id, i+1, k)
		}
	}
	for rev, table := range f.maglev {
		if slices.Contains(table, id) {
			f.t.Errorf("backend %d deleted while the Maglev table of service %d names it", id, rev)
		}
	}
	delete(f.backends, id)
	f.writes++
	return nil
}

// liveSlots are the backend ids of slots 1..count.
func (f *fakeMaps) liveSlots(k fkey) []uint32 {
	m, ok := f.masters[k]
	if !ok {
		return nil
	}
	out := make([]uint32, 0, len(m.Backends))
	for slot := uint32(1); slot <= uint32(len(m.Backends)); slot++ {
		out = append(out, f.slots[k][slot])
	}
	return out
}

func (f *fakeMaps) Backends() (map[uint32]datapath.Backend, error) {
	return maps.Clone(f.backends), nil
}

func (f *fakeMaps) UpsertService(s datapath.ServiceEntry, oldCount uint32) error {
	if err := f.injected("UpsertService"); err != nil {
		return err
	}
	k := keyOf(s.Frontend)
	if m, ok := f.masters[k]; ok && uint32(len(m.Backends)) != oldCount {
		f.t.Errorf("%v: written with old count %d, the map has %d", k, oldCount, len(m.Backends))
	} else if !ok && oldCount != 0 {
		f.t.Errorf("%v: written with old count %d, the map has no entry", k, oldCount)
	}
	if _, ok := f.revnat[s.RevNat]; !ok {
		f.t.Errorf("%v: written before its reverse NAT entry %d", k, s.RevNat)
	}
	if s.Flags&datapath.ServiceMaglev != 0 {
		if _, ok := f.maglev[s.RevNat]; !ok {
			f.t.Errorf("%v: Maglev flag before its table", k)
		}
	}
	if f.slots[k] == nil {
		f.slots[k] = map[uint32]uint32{}
	}
	for i, id := range s.Backends {
		if _, ok := f.backends[id]; !ok {
			f.t.Errorf("%v: slot %d names backend %d, not in the backend map", k, i+1, id)
		}
		f.slots[k][uint32(i+1)] = id
	}
	m := s
	m.Backends = slices.Clone(s.Backends)
	f.masters[k] = m
	for slot := uint32(len(s.Backends)) + 1; slot <= oldCount; slot++ {
		delete(f.slots[k], slot)
	}
	f.writes++
	return nil
}

func (f *fakeMaps) DeleteService(fe datapath.Frontend, count uint32) error {
	if err := f.injected("DeleteService"); err != nil {
		return err
	}
	k := keyOf(fe)
	m, ok := f.masters[k]
	if !ok {
		f.t.Errorf("%v: deleted but not in the map", k)
	} else if uint32(len(m.Backends)) != count {
		f.t.Errorf("%v: deleted with count %d, the map has %d", k, count, len(m.Backends))
	}
	delete(f.masters, k)
	delete(f.slots, k)
	f.writes++
	return nil
}

func (f *fakeMaps) Services() ([]datapath.ServiceEntry, error) {
	var out []datapath.ServiceEntry
	for k, m := range f.masters {
		e := m
		e.Backends = f.liveSlots(k)
		out = append(out, e)
	}
	return out, nil
}

func (f *fakeMaps) UpsertRevNat(id uint32, addr netip.Addr, port uint16) error {
	if err := f.injected("UpsertRevNat"); err != nil {
		return err
	}
	f.revnat[id] = netip.AddrPortFrom(addr, port)
	f.writes++
	return nil
}

func (f *fakeMaps) SetMaglev(rev uint32, table []uint32) error {
	if err := f.injected("SetMaglev"); err != nil {
		return err
	}
	for _, id := range table {
		if _, ok := f.backends[id]; id != 0 && !ok {
			f.t.Errorf("Maglev table of service %d names backend %d, not in the backend map", rev, id)
			break
		}
	}
	f.maglev[rev] = slices.Clone(table)
	f.writes++
	return nil
}

func (f *fakeMaps) DeleteMaglev(rev uint32) error {
	delete(f.maglev, rev)
	f.writes++
	return nil
}

// canonFrontend is a frontend with ids resolved, so that two syncers that
// allocated ids in different orders compare equal.
type canonFrontend struct {
	RevNat   netip.AddrPort
	Flags    uint32
	Affinity uint32
	Backends []string
	Maglev   string // the table as backend keys, run-length summarized
}

type canonMaps struct {
	Frontends map[string]canonFrontend
	Backends  map[string]bool // key -> terminating
}

func beKey(b datapath.Backend) string {
	return fmt.Sprintf("%s/%d", netip.AddrPortFrom(b.Addr, b.Port), b.Proto)
}

func (f *fakeMaps) canon(t testing.TB) canonMaps {
	t.Helper()
	c := canonMaps{Frontends: map[string]canonFrontend{}, Backends: map[string]bool{}}
	for _, b := range f.backends {
		c.Backends[beKey(b)] = b.Terminating
	}
	for k, m := range f.masters {
		cf := canonFrontend{RevNat: f.revnat[m.RevNat], Flags: m.Flags, Affinity: m.AffinityTimeout}
		for _, id := range f.liveSlots(k) {
			b, ok := f.backends[id]
			if !ok {
				t.Errorf("%v names backend %d, not in the map", k, id)
			}
			cf.Backends = append(cf.Backends, beKey(b))
		}
		if m.Flags&datapath.ServiceMaglev != 0 {
			table := f.maglev[m.RevNat]
			var sum []string
			for i, id := range table {
				if i%97 == 0 { // a sample is enough: the table is a function of the keys
					sum = append(sum, beKey(f.backends[id]))
				}
			}
			cf.Maglev = fmt.Sprint(len(table), sum)
		}
		c.Frontends[fmt.Sprintf("%s/%d/%d", netip.AddrPortFrom(k.addr, k.port), k.proto, k.scope)] = cf
	}
	return c
}

// fakeNodes is a node manager. Tests that run the syncer's goroutines
// change it with set.
type fakeNodes struct {
	mu    sync.Mutex
	nodes []model.Node
	eps   []model.Endpoint
	ch    chan struct{}
}

func (n *fakeNodes) Nodes() []model.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.nodes)
}

func (n *fakeNodes) Endpoints() []model.Endpoint {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.eps)
}

func (n *fakeNodes) Changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{}, 1)
	}
	return n.ch
}

func (n *fakeNodes) set(nodes []model.Node, eps []model.Endpoint) {
	n.Changed()
	n.mu.Lock()
	n.nodes, n.eps = nodes, eps
	ch := n.ch
	n.mu.Unlock()
	select {
	case ch <- struct{}{}:
	default:
	}
}
