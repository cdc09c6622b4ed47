package lab

import (
	"context"
	"io"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/lumen-net/lumen/internal/testutil"
)

func TestParseWhoAmI(t *testing.T) {
	got, err := ParseWhoAmI("lumen-iam 10.200.1.3 fd00:10:200:1::3\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("10.200.1.3"), netip.MustParseAddr("fd00:10:200:1::3")}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"", "lumen-probe abc\n", "lumen-iam 10.200.1.300\n"} {
		if _, err := ParseWhoAmI(bad); err == nil {
			t.Errorf("ParseWhoAmI(%q): no error", bad)
		}
	}
}

// The echo server names its addresses on request, over TCP and UDP, and a
// TCP connection keeps echoing afterwards; other first reads are echoed.
func TestEchoServerWhoAmI(t *testing.T) {
	testutil.RequirePrivileged(t)
	client, server := pairNS(t)
	serveIn(t, server, ServeConfig{TCP: []uint16{80}, UDP: []uint16{80}})
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for ProbeInNS(ctx, client, netip.MustParseAddrPort("10.77.0.2:80"), ProtoTCP, time.Second) != nil {
		if time.Now().After(deadline) {
			t.Fatal("echo server never answered on 80/tcp")
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := []netip.Addr{netip.MustParseAddr("10.77.0.2"), netip.MustParseAddr("fd00:77::2")}
	for _, target := range []string{"10.77.0.2:80", "[fd00:77::2]:80"} {
		c, err := DialInNS(client, "tcp", target, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := AskWhoAmI(c)
		if err != nil {
			t.Fatalf("tcp %s: %v", target, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("tcp %s: whoami %v, want %v", target, got, want)
		}
		if err := echoStream(c, []byte("still echoing\n")); err != nil {
			t.Errorf("tcp %s after whoami: %v", target, err)
		}
		c.Close()

		u, err := DialInNS(client, "udp", target, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = u.SetDeadline(time.Now().Add(10 * time.Second))
		got, err = AskWhoAmIUDP(u)
		if err != nil {
			t.Fatalf("udp %s: %v", target, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("udp %s: whoami %v, want %v", target, got, want)
		}
		u.Close()
	}

	// A request and data in one write: the answer, then the data echoed.
	c, err := DialInNS(client, "tcp", "10.77.0.2:80", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, WhoAmI+"tail"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 128)
	one := make([]byte, 1)
	for len(buf) < 4 || string(buf[len(buf)-4:]) != "tail" {
		if _, err := io.ReadFull(c, one); err != nil {
			t.Fatalf("after %q: %v", buf, err)
		}
		buf = append(buf, one[0])
	}
	if got := string(buf); got != "lumen-iam 10.77.0.2 fd00:77::2\ntail" {
		t.Errorf("combined write answered %q", got)
	}
}
