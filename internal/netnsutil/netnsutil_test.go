package netnsutil_test

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/netnsutil"
	"github.com/lumen-net/lumen/internal/testutil"
)

// threadNS is the inode of the calling thread's network namespace.
func threadNS(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func nsInode(t *testing.T, h netns.NsHandle) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// newNS creates a namespace for the test and removes it after.
func newNS(t *testing.T) (netns.NsHandle, string) {
	t.Helper()
	name := "lmn-nsutil-" + testutil.Suffix()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNS(t)
	h, err := netnsutil.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		_ = netns.DeleteNamed(name)
	})
	if got := threadNS(t); got != before {
		t.Fatalf("NewNamed moved the caller's thread: namespace %d, was %d", got, before)
	}
	if nsInode(t, h) == before {
		t.Fatal("NewNamed returned the caller's namespace")
	}
	return h, name
}

func TestDoRunsInNamespace(t *testing.T) {
	testutil.RequirePrivileged(t)
	h, name := newNS(t)
	want := nsInode(t, h)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNS(t)
	var in uint64
	if err := netnsutil.Do(h, func() error { in = threadNS(t); return nil }); err != nil {
		t.Fatal(err)
	}
	if in != want {
		t.Errorf("fn ran in namespace %d, want %d", in, want)
	}
	in = 0
	if err := netnsutil.DoPath("/run/netns/"+name, func() error { in = threadNS(t); return nil }); err != nil {
		t.Fatal(err)
	}
	if in != want {
		t.Errorf("DoPath: fn ran in namespace %d, want %d", in, want)
	}
	if got := threadNS(t); got != before {
		t.Errorf("caller's thread moved to %d, was %d", got, before)
	}
}

func TestDoReturnsErrors(t *testing.T) {
	testutil.RequirePrivileged(t)
	h, _ := newNS(t)
	boom := errors.New("boom")
	if err := netnsutil.Do(h, func() error { return boom }); !errors.Is(err, boom) {
		t.Errorf("fn's error: got %v, want %v", err, boom)
	}
	if err := netnsutil.Do(h, func() error { runtime.Goexit(); return nil }); err == nil {
		t.Error("fn that exited its goroutine: no error")
	}
	if err := netnsutil.Do(netns.None(), func() error { t.Error("fn ran"); return nil }); err == nil {
		t.Error("invalid handle: no error")
	}
	if err := netnsutil.DoPath("/run/netns/lmn-nsutil-missing", func() error { return nil }); err == nil {
		t.Error("missing path: no error")
	}
}

func TestEnterExit(t *testing.T) {
	testutil.RequirePrivileged(t)
	h, _ := newNS(t)
	errc := make(chan error, 1)
	go func() {
		before, err := os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		exit, err := netnsutil.Enter(h)
		if err != nil {
			errc <- err
			return
		}
		in, _ := os.Readlink("/proc/thread-self/ns/net")
		if err := exit(); err != nil {
			errc <- err
			return
		}
		after, _ := os.Readlink("/proc/thread-self/ns/net")
		switch {
		case in == before:
			errc <- fmt.Errorf("Enter left the thread in %s", in)
		case after != before:
			errc <- fmt.Errorf("exit left the thread in %s, want %s", after, before)
		default:
			errc <- nil
		}
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestNewNamedExisting(t *testing.T) {
	testutil.RequirePrivileged(t)
	_, name := newNS(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNS(t)
	if _, err := netnsutil.NewNamed(name); err == nil {
		t.Error("creating an existing name: no error")
	}
	if got := threadNS(t); got != before {
		t.Errorf("caller's thread moved to %d, was %d", got, before)
	}
}

// TestDoTemp: fn runs in a new namespace (bound under its name while it
// runs), its error comes back, and the namespace is gone after.
func TestDoTemp(t *testing.T) {
	testutil.RequirePrivileged(t)
	name := "lmn-nsutil-" + testutil.Suffix()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNS(t)
	boom := errors.New("boom")
	var in uint64
	err := netnsutil.DoTemp(name, func() error {
		in = threadNS(t)
		if _, err := os.Stat("/run/netns/" + name); err != nil {
			t.Errorf("namespace not bound while fn runs: %v", err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("fn's error: got %v, want %v", err, boom)
	}
	if in == 0 || in == before {
		t.Errorf("fn ran in namespace %d, the caller's is %d", in, before)
	}
	if _, err := os.Stat("/run/netns/" + name); !os.IsNotExist(err) {
		t.Errorf("namespace %s left behind: %v", name, err)
	}
}
