package kvstore

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSocketModeWithUmask000: the store's socket is 0600 even when the
// process umask would let bind make it world-writable, and no private
// directory is left next to it.
func TestSocketModeWithUmask000(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	sock := filepath.Join(dir, "etcd.sock")
	startServer(t, filepath.Join(dir, "data"), "unix://"+sock)
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("store socket mode %v, want a 0600 socket", fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "etcd.sock" && e.Name() != "data" {
			t.Errorf("left in the socket dir: %s", e.Name())
		}
	}
	c, err := Dial(t.Context(), "unix://"+sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Put(t.Context(), "/k", []byte("v")); err != nil {
		t.Fatalf("the moved socket does not serve: %v", err)
	}
}
