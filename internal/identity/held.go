package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lumen-net/lumen/internal/kvstore"
)

// A store can lose its data (etcd restarted empty, a CiliumIdentity deleted
// while endpoints hold it). The allocator then must neither hand out a
// number that live endpoints hold nor leave those numbers unannounced:
//
//   - lowestFree skips every number in the store, in this allocator's cache
//     (every identity seen in the store since the agent started: a listing
//     that lacks them forgets nothing), held by this node's endpoints
//     (InUse.Local) or announced for any node's endpoint (InUse.Announced);
//   - on every listing of the store (each reconnect) the identities this
//     node's endpoints hold are created again, with their number and
//     labels (persisted in the state file, so a restarted agent knows them
//     even when the store does not), and so is one deleted while held;
//   - a held number the store binds to other labels is a conflict: the
//     store's binding wins (other nodes already enforce it), the conflict
//     is reported and OnConflict moves the local endpoints to the identity
//     of their labels.

// InUse tells the allocator which cluster identities are in use beyond what
// the store says. Either function may be nil.
type InUse struct {
	// Local returns the identities this node's endpoints hold.
	Local func() []ID
	// Announced returns the identities of the endpoints every node
	// announced (the store's endpoint entries as this node last saw them).
	Announced func() []ID
}

// SetInUse installs the in-use callbacks; call before Run.
func (a *Allocator) SetInUse(u InUse) {
	a.mu.Lock()
	a.inUse = u
	a.mu.Unlock()
}

// OnConflict sets what to do when the store binds a number this node's
// endpoints hold to other labels (lbls are the labels the endpoints have).
func (a *Allocator) OnConflict(f func(id ID, lbls Labels)) {
	a.mu.Lock()
	a.onConflict = f
	a.mu.Unlock()
}

type heldFile struct {
	// Identities maps a cluster identity to its labels.
	Identities map[string][]string `json:"identities"`
}

// SetStateFile loads the identities this node held before a restart from
// path and keeps the file up to date. A missing file is an empty one.
// Without a store (in-memory mode) nothing is loaded: those numbers are
// cluster-wide ones this node no longer shares.
func (a *Allocator) SetStateFile(path string) error {
	if a.kv == nil {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading held identities: %w", err)
	}
	held := map[ID]Labels{}
	if err == nil {
		var f heldFile
		if err := json.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("reading held identities %s: %w", path, err)
		}
		for k, v := range f.Identities {
			n, err := strconv.ParseUint(k, 10, 32)
			if err != nil || !ID(n).IsCluster() {
				return fmt.Errorf("reading held identities %s: identity %q: not a cluster identity", path, k)
			}
			ls, err := ParseLabels(v...)
			if err != nil || len(ls) == 0 {
				return fmt.Errorf("reading held identities %s: identity %s: labels %q: %v", path, k, v, err)
			}
			held[ID(n)] = ls
		}
	}
	a.mu.Lock()
	a.stateFile = path
	for id, ls := range held {
		if _, ok := a.held[id]; !ok {
			a.held[id] = ls
		}
		// Known before the store is listed, so a label set this node
		// held gets its number back, not a new one.
		if _, known := a.byID[id]; !known {
			a.remember(id, ls)
		}
	}
	a.mu.Unlock()
	return nil
}

// hold records that this node uses cluster identity id for lbls.
func (a *Allocator) hold(id ID, lbls Labels) {
	if a.kv == nil || !id.IsCluster() {
		return
	}
	a.mu.Lock()
	if have, ok := a.held[id]; ok && have.String() == lbls.String() {
		a.mu.Unlock()
		return
	}
	a.held[id] = slices.Clone(lbls)
	a.mu.Unlock()
	a.save()
}

// save writes the held identities still in use to the state file.
func (a *Allocator) save() {
	a.saveMu.Lock()
	defer a.saveMu.Unlock()
	a.mu.Lock()
	path := a.stateFile
	f := heldFile{Identities: map[string][]string{}}
	for id, ls := range a.held {
		f.Identities[strconv.FormatUint(uint64(id), 10)] = ls.Strings()
	}
	a.mu.Unlock()
	if path == "" {
		return
	}
	b, _ := json.MarshalIndent(f, "", "  ")
	tmp := path + ".tmp"
	err := os.WriteFile(tmp, b, 0o600)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		slog.Warn("persisting held identities", "file", path, "err", err)
	}
}

// localIDs returns the cluster identities this node's endpoints hold.
func (a *Allocator) localIDs() map[ID]bool {
	a.mu.Lock()
	f := a.inUse.Local
	a.mu.Unlock()
	out := map[ID]bool{}
	if f != nil {
		for _, id := range f() {
			if id.IsCluster() {
				out[id] = true
			}
		}
	}
	return out
}

func (a *Allocator) localHolds(id ID) bool { return a.localIDs()[id] }

// inUseIDs returns every cluster identity known to be in use or bound,
// whatever the store says now.
func (a *Allocator) inUseIDs() map[ID]bool {
	used := a.localIDs()
	a.mu.Lock()
	announced := a.inUse.Announced
	for id := range a.byID {
		used[id] = true
	}
	for id := range a.held {
		used[id] = true
	}
	a.mu.Unlock()
	if announced != nil {
		for _, id := range announced() {
			used[id] = true
		}
	}
	return used
}

