package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/state"
)

// Store keys of cluster identities: both directions are written in one
// transaction, so a label set and an id are either both taken or both free.
const (
	LabelsPrefix = "/lumen/v1/identities/labels/" // + canonical labels -> {"id": N}
	IDsPrefix    = "/lumen/v1/identities/ids/"    // + N -> {"labels": [...]}
)

type labelsValue struct {
	ID ID `json:"id"`
}

type idValue struct {
	Labels []string `json:"labels"`
}

// maxAttempts bounds retries when other nodes take the id we picked.
const maxAttempts = 1000

// Allocator maps label sets to identities and back. With a kvstore client
// cluster identities are shared by every node; without one (a node alone)
// they are allocated in memory. Safe for concurrent use.
type Allocator struct {
	kv kvstore.Store

	mu          sync.Mutex
	byLabels    map[string]ID
	byID        map[ID]Labels
	nextLocal   ID
	nextCluster ID // in-memory mode only
	synced      bool
	syncedCh    chan struct{} // closed with synced
	changed     chan struct{}

	// What this node holds, so that a store that lost it gets it back and
	// no number a live endpoint holds is handed out again (held.go).
	inUse      InUse
	held       map[ID]Labels // cluster identities Allocate returned here
	stateFile  string        // held is persisted there ("" = not persisted)
	saveMu     sync.Mutex
	conflicts  map[ID]string // held ids the store gives other labels: why
	pubErr     error         // last failure to re-publish
	onConflict func(id ID, lbls Labels)
}

// NewAllocator returns an allocator using kv, or in-memory when kv is nil.
func NewAllocator(kv kvstore.Store) *Allocator {
	a := &Allocator{
		kv:          kv,
		byLabels:    map[string]ID{},
		byID:        map[ID]Labels{},
		nextLocal:   MinLocal,
		nextCluster: MinCluster,
		changed:     make(chan struct{}, 1),
		syncedCh:    make(chan struct{}),
		held:        map[ID]Labels{},
		conflicts:   map[ID]string{},
	}
	for id := range reservedNames {
		ls, _ := ReservedLabels(id)
		a.remember(id, ls)
	}
	if kv == nil {
		close(a.syncedCh)
	}
	return a
}

