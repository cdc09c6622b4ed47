package lbsync

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/lumen-net/lumen/internal/model"
)

// nodeListingTimeout bounds the wait for the node manager's first listing
// (an entry it cannot read must not hold the services back for ever).
const nodeListingTimeout = time.Minute

// awaitNodeListing marks the node manager listed once it holds the nodes
// and endpoints the store held when the syncer started. Slices are derived
// from them: a reconcile before that would find the services' pods without
// endpoints and take their backends away, breaking the established
// connections of a restarted agent's node.
func (s *Syncer) awaitNodeListing(ctx context.Context) {
	defer func() {
		s.mu.Lock()
		s.in.synced[nodesListed] = true
		s.mu.Unlock()
		s.trigger()
	}()
	deadline := time.Now().Add(nodeListingTimeout)
	var wantNodes []string
	wantEps := map[string]model.Endpoint{} // store key -> endpoint
	for {
		nkvs, _, err1 := s.store.List(ctx, model.NodesPrefix)
		ekvs, _, err2 := s.store.List(ctx, model.EndpointsPrefix)
		if err1 == nil && err2 == nil {
			for _, kv := range nkvs {
				var n model.Node
				if json.Unmarshal(kv.Value, &n) == nil && n.Name != "" {
					wantNodes = append(wantNodes, n.Name)
				}
			}
			for _, kv := range ekvs {
				var e model.Endpoint
				if json.Unmarshal(kv.Value, &e) == nil {
					wantEps[kv.Key] = e
				}
			}
			break
		}
		if !s.sleepUntil(ctx, deadline, 200*time.Millisecond) {
			return
		}
	}
	for {
		have := s.nodes.Endpoints()
		for k, e := range wantEps {
			if slices.ContainsFunc(have, func(h model.Endpoint) bool { return sameEndpoint(h, e) }) {
				delete(wantEps, k)
			} else if _, ok, err := s.store.Get(ctx, k); err == nil && !ok {
				delete(wantEps, k) // gone since
			}
		}
		names := s.nodes.Nodes()
		wantNodes = slices.DeleteFunc(wantNodes, func(n string) bool {
			return slices.ContainsFunc(names, func(h model.Node) bool { return h.Name == n })
		})
		if len(wantEps) == 0 && len(wantNodes) == 0 {
			return
		}
		if !s.sleepUntil(ctx, deadline, 100*time.Millisecond) {
			s.log.Warn("the node manager has not listed every node and endpoint; deriving slices from what it has",
				"nodes missing", len(wantNodes), "endpoints missing", len(wantEps))
			return
		}
	}
}

// sleepUntil sleeps d unless ctx ends or the deadline passes (false).
func (s *Syncer) sleepUntil(ctx context.Context, deadline time.Time, d time.Duration) bool {
	if time.Now().Add(d).After(deadline) {
		return false
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