// republish creates again, after a listing of the store (stored), every identity this
// node's endpoints hold that the listing lacks, and checks that the store
// binds the others to the same labels. Held identities no endpoint uses any
// more are dropped from the state file.
func (a *Allocator) republish(ctx context.Context, stored map[ID]Labels) {
	local := a.localIDs()
	a.mu.Lock()
	pruned := false
	for id := range a.held {
		if !local[id] && a.inUse.Local != nil {
			delete(a.held, id)
			pruned = true
		}
	}
	a.mu.Unlock()
	if pruned {
		a.save()
	}
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(local)) {
		ls, ok := a.heldLabels(id)
		if !ok {
			errs = append(errs, fmt.Errorf("identity %d: held by local endpoints, labels unknown (neither in the store nor in the state file)", id))
			continue
		}
		if have, ok := stored[id]; ok {
			if have.String() != ls.String() {
				a.conflict(id, ls, fmt.Sprintf("the store binds it to %s", have))
			} else {
				a.resolved(id)
			}
			continue
		}
		if err := a.create(ctx, id, ls); err != nil {
			errs = append(errs, err)
		}
	}
	a.mu.Lock()
	a.pubErr = errors.Join(errs...)
	a.mu.Unlock()
	if len(errs) > 0 {
		slog.Warn("re-publishing held identities", "err", errors.Join(errs...))
	}
}

// recreate creates id again after it was deleted while a local endpoint
// holds it.
func (a *Allocator) recreate(ctx context.Context, id ID) {
	ls, ok := a.heldLabels(id)
	if !ok {
		slog.Warn("identity deleted while local endpoints hold it; labels unknown", "id", id)
		a.forget(id)
		return
	}
	if err := a.create(ctx, id, ls); err != nil {
		a.mu.Lock()
		a.pubErr = err
		a.mu.Unlock()
		slog.Warn("re-creating identity", "id", id, "err", err)
	}
}

// heldLabels returns the labels this node holds id with: what Allocate
// returned here, else what the store said.
func (a *Allocator) heldLabels(id ID) (Labels, bool) {
	a.mu.Lock()
	ls, ok := a.held[id]
	if !ok {
		ls, ok = a.byID[id]
	}
	a.mu.Unlock()
	if ok {
		a.hold(id, ls)
	}
	return ls, ok
}

// create writes both keys of (id, lbls) unless they exist. Existing keys
// that bind id or lbls otherwise are a conflict. A store whose reads lag
// (an informer that has not seen a deletion yet) is asked again a few times.
func (a *Allocator) create(ctx context.Context, id ID, lbls Labels) error {
	canon := lbls.String()
	idKey := IDsPrefix + strconv.FormatUint(uint64(id), 10)
	lv, _ := json.Marshal(labelsValue{ID: id})
	iv, _ := json.Marshal(idValue{Labels: lbls.Strings()})
	for attempt := 0; ; attempt++ {
		created, existing, err := a.kv.CreateAll(ctx,
			kvstore.KV{Key: LabelsPrefix + canon, Value: lv},
			kvstore.KV{Key: idKey, Value: iv})
		if err != nil {
			return fmt.Errorf("re-publishing identity %d (%s): %w", id, canon, err)
		}
		if created {
			slog.Info("re-published identity the store had lost", "id", id, "labels", canon)
			a.resolved(id)
			return nil
		}
		for _, kv := range existing {
			switch {
			case kv.Key == idKey:
				if _, ls, err := parseIDEntry(kv); err != nil || ls.String() != canon {
					a.conflict(id, lbls, fmt.Sprintf("the store binds it to %q", kv.Value))
					return nil
				}
			default:
				if other, err := parseLabelsEntry(kv); err != nil || other != id {
					a.conflict(id, lbls, fmt.Sprintf("the store gives its labels identity %s", kv.Value))
					return nil
				}
			}
		}
		// Everything that exists agrees; make sure the id entry does.
		if _, ok, err := a.kv.Get(ctx, idKey); err != nil {
			return fmt.Errorf("re-publishing identity %d (%s): %w", id, canon, err)
		} else if ok {
			a.resolved(id)
			return nil
		}
		if attempt == 50 {
			return fmt.Errorf("re-publishing identity %d (%s): the store reports its labels bound to it but has no identity %d", id, canon, id)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// conflict records that the store binds held identity id to other labels
// than lbls (or lbls to another id): the store's binding wins, this node's
// endpoints must move.
func (a *Allocator) conflict(id ID, lbls Labels, why string) {
	a.mu.Lock()
	_, seen := a.conflicts[id]
	a.conflicts[id] = why
	// This node no longer maps lbls to id: Allocate asks the store again.
	if a.byLabels[lbls.String()] == id {
		delete(a.byLabels, lbls.String())
	}
	delete(a.held, id)
	f := a.onConflict
	a.mu.Unlock()
	a.save()
	if !seen {
		slog.Error("identity held by local endpoints is bound to other labels in the store; moving them", "id", id, "labels", lbls.String(), "reason", why)
	}
	if f != nil {
		f(id, lbls)
	}
}

func (a *Allocator) resolved(id ID) {
	a.mu.Lock()
	delete(a.conflicts, id)
	a.mu.Unlock()
}

// Problems describes what keeps the held identities from being in the store
// as this node uses them; empty when all is well.
func (a *Allocator) Problems() string {
	local := a.localIDs()
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for id, why := range a.conflicts {
		if local[id] {
			out = append(out, fmt.Sprintf("identity %d held by local endpoints: %s", id, why))
		}
	}
	sort.Strings(out)
	if a.pubErr != nil {
		out = append(out, a.pubErr.Error())
	}
	return strings.Join(out, "; ")
}
