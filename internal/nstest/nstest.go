// Package nstest creates throwaway network namespaces for privileged tests of
// the host-networking packages (devices, neighbor, tunnel, routing).
//
// Namespaces are named lmn-<tag>-<pid>-<suffix>: the pid of the test process
// lets a later run remove leftovers of a crashed run (Sweep) without touching
// namespaces of tests that are still running. Nothing here touches the host
// namespace: every link is created through a netlink handle bound to a test
// namespace.
package nstest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/netnsutil"
	"github.com/lumen-net/lumen/internal/testutil"
)

// netnsDir is where iproute2 and netns.NewNamed keep named namespaces.
const netnsDir = "/run/netns"

// NS is a named test namespace with a netlink handle bound to it.
type NS struct {
	Name   string
	Handle netns.NsHandle
	NL     *netlink.Handle
}

var sweepOnce sync.Map // tag -> *sync.Once

// New creates a namespace lmn-<tag>-<pid>-<suffix>, brings its loopback up and
// removes it when the test ends. It skips (or fails in CI) without root.
func New(t testing.TB, tag string) *NS {
	t.Helper()
	testutil.RequirePrivileged(t)
	once, _ := sweepOnce.LoadOrStore(tag, &sync.Once{})
	once.(*sync.Once).Do(func() { Sweep(t, tag) })

	name := fmt.Sprintf("lmn-%s-%d-%s", tag, os.Getpid(), testutil.Suffix())
	h, err := netnsutil.NewNamed(name)
	if err != nil {
		_ = netns.DeleteNamed(name)
		t.Fatal(err)
	}
	ns := &NS{Name: name, Handle: h}
	t.Cleanup(func() { ns.close(t) })

	ns.NL, err = netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	lo, err := ns.NL.LinkByName("lo")
	if err != nil {
		t.Fatalf("lo in %s: %v", name, err)
	}
	if err := ns.NL.LinkSetUp(lo); err != nil {
		t.Fatalf("lo up in %s: %v", name, err)
	}
	return ns
}

func (ns *NS) close(t testing.TB) {
	if ns.NL != nil {
		ns.NL.Close()
	}
	_ = ns.Handle.Close()
	if err := netns.DeleteNamed(ns.Name); err != nil && !os.IsNotExist(err) {
		t.Errorf("deleting namespace %s: %v", ns.Name, err)
	}
}

// Sweep deletes namespaces lmn-<tag>-<pid>-* left behind by test processes
// that no longer run.
func Sweep(t testing.TB, tag string) {
	t.Helper()
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return
	}
	prefix := "lmn-" + tag + "-"
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", pidStr)); err == nil {
			continue // owner still running
		}
		if err := netns.DeleteNamed(e.Name()); err != nil {
			t.Logf("sweeping leftover namespace %s: %v", e.Name(), err)
		} else {
			t.Logf("swept leftover namespace %s (pid %d gone)", e.Name(), pid)
		}
	}
}

// Do runs fn on a locked OS thread switched into the namespace.
func (ns *NS) Do(fn func() error) error {
	return netnsutil.Do(ns.Handle, fn)
}

// Veth creates a veth pair with nameA in a and nameB in b, sets both up and
// waits until both report operational state up (packets sent earlier may be
// dropped).
func Veth(t testing.TB, a *NS, nameA string, b *NS, nameB string) (netlink.Link, netlink.Link) {
	t.Helper()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: nameA},
		PeerName:      nameB,
		PeerNamespace: netlink.NsFd(int(b.Handle)),
	}
	if err := a.NL.LinkAdd(veth); err != nil {
		t.Fatalf("adding veth %s/%s: %v", nameA, nameB, err)
	}
	la := a.MustLink(t, nameA)
	lb := b.MustLink(t, nameB)
	if err := a.NL.LinkSetUp(la); err != nil {
		t.Fatalf("setting %s up: %v", nameA, err)
	}
	if err := b.NL.LinkSetUp(lb); err != nil {
		t.Fatalf("setting %s up: %v", nameB, err)
	}
	return a.WaitOperUp(t, nameA), b.WaitOperUp(t, nameB)
}

// MustLink returns the link called name or fails the test.
func (ns *NS) MustLink(t testing.TB, name string) netlink.Link {
	t.Helper()
	l, err := ns.NL.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s in %s: %v", name, ns.Name, err)
	}
	return l
}

// WaitOperUp polls until the link reports operational state up and returns
// its fresh attributes.
func (ns *NS) WaitOperUp(t testing.TB, name string) netlink.Link {
	t.Helper()
	var l netlink.Link
	Eventually(t, 30*time.Second, func() error {
		var err error
		l, err = ns.NL.LinkByName(name)
		if err != nil {
			return err
		}
		if st := l.Attrs().OperState; st != netlink.OperUp {
			return fmt.Errorf("%s operstate %s", name, st)
		}
		return nil
	})
	return l
}

// AddAddr adds cidr (e.g. "10.0.0.1/24" or "fd00::1/64") to the link, without
// IPv6 duplicate address detection so the address is usable at once.
func (ns *NS) AddAddr(t testing.TB, link netlink.Link, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatalf("parsing %s: %v", cidr, err)
	}
	a.Flags |= unix.IFA_F_NODAD
	if err := ns.NL.AddrAdd(link, a); err != nil {
		t.Fatalf("adding %s to %s: %v", cidr, link.Attrs().Name, err)
	}
}

// Eventually retries cond every 50ms until it returns nil, failing the test
// with the last error after timeout. The timeout only guards against hangs.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
