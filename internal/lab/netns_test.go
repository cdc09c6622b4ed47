package lab

import (
	"os"
	"strings"
	"testing"

	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/testutil"
)

// testNS creates a namespace lmn-<prefix><suffix> removed at the end of the test.
func testNS(t *testing.T, prefix string) string {
	t.Helper()
	name := "lmn-" + prefix + testutil.Suffix()
	if err := CreateNS(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = DeleteNS(name) })
	return name
}

func TestNamespaceLifecycle(t *testing.T) {
	testutil.RequirePrivileged(t)
	name := "lmn-nst" + testutil.Suffix()
	if err := CreateNS(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = DeleteNS(name) })
	if !NSExists(name) {
		t.Fatal("namespace not bound")
	}
	if err := CreateNS(name); err == nil {
		t.Error("creating an existing namespace succeeded")
	}
	got, err := ListNS(name[:len(name)-2])
	if err != nil || len(got) != 1 || got[0] != name {
		t.Errorf("ListNS = %v %v", got, err)
	}
	// The calling thread must still be in the host namespace.
	host, _ := nsInode("/proc/self/ns/net")
	thread, _ := nsInode("/proc/thread-self/ns/net")
	if host != thread {
		t.Error("calling thread left in another namespace")
	}
	if err := DeleteNS(name); err != nil {
		t.Fatal(err)
	}
	if NSExists(name) {
		t.Error("namespace still bound after delete")
	}
	if err := DeleteNS(name); err != nil {
		t.Errorf("deleting a missing namespace: %v", err)
	}
	if err := InNamedNS(name, func() error { return nil }); err == nil {
		t.Error("entering a deleted namespace succeeded")
	}
}

func TestSysctlStaysInNamespace(t *testing.T) {
	testutil.RequirePrivileged(t)
	ns := testNS(t, "sys")
	hostBefore, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	hostV6Before, _ := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding")
	for _, key := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if err := WriteSysctl(ns, key, "1"); err != nil {
			t.Fatal(err)
		}
		if v, err := ReadSysctl(ns, key); err != nil || v != "1" {
			t.Errorf("%s in namespace = %q %v", key, v, err)
		}
	}
	hostAfter, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	hostV6After, _ := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding")
	if string(hostBefore) != string(hostAfter) || string(hostV6Before) != string(hostV6After) {
		t.Fatalf("host forwarding changed: %q -> %q, %q -> %q", hostBefore, hostAfter, hostV6Before, hostV6After)
	}
	// A fresh namespace starts with forwarding off, so the write did something.
	other := testNS(t, "sys")
	if v, _ := ReadSysctl(other, "net.ipv4.ip_forward"); v != "0" {
		t.Errorf("fresh namespace ip_forward = %q", v)
	}
}

func TestUnderlayAndNodes(t *testing.T) {
	testutil.RequirePrivileged(t)
	lab := "u" + testutil.Suffix()
	t.Cleanup(func() {
		names, _ := ListNS(labpath.NSPrefix(lab))
		for _, n := range names {
			_ = DeleteNS(n)
		}
	})
	if err := setupUnderlay(labpath.UnderlayNS(lab)); err != nil {
		t.Fatal(err)
	}
	for i, n := range []string{"n1", "a-very-long-node-name"} {
		if err := setupNode(labpath.UnderlayNS(lab), labpath.NodeNS(lab, n), n, i); err != nil {
			t.Fatal(err)
		}
		addrs, err := ifaceAddrs(labpath.NodeNS(lab, n), NodeDevice)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() {
				continue
			}
			got = append(got, a.String())
		}
		want := NodeIPv4(i).String() + " " + NodeIPv6(i).String()
		if strings.Join(got, " ") != want {
			t.Errorf("node %s addresses %v, want %s", n, got, want)
		}
		if v, _ := ReadSysctl(labpath.NodeNS(lab, n), "net.ipv4.ip_forward"); v != "1" {
			t.Errorf("node %s ip_forward = %s", n, v)
		}
		if v, _ := ReadSysctl(labpath.NodeNS(lab, n), "net.ipv6.conf.all.forwarding"); v != "1" {
			t.Errorf("node %s ipv6 forwarding = %s", n, v)
		}
	}
	// The nodes reach each other over the underlay bridge, on both families.
	for _, target := range []string{"10.99.0.2:9", "[fd00:10:99::2]:9"} {
		c, err := DialInNS(labpath.NodeNS(lab, "n1"), "tcp", target, 5e9)
		if err == nil {
			c.Close()
			t.Errorf("dial %s: nothing listens there, yet it connected", target)
		} else if !strings.Contains(err.Error(), "refused") {
			t.Errorf("dial %s from n1: want connection refused (reachable, closed port), got %v", target, err)
		}
	}
}
