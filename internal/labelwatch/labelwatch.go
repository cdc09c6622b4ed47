// Package labelwatch follows pod and namespace label changes and moves
// local endpoints to the identity of their new label set.
package labelwatch

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/endpoint"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/state"
)

// Label changes: an endpoint's identity comes from its pod's labels and its
// namespace's labels (podidentity.Resolver). When either changes later
// (`kubectl label pod`, `lumen apply` of the Pod or Namespace), the agent
// allocates the new label set's identity and moves the endpoint to it, as
// Cilium does: its policy, endpoint map entry, persisted state and
// announcement (other nodes' ipcache) follow.

const (
	// labelSettle coalesces a burst of changes (a namespace relabel touches
	// every pod in it; kubectl apply of many pods) into one pass.
	labelSettle = 100 * time.Millisecond
	// labelRetry spaces out retries of endpoints whose update failed.
	labelRetry = 2 * time.Second
)

// labelAllocator is what the watcher needs from the identity allocator.
type labelAllocator interface {
	Lookup(id identity.ID) (identity.Labels, bool)
	Allocate(ctx context.Context, lbls identity.Labels) (identity.ID, error)
}

// endpointUpdater is what the watcher needs from the endpoint manager.
type endpointUpdater interface {
	List() []api.Endpoint
	UpdateIdentity(ctx context.Context, containerID string, id uint32, labels map[string]string) (api.Endpoint, error)
}

// Watcher follows the Pod and Namespace tables and re-resolves the
// identity of local endpoints whose label set changed.
type Watcher struct {
	pods   *state.Table[*resource.Object]
	nss    *state.Table[*resource.Object]
	alloc  labelAllocator
	eps    endpointUpdater
	log    *slog.Logger
	settle time.Duration
	retry  time.Duration
}

// New returns a watcher of the pods and namespaces tables. Without a store
// they stay empty: labels come from CNI requests only and never change.
func New(pods, namespaces *state.Table[*resource.Object], alloc labelAllocator, eps endpointUpdater, log *slog.Logger) *Watcher {
	return &Watcher{pods: pods, nss: namespaces, alloc: alloc, eps: eps, log: log.With("subsys", "labels"), settle: labelSettle, retry: labelRetry}
}

// Run follows the tables until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	podSub, nsSub := w.pods.Subscribe(), w.nss.Subscribe()
	st := newLabelState()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	armed := false
	arm := func(d time.Duration) {
		if !armed {
			timer.Reset(d)
			armed = true
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-podSub.Changed():
			keys, all := podSub.Drain()
			if st.apply(kindPod, w.pods, keys, all) {
				arm(w.settle)
			}
		case <-nsSub.Changed():
			keys, all := nsSub.Drain()
			if st.apply(kindNamespace, w.nss, keys, all) {
				arm(w.settle)
			}
		case <-timer.C:
			armed = false
			if !st.ready() {
				continue // the first listing of the other kind re-arms
			}
			if !w.sync(ctx, st) {
				arm(w.retry)
			}
		}
	}
}

// sync moves every local endpoint touched by the changes since the last
// pass whose label set differs from its identity's. It reports whether
// every update succeeded; failed endpoints stay pending.
func (w *Watcher) sync(ctx context.Context, st *labelState) bool {
	failed := map[string]bool{}
	for _, ep := range w.eps.List() {
		if ep.PodName == "" {
			continue
		}
		ns := podNamespace(ep.Namespace)
		key := ns + "/" + ep.PodName
		if !st.dirty(ns, ep.PodName) {
			continue
		}
		podLabels, want, ok := st.desired(ns, ep.PodName)
		if !ok {
			continue // not (or no longer) in the store: keep what it has
		}
		if !labelsChanged(w.alloc, ep, podLabels, want) {
			continue
		}
		id, err := w.alloc.Allocate(ctx, want)
		if err != nil {
			w.log.Warn("allocating identity for changed labels", "pod", key, "labels", want.String(), "err", err)
			failed[key] = true
			continue
		}
		if _, err := w.eps.UpdateIdentity(ctx, ep.ContainerID, uint32(id), podLabels); err != nil {
			if errors.Is(err, endpoint.ErrNotFound) {
				continue // deleted meanwhile
			}
			w.log.Warn("updating endpoint identity", "pod", key, "container", ep.ContainerID, "identity", id, "err", err)
			failed[key] = true
		}
	}
	st.clean(failed)
	return len(failed) == 0
}

