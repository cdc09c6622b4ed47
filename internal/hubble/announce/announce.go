// Package announce writes this node's Hubble server to the store and keeps
// the Peer service equal to every node's announcement.
package announce

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"

	"github.com/lumen-net/lumen/internal/hubble/peer"
	"github.com/lumen-net/lumen/internal/kvstore"
)

// Announcer announces self and follows the other nodes' announcements.
type Announcer struct {
	store kvstore.Store
	svc   *peer.Service
	self  peer.Peer
	log   *slog.Logger
}

// New returns an announcer; store may be nil (a node alone: the Peer
// service lists self only).
func New(store kvstore.Store, svc *peer.Service, self peer.Peer, log *slog.Logger) *Announcer {
	return &Announcer{store: store, svc: svc, self: self, log: log}
}

// Run follows the store until ctx ends.
func (a *Announcer) Run(ctx context.Context) error {
	if a.store == nil {
		return nil
	}
	b, _ := json.Marshal(a.self)
	peers := map[string]peer.Peer{}
	for u := range a.store.ListAndWatch(ctx, peer.StorePrefix) {
		if u.Resync {
			peers = map[string]peer.Peer{}
			for _, kv := range u.KVs {
				putPeer(peers, kv, a.log)
			}
			// (Re)announce on every listing: the store may have lost it.
			if _, err := a.store.Put(ctx, peer.StorePrefix+a.self.Name, b); err != nil && ctx.Err() == nil {
				a.log.Warn("announcing hubble peer", "err", err)
			}
			peers[a.self.Name] = a.self
		}
		for _, e := range u.Events {
			if e.Type == kvstore.EventDelete {
				delete(peers, strings.TrimPrefix(e.KV.Key, peer.StorePrefix))
				continue
			}
			putPeer(peers, e.KV, a.log)
		}
		list := make([]peer.Peer, 0, len(peers))
		for _, p := range peers {
			list = append(list, p)
		}
		a.svc.Set(list)
	}
	return nil
}

func putPeer(peers map[string]peer.Peer, kv kvstore.KV, log *slog.Logger) {
	var p peer.Peer
	if err := json.Unmarshal(kv.Value, &p); err != nil || p.Name == "" || p.Address == "" {
		log.Warn("skipping malformed hubble peer", "key", kv.Key, "err", err)
		return
	}
	peers[p.Name] = p
}
