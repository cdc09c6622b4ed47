package loadbalancer

import (
	"encoding/json"
	"net/netip"
	"runtime"
	"strings"
	"testing"
)

func bkey(i int) BackendKey {
	return BackendKey{Addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Port: 8080, Proto: TCP}
}

func TestBackendKeyString(t *testing.T) {
	for _, s := range []string{"10.0.0.5:80/TCP", "[fd00::5]:53/UDP", "10.0.0.5:3868/SCTP"} {
		k, err := ParseBackendKey(s)
		if err != nil || k.String() != s {
			t.Errorf("%s: %v %v", s, k, err)
		}
	}
	for _, s := range []string{"10.0.0.5:80", "10.0.0.5/TCP", "10.0.0.5:80/ICMP", "10.0.0.5:80/", "[::ffff:10.0.0.5]:80/TCP", "[fe80::1%eth0]:80/TCP"} {
		if _, err := ParseBackendKey(s); err == nil {
			t.Errorf("%s: no error", s)
		}
	}
}

func TestIDAllocatorStableAndReuse(t *testing.T) {
	a := NewIDAllocator(5)
	ids := map[int]BackendID{}
	for i := range 4 {
		id, err := a.Acquire(bkey(i))
		if err != nil || id != BackendID(i+1) {
			t.Fatalf("key %d: id %d, %v", i, id, err)
		}
		ids[i] = id
	}
	if id, _ := a.Acquire(bkey(2)); id != 3 {
		t.Errorf("re-acquire gave %d, want the same id 3", id)
	}
	if id, ok := a.Lookup(bkey(1)); !ok || id != 2 {
		t.Errorf("lookup = %d %v", id, ok)
	}
	// Release 2 then 1: not reused while unused ids remain.
	a.Release(bkey(1))
	a.Release(bkey(0))
	if a.Release(bkey(0)) {
		t.Error("second release reported true")
	}
	if id, _ := a.Acquire(bkey(10)); id != 5 {
		t.Errorf("after releases got %d, want the never-used 5", id)
	}
	// Now every id has been used once: reuse the free ones, lowest first.
	if id, _ := a.Acquire(bkey(11)); id != 1 {
		t.Errorf("got %d, want 1", id)
	}
	a.Release(bkey(3)) // id 4
	if id, _ := a.Acquire(bkey(12)); id != 2 {
		t.Errorf("got %d, want 2 (free before 4 was released)", id)
	}
	if id, _ := a.Acquire(bkey(13)); id != 4 {
		t.Errorf("got %d, want 4", id)
	}
	if _, err := a.Acquire(bkey(14)); err == nil || !strings.Contains(err.Error(), "all 5 ids are in use") {
		t.Errorf("exhausted: %v", err)
	}
	if a.Len() != 5 {
		t.Errorf("len %d", a.Len())
	}
	if _, err := a.Acquire(BackendKey{}); err == nil {
		t.Error("invalid key accepted")
	}
}

func TestIDAllocatorRestore(t *testing.T) {
	a := NewIDAllocator(0)
	for i := range 10 {
		if _, err := a.Acquire(bkey(i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{9, 3, 4} {
		a.Release(bkey(i))
	}
	// Persist and restore (through JSON, as a state file would).
	js, err := json.Marshal(a.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var st IDState
	if err := json.Unmarshal(js, &st); err != nil {
		t.Fatal(err)
	}
	b := NewIDAllocator(0)
	if err := b.Restore(st); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		want, wok := a.Lookup(bkey(i))
		got, gok := b.Lookup(bkey(i))
		if want != got || wok != gok {
			t.Errorf("key %d: restored %d %v, had %d %v", i, got, gok, want, wok)
		}
	}
	// Ids released before the restart (10, 4, 5) are not handed out next.
	if id, _ := b.Acquire(bkey(100)); id != 11 {
		t.Errorf("after restore got %d, want 11", id)
	}

	// A wrapped allocator restores its free ids.
	w := NewIDAllocator(4)
	for i := range 4 {
		w.Acquire(bkey(i))
	}
	w.Release(bkey(1))
	st = w.Snapshot()
	if st.Next != 0 {
		t.Errorf("wrapped snapshot next = %d, want 0", st.Next)
	}
	w2 := NewIDAllocator(4)
	if err := w2.Restore(st); err != nil {
		t.Fatal(err)
	}
	if id, err := w2.Acquire(bkey(50)); id != 2 || err != nil {
		t.Errorf("wrapped restore: got %d %v, want 2", id, err)
	}

	for _, tc := range []struct {
		st   IDState
		want string
	}{
		{IDState{Next: 3, IDs: map[string]BackendID{"10.0.0.1:80/TCP": 1, "10.0.0.2:80/TCP": 1}}, "id 1 is used by both"},
		{IDState{Next: 3, IDs: map[string]BackendID{"10.0.0.1:80/TCP": 0}}, "out of range"},
		{IDState{Next: 3, IDs: map[string]BackendID{"bogus": 1}}, `backend key "bogus"`},
		{IDState{Next: 3, IDs: map[string]BackendID{"10.0.0.1:80/TCP": 1, "10.0.0.01:80/TCP": 2}}, `backend key "10.0.0.01:80/TCP"`},
		{IDState{Next: 9, IDs: nil}, "next id 9 is beyond the maximum 4"},
	} {
		x := NewIDAllocator(4)
		x.Acquire(bkey(7))
		if err := x.Restore(tc.st); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("restore %+v: %v, want %q", tc.st, err, tc.want)
		} else if id, ok := x.Lookup(bkey(7)); !ok || id != 1 {
			t.Errorf("failed restore changed the state")
		}
	}
	// A state whose next is behind its ids continues after the highest.
	x := NewIDAllocator(0)
	if err := x.Restore(IDState{Next: 2, IDs: map[string]BackendID{"10.0.0.1:80/TCP": 7}}); err != nil {
		t.Fatal(err)
	}
	if id, _ := x.Acquire(bkey(1)); id != 8 {
		t.Errorf("got %d, want 8", id)
	}
}

// 1.1 million backends: unique ids, and memory in proportion.
func TestIDAllocatorMillion(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 1.1M ids")
	}
	const n = 1_100_000
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	a := NewIDAllocator(0)
	seen := make([]bool, n+1)
	for i := range n {
		id, err := a.Acquire(bkey(i))
		if err != nil {
			t.Fatal(err)
		}
		if id == 0 || id > n || seen[id] {
			t.Fatalf("key %d got id %d (duplicate or out of range)", i, id)
		}
		seen[id] = true
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perBackend := float64(after.HeapAlloc-before.HeapAlloc-uint64(len(seen))) / n
	t.Logf("%d backends: %.1f bytes of heap per backend (%.1f MiB)", n, perBackend, perBackend*n/(1<<20))
	if perBackend > 100 {
		t.Errorf("%.1f bytes per backend, want at most 100", perBackend)
	}
	runtime.KeepAlive(a)
	// Release half, then snapshot/restore a million entries.
	for i := 0; i < n; i += 2 {
		a.Release(bkey(i))
	}
	b := NewIDAllocator(0)
	if err := b.Restore(a.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if b.Len() != n/2 {
		t.Errorf("restored %d ids, want %d", b.Len(), n/2)
	}
	if id, _ := b.Acquire(bkey(0)); id != n+1 {
		t.Errorf("after restore got %d, want %d", id, n+1)
	}
}
