package loadbalancer

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
)

// BackendID is a backend's numeric id in the datapath's maps. 0 is never
// allocated (it means "no backend").
type BackendID uint32

// compactKey is a BackendKey without netip.Addr's zone pointer: 20 bytes
// instead of 32, which matters at a million backends.
type compactKey struct {
	addr  [16]byte
	port  uint16
	proto Protocol
	is4   bool
}

func compact(k BackendKey) compactKey {
	return compactKey{addr: k.Addr.As16(), port: k.Port, proto: k.Proto, is4: k.Addr.Is4()}
}

func (c compactKey) key() BackendKey {
	a := netip.AddrFrom16(c.addr)
	if c.is4 {
		a = a.Unmap()
	}
	return BackendKey{Addr: a, Port: c.port, Proto: c.proto}
}

// idRange is a run of free ids [lo, hi].
type idRange struct{ lo, hi BackendID }

// IDAllocator gives backends stable 32-bit ids, one per BackendKey
// (shared by every service using that backend). Ids are handed out in
// increasing order; a released id is reused only once every id up to Max
// has been handed out, oldest release first, so that a stale reference to
// a released id (a connection tracking entry) is very unlikely to meet a
// new backend. The state survives restarts through Snapshot and Restore.
// It is safe for concurrent use.
type IDAllocator struct {
	mu   sync.Mutex
	max  BackendID
	next BackendID // the next never-used id, until the wrap
	wrap bool      // every id up to max has been handed out once
	ids  map[compactKey]BackendID
	free []idRange // after the wrap: free ids, in the order to reuse them
}

// NewIDAllocator returns an allocator of ids 1..max (0: math.MaxUint32).
func NewIDAllocator(max BackendID) *IDAllocator {
	if max == 0 {
		max = math.MaxUint32
	}
	return &IDAllocator{max: max, next: 1, ids: map[compactKey]BackendID{}}
}

// Max is the largest id.
func (a *IDAllocator) Max() BackendID { return a.max }

// Len is the number of allocated ids.
func (a *IDAllocator) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ids)
}

// Lookup returns k's id, if it has one.
func (a *IDAllocator) Lookup(k BackendKey) (BackendID, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, ok := a.ids[compact(k)]
	return id, ok
}

// Acquire returns k's id, allocating one if k has none.
func (a *IDAllocator) Acquire(k BackendKey) (BackendID, error) {
	if !k.Addr.IsValid() {
		return 0, fmt.Errorf("allocating a backend id: invalid backend address in %v", k)
	}
	c := compact(k)
	a.mu.Lock()
	defer a.mu.Unlock()
	if id, ok := a.ids[c]; ok {
		return id, nil
	}
	id, ok := a.take()
	if !ok {
		return 0, fmt.Errorf("allocating a backend id for %s: all %d ids are in use", k, a.max)
	}
	a.ids[c] = id
	return id, nil
}

func (a *IDAllocator) take() (BackendID, bool) {
	if !a.wrap {
		id := a.next
		if id < a.max {
			a.next++
			return id, true
		}
		// The last never-used id: from now on released ids are reused.
		a.wrap = true
		a.free = a.gaps(a.max - 1) // max itself is being handed out
		return id, true
	}
	if len(a.free) == 0 {
		return 0, false
	}
	r := &a.free[0]
	id := r.lo
	if r.lo == r.hi {
		a.free = a.free[1:]
		if len(a.free) == 0 {
			a.free = nil // let the backing array go
		}
	} else {
		r.lo++
	}
	return id, true
}

// gaps returns the ids in [1, upTo] that are not in use, as ranges in
// increasing order.
func (a *IDAllocator) gaps(upTo BackendID) []idRange {
	used := make([]BackendID, 0, len(a.ids))
	for _, id := range a.ids {
		used = append(used, id)
	}
	slices.Sort(used)
	var free []idRange
	prev := uint64(0)
	for _, id := range used {
		if uint64(id) > uint64(upTo) {
			break
		}
		if uint64(id) > prev+1 {
			free = append(free, idRange{BackendID(prev + 1), id - 1})
		}
		prev = uint64(id)
	}
	if prev < uint64(upTo) {
		free = append(free, idRange{BackendID(prev + 1), upTo})
	}
	return free
}

// Release frees k's id; it reports whether k had one.
func (a *IDAllocator) Release(k BackendKey) bool {
	c := compact(k)
	a.mu.Lock()
	defer a.mu.Unlock()
	id, ok := a.ids[c]
	if !ok {
		return false
	}
	delete(a.ids, c)
	if a.wrap {
		// Before the wrap nothing is recorded: the free ids are then exactly
		// the unused ones below next, computed when the wrap happens.
		a.pushFree(id, id)
	}
	return true
}

func (a *IDAllocator) pushFree(lo, hi BackendID) {
	if n := len(a.free); n > 0 && a.free[n-1].hi < math.MaxUint32 && a.free[n-1].hi+1 == lo {
		a.free[n-1].hi = hi
		return
	}
	a.free = append(a.free, idRange{lo, hi})
}

// IDState is the persisted state of an IDAllocator: every id, and the next
// never-used one (so that ids released before a restart are not reused
// early after it). In JSON: {"next": 17, "ids": {"10.0.0.5:80/TCP": 3}}.
// Next 0 means every id up to the maximum has been handed out once.
type IDState struct {
	Next BackendID            `json:"next"`
	IDs  map[string]BackendID `json:"ids"`
}

// Snapshot returns the state to persist.
func (a *IDAllocator) Snapshot() IDState {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := IDState{Next: a.next, IDs: make(map[string]BackendID, len(a.ids))}
	if a.wrap {
		st.Next = 0
	}
	for c, id := range a.ids {
		st.IDs[c.key().String()] = id
	}
	return st
}

// Restore replaces the allocator's state with a persisted one; ids from
// Next up are handed out first, as before the restart. It fails, changing
// nothing, on a bad key, an id out of range or used twice, or a key listed
// twice.
func (a *IDAllocator) Restore(st IDState) error {
	ids := make(map[compactKey]BackendID, len(st.IDs))
	seen := make(map[BackendID]string, len(st.IDs))
	highest := BackendID(0)
	for s, id := range st.IDs {
		k, err := ParseBackendKey(s)
		if err != nil {
			return fmt.Errorf("restoring backend ids: %w", err)
		}
		if id == 0 || id > a.max {
			return fmt.Errorf("restoring backend ids: %s has id %d, out of range 1-%d", s, id, a.max)
		}
		if other, dup := seen[id]; dup {
			return fmt.Errorf("restoring backend ids: id %d is used by both %s and %s", id, other, s)
		}
		c := compact(k)
		if _, dup := ids[c]; dup {
			return fmt.Errorf("restoring backend ids: %s is listed twice", s)
		}
		ids[c], seen[id] = id, s
		highest = max(highest, id)
	}
	next, wrap := st.Next, st.Next == 0
	if !wrap && next > a.max {
		return fmt.Errorf("restoring backend ids: next id %d is beyond the maximum %d", next, a.max)
	}
	if !wrap && highest >= next {
		// A hand-made or inconsistent state: go on after the highest id.
		if highest == a.max {
			wrap = true
		} else {
			next = highest + 1
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ids, a.wrap, a.next, a.free = ids, wrap, next, nil
	if wrap {
		a.next = a.max
		a.free = a.gaps(a.max)
	}
	return nil
}
