package loadbalancer

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/lumen-net/lumen/internal/ipproto"
)

// Protocol is an L4 protocol, numbered like the IP header's protocol field
// so that the datapath can use it as is.
type Protocol uint8

// The protocols a Service port can use.
const (
	TCP  = Protocol(ipproto.TCP)
	UDP  = Protocol(ipproto.UDP)
	SCTP = Protocol(ipproto.SCTP)
)

// String is the Kubernetes name: "TCP", "UDP", "SCTP".
func (p Protocol) String() string {
	switch p {
	case TCP, UDP, SCTP:
		return ipproto.Name(uint8(p))
	}
	return "proto-" + strconv.Itoa(int(p))
}

// MarshalText writes the name, for JSON.
func (p Protocol) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads a name.
func (p *Protocol) UnmarshalText(b []byte) error {
	v, err := ParseProtocol(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// ParseProtocol reads a Kubernetes protocol name; "" is TCP, the default.
func ParseProtocol(s string) (Protocol, error) {
	if s == "" {
		return TCP, nil
	}
	for _, p := range []Protocol{TCP, UDP, SCTP} {
		if s == p.String() { // case-sensitive, as Kubernetes
			return p, nil
		}
	}
	return 0, fmt.Errorf("unsupported protocol %q: supported: TCP, UDP, SCTP", s)
}

var protocolNames = []string{"TCP", "UDP", "SCTP"}

// BackendKey identifies a backend cluster-wide: the same address, port and
// protocol is the same backend in every service and on every node. Its
// String form ("10.0.0.5:80/TCP", "[fd00::5]:80/TCP") is the stable key
// Maglev hashes and the ID allocator persists.
type BackendKey struct {
	Addr  netip.Addr
	Port  uint16
	Proto Protocol
}

// String is "10.0.0.5:80/TCP" or "[fd00::5]:80/TCP".
func (k BackendKey) String() string {
	return netip.AddrPortFrom(k.Addr, k.Port).String() + "/" + k.Proto.String()
}

// ParseBackendKey reads the String form of a BackendKey.
func ParseBackendKey(s string) (BackendKey, error) {
	ap, proto, ok := strings.Cut(s, "/")
	if !ok {
		return BackendKey{}, fmt.Errorf("backend key %q: want ADDR:PORT/PROTOCOL", s)
	}
	addrPort, err := netip.ParseAddrPort(ap)
	if err != nil {
		return BackendKey{}, fmt.Errorf("backend key %q: %w", s, err)
	}
	p, err := ParseProtocol(proto)
	if err != nil || proto == "" {
		return BackendKey{}, fmt.Errorf("backend key %q: unsupported protocol %q", s, proto)
	}
	if addrPort.Addr().Zone() != "" || addrPort.Addr().Is4In6() {
		return BackendKey{}, fmt.Errorf("backend key %q: address must be plain IPv4 or IPv6", s)
	}
	return BackendKey{Addr: addrPort.Addr(), Port: addrPort.Port(), Proto: p}, nil
}
