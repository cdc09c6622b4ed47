package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/lumen-net/lumen/internal/bpfconst"
)

const (
	afInet  = 2
	afInet6 = 10
)

// Endpoint flags.
const (
	EndpointIngressEnforced = bpfconst.EndpointIngressEnforced
	EndpointEgressEnforced  = bpfconst.EndpointEgressEnforced
	EndpointAudit           = bpfconst.EndpointAudit // policy denials are reported, not enforced
	EndpointHost            = bpfconst.EndpointHost
)

// HostEndpointID is the policy map endpoint id of the host endpoint.
const HostEndpointID = bpfconst.HostEndpointID

// EndpointInfo is a local pod as the datapath sees it.
type EndpointInfo struct {
	IfIndex  uint32
	ID       uint16
	Flags    uint16 // EndpointIngressEnforced, ...
	Identity uint32
	MAC      net.HardwareAddr // pod side
	HostMAC  net.HardwareAddr // host side of the veth
}

// IPCacheEntry maps a prefix to an identity and, in tunnel mode, the node
// that owns it.
type IPCacheEntry struct {
	Prefix   netip.Prefix
	Identity uint32
	Tunnel   netip.Addr // IPv4 of the owning node; invalid when not tunnelled
	// Node marks a cluster node's own address. Its Tunnel then names the
	// node that may send from it through the overlay; the datapath routes
	// to it, it does not encapsulate.
	Node bool
}

// ipcacheFlagNode is IPCACHE_F_NODE (bpf/lib/fwd.h).
const ipcacheFlagNode = 1 << 0

// RuntimeConfig is the node-wide configuration shared by all programs.
type RuntimeConfig struct {
	TraceLevel   uint32
	VXLANIfIndex uint32
	HostFlags    uint16 // Endpoint* flags of the host endpoint (host firewall); see SetHostFlags
	// SockHostnsOnly limits socket load balancing to the namespace whose
	// cookie is HostNetnsCookie (--bpf-lb-sock-hostns-only).
	SockHostnsOnly  bool
	HostNetnsCookie uint64
	// NodeIPv4 and NodeIPv6 are the node's addresses: the source of
	// SNAT towards backends on other nodes.
	NodeIPv4, NodeIPv6 netip.Addr
	// DSR sends NodePort traffic from outside to backends on other nodes
	// without SNAT, the frontend in an IP option, and lets those nodes
	// answer the client directly (--bpf-lb-mode=dsr; native routing).
	DSR bool
}

// lbFlagDSR is LB_F_DSR of bpf/lib/dsr.h.
const lbFlagDSR = 1 << 0

func ipKey(a netip.Addr) lxcIpKey {
	var k lxcIpKey
	a = a.Unmap()
	if a.Is4() {
		k.Family = afInet
		b := a.As4()
		copy(k.Addr[:], b[:])
	} else {
		k.Family = afInet6
		k.Addr = a.As16()
	}
	return k
}

func addrOf(family uint8, b [16]byte) netip.Addr {
	if family == afInet {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

func mac6(m net.HardwareAddr) ([6]uint8, error) {
	var out [6]uint8
	if len(m) != 6 {
		return out, fmt.Errorf("invalid MAC %q", m)
	}
	copy(out[:], m)
	return out, nil
}

// UpsertEndpoint adds or updates the endpoint owning ip.
func (d *Datapath) UpsertEndpoint(ip netip.Addr, ep EndpointInfo) error {
	mac, err := mac6(ep.MAC)
	if err != nil {
		return fmt.Errorf("endpoint %s: %w", ip, err)
	}
	hmac, err := mac6(ep.HostMAC)
	if err != nil {
		return fmt.Errorf("endpoint %s host side: %w", ip, err)
	}
	v := lxcEndpointInfo{Ifindex: ep.IfIndex, EpId: ep.ID, Flags: ep.Flags, Identity: ep.Identity, Mac: mac, NodeMac: hmac}
	k := ipKey(ip)
	if err := d.Endpoints.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("updating endpoint map for %s: %w", ip, err)
	}
	return nil
}

// DeleteEndpoint removes ip from the endpoint map (no error if absent).
func (d *Datapath) DeleteEndpoint(ip netip.Addr) error {
	k := ipKey(ip)
	if err := d.Endpoints.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("deleting %s from endpoint map: %w", ip, err)
	}
	return nil
}

// ListEndpoints returns the endpoint map's content.
func (d *Datapath) ListEndpoints() (map[netip.Addr]EndpointInfo, error) {
	out := map[netip.Addr]EndpointInfo{}
	var k lxcIpKey
	var v lxcEndpointInfo
	it := d.Endpoints.Iterate()
	for it.Next(&k, &v) {
		out[addrOf(k.Family, k.Addr)] = EndpointInfo{
			IfIndex: v.Ifindex, ID: v.EpId, Flags: v.Flags, Identity: v.Identity,
			MAC: net.HardwareAddr(v.Mac[:]), HostMAC: net.HardwareAddr(v.NodeMac[:]),
		}
	}
	return out, it.Err()
}

func ipcacheKey(p netip.Prefix) lxcIpcacheKey {
	p = p.Masked()
	ik := ipKey(p.Addr())
	return lxcIpcacheKey{Prefixlen: uint32(32 + p.Bits()), Family: ik.Family, Addr: ik.Addr}
}

