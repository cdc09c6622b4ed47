// Package state turns the cluster store into typed, indexed tables, fed once
// per agent: each registered prefix is listed and watched exactly once
// (kvstore.Store.ListAndWatch) and every reader shares the result. Readers
// Get, List and look rows up by named indexes, wait for Synced, and
// subscribe to changes, instead of following the store themselves.
//
// A row that fails to decode never removes state: the previous value of its
// key stays and the error is counted (Table.DecodeErrors) and logged.
package state

import (
	"bytes"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/lumen-net/lumen/internal/kvstore"
)

// Spec says how one table is fed and indexed.
type Spec[T any] struct {
	// Name names the table in logs and metrics ("nodes", "Pod").
	Name string
	// Prefix is the store prefix the table follows; every key under it
	// is one row.
	Prefix string
	// Decode turns one stored entry into a row. An error keeps the key's
	// previous row.
	Decode func(kvstore.KV) (T, error)
	// Indexes are named secondary indexes: each returns the values a row
	// is found under (none: not indexed).
	Indexes map[string]func(T) []string
}

// Table is the synced content of one store prefix, decoded into rows of T
// and keyed by store key. It is safe for concurrent use; rows are shared
// between readers and must not be modified.
type Table[T any] struct {
	spec Spec[T]
	log  *slog.Logger

	mu   sync.RWMutex
	rows map[string]T
	raw  map[string][]byte                         // stored value of each row: unchanged puts are no-ops
	idx  map[string]map[string]map[string]struct{} // index -> value -> keys
	rev  uint64
	subs []*Subscription

	synced     chan struct{}
	syncOnce   sync.Once
	decodeErrs atomic.Uint64
}

// NewTable returns a table outside any Tables, fed by Apply: a table a
// subsystem derives from others, or a test's input. Tables registered with
// Register are fed by Tables.Run only.
func NewTable[T any](spec Spec[T], log *slog.Logger) *Table[T] {
	if spec.Name == "" || spec.Decode == nil {
		panic(fmt.Sprintf("state: table spec needs Name and Decode: %+v", spec))
	}
	if log == nil {
		log = slog.Default()
	}
	return newTable(spec, log)
}

func newTable[T any](spec Spec[T], log *slog.Logger) *Table[T] {
	t := &Table[T]{
		spec: spec, log: log.With("table", spec.Name),
		rows: map[string]T{}, raw: map[string][]byte{}, idx: map[string]map[string]map[string]struct{}{},
		synced: make(chan struct{}),
	}
	for name := range spec.Indexes {
		t.idx[name] = map[string]map[string]struct{}{}
	}
	return t
}

// Name is the table's name.
func (t *Table[T]) Name() string { return t.spec.Name }

// Prefix is the store prefix the table follows.
func (t *Table[T]) Prefix() string { return t.spec.Prefix }

// Get returns the row of a store key.
func (t *Table[T]) Get(key string) (T, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	r, ok := t.rows[key]
	return r, ok
}

// Len is the number of rows.
func (t *Table[T]) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.rows)
}

// List returns every row, ordered by key.
func (t *Table[T]) List() []T {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]T, 0, len(t.rows))
	for _, k := range slices.Sorted(maps.Keys(t.rows)) {
		out = append(out, t.rows[k])
	}
	return out
}

// All iterates over a snapshot of the rows, ordered by key.
func (t *Table[T]) All() iter.Seq2[string, T] {
	t.mu.RLock()
	keys := slices.Sorted(maps.Keys(t.rows))
	rows := make([]T, len(keys))
	for i, k := range keys {
		rows[i] = t.rows[k]
	}
	t.mu.RUnlock()
	return func(yield func(string, T) bool) {
		for i, k := range keys {
			if !yield(k, rows[i]) {
				return
			}
		}
	}
}

// Index returns the rows found under value in the named index, ordered by
// key. An unknown index name panics: it is a programming error.
func (t *Table[T]) Index(name, value string) []T {
	t.mu.RLock()
	defer t.mu.RUnlock()
	ix, ok := t.idx[name]
	if !ok {
		panic("state: table " + t.spec.Name + " has no index " + name)
	}
	keys := slices.Sorted(maps.Keys(ix[value]))
	out := make([]T, 0, len(keys))
	for _, k := range keys {
		out = append(out, t.rows[k])
	}
	return out
}

// Synced is closed once the table holds the store's first listing.
func (t *Table[T]) Synced() <-chan struct{} { return t.synced }

// IsSynced tells whether Synced is closed.
func (t *Table[T]) IsSynced() bool {
	select {
	case <-t.synced:
		return true
	default:
		return false
	}
}

// Revision counts the changes applied to the table; it grows with every
// change of a row and never otherwise.
func (t *Table[T]) Revision() uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.rev
}

// DecodeErrors counts entries that could not be decoded (their key kept
// its previous row).
func (t *Table[T]) DecodeErrors() uint64 { return t.decodeErrs.Load() }

