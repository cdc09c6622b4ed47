package lab

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lumen-net/lumen/internal/lab/labpath"
	"github.com/lumen-net/lumen/internal/testutil"
)

// pairNS returns two namespaces joined by a veth: client 10.77.0.1 and
// fd00:77::1, server 10.77.0.2 and fd00:77::2.
func pairNS(t *testing.T) (client, server string) {
	t.Helper()
	client, server = testNS(t, "pc"), testNS(t, "ps")
	ch, err := nlHandle(client)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	sh, err := nlHandle(server)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	sfd, err := unix.Open(labpath.NSPath(server), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sfd)
	if err := ch.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(sfd)}); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		h    *netlink.Handle
		v4   string
		v6   string
		name string
	}{{ch, "10.77.0.1/24", "fd00:77::1/64", client}, {sh, "10.77.0.2/24", "fd00:77::2/64", server}} {
		l, err := x.h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{x.v4, x.v6} {
			ipn, _ := netlink.ParseIPNet(a)
			if err := x.h.AddrAdd(l, &netlink.Addr{IPNet: ipn, Flags: unix.IFA_F_NODAD}); err != nil {
				t.Fatal(err)
			}
		}
		if err := x.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if err := linkUp(x.h, "lo"); err != nil {
			t.Fatal(err)
		}
	}
	return client, server
}

// serveIn runs the echo server in ns until the test ends.
func serveIn(t *testing.T, ns string, cfg ServeConfig) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- InNamedNS(ns, func() error { return Serve(ctx, cfg, slog.New(slog.DiscardHandler)) })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

func TestEchoServerAndProbes(t *testing.T) {
	testutil.RequirePrivileged(t)
	client, server := pairNS(t)
	serveIn(t, server, ServeConfig{TCP: []uint16{80, 81}, UDP: []uint16{80}, SCTP: []uint16{80}})
	ctx := context.Background()
	timeout := 5 * time.Second

	// Wait for the server to listen.
	deadline := time.Now().Add(10 * time.Second)
	for ProbeInNS(ctx, client, netip.MustParseAddrPort("10.77.0.2:80"), ProtoTCP, time.Second) != nil {
		if time.Now().After(deadline) {
			t.Fatal("echo server never answered on 80/tcp")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range []struct {
		target string
		proto  string
	}{
		{"10.77.0.2:80", ProtoTCP}, {"10.77.0.2:81", ProtoTCP}, {"10.77.0.2:80", ProtoUDP},
		{"[fd00:77::2]:80", ProtoTCP}, {"[fd00:77::2]:81", ProtoTCP}, {"[fd00:77::2]:80", ProtoUDP},
	} {
		if err := ProbeInNS(ctx, client, netip.MustParseAddrPort(c.target), c.proto, timeout); err != nil {
			t.Errorf("probe %s/%s: %v", c.target, c.proto, err)
		}
	}
	// Closed ports are refused (TCP RST, ICMP port unreachable for UDP).
	for _, c := range []struct {
		target string
		proto  string
	}{{"10.77.0.2:82", ProtoTCP}, {"10.77.0.2:81", ProtoUDP}, {"[fd00:77::2]:82", ProtoTCP}, {"[fd00:77::2]:81", ProtoUDP}} {
		err := ProbeInNS(ctx, client, netip.MustParseAddrPort(c.target), c.proto, timeout)
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("probe of closed %s/%s: want connection refused, got %v", c.target, c.proto, err)
		}
	}
	// The probe's socket lives in the client namespace: from the server's
	// namespace, the client's address is local and nothing serves there.
	if err := ProbeInNS(ctx, server, netip.MustParseAddrPort("10.77.0.1:80"), ProtoTCP, timeout); err == nil {
		t.Error("probe to a namespace without a server connected")
	}
	// An unreachable address times out within the given timeout.
	if err := ProbeInNS(ctx, client, netip.MustParseAddrPort("10.77.0.9:80"), ProtoUDP, 500*time.Millisecond); err == nil {
		t.Error("probe to a missing host connected")
	}

	// SCTP: echoed where the kernel has it, reported unsupported elsewhere.
	err := ProbeInNS(ctx, client, netip.MustParseAddrPort("10.77.0.2:80"), ProtoSCTP, timeout)
	if SCTPSupported() {
		if err != nil {
			t.Errorf("sctp probe: %v", err)
		}
	} else if !errors.Is(err, ErrSCTPUnsupported) {
		t.Errorf("sctp probe on a kernel without SCTP: want ErrSCTPUnsupported, got %v", err)
	}

	// A stream stays open and keeps echoing.
	conn, err := DialInNS(client, "tcp", "[fd00:77::2]:81", timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	for i := 0; i < 50; i++ {
		msg := []byte(strings.Repeat("x", i+1))
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != string(msg) {
			t.Fatalf("echo %d: %q %v", i, got, err)
		}
	}
}

func TestRunProbes(t *testing.T) {
	testutil.RequirePrivileged(t)
	client, server := pairNS(t)
	serveIn(t, server, ServeConfig{TCP: []uint16{80}, UDP: []uint16{80}, SCTP: []uint16{80}})
	from := &PodState{Name: "c", Namespace: "x", NetNS: client}
	deadline := time.Now().Add(10 * time.Second)
	for ProbeInNS(context.Background(), client, netip.MustParseAddrPort("10.77.0.2:80"), ProtoTCP, time.Second) != nil {
		if time.Now().After(deadline) {
			t.Fatal("echo server never answered")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var specs []ProbeSpec
	for _, a := range []string{"10.77.0.2", "fd00:77::2"} {
		for _, p := range []string{ProtoTCP, ProtoUDP, ProtoSCTP} {
			specs = append(specs, ProbeSpec{From: from, To: "x/s", Target: netip.AddrPortFrom(netip.MustParseAddr(a), 80), Proto: p})
		}
	}
	specs = append(specs, ProbeSpec{From: from, To: "x/s", Target: netip.MustParseAddrPort("10.77.0.2:99"), Proto: ProtoTCP})
	res := RunProbes(context.Background(), specs, 3*time.Second, 3)
	if len(res) != len(specs) {
		t.Fatalf("%d results for %d probes", len(res), len(specs))
	}
	for i, r := range res {
		if r.From != "x/c" || r.Protocol != specs[i].Proto || r.Address != specs[i].Target.String() {
			t.Errorf("result %d does not match its probe: %+v", i, r)
		}
		wantFam := 4
		if strings.Contains(r.Address, "[") {
			wantFam = 6
		}
		if r.Family != wantFam {
			t.Errorf("result %d family %d, want %d", i, r.Family, wantFam)
		}
		switch {
		case i == len(res)-1:
			if r.Connected || r.Error == "" {
				t.Errorf("closed port reported %+v", r)
			}
		case r.Protocol == ProtoSCTP && !SCTPSupported():
			if r.Connected || !r.Unsupported {
				t.Errorf("sctp on a kernel without it: %+v", r)
			}
		default:
			if !r.Connected {
				t.Errorf("probe %d not connected: %+v", i, r)
			}
		}
	}
}
