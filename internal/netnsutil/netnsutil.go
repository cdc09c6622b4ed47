// Package netnsutil runs code with a thread switched into a network
// namespace. A namespace belongs to a thread, not to a goroutine, so every
// switch locks the goroutine to its thread; and a thread that cannot be
// switched back stays locked, so that Go discards it when its goroutine ends
// instead of reusing a thread that sits in the wrong namespace.
package netnsutil

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// errExited is returned by Do when fn ended its goroutine without
// returning (runtime.Goexit, as t.FailNow does).
var errExited = errors.New("function exited its goroutine without returning")

// Enter locks the calling goroutine to its thread and switches the thread
// into ns. exit switches it back and unlocks; if switching back fails the
// goroutine stays locked (and Go discards the thread when it ends), so the
// caller should let that goroutine end soon. On error the thread is where
// it was and unlocked.
func Enter(ns netns.NsHandle) (exit func() error, err error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("getting the thread's namespace: %w", err)
	}
	if err := netns.Set(ns); err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("switching thread into namespace: %w", err)
	}
	return func() error {
		defer orig.Close()
		if err := netns.Set(orig); err != nil {
			return fmt.Errorf("switching thread back: %w", err) // stays locked
		}
		runtime.UnlockOSThread()
		return nil
	}, nil
}

// Do runs fn on a fresh goroutine whose thread is switched into ns, and
// returns fn's error (joined with any error switching). The calling
// goroutine never changes namespace, so a failed switch back only poisons
// the fresh goroutine's thread, which Go then discards. fn must not rely
// on running on the caller's goroutine (t.FailNow in fn ends only the
// fresh goroutine; Do then returns an error).
func Do(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		exit, err := Enter(ns)
		if err != nil {
			errc <- err
			return
		}
		ferr := errExited
		defer func() { errc <- errors.Join(ferr, exit()) }()
		ferr = fn()
	}()
	return <-errc
}

// DoPath is Do for the namespace bound at path (such as /run/netns/<name>).
func DoPath(path string, fn func() error) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", path, err)
	}
	defer ns.Close()
	return Do(ns, fn)
}

// NewNamed creates a network namespace bound at /run/netns/<name> and
// returns a handle to it, without leaving any thread in it: netns.NewNamed
// switches the calling thread into the new namespace (also when binding it
// fails), so it runs on a fresh goroutine that switches back.
func NewNamed(name string) (netns.NsHandle, error) {
	type result struct {
		h   netns.NsHandle
		err error
	}
	resc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			resc <- result{netns.None(), fmt.Errorf("getting the thread's namespace: %w", err)}
			return
		}
		defer orig.Close()
		h, nerr := netns.NewNamed(name)
		if nerr != nil {
			h = netns.None()
			nerr = fmt.Errorf("creating namespace %s: %w", name, nerr)
		}
		if err := netns.Set(orig); err != nil {
			resc <- result{h, errors.Join(nerr, fmt.Errorf("switching thread back: %w", err))}
			return // stays locked: Go discards the thread
		}
		runtime.UnlockOSThread()
		resc <- result{h, nerr}
	}()
	r := <-resc
	return r.h, r.err
}

// DoTemp creates the network namespace name, runs fn on a thread inside it
// (see Do) and deletes the namespace, whatever fn returns.
func DoTemp(name string, fn func() error) error {
	ns, err := NewNamed(name)
	if err != nil {
		return err
	}
	defer func() { ns.Close(); _ = netns.DeleteNamed(name) }()
	return Do(ns, fn)
}
