package lab

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/testutil"
)

// inPrivateMountNS runs fn on a thread in a mount namespace of its own
// whose mounts are all private: nothing fn mounts or unmounts reaches the
// host's mount table (other engineers' labs use /run/netns meanwhile, so
// the test works on a temporary directory, never on /run/netns). The
// thread is never unlocked: it dies with its goroutine.
func inPrivateMountNS(t *testing.T, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			errc <- err
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// bindNS binds the thread's network namespace at path, as netns.NewNamed
// binds a new one.
func bindNS(path string) error {
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		return err
	}
	return unix.Mount("/proc/thread-self/ns/net", path, "bind", unix.MS_BIND, "")
}

// ipNetnsAdd does what iproute2's `ip netns add` does to its run dir before
// binding a namespace: make it shared, bind-mounting it over itself first
// if it is not a mount point.
func ipNetnsAdd(dir string) error {
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if !errors.Is(err, unix.EINVAL) {
		return err
	}
	if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	return unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
}

// deleteAt is DeleteNS on a path.
func deleteAt(p string) error {
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return err
	}
	return os.Remove(p)
}

func mountsAt(dir string) (n int, shared bool, err error) {
	ms, err := mounts()
	for _, m := range ms {
		if m.point == dir {
			n++
			shared = m.shared
		}
	}
	return n, shared, err
}

// TestShareMountDir reproduces the `lab down` failure (a namespace bound
// before iproute2 made its run dir a mount point can no longer be removed:
// EBUSY) and shows that a run dir made a shared mount point first keeps
// every namespace removable.
func TestShareMountDir(t *testing.T) {
	testutil.RequirePrivileged(t)
	base := t.TempDir()
	inPrivateMountNS(t, func() error {
		// The failure: a namespace, then iproute2, then delete.
		old := filepath.Join(base, "old")
		if err := os.Mkdir(old, 0o755); err != nil {
			return err
		}
		if err := bindNS(filepath.Join(old, "lmn-a")); err != nil {
			return err
		}
		if err := ipNetnsAdd(old); err != nil {
			return err
		}
		if err := deleteAt(filepath.Join(old, "lmn-a")); !errors.Is(err, unix.EBUSY) {
			t.Errorf("without the fix, deleting a namespace hidden by iproute2's bind mount: %v, want EBUSY (the test no longer reproduces the failure)", err)
		}

		// The fix: the dir is made a shared mount point first.
		dir := filepath.Join(base, "netns")
		if err := shareMountDir(dir); err != nil {
			return err
		}
		if n, shared, err := mountsAt(dir); err != nil || n != 1 || !shared {
			t.Errorf("after shareMountDir: %d mounts at %s (shared %v, %v), want 1 shared", n, dir, shared, err)
		}
		if err := bindNS(filepath.Join(dir, "lmn-a")); err != nil {
			return err
		}
		if err := ipNetnsAdd(dir); err != nil {
			return err
		}
		if err := bindNS(filepath.Join(dir, "lmn-b")); err != nil {
			return err
		}
		// Once is enough: again, nothing is stacked.
		if err := shareMountDir(dir); err != nil {
			return err
		}
		if n, _, _ := mountsAt(dir); n != 1 {
			t.Errorf("%d mounts at %s after iproute2 and a second shareMountDir, want 1", n, dir)
		}
		for _, ns := range []string{"lmn-a", "lmn-b"} {
			if err := deleteAt(filepath.Join(dir, ns)); err != nil {
				t.Errorf("deleting %s: %v", ns, err)
			}
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("left in %s: %v", dir, left)
		}

		// A dir that is not a mount point but holds namespaces is left
		// alone: binding over it would hide them (others' labs).
		busy := filepath.Join(base, "busy")
		if err := os.Mkdir(busy, 0o755); err != nil {
			return err
		}
		if err := bindNS(filepath.Join(busy, "lmn-x")); err != nil {
			return err
		}
		if err := shareMountDir(busy); !errors.Is(err, errWouldHide) {
			t.Errorf("shareMountDir over a namespace: %v, want errWouldHide", err)
		}
		if n, _, _ := mountsAt(busy); n != 0 {
			t.Errorf("%s became a mount point", busy)
		}
		if under, _ := mountsBelow(busy); !slices.Equal(under, []string{filepath.Join(busy, "lmn-x")}) {
			t.Errorf("mounts below %s: %v", busy, under)
		}
		return deleteAt(filepath.Join(busy, "lmn-x"))
	})
}
