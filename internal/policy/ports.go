package policy

import (
	"fmt"
	"slices"
	"strconv"
)

// IP protocol numbers used in keys. ProtoAny (0) matches every protocol and
// only ever comes with "any port".
const (
	ProtoAny  uint8 = 0
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
	// ICMP keys carry the ICMP type in the port field (16 bits: exact).
	ProtoICMP   uint8 = 1
	ProtoICMPv6 uint8 = 58
)

// portProtos are the protocols Cilium's "ANY" expands to when a port is given.
var portProtos = []uint8{ProtoTCP, ProtoUDP, ProtoSCTP}

// ProtoName is "TCP", "UDP", "SCTP", "any" or the number.
func ProtoName(p uint8) string {
	switch p {
	case ProtoAny:
		return "any"
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoSCTP:
		return "SCTP"
	case ProtoICMP:
		return "ICMP"
	case ProtoICMPv6:
		return "ICMPv6"
	}
	return strconv.Itoa(int(p))
}

// PortProto is a port number with its protocol (a container's named port).
type PortProto struct {
	Port  uint16
	Proto uint8
}

func (p PortProto) String() string { return fmt.Sprintf("%d/%s", p.Port, ProtoName(p.Proto)) }

// PortBlock is a prefix-aligned block of ports: Port with its top Bits bits
// significant (16: exactly Port, 0: every port).
type PortBlock struct {
	Port uint16
	Bits uint8
}

// Contains reports whether port is in the block.
func (b PortBlock) Contains(port uint16) bool { return maskPort(port, b.Bits) == b.Port }

// First and Last are the block's bounds.
func (b PortBlock) First() uint16 { return b.Port }

func (b PortBlock) Last() uint16 { return b.Port | ^portMask(b.Bits) }

func portMask(bits uint8) uint16 {
	if bits == 0 {
		return 0
	}
	return ^uint16(0) << (16 - bits)
}

func maskPort(port uint16, bits uint8) uint16 { return port & portMask(bits) }

// SplitPortRange splits [lo, hi] into the fewest prefix-aligned blocks whose
// union is exactly the range (80-90: 80/13, 88/15, 90/16). It returns nil
// when lo > hi.
func SplitPortRange(lo, hi uint16) []PortBlock {
	var out []PortBlock
	cur, end := uint32(lo), uint32(hi)
	for cur <= end {
		size, nbits := uint32(1), uint8(16)
		for nbits > 0 {
			next := size << 1
			if cur&(next-1) != 0 || cur+next-1 > end {
				break
			}
			size, nbits = next, nbits-1
		}
		out = append(out, PortBlock{Port: uint16(cur), Bits: nbits})
		cur += size
	}
	return out
}

// portSpec is one resolved-or-named port rule of a section.
type portSpec struct {
	desc   string // how the policy wrote it: "TCP/80-90", "ANY/53", "TCP/http"
	proto  uint8  // ProtoAny only when the whole port space is meant
	lo, hi uint16
	name   string // named port, resolved per endpoint
}

func describePorts(proto string, port string, endPort int64) string {
	if port == "" || port == "0" {
		return proto + "/any"
	}
	if endPort > 0 {
		return fmt.Sprintf("%s/%s-%d", proto, port, endPort)
	}
	return proto + "/" + port
}

// HasEgressNamedPorts reports whether an egress rule of the policy names a
// port: its entries then depend on the cluster's pods, not only on
// identities.
func (p *Policy) HasEgressNamedPorts() bool {
	return len(p.NamedPorts(true)) > 0
}

// NamedPorts returns the port names the policy's egress rules (egress) or
// ingress rules (!egress) use, each once.
func (p *Policy) NamedPorts(egress bool) []string {
	var out []string
	for _, r := range p.rules {
		for _, s := range r.sections {
			if s.egress != egress {
				continue
			}
			for _, ps := range s.ports {
				if ps.name != "" && !slices.Contains(out, ps.name) {
					out = append(out, ps.name)
				}
			}
		}
	}
	return out
}
