package peer

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/hubble/observer"
	"github.com/lumen-net/lumen/internal/hubble/transport"
)

func TestNotifyAndWatch(t *testing.T) {
	svc := NewService()
	svc.Set([]Peer{{Name: "n1", Address: "unix:///a"}, {Name: "n2", Address: "10.0.0.2:4244", TLSServerName: "n2.hubble"}})
	sock := filepath.Join(t.TempDir(), "h.sock")
	s, err := transport.Start(transport.ServerOptions{UnixSocket: sock}, transport.Services{Observer: observer.New(observer.Options{}), Peer: svc})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	conn, err := transport.Dial("unix://"+sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	updates := make(chan []Peer, 100)
	go Watch(ctx, conn, func(p []Peer) { updates <- p }, slog.Default())

	// wait returns once the watcher's view equals want.
	wait := func(want string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case p := <-updates:
				if fmt.Sprint(p) == want {
					return
				}
			case <-timeout:
				t.Fatalf("watcher never saw %s", want)
			}
		}
	}
	wait("[{n1 unix:///a } {n2 10.0.0.2:4244 n2.hubble}]")
	svc.Set([]Peer{{Name: "n2", Address: "10.0.0.3:4244"}, {Name: "n3", Address: "unix:///c"}})
	wait("[{n2 10.0.0.3:4244 } {n3 unix:///c }]")
	svc.Set(nil)
	wait("[]")
}
