package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrSCTPUnsupported says the kernel has no SCTP; lab servers skip SCTP ports
// and probes report them as unsupported instead of failing.
var ErrSCTPUnsupported = errors.New("SCTP is not supported by this kernel")

// SCTPSupported reports whether this kernel can create SCTP sockets (checked
// in the caller's namespace; support is a kernel property).
func SCTPSupported() bool {
	fd, err := sctpSocket(unix.AF_INET6, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// sctpSocket creates a one-to-one style SCTP socket. A kernel without SCTP
// answers EPROTONOSUPPORT (or ESOCKTNOSUPPORT); both become ErrSCTPUnsupported.
func sctpSocket(family, flags int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|flags, unix.IPPROTO_SCTP)
	if err != nil {
		if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ESOCKTNOSUPPORT) {
			return -1, fmt.Errorf("%w (socket: %v)", ErrSCTPUnsupported, err)
		}
		return -1, fmt.Errorf("creating SCTP socket: %w", err)
	}
	return fd, nil
}

// sockaddr converts an address for the raw socket calls; IPv4 addresses
// (also 4-in-6) use AF_INET.
func sockaddr(ap netip.AddrPort) (unix.Sockaddr, int) {
	a := ap.Addr().Unmap()
	if a.Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}, unix.AF_INET
	}
	sa := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	return sa, unix.AF_INET6
}

// sctpListen listens on [::]:port for both families.
func sctpListen(port uint16) (int, error) {
	fd, err := sctpSocket(unix.AF_INET6, 0)
	if err != nil {
		return -1, err
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("sctp port %d: %s: %w", port, what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		return fail("IPV6_V6ONLY", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet6{Port: int(port)}); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		return fail("listen", err)
	}
	return fd, nil
}

// sctpDial connects to ap within timeout. It must run on a thread in the
// namespace the socket should live in. The returned file is non-blocking and
// supports deadlines.
func sctpDial(ap netip.AddrPort, timeout time.Duration) (*os.File, error) {
	sa, family := sockaddr(ap)
	fd, err := sctpSocket(family, unix.SOCK_NONBLOCK)
	if err != nil {
		return nil, err
	}
	err = unix.Connect(fd, sa)
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return nil, fmt.Errorf("sctp connect %s: %w", ap, err)
	}
	if err != nil {
		if err := waitWritable(fd, timeout); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("sctp connect %s: %w", ap, err)
		}
		soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soerr != 0 {
			err = unix.Errno(soerr)
		}
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("sctp connect %s: %w", ap, err)
		}
	}
	return os.NewFile(uintptr(fd), "sctp:"+ap.String()), nil
}

func waitWritable(fd int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}