// UpsertIPCache adds or updates one prefix.
func (d *Datapath) UpsertIPCache(e IPCacheEntry) error {
	if !e.Prefix.IsValid() {
		return fmt.Errorf("invalid ipcache prefix %v", e.Prefix)
	}
	v := lxcIpcacheValue{Identity: e.Identity}
	if e.Node {
		v.Flags |= ipcacheFlagNode
	}
	if e.Tunnel.IsValid() {
		if !e.Tunnel.Unmap().Is4() {
			return fmt.Errorf("ipcache %s: tunnel endpoint %s: only IPv4 underlays are supported", e.Prefix, e.Tunnel)
		}
		b := e.Tunnel.Unmap().As4()
		// The program compares it in network order: keep the bytes as they are.
		v.TunnelIp4 = nativeEndianU32(b)
	}
	k := ipcacheKey(e.Prefix)
	if err := d.IPCache.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("updating ipcache for %s: %w", e.Prefix, err)
	}
	return nil
}

// DeleteIPCache removes one prefix (no error if absent).
func (d *Datapath) DeleteIPCache(p netip.Prefix) error {
	k := ipcacheKey(p)
	if err := d.IPCache.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("deleting %s from ipcache: %w", p, err)
	}
	return nil
}

// ListIPCache returns the ipcache's content.
func (d *Datapath) ListIPCache() ([]IPCacheEntry, error) {
	var out []IPCacheEntry
	var k lxcIpcacheKey
	var v lxcIpcacheValue
	it := d.IPCache.Iterate()
	for it.Next(&k, &v) {
		e := IPCacheEntry{
			Prefix:   netip.PrefixFrom(addrOf(k.Family, k.Addr), int(k.Prefixlen)-32),
			Identity: v.Identity,
			Node:     v.Flags&ipcacheFlagNode != 0,
		}
		if v.TunnelIp4 != 0 {
			e.Tunnel = netip.AddrFrom4(nativeEndianBytes(v.TunnelIp4))
		}
		out = append(out, e)
	}
	return out, it.Err()
}

// SetConfig writes the node-wide runtime configuration. The host
// endpoint's flags are kept as they are (see SetHostFlags): a restarted
// agent must not switch the host firewall off until it knows the policy.
func (d *Datapath) SetConfig(c RuntimeConfig) error {
	var v lxcConfig
	_ = d.Config.Lookup(uint32(0), &v)
	v.TraceLevel, v.VxlanIfindex = c.TraceLevel, c.VXLANIfIndex
	v.MaglevSize = d.maglevInner.MaxEntries
	v.HostNetnsCookie = c.HostNetnsCookie
	v.NodeIp4, v.NodeIp6 = [16]uint8{}, [16]uint8{}
	if c.NodeIPv4.IsValid() {
		v.NodeIp4 = ipKey(c.NodeIPv4).Addr
	}
	if c.NodeIPv6.IsValid() {
		v.NodeIp6 = ipKey(c.NodeIPv6).Addr
	}
	v.SockHostnsOnly = 0
	if c.SockHostnsOnly {
		v.SockHostnsOnly = 1
	}
	v.LbFlags = 0
	if c.DSR {
		v.LbFlags |= lbFlagDSR
	}
	if err := d.Config.Update(uint32(0), &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("updating datapath config: %w", err)
	}
	return nil
}

// SetHostFlags sets the host endpoint's enforcement flags.
func (d *Datapath) SetHostFlags(flags uint16) error {
	var v lxcConfig
	if err := d.Config.Lookup(uint32(0), &v); err != nil {
		return fmt.Errorf("reading datapath config: %w", err)
	}
	v.HostFlags = uint32(flags)
	if err := d.Config.Update(uint32(0), &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("updating host endpoint flags: %w", err)
	}
	return nil
}

// HostFlags returns the host endpoint's enforcement flags.
func (d *Datapath) HostFlags() uint16 {
	var v lxcConfig
	_ = d.Config.Lookup(uint32(0), &v)
	return uint16(v.HostFlags)
}

// Counter is one {reason, direction} row of the datapath metrics.
type Counter struct {
	Reason    uint8 // 0: forwarded, else a drop reason
	Direction uint8 // 0 ingress (towards the endpoint), 1 egress
	Packets   uint64
	Bytes     uint64
}

// Counters sums the per-CPU metrics map.
func (d *Datapath) Counters() ([]Counter, error) {
	var out []Counter
	var k uint32
	var vs []lxcMetricsValue
	it := d.Metrics.Iterate()
	for it.Next(&k, &vs) {
		c := Counter{Reason: uint8(k >> 1), Direction: uint8(k & 1)}
		for _, v := range vs {
			c.Packets += v.Packets
			c.Bytes += v.Bytes
		}
		if c.Packets > 0 {
			out = append(out, c)
		}
	}
	return out, it.Err()
}

// IdentityOf returns the identity the datapath gives addr, as identity_of()
// in the programs does: a local endpoint's, else the longest ipcache
// prefix's, else world.
func (d *Datapath) IdentityOf(addr netip.Addr) uint32 {
	k := ipKey(addr)
	var ep lxcEndpointInfo
	if err := d.Endpoints.Lookup(&k, &ep); err == nil {
		return ep.Identity
	}
	ck := ipcacheKey(netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen()))
	var v lxcIpcacheValue
	if err := d.IPCache.Lookup(&ck, &v); err == nil {
		return v.Identity
	}
	return 2
}