// Changed returns a new coalescing signal (buffered 1) that fires after
// every change of the table, and once when it first syncs.
func (t *Table[T]) Changed() <-chan struct{} { return t.subscribe(false).ch }

// Subscribe returns a new subscription that also collects the keys that
// changed, for readers that work incrementally.
func (t *Table[T]) Subscribe() *Subscription { return t.subscribe(true) }

func (t *Table[T]) subscribe(keys bool) *Subscription {
	s := &Subscription{ch: make(chan struct{}, 1)}
	if keys {
		s.keys = map[string]struct{}{}
	}
	t.mu.Lock()
	t.subs = append(t.subs, s)
	synced := t.IsSynced()
	t.mu.Unlock()
	if synced {
		// A late subscriber learns about the content it has not seen.
		s.all = keys
		s.ch <- struct{}{}
	}
	return s
}

// Subscription is one reader's view of a table's changes.
type Subscription struct {
	ch   chan struct{}
	mu   sync.Mutex
	keys map[string]struct{} // nil: keys are not collected
	all  bool
}

// Changed fires (coalesced) after changes; Drain tells which.
func (s *Subscription) Changed() <-chan struct{} { return s.ch }

// Drain returns the keys changed (put or deleted) since the last Drain,
// sorted, and all=true when the table was listed again meanwhile (its
// first listing, or a new one after the watch could not continue, e.g. a
// restarted etcd): readers that re-announce what the store may have lost
// do it then.
func (s *Subscription) Drain() (keys []string, all bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys, all = slices.Sorted(maps.Keys(s.keys)), s.all
	clear(s.keys)
	s.all = false
	return keys, all
}

func (s *Subscription) note(keys []string, all bool) {
	s.mu.Lock()
	if s.keys != nil {
		for _, k := range keys {
			s.keys[k] = struct{}{}
		}
		s.all = s.all || all
	}
	s.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
	default:
	}
}

// Apply applies one update, as ListAndWatch delivers them: a listing
// (Resync) replaces the rows, events change them.
func (t *Table[T]) Apply(u kvstore.Update) { t.apply(u) }

func (t *Table[T]) apply(u kvstore.Update) {
	t.mu.Lock()
	var changed []string
	if u.Resync {
		seen := make(map[string]bool, len(u.KVs))
		for _, kv := range u.KVs {
			seen[kv.Key] = true
			if t.put(kv) {
				changed = append(changed, kv.Key)
			}
		}
		for k := range t.rows {
			if !seen[k] && t.del(k) {
				changed = append(changed, k)
			}
		}
	}
	for _, ev := range u.Events {
		if ev.Type == kvstore.EventDelete {
			if t.del(ev.KV.Key) {
				changed = append(changed, ev.KV.Key)
			}
		} else if t.put(ev.KV) {
			changed = append(changed, ev.KV.Key)
		}
	}
	if len(changed) > 0 {
		t.rev++
	}
	if u.Resync {
		// Under mu: a subscriber either is in subs or sees the table synced.
		t.markSynced()
	}
	subs := slices.Clone(t.subs)
	t.mu.Unlock()
	if len(changed) > 0 || u.Resync {
		for _, s := range subs {
			s.note(changed, u.Resync)
		}
	}
}

// put stores kv's row; it reports whether the row changed. Called with mu held.
func (t *Table[T]) put(kv kvstore.KV) bool {
	if old, ok := t.raw[kv.Key]; ok && bytes.Equal(old, kv.Value) {
		return false
	}
	row, err := t.spec.Decode(kv)
	if err != nil {
		t.decodeErrs.Add(1)
		_, had := t.rows[kv.Key]
		t.log.Error("cannot decode store entry: keeping its previous state", "key", kv.Key, "had", had, "err", err)
		return false
	}
	t.unindex(kv.Key)
	t.rows[kv.Key] = row
	t.raw[kv.Key] = kv.Value
	for name, f := range t.spec.Indexes {
		for _, v := range f(row) {
			ix := t.idx[name]
			if ix[v] == nil {
				ix[v] = map[string]struct{}{}
			}
			ix[v][kv.Key] = struct{}{}
		}
	}
	return true
}

func (t *Table[T]) del(key string) bool {
	if _, ok := t.rows[key]; !ok {
		return false
	}
	t.unindex(key)
	delete(t.rows, key)
	delete(t.raw, key)
	return true
}

func (t *Table[T]) unindex(key string) {
	old, ok := t.rows[key]
	if !ok {
		return
	}
	for name, f := range t.spec.Indexes {
		ix := t.idx[name]
		for _, v := range f(old) {
			delete(ix[v], key)
			if len(ix[v]) == 0 {
				delete(ix, v)
			}
		}
	}
}

func (t *Table[T]) markSynced() { t.syncOnce.Do(func() { close(t.synced) }) }
