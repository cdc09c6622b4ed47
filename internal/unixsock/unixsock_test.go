package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestNeverWiderThanMode binds sockets over and over with umask 000 while
// another goroutine watches the path: every time the path names a socket,
// its mode is 0600, and the socket serves.
func TestNeverWiderThanMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "agent.sock")

	// A stale socket from a previous run is replaced (made 0600 before the
	// watcher starts: bound with umask 000 it is world-writable until then).
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var seen, bad atomic.Int64
	var badMode atomic.Uint32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			fi, err := os.Lstat(path)
			if err != nil {
				continue
			}
			seen.Add(1)
			if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
				bad.Add(1)
				badMode.Store(uint32(fi.Mode()))
			}
		}
	}()
	for i := 0; i < 300; i++ {
		ln, err := Listen(path, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatalf("dialing the socket: %v", err)
			}
			c.Close()
		}
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Fatalf("socket left behind after Close: %v", err)
		}
		// Re-create a socket for the watcher to look at between rounds.
		if i%50 == 0 {
			ln, err := Listen(path, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			for seen.Load() == 0 {
				runtime.Gosched()
			}
			ln.Close()
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("the socket path showed mode %v (%d times), want only 0600", os.FileMode(badMode.Load()), bad.Load())
	}
	if seen.Load() == 0 {
		t.Fatal("the watcher never saw the socket: the test proves nothing")
	}
	// No private directory is left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Fatalf("left in the socket dir: %v", ents)
	}
}

// TestPlainBindIsWorldWritable shows what the package prevents: with umask
// 000, bind alone makes a world-writable socket (if this ever fails, the
// test above no longer tests anything).
func TestPlainBindIsWorldWritable(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "plain.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o002 == 0 {
		t.Fatalf("plain bind with umask 000 gave %v: expected world-writable", fi.Mode())
	}
}

// TestPrivateDirIsClosed checks the directory the socket is bound in.
func TestPrivateDirIsClosed(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	p, err := NewPrivate(filepath.Join(t.TempDir(), "x", "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Cleanup()
	fi, err := os.Stat(filepath.Dir(p.Path))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("private dir mode %v, want 0700", fi.Mode().Perm())
	}
}
