package announce

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/clusterstate"
	"github.com/lumen-net/lumen/internal/hubble/peer"
	"github.com/lumen-net/lumen/internal/kvstore/kvstoretest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func names(ps []peer.Peer) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	slices.Sort(out)
	return out
}

// waitPeers waits until the service lists exactly want.
func waitPeers(t *testing.T, svc *peer.Service, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Equal(names(svc.List()), want) {
		if time.Now().After(deadline) {
			t.Fatalf("peers %v, want %v", names(svc.List()), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAnnouncer: the node announces itself in the store, the Peer service
// follows the other nodes' announcements (malformed ones skipped), and Run
// returns when ctx ends.
func TestAnnouncer(t *testing.T) {
	store := kvstoretest.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	other, _ := json.Marshal(peer.Peer{Name: "n2", Address: "10.0.0.2:4244"})
	if _, err := store.Put(ctx, peer.StorePrefix+"n2", other); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(ctx, peer.StorePrefix+"bad", []byte(`{"name":"bad"}`)); err != nil {
		t.Fatal(err)
	}
	svc := peer.NewService()
	self := peer.Peer{Name: "n1", Address: "unix:///run/n1/hubble.sock"}
	tables := clusterstate.New(store, nil, quiet)
	done := make(chan error, 2)
	go func() { tables.Run(ctx); done <- nil }()
	go func() { done <- New(store, tables.Peers, svc, self, quiet).Run(ctx) }()

	waitPeers(t, svc, "n1", "n2")
	kv, ok, err := store.Get(ctx, peer.StorePrefix+"n1")
	if err != nil || !ok {
		t.Fatalf("self not announced: ok=%v err=%v", ok, err)
	}
	var got peer.Peer
	if err := json.Unmarshal(kv.Value, &got); err != nil || got != self {
		t.Fatalf("announced %s (%v), want %+v", kv.Value, err, self)
	}
	if _, err := store.Delete(ctx, peer.StorePrefix+"n2"); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, svc, "n1")

	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
	}
}

// TestAnnouncerWithoutStore: a node alone announces nowhere and returns.
func TestAnnouncerWithoutStore(t *testing.T) {
	svc := peer.NewService()
	tables := clusterstate.New(nil, nil, quiet)
	if err := New(nil, tables.Peers, svc, peer.Peer{Name: "n1", Address: "x"}, quiet).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}
