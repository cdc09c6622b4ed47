// Package devices finds the node's host devices: the network interfaces that
// face other nodes and get the from_netdev program.
//
// Detection follows Cilium's route-based rules (pkg/datapath/linux,
// devices_controller.go): a device is selected when it is administratively
// up, has at least one address and has a global unicast route (IPv4 or IPv6,
// a default route counts) in any routing table, unless
//   - it is a loopback or a member of a bridge or bond (IFF_SLAVE or a master),
//   - it is bridge-like (bridge, openvswitch); bonds themselves are selected,
//     since the bond is the uplink and its members are skipped,
//   - it is a virtual device that is no uplink: tunnels and overlays (vxlan,
//     geneve, gre, ipip, wireguard, ...), tun/tap, dummy, ipvlan, ifb, vrf,
//   - its name starts with a prefix of Lumen's own or of other CNIs' devices
//     (lxc, lumen_, cilium_, cni, docker) or is "lo".
//
// Unlike Cilium, a veth is selected without requiring a default route: lab
// nodes are network namespaces whose underlay device is a veth, and Lumen's
// own pod veths are already excluded by their lxc prefix.
//
// A non-empty Filter (--devices) bypasses detection: every link that is up
// and matches it is selected, whatever its routes or type.
//
// Functions take a *netlink.Handle so the caller chooses the network
// namespace (netlink.NewHandleAt). The Watcher takes a namespace handle
// instead, because netlink subscriptions open sockets of their own.
package devices

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Device is a selected host device.
type Device struct {
	Name  string
	Index int
	Type  string // netlink link type: "veth", "device", "bond", ...
	MTU   int
	MAC   net.HardwareAddr // empty for L3 devices
	// Addrs are all addresses of the device, IPv4 first, sorted.
	Addrs []netip.Prefix
}

// GlobalAddrs returns the device's global unicast addresses (no link-local).
func (d Device) GlobalAddrs() []netip.Addr {
	var out []netip.Addr
	for _, p := range d.Addrs {
		if p.Addr().IsGlobalUnicast() {
			out = append(out, p.Addr())
		}
	}
	return out
}

func (d Device) equal(o Device) bool {
	return d.Name == o.Name && d.Index == o.Index && d.Type == o.Type && d.MTU == o.MTU &&
		slices.Equal(d.MAC, o.MAC) && slices.Equal(d.Addrs, o.Addrs)
}

// Names returns the names of devs.
func Names(devs []Device) []string {
	out := make([]string, len(devs))
	for i, d := range devs {
		out[i] = d.Name
	}
	return out
}

// ExcludedPrefixes are name prefixes never selected by detection: Lumen's own
// devices (pod veths lxc*, lumen_vxlan, ...), loopback and other CNIs'.
var ExcludedPrefixes = []string{"lxc", "lumen_", "cilium_", "cni", "docker"}

// excludedTypes are link types detection never selects (netlink Link.Type()).
var excludedTypes = map[string]string{
	"bridge":      "bridge-like device",
	"openvswitch": "bridge-like device",
	"dummy":       "virtual device",
	"ifb":         "virtual device",
	"vrf":         "virtual device",
	"tuntap":      "virtual device",
	"ipvlan":      "virtual device",
	"ipvtap":      "virtual device",
	"vxlan":       "overlay device",
	"geneve":      "overlay device",
	"bareudp":     "overlay device",
	"wireguard":   "tunnel device",
	"gre":         "tunnel device",
	"gretap":      "tunnel device",
	"ip6gre":      "tunnel device",
	"ip6gretap":   "tunnel device",
	"ipip":        "tunnel device",
	"ip6tnl":      "tunnel device",
	"sit":         "tunnel device",
	"vti":         "tunnel device",
	"vti6":        "tunnel device",
}

// Detect lists the links, addresses and routes (all tables) visible through h
// and returns the selected devices, sorted by name.
func Detect(h *netlink.Handle, filter Filter) ([]Device, error) {
	devs, _, err := detect(h, filter, slog.Default())
	return devs, err
}

