package k8s

import (
	"context"
	"log/slog"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/lumen-net/lumen/internal/kvstore"
)

// converter turns one API object into the store entries it stands for (a
// CiliumEndpointSlice stands for many endpoints). An error means the object
// is malformed: it is logged and skipped, and the entries it had before
// stay, so a bad update never removes state.
type converter func(obj *unstructured.Unstructured) ([]kvstore.KV, error)

// watchSpec says what one ListAndWatch follows.
type watchSpec struct {
	gvr           schema.GroupVersionResource
	namespace     string
	fieldSelector string
	convert       converter
}

// stream follows spec's shared informer and delivers its entries as
// kvstore updates: one Resync listing once the informer has synced (for
// this handler), then events. When the API server comes back after an
// outage the informer relists and the differences arrive as events, so
// consumers converge without a flush.
func stream(ctx context.Context, inf cache.SharedIndexInformer, spec watchSpec, log *slog.Logger) <-chan kvstore.Update {
	out := make(chan kvstore.Update)
	st := &streamState{
		vals: map[string][]byte{}, keysOf: map[string][]string{}, owner: map[string]string{},
		kick: make(chan struct{}, 1), log: log.With("resource", spec.gvr.Resource),
		convert: spec.convert,
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { st.upsert(obj) },
		UpdateFunc: func(_, obj any) { st.upsert(obj) },
		DeleteFunc: func(obj any) { st.remove(obj) },
	})
	if err != nil { // the informer stopped: the store's context ended
		st.log.Error("cannot follow the Kubernetes API", "err", err)
		close(out)
		return out
	}
	go func() {
		defer close(out)
		defer func() { _ = inf.RemoveEventHandler(reg) }()
		if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
			return
		}
		st.mu.Lock()
		st.synced = true
		first := kvstore.Update{Resync: true, Revision: st.rev}
		for _, k := range sortedKeys(st.vals) {
			first.KVs = append(first.KVs, kvstore.KV{Key: k, Value: st.vals[k]})
		}
		st.pending = nil
		st.mu.Unlock()
		if !send(ctx, out, first) {
			return
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-st.kick:
			}
			st.mu.Lock()
			u := kvstore.Update{Events: st.pending, Revision: st.rev}
			st.pending = nil
			st.mu.Unlock()
			if len(u.Events) > 0 && !send(ctx, out, u) {
				return
			}
		}
	}()
	return out
}

func send(ctx context.Context, out chan<- kvstore.Update, u kvstore.Update) bool {
	select {
	case out <- u:
		return true
	case <-ctx.Done():
		return false
	}
}

type streamState struct {
	convert converter
	log     *slog.Logger

	mu     sync.Mutex
	vals   map[string][]byte   // store key -> value
	keysOf map[string][]string // object (namespace/name) -> its store keys
	// owner is the object that last wrote a key: an endpoint moving from
	// one CiliumEndpointSlice to another must not be deleted when the old
	// slice's update arrives after the new one's.
	owner   map[string]string
	synced  bool
	pending []kvstore.Event
	rev     int64
	kick    chan struct{}
}

func objKey(u *unstructured.Unstructured) string { return u.GetNamespace() + "/" + u.GetName() }

func (s *streamState) upsert(obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	kvs, err := s.convert(u)
	if err != nil {
		s.log.Error("skipping malformed object from the Kubernetes API", "object", objKey(u), "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := map[string]bool{}
	var keys []string
	for _, kv := range kvs {
		keep[kv.Key] = true
		keys = append(keys, kv.Key)
		s.owner[kv.Key] = objKey(u)
		if old, ok := s.vals[kv.Key]; ok && slices.Equal(old, kv.Value) {
			continue
		}
		s.vals[kv.Key] = kv.Value
		s.event(kvstore.Event{Type: kvstore.EventPut, KV: kv})
	}
	for _, k := range s.keysOf[objKey(u)] {
		if !keep[k] {
			s.drop(k, objKey(u))
		}
	}
	s.keysOf[objKey(u)] = keys
}

// drop deletes key if obj still owns it. Called with mu held.
func (s *streamState) drop(key, obj string) {
	if s.owner[key] != obj {
		return
	}
	delete(s.owner, key)
	delete(s.vals, key)
	s.event(kvstore.Event{Type: kvstore.EventDelete, KV: kvstore.KV{Key: key}})
}

func (s *streamState) remove(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.keysOf[objKey(u)] {
		s.drop(k, objKey(u))
	}
	delete(s.keysOf, objKey(u))
}

// event queues e for delivery once the first listing went out (before, the
// listing itself carries the state). Called with mu held.
func (s *streamState) event(e kvstore.Event) {
	s.rev++
	if !s.synced {
		return
	}
	s.pending = append(s.pending, e)
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