// Allocate returns the identity of lbls, allocating it if needed: reserved
// label sets map to their reserved identity, sets with a cidr: label get a
// node-local identity, everything else a cluster identity.
func (a *Allocator) Allocate(ctx context.Context, lbls Labels) (ID, error) {
	if err := lbls.check(); err != nil {
		return Unknown, fmt.Errorf("allocating identity: %w", err)
	}
	canon := lbls.String()
	a.mu.Lock()
	id, ok := a.byLabels[canon]
	a.mu.Unlock()
	if ok {
		a.hold(id, lbls)
		return id, nil
	}
	if id, ok, err := reservedFor(lbls); ok || err != nil {
		return id, err
	}

	if a.kv != nil && !isLocal(lbls) {
		// No lock across store round trips: concurrent callers for the
		// same labels all end up with the id the store holds.
		id, err := a.allocateCluster(ctx, lbls)
		if err != nil {
			return Unknown, err
		}
		a.mu.Lock()
		a.remember(id, lbls)
		a.mu.Unlock()
		a.hold(id, lbls)
		return id, nil
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	if id, ok := a.byLabels[canon]; ok { // allocated meanwhile
		return id, nil
	}
	if isLocal(lbls) {
		id = a.nextLocal
		a.nextLocal++
	} else {
		for _, taken := a.byID[a.nextCluster]; taken && a.nextCluster <= MaxCluster; _, taken = a.byID[a.nextCluster] {
			a.nextCluster++
		}
		if a.nextCluster > MaxCluster {
			return Unknown, fmt.Errorf("allocating identity for %s: all cluster identities %d-%d are in use", canon, MinCluster, MaxCluster)
		}
		id = a.nextCluster
		a.nextCluster++
	}
	a.remember(id, lbls)
	return id, nil
}

// Lookup returns the labels of id if this allocator knows it: reserved ids,
// ids it allocated, and with Run, every cluster identity in the store.
func (a *Allocator) Lookup(id ID) (Labels, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ls, ok := a.byID[id]
	return ls, ok
}

// Run keeps the cache of cluster identities equal to the store until ctx
// ends, so that Lookup knows identities allocated by other nodes. It does
// nothing in memory mode. An agent whose state tables already follow the
// identities calls Follow instead.
func (a *Allocator) Run(ctx context.Context) {
	if a.kv == nil {
		return
	}
	t := state.NewTable(EntriesSpec(), nil)
	go func() {
		for u := range a.kv.ListAndWatch(ctx, IDsPrefix) {
			t.Apply(u)
		}
	}()
	a.Follow(ctx, t)
}

// EntriesSpec is the table of cluster identities (IDsPrefix).
func EntriesSpec() state.Spec[Entry] {
	return state.Spec[Entry]{Name: "identities", Prefix: IDsPrefix, Decode: DecodeEntry}
}

// Follow keeps the cache of cluster identities equal to t, the table of
// the store's identities, until ctx ends.
func (a *Allocator) Follow(ctx context.Context, t *state.Table[Entry]) {
	if a.kv == nil {
		return
	}
	sub := t.Subscribe()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.Changed():
		}
		keys, listed := sub.Drain()
		if listed {
			stored := map[ID]Labels{}
			for _, e := range t.List() {
				a.mu.Lock()
				a.remember(e.ID, e.Labels)
				a.mu.Unlock()
				stored[e.ID] = e.Labels
			}
			// The store may have lost what this node holds (restarted
			// empty): create it again before anyone allocates over it.
			// A listing that lacks known ids (a wiped store) forgets
			// nothing: endpoints may still use them.
			a.republish(ctx, stored)
			a.mu.Lock()
			if !a.synced {
				close(a.syncedCh)
			}
			a.synced = true
			a.mu.Unlock()
			select {
			case a.changed <- struct{}{}:
			default:
			}
			continue
		}
		for _, k := range keys {
			if e, ok := t.Get(k); ok {
				a.mu.Lock()
				a.remember(e.ID, e.Labels)
				a.mu.Unlock()
				continue
			}
			// Deleted by garbage collection (lumen-operator): forget it, so
			// that the label set, should it come back, gets an identity that
			// exists. An identity a local endpoint still holds is created
			// again with the same number and labels instead.
			n, err := strconv.ParseUint(strings.TrimPrefix(k, IDsPrefix), 10, 32)
			if err != nil || !ID(n).IsCluster() {
				continue
			}
			if a.localHolds(ID(n)) {
				a.recreate(ctx, ID(n))
				continue
			}
			a.forget(ID(n))
		}
	}
}

func (a *Allocator) remember(id ID, ls Labels) {
	if _, known := a.byID[id]; !known {
		select {
		case a.changed <- struct{}{}:
		default:
		}
	}
	a.byLabels[ls.String()] = id
	a.byID[id] = slices.Clone(ls)
}

func (a *Allocator) forget(id ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ls, ok := a.byID[id]; ok {
		if a.byLabels[ls.String()] == id {
			delete(a.byLabels, ls.String())
		}
		delete(a.byID, id)
	}
}

// Snapshot returns every identity the allocator knows with its labels.
func (a *Allocator) Snapshot() map[ID]Labels {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[ID]Labels, len(a.byID))
	for id, ls := range a.byID {
		out[id] = ls
	}
	return out
}

// Changed is signalled (coalesced) whenever a new identity becomes known.
func (a *Allocator) Changed() <-chan struct{} { return a.changed }

// SyncedC is closed once the cluster identities have been listed (at once
// in memory mode).
func (a *Allocator) SyncedC() <-chan struct{} { return a.syncedCh }

// Synced reports whether the cluster identities have been listed once
// (always true in memory mode).
func (a *Allocator) Synced() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.kv == nil || a.synced
}

