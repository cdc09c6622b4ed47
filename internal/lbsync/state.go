package lbsync

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/lumen-net/lumen/internal/datapath"
	lb "github.com/lumen-net/lumen/internal/loadbalancer"
)

// fkey identifies a frontend entry: address, port, protocol and scope.
type fkey struct {
	addr  netip.Addr
	port  uint16
	proto uint8
	scope uint8
}

func keyOf(f datapath.Frontend) fkey { return fkey{f.Addr, f.Port, f.Proto, f.Scope} }

func frontendKey(fe *lb.Frontend) fkey {
	scope := uint8(datapath.ScopeExternal)
	if fe.Scope == lb.ScopeInternal {
		scope = datapath.ScopeInternal
	}
	return fkey{fe.Addr, fe.Port, uint8(fe.Proto), scope}
}

// revNatKey names a frontend's service id. The two scopes of an address
// have their own: the id also keys the Maglev table and client affinity,
// which must not mix the backends of externalTrafficPolicy Local with its
// internal twin's. (The internal scope keeps the key both scopes shared
// before, so ClusterIP ids survive the upgrade.)
func (k fkey) revNatKey() string {
	key := fmt.Sprintf("%s/%d", netip.AddrPortFrom(k.addr, k.port), k.proto)
	if k.scope == datapath.ScopeExternal {
		key += "/external"
	}
	return key
}

// programmed is one frontend as written to the maps.
type programmed struct {
	entry  datapath.ServiceEntry
	fe     lb.Frontend // as computed: service, type, every backend with its state
	ids    []uint32    // the backend id of each of fe.Backends (0: none)
	maglev bool
	// seeded entries were read back from the maps at start: what they
	// were computed from is unknown.
	seeded bool
	// tableUnknown: the Maglev table under the entry's id may not be the
	// one its backends make (seeded, or a write failed half-way): the
	// next change rewrites or deletes it.
	tableUnknown bool
}

func (p *programmed) count() uint32 {
	if p == nil {
		return 0
	}
	return uint32(len(p.entry.Backends))
}

// backendState is one backend id: how many programmed frontends list it
// (inactive: how many of those as not active), and what the map holds.
type backendState struct {
	refs, inactive int
	key            lb.BackendKey
	inMap          bool
	written        datapath.Backend
}

// value is what the backend map should hold: terminating when a frontend
// lists it as not active (no new affinity, no XDP shortcut to it).
func (b *backendState) value() datapath.Backend {
	return datapath.Backend{Addr: b.key.Addr, Port: b.key.Port, Proto: uint8(b.key.Proto), Terminating: b.inactive > 0}
}

// programmedState is what the maps hold, and the ids that must survive a
// restart: backend ids and service (reverse NAT) ids are persisted as a
// snapshot (loadbalancer.json) plus a journal of the allocations since
// (loadbalancer.journal, one JSON record a line), so that a change costs an
// append, not a rewrite of every id.
type programmedState struct {
	have     map[fkey]*programmed
	backends map[uint32]*backendState
	ids      *lb.IDAllocator
	revNats  map[string]uint32
	nextRev  uint32
	seeded   bool // the maps have been read back

	dir     string
	journal *os.File
	pending []journalRecord
	lines   int // records in the journal
}

type persisted struct {
	Backends lb.IDState        `json:"backends"`
	RevNats  map[string]uint32 `json:"revNats"`
}

// journalRecord is one allocation ("backend", "revnat") or release
// ("release": a backend id) since the snapshot.
type journalRecord struct {
	Op  string `json:"op"`
	Key string `json:"key"`
	ID  uint32 `json:"id,omitempty"`
}

const (
	snapshotName = "loadbalancer.json"
	journalName  = "loadbalancer.journal"
	// compactAfter: the journal is folded into a new snapshot once it has
	// more records than this and than the snapshot has ids.
	compactAfter = 4096
)

func (st *programmedState) init(dir string) error {
	st.have = map[fkey]*programmed{}
	st.backends = map[uint32]*backendState{}
	st.ids = lb.NewIDAllocator(0)
	st.revNats = map[string]uint32{}
	st.nextRev = 1
	st.dir = dir
	if dir == "" {
		return nil
	}
	return st.load()
}

