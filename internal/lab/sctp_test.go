package lab

import (
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSockaddr(t *testing.T) {
	sa, fam := sockaddr(netip.MustParseAddrPort("10.1.2.3:80"))
	if in4, ok := sa.(*unix.SockaddrInet4); !ok || fam != unix.AF_INET || in4.Port != 80 || in4.Addr != [4]byte{10, 1, 2, 3} {
		t.Errorf("v4: %#v %d", sa, fam)
	}
	sa, fam = sockaddr(netip.MustParseAddrPort("[::ffff:10.1.2.3]:81"))
	if _, ok := sa.(*unix.SockaddrInet4); !ok || fam != unix.AF_INET {
		t.Errorf("4-in-6 not unmapped: %#v %d", sa, fam)
	}
	sa, fam = sockaddr(netip.MustParseAddrPort("[fd00::1]:82"))
	if in6, ok := sa.(*unix.SockaddrInet6); !ok || fam != unix.AF_INET6 || in6.Port != 82 || in6.Addr[0] != 0xfd || in6.Addr[15] != 1 {
		t.Errorf("v6: %#v %d", sa, fam)
	}
}

// TestSCTPSocket checks the raw socket path: on a kernel without SCTP every
// entry point reports ErrSCTPUnsupported instead of failing otherwise.
func TestSCTPSocket(t *testing.T) {
	fd, err := sctpSocket(unix.AF_INET, 0)
	if err == nil {
		unix.Close(fd)
		if !SCTPSupported() {
			t.Error("socket works but SCTPSupported is false")
		}
		t.Log("this kernel has SCTP; the echo round trip is covered by TestEchoServerAndProbes")
		return
	}
	if !errors.Is(err, ErrSCTPUnsupported) {
		t.Fatalf("want ErrSCTPUnsupported, got %v", err)
	}
	if SCTPSupported() {
		t.Error("SCTPSupported is true but socket fails")
	}
	if _, err := sctpListen(80); !errors.Is(err, ErrSCTPUnsupported) {
		t.Errorf("listen: %v", err)
	}
	if _, err := sctpDial(netip.MustParseAddrPort("[fd00::1]:80"), 0); !errors.Is(err, ErrSCTPUnsupported) {
		t.Errorf("dial: %v", err)
	}
}
