package main

import (
	"context"
	"log/slog"

	"github.com/lumen-net/lumen/internal/api"
	"github.com/lumen-net/lumen/internal/kvstore"
)

// identities resolves endpoint labels and identities.
// TODO: wire internal/identity and internal/resource when they land.
type identities struct {
	store *kvstore.Client
	log   *slog.Logger
}

func newIdentities(store *kvstore.Client, log *slog.Logger) *identities {
	return &identities{store: store, log: log}
}

func (i *identities) resolve(ctx context.Context, req *api.EndpointRequest) (uint32, map[string]string, error) {
	return 5, req.Labels, nil
}

func (i *identities) health() api.SubsystemStatus {
	return api.SubsystemStatus{Name: "identity", State: api.StateOK}
}
