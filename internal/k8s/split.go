package k8s

// SplitStore: resources from one store, the rest from another.

import (
	"context"
	"strings"

	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/resource"
)

// SplitStore serves resources from the Kubernetes API and everything else
// (nodes, endpoints, identities, Hubble peers) from etcd: Cilium's kvstore
// mode.
func SplitStore(api *Store, etcd kvstore.Store) kvstore.Store {
	return &split{api: api, etcd: etcd}
}

type split struct {
	api  *Store
	etcd kvstore.Store
}

func (s *split) pick(key string) kvstore.Store {
	if strings.HasPrefix(key, resource.Prefix) {
		return s.api
	}
	return s.etcd
}

func (s *split) Get(ctx context.Context, key string) (kvstore.KV, bool, error) {
	return s.pick(key).Get(ctx, key)
}

func (s *split) Put(ctx context.Context, key string, value []byte) (int64, error) {
	return s.pick(key).Put(ctx, key, value)
}

func (s *split) Delete(ctx context.Context, key string) (bool, error) {
	return s.pick(key).Delete(ctx, key)
}

func (s *split) List(ctx context.Context, prefix string) ([]kvstore.KV, int64, error) {
	return s.pick(prefix).List(ctx, prefix)
}

func (s *split) CreateAll(ctx context.Context, kvs ...kvstore.KV) (bool, []kvstore.KV, error) {
	if len(kvs) == 0 {
		return true, nil, nil
	}
	return s.pick(kvs[0].Key).CreateAll(ctx, kvs...)
}

func (s *split) ListAndWatch(ctx context.Context, prefix string) <-chan kvstore.Update {
	return s.pick(prefix).ListAndWatch(ctx, prefix)
}
