// Package peer implements Hubble's Peer service: which Hubble servers
// (agents) exist and where to reach them. Agents serve it from the set of
// peers announced in the store; the relay follows it to discover agents.
package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	peerpb "github.com/cilium/cilium/api/v1/peer"
	"google.golang.org/grpc"
)

// StorePrefix is where agents announce their Hubble server in the store:
// StorePrefix+<node> holds a JSON Peer.
const StorePrefix = "/lumen/v1/hubble/peers/"

// Peer is one Hubble server.
type Peer struct {
	Name    string `json:"name"`
	Address string `json:"address"` // unix:///path or host:port
	// TLSServerName is the name in the server's certificate; empty: no TLS.
	TLSServerName string `json:"tlsServerName,omitempty"`
}

// Service implements peer.Peer over a set of peers that changes.
type Service struct {
	peerpb.UnimplementedPeerServer

	mu    sync.Mutex
	peers map[string]Peer
	wake  chan struct{} // closed on every change
}

// NewService returns a service with no peers.
func NewService() *Service {
	return &Service{peers: map[string]Peer{}, wake: make(chan struct{})}
}

// Set replaces the set of peers.
func (s *Service) Set(peers []Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := map[string]Peer{}
	for _, p := range peers {
		if p.Name != "" {
			next[p.Name] = p
		}
	}
	s.peers = next
	close(s.wake)
	s.wake = make(chan struct{})
}

// List returns the peers sorted by name.
func (s *Service) List() []Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sorted(s.peers)
}

func sorted(m map[string]Peer) []Peer {
	out := make([]Peer, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Notify sends every peer as added, then the changes. A slow client gets
// the net difference, never a backlog.
func (s *Service) Notify(_ *peerpb.NotifyRequest, stream peerpb.Peer_NotifyServer) error {
	known := map[string]Peer{}
	for {
		s.mu.Lock()
		cur := make(map[string]Peer, len(s.peers))
		for k, v := range s.peers {
			cur[k] = v
		}
		wake := s.wake
		s.mu.Unlock()
		for _, p := range sorted(cur) {
			old, ok := known[p.Name]
			switch {
			case !ok:
				if err := stream.Send(change(p, peerpb.ChangeNotificationType_PEER_ADDED)); err != nil {
					return err
				}
			case old != p:
				if err := stream.Send(change(p, peerpb.ChangeNotificationType_PEER_UPDATED)); err != nil {
					return err
				}
			}
		}
		for _, p := range sorted(known) {
			if _, ok := cur[p.Name]; !ok {
				if err := stream.Send(change(p, peerpb.ChangeNotificationType_PEER_DELETED)); err != nil {
					return err
				}
			}
		}
		known = cur
		select {
		case <-stream.Context().Done():
			return nil
		case <-wake:
		}
	}
}

func change(p Peer, t peerpb.ChangeNotificationType) *peerpb.ChangeNotification {
	n := &peerpb.ChangeNotification{Name: p.Name, Address: p.Address, Type: t}
	if p.TLSServerName != "" {
		n.Tls = &peerpb.TLS{ServerName: p.TLSServerName}
	}
	return n
}

// Watch follows a Peer service and calls update with the full set after
// every change, reconnecting (and starting over) when the stream breaks,
// until ctx ends.
func Watch(ctx context.Context, conn grpc.ClientConnInterface, update func([]Peer), log *slog.Logger) {
	c := peerpb.NewPeerClient(conn)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := watchOnce(ctx, c, update)
		if ctx.Err() != nil {
			return
		}
		log.Warn("peer notifications interrupted", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func watchOnce(ctx context.Context, c peerpb.PeerClient, update func([]Peer)) error {
	stream, err := c.Notify(ctx, &peerpb.NotifyRequest{})
	if err != nil {
		return fmt.Errorf("peer notify: %w", err)
	}
	peers := map[string]Peer{}
	for {
		n, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("peer notify: stream ended")
		}
		if err != nil {
			return fmt.Errorf("peer notify: %w", err)
		}
		p := Peer{Name: n.GetName(), Address: n.GetAddress(), TLSServerName: n.GetTls().GetServerName()}
		switch n.GetType() {
		case peerpb.ChangeNotificationType_PEER_ADDED, peerpb.ChangeNotificationType_PEER_UPDATED:
			peers[p.Name] = p
		case peerpb.ChangeNotificationType_PEER_DELETED:
			delete(peers, p.Name)
		default:
			continue
		}
		update(sorted(peers))
	}
}
