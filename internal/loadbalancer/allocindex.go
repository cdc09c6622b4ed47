package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/resource"
)

// The allocation index records what services hold, one key per cluster IP
// and per node port with the holder's "namespace/name" as value (like
// Kubernetes' IPAddress objects), so that allocating for one service reads
// a few keys instead of decoding every stored Service. The value is
// "namespace/name unix-seconds" (the time of the claim). `lumen apply`
// keeps it; IndexedKey marks a store whose index covers every stored service
// (a store without it is indexed once, from a listing of the services).
const (
	AllocationsPrefix = "/lumen/v1/allocations/"
	ClusterIPsPrefix  = AllocationsPrefix + "clusterips/"
	NodePortsPrefix   = AllocationsPrefix + "nodeports/"
	IndexedKey        = AllocationsPrefix + "indexed"
)

// IndexStore is what the allocation index needs of the store
// (*kvstore.Client is one).
type IndexStore interface {
	Get(ctx context.Context, key string) (kv kvstore.KV, ok bool, err error)
	List(ctx context.Context, prefix string) ([]kvstore.KV, int64, error)
	CompareAndPut(ctx context.Context, key string, value []byte, modRevision int64) (ok bool, err error)
	Delete(ctx context.Context, key string) (deleted bool, err error)
}

