package kvstore

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMonitor: a store that stops answering is reported unreachable,
// naming the store and the reason, and reachable again once it is back.
func TestMonitor(t *testing.T) {
	dir := t.TempDir()
	ep := "unix://" + filepath.Join(dir, "etcd.sock")
	start := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		ready, done := make(chan struct{}), make(chan error, 1)
		go func() {
			done <- Serve(ctx, ServerConfig{DataDir: filepath.Join(dir, "data"), ClientURL: ep, OnReady: func() { close(ready) }})
		}()
		select {
		case <-ready:
		case err := <-done:
			t.Fatal(err)
		}
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	stop := start()
	c, err := New(ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := NewMonitor(c)
	m.interval = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx)

	waitState := func(wantErr bool) error {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			checked, err, _ := m.State()
			if checked && (err != nil) == wantErr {
				return err
			}
			if time.Now().After(deadline) {
				t.Fatalf("monitor: checked=%v err=%v; want an error: %v", checked, err, wantErr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitState(false)
	stop()
	err = waitState(true)
	if !IsUnreachable(err) || !strings.Contains(err.Error(), ep) {
		t.Errorf("error with the store down: %v; want an UnreachableError naming %s", err, ep)
	}
	select {
	case <-m.Changed():
	default:
		t.Error("Changed not signalled")
	}
	stop = start()
	defer stop()
	waitState(false)
}