// labelsChanged reports whether ep must move: its identity's labels are not
// want (or unknown and want allocates to another id), or its recorded pod
// labels differ.
func labelsChanged(alloc labelAllocator, ep api.Endpoint, podLabels map[string]string, want identity.Labels) bool {
	have, known := alloc.Lookup(identity.ID(ep.Identity))
	if !known || have.String() != want.String() {
		return true
	}
	return !maps.Equal(ep.Labels, podLabels)
}

func podNamespace(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}

const (
	kindPod       = "Pod"
	kindNamespace = "Namespace"
)

// labelState is the agent's copy of every pod's and namespace's labels and
// what changed since the last pass.
type labelState struct {
	pods      map[string]map[string]string // "namespace/name" -> labels
	nss       map[string]map[string]string // namespace -> labels
	listed    map[string]bool              // kinds listed once
	dirtyPods map[string]bool              // "namespace/name"
	dirtyNS   map[string]bool
}

func newLabelState() *labelState {
	return &labelState{
		pods: map[string]map[string]string{}, nss: map[string]map[string]string{}, listed: map[string]bool{},
		dirtyPods: map[string]bool{}, dirtyNS: map[string]bool{},
	}
}

// apply takes the rows of kind's table whose store keys changed (all:
// every row, after a listing) and reports whether any labels changed
// (status and spec updates of a pod do not count).
func (s *labelState) apply(kind string, rows *state.Table[*resource.Object], keys []string, all bool) bool {
	m, dirty := s.pods, s.dirtyPods
	if kind == kindNamespace {
		m, dirty = s.nss, s.dirtyNS
	}
	changed := false
	set := func(key string, labels map[string]string, present bool) {
		old, had := m[key]
		if had == present && maps.Equal(old, labels) {
			return
		}
		if present {
			m[key] = labels
		} else {
			delete(m, key)
		}
		dirty[key] = true
		changed = true
	}
	if all {
		seen := map[string]bool{}
		for storeKey, obj := range rows.All() {
			if key, ok := objectKey(kind, storeKey); ok {
				seen[key] = true
				set(key, obj.Metadata.Labels, true)
			}
		}
		for key := range m {
			if !seen[key] {
				set(key, nil, false)
			}
		}
		if !s.listed[kind] {
			s.listed[kind] = true
			changed = true // the first pass waits for both kinds
		}
	}
	for _, storeKey := range keys {
		key, ok := objectKey(kind, storeKey)
		if !ok {
			continue
		}
		obj, present := rows.Get(storeKey)
		var labels map[string]string
		if present {
			labels = obj.Metadata.Labels
		}
		set(key, labels, present)
	}
	return changed
}

// objectKey is "namespace/name" for a pod's store key, the name for a
// namespace's.
func objectKey(kind, storeKey string) (string, bool) {
	k, ns, name, ok := resource.ParseKey(storeKey)
	if !ok || k != kind {
		return "", false
	}
	if kind == kindPod {
		return ns + "/" + name, true
	}
	return name, true
}

// ready reports whether pods and namespaces were both listed: before, a
// pod's label set could be computed without its namespace's labels.
func (s *labelState) ready() bool { return s.listed[kindPod] && s.listed[kindNamespace] }

// dirty reports whether the labels of pod or of its namespace changed.
func (s *labelState) dirty(namespace, pod string) bool {
	return s.dirtyPods[namespace+"/"+pod] || s.dirtyNS[namespace]
}

// clean forgets the changes, but for the pods in keep.
func (s *labelState) clean(keep map[string]bool) {
	clear(s.dirtyPods)
	clear(s.dirtyNS)
	for k := range keep {
		s.dirtyPods[k] = true
	}
}

// desired returns a pod's labels and security label set, computed as
// podidentity.Resolver does: a namespace missing from the store has just the
// label the API server would give it.
func (s *labelState) desired(namespace, pod string) (map[string]string, identity.Labels, bool) {
	podLabels, ok := s.pods[namespace+"/"+pod]
	if !ok {
		return nil, nil, false
	}
	nsLabels, ok := s.nss[namespace]
	if !ok {
		nsLabels = map[string]string{resource.MetadataNameLabel: namespace}
	}
	return podLabels, identity.PodLabels(podLabels, namespace, nsLabels), true
}