// load restores backend and service ids, so that a restarted agent keeps
// the ids established connections refer to (conntrack holds them).
func (st *programmedState) load() error {
	p := persisted{RevNats: map[string]uint32{}}
	snap := filepath.Join(st.dir, snapshotName)
	b, err := os.ReadFile(snap)
	switch {
	case errors.Is(err, os.ErrNotExist):
		p.Backends.Next = 1
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(b, &p); err != nil {
			return fmt.Errorf("parsing %s: %w", snap, err)
		}
	}
	if p.Backends.IDs == nil {
		p.Backends.IDs = map[string]lb.BackendID{}
	}
	if p.RevNats == nil {
		p.RevNats = map[string]uint32{}
	}
	jpath := filepath.Join(st.dir, journalName)
	if j, err := os.ReadFile(jpath); err == nil {
		lines := bytes.Split(j, []byte("\n"))
		for i, line := range lines {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var r journalRecord
			if err := json.Unmarshal(line, &r); err != nil {
				if i == len(lines)-1 {
					break // torn by a crash while appending: never acted on
				}
				return fmt.Errorf("parsing %s line %d: %w", jpath, i+1, err)
			}
			switch r.Op {
			case "backend":
				p.Backends.IDs[r.Key] = lb.BackendID(r.ID)
				if p.Backends.Next != 0 && lb.BackendID(r.ID) >= p.Backends.Next {
					p.Backends.Next = lb.BackendID(r.ID) + 1
				}
			case "release":
				delete(p.Backends.IDs, r.Key)
			case "revnat":
				p.RevNats[r.Key] = r.ID
			}
			st.lines++
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := st.ids.Restore(p.Backends); err != nil {
		return err
	}
	for k, v := range p.RevNats {
		st.revNats[k] = v
		st.nextRev = max(st.nextRev, v+1)
	}
	return nil
}

// backendID returns b's id, allocating (and journaling) one if needed.
func (st *programmedState) backendID(k lb.BackendKey) (uint32, error) {
	if id, ok := st.ids.Lookup(k); ok {
		return uint32(id), nil
	}
	id, err := st.ids.Acquire(k)
	if err != nil {
		return 0, err
	}
	st.pending = append(st.pending, journalRecord{Op: "backend", Key: k.String(), ID: uint32(id)})
	return uint32(id), nil
}

// revNat returns a frontend's service id, allocating one if needed. Ids
// are never reused: conntrack entries of old connections may name them.
func (st *programmedState) revNat(k fkey) uint32 {
	key := k.revNatKey()
	if id, ok := st.revNats[key]; ok {
		return id
	}
	id := st.nextRev
	st.nextRev++
	st.revNats[key] = id
	st.pending = append(st.pending, journalRecord{Op: "revnat", Key: key, ID: id})
	return id
}

func (st *programmedState) release(k lb.BackendKey) {
	if st.ids.Release(k) {
		st.pending = append(st.pending, journalRecord{Op: "release", Key: k.String()})
	}
}

// flush appends the pending records to the journal, folding it into a new
// snapshot when it has grown long (or when snapshot is set).
func (st *programmedState) flush(snapshot bool) error {
	if st.dir == "" {
		st.pending = st.pending[:0]
		return nil
	}
	if snapshot || (st.lines+len(st.pending) > compactAfter && st.lines+len(st.pending) > st.ids.Len()+len(st.revNats)) {
		return st.snapshot()
	}
	if len(st.pending) == 0 {
		return nil
	}
	if st.journal == nil {
		f, err := os.OpenFile(filepath.Join(st.dir, journalName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("opening the id journal: %w", err)
		}
		st.journal = f
	}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	enc := json.NewEncoder(w)
	for _, r := range st.pending {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	_ = w.Flush()
	if _, err := st.journal.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("writing the id journal: %w", err)
	}
	st.lines += len(st.pending)
	st.pending = st.pending[:0]
	return nil
}

// snapshot writes every id to a new snapshot and empties the journal (a
// crash in between replays the old journal over the new snapshot, which
// changes nothing).
func (st *programmedState) snapshot() error {
	b, err := json.Marshal(persisted{Backends: st.ids.Snapshot(), RevNats: st.revNats})
	if err != nil {
		return err
	}
	path := filepath.Join(st.dir, snapshotName)
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if st.journal != nil {
		st.journal.Close()
		st.journal = nil
	}
	if err := os.Truncate(filepath.Join(st.dir, journalName), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("emptying the id journal: %w", err)
	}
	st.lines = 0
	st.pending = st.pending[:0]
	return nil
}