// linkState is what selection looks at for one link.
type linkState struct {
	link        netlink.Link
	addrs       []netip.Prefix
	globalRoute bool
}

// detect also returns why each other link was not selected.
func detect(h *netlink.Handle, filter Filter, log *slog.Logger) ([]Device, map[string]string, error) {
	if h == nil {
		return nil, nil, errors.New("devices: netlink handle is nil")
	}
	links, err := retryDump(h.LinkList)
	if err != nil {
		return nil, nil, fmt.Errorf("devices: listing links: %w", err)
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, nil, fmt.Errorf("devices: listing addresses: %w", err)
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("devices: listing routes: %w", err)
	}

	states := make(map[int]*linkState, len(links))
	for _, l := range links {
		states[l.Attrs().Index] = &linkState{link: l}
	}
	for _, a := range addrs {
		st := states[a.LinkIndex]
		if st == nil || a.IPNet == nil {
			continue
		}
		if p, ok := prefixOf(a.IPNet); ok {
			st.addrs = append(st.addrs, p)
		}
	}
	for _, r := range routes {
		if !isGlobalRoute(r) {
			continue
		}
		for _, idx := range routeLinks(r) {
			if st := states[idx]; st != nil {
				st.globalRoute = true
			}
		}
	}

	var out []Device
	reasons := map[string]string{}
	for _, st := range states {
		ok, reason := selectDevice(st, filter)
		attrs := st.link.Attrs()
		if !ok {
			reasons[attrs.Name] = reason
			log.Debug("device not selected", "device", attrs.Name, "reason", reason)
			continue
		}
		slices.SortFunc(st.addrs, comparePrefix)
		out = append(out, Device{
			Name:  attrs.Name,
			Index: attrs.Index,
			Type:  st.link.Type(),
			MTU:   attrs.MTU,
			MAC:   slices.Clone(attrs.HardwareAddr),
			Addrs: st.addrs,
		})
	}
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.Name, b.Name) })
	return out, reasons, nil
}

// selectDevice decides about one link and says why it is not selected.
func selectDevice(st *linkState, filter Filter) (bool, string) {
	attrs := st.link.Attrs()
	if attrs.RawFlags&unix.IFF_UP == 0 {
		return false, "down"
	}
	if !filter.Empty() {
		if filter.Match(attrs.Name) {
			return true, ""
		}
		return false, fmt.Sprintf("not matching --devices %s", filter)
	}
	if len(st.addrs) == 0 {
		return false, "no addresses"
	}
	if attrs.RawFlags&unix.IFF_LOOPBACK != 0 || attrs.Name == "lo" {
		return false, "loopback"
	}
	if attrs.RawFlags&unix.IFF_SLAVE != 0 || attrs.MasterIndex != 0 {
		return false, fmt.Sprintf("member of ifindex %d", attrs.MasterIndex)
	}
	for _, p := range ExcludedPrefixes {
		if strings.HasPrefix(attrs.Name, p) {
			return false, fmt.Sprintf("excluded prefix %q", p)
		}
	}
	if why, ok := excludedTypes[st.link.Type()]; ok {
		return false, fmt.Sprintf("%s (%s)", why, st.link.Type())
	}
	if !st.globalRoute {
		return false, "no global unicast route"
	}
	return true, ""
}

// isGlobalRoute reports whether r leads to a global unicast destination; a
// default route counts (Cilium 1.11 semantics).
func isGlobalRoute(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	if ones, _ := r.Dst.Mask.Size(); ones == 0 {
		return true
	}
	return r.Dst.IP.IsGlobalUnicast()
}

// routeLinks returns the output links of r, including multipath next hops.
func routeLinks(r netlink.Route) []int {
	out := []int{}
	if r.LinkIndex > 0 {
		out = append(out, r.LinkIndex)
	}
	for _, nh := range r.MultiPath {
		if nh != nil && nh.LinkIndex > 0 {
			out = append(out, nh.LinkIndex)
		}
	}
	return out
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip, ones), true
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// retryDump repeats a netlink dump interrupted by concurrent changes
// (NLM_F_DUMP_INTR), which returns partial results.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range 5 {
		var out []T
		out, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}
