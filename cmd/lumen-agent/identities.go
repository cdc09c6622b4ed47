package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/identity"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/resource"
)

// identities resolves an endpoint's labels (from its Pod and Namespace in
// the store, as the Kubernetes API would give them) and its identity.
type identities struct {
	store kvstore.Store
	alloc *identity.Allocator
	log   *slog.Logger
}

func newIdentities(store kvstore.Store, log *slog.Logger) *identities {
	return &identities{store: store, alloc: identity.NewAllocator(store), log: log}
}

// run follows the cluster's identities so that Lookup knows every one.
func (i *identities) run(ctx context.Context) { i.alloc.Run(ctx) }

func (i *identities) resolve(ctx context.Context, req *api.EndpointRequest) (uint32, map[string]string, error) {
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

func (i *identities) health() api.SubsystemStatus {
	if i.store == nil {
		return api.SubsystemStatus{Name: "identity", State: api.StateOK, Message: "local allocation (no kvstore)"}
	}
	return api.SubsystemStatus{Name: "identity", State: api.StateOK, Message: "cluster identities in the kvstore"}
}
