package testutil

import (
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// NewNetNS creates a named network namespace "lmn-<prefix>-<random>" for the
// test and deletes it at the end. The calling thread stays where it was.
func NewNetNS(t testing.TB, prefix string) (netns.NsHandle, string) {
	t.Helper()
	name := "lmn-" + prefix + "-" + Suffix()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("getting current netns: %v", err)
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	if err != nil {
		t.Fatalf("creating netns %s: %v", name, err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatalf("returning to original netns: %v", err)
	}
	t.Cleanup(func() {
		ns.Close()
		_ = netns.DeleteNamed(name)
	})
	return ns, name
}

// InNetNS runs fn on a thread switched into ns and switches back after.
func InNetNS(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return err
	}
	defer netns.Set(orig)
	return fn()
}
