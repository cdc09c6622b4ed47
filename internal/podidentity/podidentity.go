// Package podidentity gives a new endpoint its labels (from its Pod and
// Namespace in the store) and its identity, and keeps the identities local
// endpoints hold known to the allocator.
package podidentity

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/endpoint"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/node"
	"github.com/lumen-net/lumen/internal/resource"
	"github.com/lumen-net/lumen/internal/state"
)

// Resolver resolves an endpoint's labels (from its Pod and Namespace in
// the store, as the Kubernetes API would give them) and its identity.
type Resolver struct {
	store   kvstore.Store
	ids     *state.Table[identity.Entry]
	alloc   *identity.Allocator
	log     *slog.Logger
	mu      sync.Mutex
	stopped bool           // Run is joining moves: start no more
	moves   sync.WaitGroup // moveOff goroutines, joined by Run
}

// New returns a resolver with its own allocator, which learns the
// cluster's identities from ids (the table of identity.IDsPrefix); store
// may be nil (local allocation only).
func New(store kvstore.Store, ids *state.Table[identity.Entry], log *slog.Logger) *Resolver {
	return &Resolver{store: store, ids: ids, alloc: identity.NewAllocator(store), log: log}
}

// Allocator is the resolver's identity allocator.
func (i *Resolver) Allocator() *identity.Allocator { return i.alloc }

// Run follows the cluster's identities so that Lookup knows every one,
// until ctx ends and every endpoint move it started has returned.
func (i *Resolver) Run(ctx context.Context) error {
	i.alloc.Follow(ctx, i.ids)
	<-ctx.Done() // without a store the allocator returns at once
	i.mu.Lock()
	i.stopped = true
	i.mu.Unlock()
	i.moves.Wait()
	return nil
}

// Resolve is endpoint.Hooks.Identity: the labels and identity of the
// endpoint req asks for.
func (i *Resolver) Resolve(ctx context.Context, req *api.EndpointRequest) (uint32, map[string]string, error) {
	podLabels := req.Labels
	var nsLabels map[string]string
	if i.store != nil && req.PodName != "" {
		pod, err := resource.GetPod(ctx, i.store, req.Namespace, req.PodName)
		switch {
		case err == nil:
			podLabels = pod.Labels
		case resource.IsNotFound(err):
			i.log.Info("pod not in the store: labels from the request only", "pod", req.Namespace+"/"+req.PodName)
		default:
			return 0, nil, fmt.Errorf("reading pod %s/%s: %w", req.Namespace, req.PodName, err)
		}
		if nsLabels, err = resource.NamespaceLabels(ctx, i.store, req.Namespace); err != nil && !resource.IsNotFound(err) {
			return 0, nil, fmt.Errorf("reading namespace %s: %w", req.Namespace, err)
		}
	}
	ns := req.Namespace
	if ns == "" {
		ns = "default"
	}
	id, err := i.alloc.Allocate(ctx, identity.PodLabels(podLabels, ns, nsLabels))
	if err != nil {
		return 0, nil, err
	}
	return uint32(id), podLabels, nil
}

// Track tells the allocator which identities this node's endpoints hold and
// which every node announced, and moves local endpoints off a held number
// the store binds to other labels (after it lost its data and another node
// allocated the number first).
func (i *Resolver) Track(ctx context.Context, eps *endpoint.Manager, nodes *node.Manager) {
	i.alloc.SetInUse(identity.InUse{
		// Lock-free: Allocate runs inside endpoint creation.
		Local: func() []identity.ID {
			var out []identity.ID
			for _, id := range eps.Identities() {
				out = append(out, identity.ID(id))
			}
			return out
		},
		Announced: func() []identity.ID {
			var out []identity.ID
			for _, ep := range nodes.Endpoints() {
				out = append(out, identity.ID(ep.Identity))
			}
			return out
		},
	})
	i.alloc.OnConflict(func(id identity.ID, lbls identity.Labels) {
		i.mu.Lock()
		defer i.mu.Unlock()
		if !i.stopped {
			i.moves.Go(func() { i.moveOff(ctx, eps, id, lbls) })
		}
	})
}

// moveOff gives every local endpoint holding id the identity its labels
// have now (a fresh number), policy first (UpdateIdentity). It retries
// until no endpoint holds id or ctx ends.
func (i *Resolver) moveOff(ctx context.Context, eps *endpoint.Manager, id identity.ID, lbls identity.Labels) {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		left := 0
		for _, ep := range eps.List() {
			if identity.ID(ep.Identity) != id {
				continue
			}
			left++
			nid, err := i.alloc.Allocate(ctx, lbls)
			if err == nil && nid == id {
				err = fmt.Errorf("allocator still maps %s to %d", lbls, id)
			}
			if err == nil {
				_, err = eps.UpdateIdentity(ctx, ep.ContainerID, uint32(nid), ep.Labels)
			}
			if err != nil {
				i.log.Warn("moving endpoint off a conflicting identity", "container", ep.ContainerID, "identity", id, "err", err)
				continue
			}
			i.log.Info("endpoint moved off an identity the store binds to other labels", "container", ep.ContainerID, "from", id, "to", nid)
			left--
		}
		if left == 0 {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

// Health is the "identity" subsystem's status.
func (i *Resolver) Health() api.SubsystemStatus {
	if i.store == nil {
		return api.SubsystemStatus{Name: "identity", State: api.StateOK, Message: "local allocation (no kvstore)"}
	}
	if p := i.alloc.Problems(); p != "" {
		return api.SubsystemStatus{Name: "identity", State: api.StateDegraded, Message: p}
	}
	return api.SubsystemStatus{Name: "identity", State: api.StateOK, Message: "cluster identities in the kvstore"}
}
