// Package bgp is Lumen's BGP control plane: an embedded speaker (GoBGP as a
// library) that peers with the data centre's routers and announces the
// node's pod CIDRs and the addresses of selected LoadBalancer services.
//
// Configuration comes in two shapes, both decoded and validated here:
// the Cilium 1.11 ConfigMap (MetalLB's peers and address-pools, read from
// a file) and the CiliumBGPPeeringPolicy resource (cilium.io/v2alpha1,
// registered with internal/resource so `lumen apply` validates it). Both
// resolve, for one node, to VirtualRouters: a local ASN, its neighbors and
// what it exports. The Controller turns those and the node's state into
// the Speaker's desired state; the Speaker reconciles GoBGP with it.
//
// Sessions use graceful restart (RFC 4724) when asked: an agent restart
// (SIGKILL or SIGTERM) closes the TCP sessions without a NOTIFICATION, the
// routers keep the routes as stale for the restart time, and the restarted
// agent opens with the Restart State and Forwarding bits set and refreshes
// them.
package bgp

import (
	"net/netip"
	"time"
)

// Defaults, as CiliumBGPPeeringPolicy documents them.
const (
	DefaultPeerPort     = 179
	DefaultHoldTime     = 90 * time.Second
	DefaultKeepalive    = 30 * time.Second
	DefaultConnectRetry = 120 * time.Second
	DefaultRestartTime  = 120 * time.Second
	DefaultMultihopTTL  = 1

	// MaxRestartTime is the largest restart time the capability's 12-bit
	// field carries.
	MaxRestartTime = 4095 * time.Second
)

// Neighbor is one BGP peer of a virtual router.
type Neighbor struct {
	Address         netip.Addr
	Port            uint16
	ASN             uint32
	HoldTime        time.Duration // at least 3s
	KeepaliveTime   time.Duration
	ConnectRetry    time.Duration
	EBGPMultihopTTL uint8
	GracefulRestart bool
	RestartTime     time.Duration
	Password        string     // TCP MD5 signature
	SourceAddress   netip.Addr // local address of the session; zero: chosen by the kernel
}

// VirtualRouter is one local ASN's BGP speaker on a node and what it
// announces.
type VirtualRouter struct {
	LocalASN uint32
	// RouterID is the BGP identifier; zero means the node's IPv4 address.
	RouterID      netip.Addr
	ExportPodCIDR bool
	// ServiceSelector selects the LoadBalancer services whose addresses are
	// announced; nil announces none.
	ServiceSelector *Selector
	// Pools, when set, restrict announced service addresses to these
	// prefixes (the ConfigMap's bgp address pools).
	Pools     []netip.Prefix
	Neighbors []Neighbor
	// Source names where the router comes from, for status and errors.
	Source string
}

// fillDefaults sets unset timers and ports to their defaults.
func (n *Neighbor) fillDefaults() {
	if n.Port == 0 {
		n.Port = DefaultPeerPort
	}
	if n.ConnectRetry == 0 {
		n.ConnectRetry = DefaultConnectRetry
	}
	if n.EBGPMultihopTTL == 0 {
		n.EBGPMultihopTTL = DefaultMultihopTTL
	}
	if n.GracefulRestart && n.RestartTime == 0 {
		n.RestartTime = DefaultRestartTime
	}
}

// poolContains reports whether a falls in one of the prefixes.
func poolContains(pools []netip.Prefix, a netip.Addr) bool {
	for _, p := range pools {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// rangePrefixes covers the inclusive range [from, to] with the fewest
// prefixes.
func rangePrefixes(from, to netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for from.IsValid() && from.Compare(to) <= 0 {
		bits := from.BitLen()
		// Grow the prefix while it stays aligned and within the range.
		for bits > 0 {
			p := netip.PrefixFrom(from, bits-1).Masked()
			if p.Addr() != from || lastAddr(p).Compare(to) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(from, bits)
		out = append(out, p)
		last := lastAddr(p)
		next := last.Next()
		if !next.IsValid() || next.Compare(last) <= 0 {
			break
		}
		from = next
	}
	return out
}

// lastAddr is the last address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
