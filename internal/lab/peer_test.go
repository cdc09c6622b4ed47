package lab

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/testutil"
)

func TestParseWhoIsPeer(t *testing.T) {
	got, err := ParseWhoIsPeer("lumen-peer 10.99.0.200:41234\n")
	if err != nil || got != netip.MustParseAddrPort("10.99.0.200:41234") {
		t.Errorf("got %v, %v", got, err)
	}
	if got, err := ParseWhoIsPeer("lumen-peer [fd00:10:99::200]:5\n"); err != nil || got != netip.MustParseAddrPort("[fd00:10:99::200]:5") {
		t.Errorf("IPv6: got %v, %v", got, err)
	}
	for _, bad := range []string{"", "lumen-iam 10.0.0.1\n", "lumen-peer ?\n", "lumen-peer 10.0.0.1\n", "lumen-peer 1.2.3.4:5 6\n"} {
		if _, err := ParseWhoIsPeer(bad); err == nil {
			t.Errorf("ParseWhoIsPeer(%q): no error", bad)
		}
	}
}

// The echo server tells a client where it sees it, over TCP and UDP, and
// a TCP connection keeps echoing afterwards.
func TestEchoServerWhoIsPeer(t *testing.T) {
	testutil.RequirePrivileged(t)
	client, server := pairNS(t)
	serveIn(t, server, ServeConfig{TCP: []uint16{80}, UDP: []uint16{80}})
	deadline := time.Now().Add(10 * time.Second)
	for ProbeInNS(context.Background(), client, netip.MustParseAddrPort("10.77.0.2:80"), ProtoTCP, time.Second) != nil {
		if time.Now().After(deadline) {
			t.Fatal("echo server never answered on 80/tcp")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, target := range []string{"10.77.0.2:80", "[fd00:77::2]:80"} {
		c, err := DialInNS(client, "tcp", target, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := AskWhoIsPeer(c)
		if err != nil {
			t.Fatalf("tcp %s: %v", target, err)
		}
		if want := c.LocalAddr().(*net.TCPAddr).AddrPort(); got != want {
			t.Errorf("tcp %s: the server sees %s, want %s", target, got, want)
		}
		if err := echoStream(c, []byte("still echoing\n")); err != nil {
			t.Errorf("tcp %s after whoispeer: %v", target, err)
		}
		c.Close()

		u, err := DialInNS(client, "udp", target, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = u.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := u.Write([]byte(WhoIsPeer)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256)
		n, err := u.Read(buf)
		if err != nil {
			t.Fatalf("udp %s: %v", target, err)
		}
		got, err = ParseWhoIsPeer(string(buf[:n]))
		if want := u.LocalAddr().(*net.UDPAddr).AddrPort(); err != nil || got != want {
			t.Errorf("udp %s: the server sees %v (%v), want %s", target, got, err, want)
		}
		u.Close()
	}
}

func TestWantsXDPPeers(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--bpf-lb-acceleration=native"}, true},
		{[]string{"-bpf-lb-acceleration=native"}, true},
		{[]string{"--bpf-lb-acceleration", "native", "--bpf-lb-mode=dsr"}, true},
		{[]string{"--bpf-lb-acceleration=disabled"}, false},
		{[]string{"--bpf-lb-acceleration"}, false},
		{[]string{"--bpf-lb-algorithm=native"}, false},
		{[]string{"bpf-lb-acceleration=native"}, false},
	} {
		if got := WantsXDPPeers(c.args); got != c.want {
			t.Errorf("WantsXDPPeers(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}

// The pass program is attached in driver mode and stays without the
// process that attached it (no link, no open descriptor).
func TestAttachXDPPass(t *testing.T) {
	testutil.RequirePrivileged(t)
	ns := testNS(t, "xp")
	h, err := nlHandle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "a"}, PeerName: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := attachXDPPass(ns, "a"); err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName("a")
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x == nil || !x.Attached || x.ProgId == 0 {
		t.Fatalf("after attaching: XDP %+v, want a program attached", x)
	}
	if err := attachXDPPass(ns, "missing"); err == nil {
		t.Error("attaching to a missing device: no error")
	}
}

// TX checksum offload goes off (the kernel then completes checksums).
func TestTxChecksumOff(t *testing.T) {
	testutil.RequirePrivileged(t)
	ns := testNS(t, "tc")
	h, err := nlHandle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "a"}, PeerName: "b"}); err != nil {
		t.Fatal(err)
	}
	if on, err := txChecksumOn(ns, "a"); err != nil || !on {
		t.Fatalf("a new veth: TX checksum offload %v (%v), want on", on, err)
	}
	if err := txChecksumOff(ns, "a"); err != nil {
		t.Fatal(err)
	}
	if on, err := txChecksumOn(ns, "a"); err != nil || on {
		t.Errorf("after txChecksumOff: TX checksum offload %v (%v), want off", on, err)
	}
	if err := txChecksumOff(ns, "missing"); err == nil {
		t.Error("a missing device: no error")
	}
}

// txChecksumOn reads ETHTOOL_GTXCSUM.
func txChecksumOn(nsName, ifName string) (bool, error) {
	var on bool
	err := InNamedNS(nsName, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		v := &ethtoolValue{cmd: 0x16} // ETHTOOL_GTXCSUM
		req := &ifreqData{data: unsafe.Pointer(v)}
		copy(req.name[:], ifName)
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(req))); errno != 0 {
			return errno
		}
		runtime.KeepAlive(req)
		on = v.data != 0
		return nil
	})
	return on, err
}

func FuzzParseWhoIsPeer(f *testing.F) {
	f.Add("lumen-peer 10.99.0.200:41234\n")
	f.Add("lumen-peer [fd00:10:99::200]:5\n")
	f.Add("lumen-peer ?\n")
	f.Add("lumen-iam 10.0.0.1\n")
	f.Fuzz(func(t *testing.T, line string) {
		ap, err := ParseWhoIsPeer(line)
		if err != nil {
			return
		}
		// What parses is what the server would have sent for it.
		if got, err := ParseWhoIsPeer(string(peerAnswer(net.TCPAddrFromAddrPort(ap)))); err != nil || got != netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) {
			t.Fatalf("%q parsed as %s, which does not round-trip: %v %v", line, ap, got, err)
		}
	})
}
