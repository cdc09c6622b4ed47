// Package kvstoretest starts a real embedded etcd for other packages' tests.
package kvstoretest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/lumen-net/lumen/internal/kvstore"
)

// Start runs an etcd on a unix socket in a temporary directory until the test
// ends and returns its endpoint.
func Start(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	ep := "unix://" + filepath.Join(dir, "etcd.sock")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- kvstore.Serve(ctx, kvstore.ServerConfig{
			DataDir: filepath.Join(dir, "data"), ClientURL: ep, OnReady: func() { close(ready) },
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("starting test etcd: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("test etcd: %v", err)
		}
	})
	return ep
}

// Client starts an etcd like Start and returns a client connected to it.
func Client(t testing.TB) *kvstore.Client {
	t.Helper()
	c, err := kvstore.Dial(context.Background(), Start(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
