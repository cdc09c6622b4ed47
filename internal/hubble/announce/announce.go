// Package announce writes this node's Hubble server to the store and keeps
// the Peer service equal to every node's announcement.
package announce

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/lumen-net/lumen/internal/hubble/peer"
	"github.com/lumen-net/lumen/internal/kvstore"
	"github.com/lumen-net/lumen/internal/state"
)

// Announcer announces self and follows the other nodes' announcements.
type Announcer struct {
	store kvstore.Store
	peers *state.Table[peer.Peer]
	svc   *peer.Service
	self  peer.Peer
	log   *slog.Logger
}

// New returns an announcer writing to store and reading the announcements
// from peers (the table of peer.StorePrefix); store may be nil (a node
// alone: the Peer service lists self only).
func New(store kvstore.Store, peers *state.Table[peer.Peer], svc *peer.Service, self peer.Peer, log *slog.Logger) *Announcer {
	return &Announcer{store: store, peers: peers, svc: svc, self: self, log: log}
}

// Run follows the table until ctx ends.
func (a *Announcer) Run(ctx context.Context) error {
	if a.store == nil {
		return nil
	}
	b, _ := json.Marshal(a.self)
	sub := a.peers.Subscribe()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sub.Changed():
		}
		// (Re)announce on every listing: the store may have lost it.
		if _, all := sub.Drain(); all {
			if _, err := a.store.Put(ctx, peer.StorePrefix+a.self.Name, b); err != nil && ctx.Err() == nil {
				a.log.Warn("announcing hubble peer", "err", err)
			}
		}
		list := []peer.Peer{a.self}
		for _, p := range a.peers.List() {
			if p.Name != a.self.Name {
				list = append(list, p)
			}
		}
		a.svc.Set(list)
	}
}
