package kvstore

import "context"

// Store is what the agent needs from the cluster store. Client (etcd) is
// one; internal/k8s presents the Kubernetes API under the same keys, so every
// consumer works the same in standalone, Kubernetes and kvstore mode.
type Store interface {
	Get(ctx context.Context, key string) (kv KV, ok bool, err error)
	Put(ctx context.Context, key string, value []byte) (int64, error)
	Delete(ctx context.Context, key string) (deleted bool, err error)
	List(ctx context.Context, prefix string) ([]KV, int64, error)
	// CreateAll creates every key or none; when one exists it returns the
	// existing ones.
	CreateAll(ctx context.Context, kvs ...KV) (created bool, existing []KV, err error)
	// ListAndWatch delivers a Resync listing of prefix, then its changes,
	// and a new Resync whenever the watch could not continue exactly.
	ListAndWatch(ctx context.Context, prefix string) <-chan Update
}

var _ Store = (*Client)(nil)