// allocateCluster finds or creates the cluster identity of lbls in the
// store. Several nodes may race: whoever creates both keys first wins; a
// loser either finds the label set taken (and uses its id) or its chosen id
// taken by another set (and tries the next free one).
func (a *Allocator) allocateCluster(ctx context.Context, lbls Labels) (ID, error) {
	canon := lbls.String()
	labelsKey := LabelsPrefix + canon
	for range maxAttempts {
		if kv, ok, err := a.kv.Get(ctx, labelsKey); err != nil {
			return Unknown, fmt.Errorf("looking up identity of %s: %w", canon, err)
		} else if ok {
			return parseLabelsEntry(kv)
		}
		id, err := a.lowestFree(ctx)
		if err != nil {
			return Unknown, fmt.Errorf("allocating identity for %s: %w", canon, err)
		}
		lv, _ := json.Marshal(labelsValue{ID: id})
		iv, _ := json.Marshal(idValue{Labels: lbls.Strings()})
		created, existing, err := a.kv.CreateAll(ctx,
			kvstore.KV{Key: labelsKey, Value: lv},
			kvstore.KV{Key: IDsPrefix + strconv.FormatUint(uint64(id), 10), Value: iv})
		if err != nil {
			return Unknown, fmt.Errorf("allocating identity for %s: %w", canon, err)
		}
		if created {
			slog.Debug("allocated identity", "id", id, "labels", canon)
			return id, nil
		}
		for _, kv := range existing {
			if kv.Key == labelsKey {
				return parseLabelsEntry(kv)
			}
		}
	}
	return Unknown, fmt.Errorf("allocating identity for %s: gave up after %d conflicting attempts", canon, maxAttempts)
}

// lowestFree returns the lowest cluster identity that is neither in the
// store nor known to be in use (see notInStore): a store that lost its data
// must not make this node hand out a number live endpoints hold.
func (a *Allocator) lowestFree(ctx context.Context) (ID, error) {
	kvs, _, err := a.kv.List(ctx, IDsPrefix)
	if err != nil {
		return Unknown, err
	}
	used := a.inUseIDs()
	for _, kv := range kvs {
		if n, err := strconv.ParseUint(strings.TrimPrefix(kv.Key, IDsPrefix), 10, 32); err == nil {
			used[ID(n)] = true
		}
	}
	for id := MinCluster; id <= MaxCluster; id++ {
		if !used[id] {
			return id, nil
		}
	}
	return Unknown, fmt.Errorf("all cluster identities %d-%d are in use", MinCluster, MaxCluster)
}

func parseLabelsEntry(kv kvstore.KV) (ID, error) {
	var v labelsValue
	if err := json.Unmarshal(kv.Value, &v); err != nil || !v.ID.IsCluster() {
		return Unknown, fmt.Errorf("bad identity entry %s: %q", kv.Key, kv.Value)
	}
	return v.ID, nil
}

func parseIDEntry(kv kvstore.KV) (ID, Labels, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(kv.Key, IDsPrefix), 10, 32)
	if err != nil || !ID(n).IsCluster() {
		return Unknown, nil, fmt.Errorf("bad identity key %s", kv.Key)
	}
	var v idValue
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return Unknown, nil, fmt.Errorf("bad identity entry %s: %w", kv.Key, err)
	}
	ls, err := ParseLabels(v.Labels...)
	if err != nil {
		return Unknown, nil, fmt.Errorf("bad identity entry %s: %w", kv.Key, err)
	}
	return ID(n), ls, nil
}

// reservedFor maps a label set with reserved labels to its identity. Like
// Cilium, any set containing reserved:host is the host.
func reservedFor(lbls Labels) (ID, bool, error) {
	var reserved []Label
	for _, l := range lbls {
		if l.Source == SourceReserved {
			reserved = append(reserved, l)
		}
	}
	if len(reserved) == 0 || isLocal(lbls) {
		return Unknown, false, nil
	}
	if lbls.Has(Label{Source: SourceReserved, Key: "host"}) {
		return Host, true, nil
	}
	if len(lbls) > 1 {
		return Unknown, false, fmt.Errorf("allocating identity for %s: reserved label %s cannot be combined with others", lbls, reserved[0])
	}
	id, ok := ReservedID(reserved[0].Key)
	if !ok || reserved[0].Value != "" {
		return Unknown, false, fmt.Errorf("allocating identity for %s: unknown reserved label", lbls)
	}
	return id, true, nil
}

func isLocal(lbls Labels) bool {
	for _, l := range lbls {
		if l.Source == SourceCIDR {
			return true
		}
	}
	return false
}

// Entry is one cluster identity as stored under IDsPrefix.
type Entry struct {
	ID     ID
	Labels Labels
}

// DecodeEntry decodes a stored identity (a state table's rows).
func DecodeEntry(kv kvstore.KV) (Entry, error) {
	id, ls, err := parseIDEntry(kv)
	return Entry{ID: id, Labels: ls}, err
}