// AllocationKeys are the index keys of what svc holds: its cluster IPs and
// node ports.
func AllocationKeys(svc *Service) []string {
	var keys []string
	for _, a := range svc.ClusterAddrs() {
		keys = append(keys, ClusterIPsPrefix+a.String())
	}
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			k := NodePortsPrefix + strconv.Itoa(int(p.NodePort))
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// holds reports whether svc holds what an index key names.
func holds(svc *Service, key string) bool {
	return slices.Contains(AllocationKeys(svc), key)
}

// maxIndexGets is how many single-key lookups an Index makes before it
// reads the whole index at once (a crowded range).
const maxIndexGets = 32

// errLostRace says another writer claimed a key between our lookup and
// our claim: allocate again.
var errLostRace = errors.New("allocation raced with another writer")

// Index is a view of the allocation index for one `lumen apply`: Holders
// that read single keys (or the whole index once a range turns out
// crowded), and Claim to record a service's allocations. A holder is
// believed only after checking that the stored service still holds the
// address or port; stale entries (a service deleted with its namespace, an
// apply that died half-way) count as free and are taken over by Claim.
type Index struct {
	store  IndexStore
	ctx    context.Context
	cache  map[string]indexEntry
	owners map[string]*Service // decoded holders; nil: not stored
	gets   int
	listed bool
}

type indexEntry struct {
	owner string
	at    time.Time // when it was claimed
	rev   int64     // 0: absent
}

// staleAfter is how long an entry whose holder does not hold it (yet) is
// believed: the time between an apply's claim and its write of the service.
const staleAfter = 30 * time.Second

// IndexValue is the index value recording a claim by svc at t.
func IndexValue(svc string, t time.Time) []byte {
	return []byte(svc + " " + strconv.FormatInt(t.Unix(), 10))
}

func parseIndexValue(kv kvstore.KV) indexEntry {
	owner, at, _ := strings.Cut(string(kv.Value), " ")
	secs, _ := strconv.ParseInt(at, 10, 64)
	return indexEntry{owner: owner, at: time.Unix(secs, 0), rev: kv.ModRevision}
}

// OpenIndex returns a view of the store's allocation index, indexing the
// stored services first if the store has never been indexed.
func OpenIndex(ctx context.Context, store IndexStore) (*Index, error) {
	if _, ok, err := store.Get(ctx, IndexedKey); err != nil {
		return nil, fmt.Errorf("reading the allocation index: %w", err)
	} else if !ok {
		if err := BuildIndex(ctx, store); err != nil {
			return nil, err
		}
	}
	return &Index{store: store, ctx: ctx, cache: map[string]indexEntry{}, owners: map[string]*Service{}}, nil
}

// BuildIndex records every stored service's allocations (keeping entries
// that exist) and marks the store indexed.
func BuildIndex(ctx context.Context, store IndexStore) error {
	kvs, _, err := store.List(ctx, resource.KindPrefix("Service"))
	if err != nil {
		return fmt.Errorf("indexing allocations: listing services: %w", err)
	}
	for _, kv := range kvs {
		obj, err := resource.Unmarshal(kv.Value)
		if err != nil {
			continue
		}
		svc, err := ServiceOf(obj)
		if err != nil {
			continue
		}
		for _, k := range AllocationKeys(svc) {
			if _, err := store.CompareAndPut(ctx, k, IndexValue(svc.Key(), time.Time{}), 0); err != nil {
				return fmt.Errorf("indexing allocations: %w", err)
			}
		}
	}
	if _, err := store.CompareAndPut(ctx, IndexedKey, []byte("1"), 0); err != nil {
		return fmt.Errorf("indexing allocations: %w", err)
	}
	return nil
}

// IPHolder implements Holders.
func (x *Index) IPHolder(a netip.Addr) (string, error) {
	return x.holder(ClusterIPsPrefix + a.String())
}

// NodePortHolder implements Holders.
func (x *Index) NodePortHolder(p int32) (string, error) {
	return x.holder(NodePortsPrefix + strconv.Itoa(int(p)))
}

func (x *Index) holder(key string) (string, error) {
	e, err := x.entry(key)
	if err != nil || e.owner == "" {
		return "", err
	}
	if x.listed {
		return e.owner, nil // a crowded range: believed without checking
	}
	if stale, err := x.stale(key, e); err != nil || stale {
		return "", err
	}
	return e.owner, nil
}

// stale reports an entry whose holder does not hold the key and that is
// older than staleAfter.
func (x *Index) stale(key string, e indexEntry) (bool, error) {
	if time.Since(e.at) < staleAfter {
		return false, nil
	}
	svc, err := x.ownerService(e.owner)
	if err != nil {
		return false, err
	}
	return svc == nil || !holds(svc, key), nil
}

func (x *Index) entry(key string) (indexEntry, error) {
	if e, ok := x.cache[key]; ok || x.listed {
		return e, nil
	}
	if x.gets >= maxIndexGets {
		kvs, _, err := x.store.List(x.ctx, AllocationsPrefix)
		if err != nil {
			return indexEntry{}, fmt.Errorf("reading the allocation index: %w", err)
		}
		for _, kv := range kvs {
			x.cache[kv.Key] = parseIndexValue(kv)
		}
		x.listed = true
		return x.cache[key], nil
	}
	x.gets++
	kv, ok, err := x.store.Get(x.ctx, key)
	if err != nil {
		return indexEntry{}, fmt.Errorf("reading the allocation index: %w", err)
	}
	e := indexEntry{}
	if ok {
		e = parseIndexValue(kv)
	}
	x.cache[key] = e
	return e, nil
}

// ownerService reads a holder's stored service (nil when there is none).
func (x *Index) ownerService(owner string) (*Service, error) {
	if svc, ok := x.owners[owner]; ok {
		return svc, nil
	}
	ns, name, _ := strings.Cut(owner, "/")
	kv, ok, err := x.store.Get(x.ctx, resource.Key("Service", ns, name))
	if err != nil {
		return nil, fmt.Errorf("reading service %s: %w", owner, err)
	}
	var svc *Service
	if ok {
		if obj, err := resource.Unmarshal(kv.Value); err == nil {
			svc, _ = ServiceOf(obj)
		}
	}
	x.owners[owner] = svc
	return svc, nil
}

// Claim records svc's allocations under its name. It fails with an error
// wrapping errLostRace (see IsLostRace) when another writer holds one of
// them now: the caller allocates again with a fresh Index.
func (x *Index) Claim(svc *Service) error {
	me := svc.Key()
	for _, k := range AllocationKeys(svc) {
		e, err := x.entry(k)
		if err != nil {
			return err
		}
		if e.owner == me {
			continue
		}
		if e.owner != "" {
			// Only a stale entry can be here: Holders said it was free.
			if stale, err := x.stale(k, e); err != nil {
				return err
			} else if !stale {
				return fmt.Errorf("%s: %w", k, errLostRace)
			}
		}
		ok, err := x.store.CompareAndPut(x.ctx, k, IndexValue(me, time.Now()), e.rev)
		if err != nil {
			return fmt.Errorf("recording the allocation of %s for %s: %w", strings.TrimPrefix(k, AllocationsPrefix), me, err)
		}
		if !ok {
			return fmt.Errorf("%s: %w", k, errLostRace)
		}
		x.cache[k] = indexEntry{owner: me, at: time.Now(), rev: -1} // revision unknown; not needed again
	}
	return nil
}

// IsLostRace reports a Claim that lost to another writer.
func IsLostRace(err error) bool { return errors.Is(err, errLostRace) }

// ReleaseAllocations removes the index entries of what old held and keep
// (the service's new version; nil when it is deleted) does not, if old is
// still recorded as their holder.
func ReleaseAllocations(ctx context.Context, store IndexStore, old, keep *Service) error {
	var errs []error
	for _, k := range AllocationKeys(old) {
		if keep != nil && holds(keep, k) {
			continue
		}
		kv, ok, err := store.Get(ctx, k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok || parseIndexValue(kv).owner != old.Key() {
			continue
		}
		if _, err := store.Delete(ctx, k); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("releasing the allocations of %s: %w", old.Key(), err)
	}
	return nil
}
