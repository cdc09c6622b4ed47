package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// WhoAmI is a request the echo server answers with the addresses of the
// namespace it serves in instead of echoing it, so that a client that
// reached a pod through a service can tell which backend answered. It is a
// UDP datagram that is exactly WhoAmI, or the start of the first read of a
// TCP or SCTP connection (whatever follows it in that read is echoed).
const WhoAmI = "lumen-whoami\n"

// whoAmIReply starts the answer: "lumen-iam 10.200.1.3 fd00:10:200:1::3\n".
const whoAmIReply = "lumen-iam"

// WhoIsPeer is a request the echo server answers with the address and port
// it sees the client at, under the same rules as WhoAmI: a backend reached
// through SNAT sees the translating node, through DSR the client itself.
const WhoIsPeer = "lumen-whoispeer\n"

// peerReply starts the answer: "lumen-peer 10.99.0.200:41234\n".
const peerReply = "lumen-peer"

// peerAnswer renders the answer to WhoIsPeer for a connection from addr.
func peerAnswer(addr net.Addr) []byte {
	s := "?"
	switch a := addr.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		s = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	case *net.UDPAddr:
		ap := a.AddrPort()
		s = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	return []byte(peerReply + " " + s + "\n")
}

// ParseWhoIsPeer reads the address out of an answer to WhoIsPeer.
func ParseWhoIsPeer(line string) (netip.AddrPort, error) {
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != peerReply {
		return netip.AddrPort{}, fmt.Errorf("not an answer to %q: %q", strings.TrimSpace(WhoIsPeer), line)
	}
	ap, err := netip.ParseAddrPort(f[1])
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("answer to %q: %w", strings.TrimSpace(WhoIsPeer), err)
	}
	return ap, nil
}

// AskWhoIsPeer asks the echo server at the other end of a TCP connection
// where it sees this end. It must be the first thing sent on the
// connection; the connection keeps echoing afterwards.
func AskWhoIsPeer(c io.ReadWriter) (netip.AddrPort, error) {
	if _, err := io.WriteString(c, WhoIsPeer); err != nil {
		return netip.AddrPort{}, fmt.Errorf("sending %q: %w", strings.TrimSpace(WhoIsPeer), err)
	}
	line, err := readLine(c)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("waiting for the answer to %q: %w", strings.TrimSpace(WhoIsPeer), err)
	}
	return ParseWhoIsPeer(line)
}

// readLine reads up to a newline byte by byte: nothing past it is consumed.
func readLine(c io.Reader) (string, error) {
	var line []byte
	one := make([]byte, 1)
	for len(line) < 4096 {
		if _, err := io.ReadFull(c, one); err != nil {
			return "", err
		}
		line = append(line, one[0])
		if one[0] == '\n' {
			return string(line), nil
		}
	}
	return "", errors.New("line too long")
}

// ownAddrs lists the namespace's global addresses (what identifies a pod).
func ownAddrs() []netip.Addr {
	var out []netip.Addr
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	for _, ia := range ifaddrs {
		ipn, ok := ia.(*net.IPNet)
		if !ok {
			continue
		}
		a, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		a = a.Unmap()
		if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() {
			continue
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(x, y netip.Addr) int { return x.Compare(y) })
	return out
}

func whoAmIAnswer() []byte {
	var b strings.Builder
	b.WriteString(whoAmIReply)
	for _, a := range ownAddrs() {
		b.WriteString(" " + a.String())
	}
	b.WriteString("\n")
	return []byte(b.String())
}

// answerFirstRead handles the first read of a stream connection: a WhoAmI
// request is answered with iam, a WhoIsPeer one with the connection's
// remote address, anything else echoed. It returns the read's error
// (io.EOF when the peer closed).
func answerFirstRead(c io.ReadWriter, iam []byte) error {
	buf := make([]byte, 32*1024)
	n, err := c.Read(buf)
	if n > 0 {
		data := buf[:n]
		if rest, ok := bytes.CutPrefix(data, []byte(WhoAmI)); ok {
			if _, werr := c.Write(iam); werr != nil {
				return werr
			}
			data = rest
		} else if rest, ok := bytes.CutPrefix(data, []byte(WhoIsPeer)); ok {
			var remote net.Addr
			if rc, ok := c.(interface{ RemoteAddr() net.Addr }); ok {
				remote = rc.RemoteAddr()
			}
			if _, werr := c.Write(peerAnswer(remote)); werr != nil {
				return werr
			}
			data = rest
		}
		if len(data) > 0 {
			if _, werr := c.Write(data); werr != nil {
				return werr
			}
		}
	}
	return err
}

// ParseWhoAmI reads the addresses out of an answer to WhoAmI.
func ParseWhoAmI(line string) ([]netip.Addr, error) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != whoAmIReply {
		return nil, fmt.Errorf("not an answer to %q: %q", strings.TrimSpace(WhoAmI), line)
	}
	out := make([]netip.Addr, 0, len(f)-1)
	for _, s := range f[1:] {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("answer to %q: %w", strings.TrimSpace(WhoAmI), err)
		}
		out = append(out, a)
	}
	return out, nil
}

// AskWhoAmI asks the echo server at the other end of a stream connection
// (TCP, SCTP) which addresses it has. It must be the first thing sent on
// the connection; the connection keeps echoing afterwards.
func AskWhoAmI(c io.ReadWriter) ([]netip.Addr, error) {
	if _, err := io.WriteString(c, WhoAmI); err != nil {
		return nil, fmt.Errorf("sending %q: %w", strings.TrimSpace(WhoAmI), err)
	}
	// Byte by byte: nothing past the line may be consumed.
	var line []byte
	one := make([]byte, 1)
	for len(line) < 4096 {
		if _, err := io.ReadFull(c, one); err != nil {
			return nil, fmt.Errorf("waiting for the answer to %q: %w", strings.TrimSpace(WhoAmI), err)
		}
		line = append(line, one[0])
		if one[0] == '\n' {
			return ParseWhoAmI(string(line))
		}
	}
	return nil, errors.New("answer to " + strings.TrimSpace(WhoAmI) + " too long")
}

// AskWhoAmIUDP sends WhoAmI as one datagram on a connected UDP socket and
// reads the answer (the caller sets deadlines and retries).
func AskWhoAmIUDP(c net.Conn) ([]netip.Addr, error) {
	if _, err := io.WriteString(c, WhoAmI); err != nil {
		return nil, fmt.Errorf("sending %q: %w", strings.TrimSpace(WhoAmI), err)
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("waiting for the answer to %q: %w", strings.TrimSpace(WhoAmI), err)
	}
	return ParseWhoAmI(string(buf[:n]))
}

// isWhoAmI reports whether a datagram is a WhoAmI request.
func isWhoAmI(b []byte) bool { return string(b) == WhoAmI }
