// Package routing installs the kernel routes Lumen owns in native-routing
// mode: routes to other nodes' pod CIDRs via those nodes, and per-endpoint
// host routes to local pods via their host-side veth.
//
// Every route Lumen installs carries the route protocol Protocol (0xb0,
// "lumen"); routes with any other protocol are never changed or deleted, and
// installing over one of them (same destination and metric) is refused. Both
// kinds live in the main table and are told apart by their next hop: node
// routes always have a gateway, endpoint routes never do. (The scope cannot
// tell them apart: the kernel reports every IPv6 route as scope universe.)
//
// All functions take a *netlink.Handle, which chooses the network namespace.
package routing

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Protocol marks Lumen's routes (rtm_protocol). Register it for iproute2 with
// "176 lumen" in /etc/iproute2/rt_protos.d/lumen.conf if you want the name.
const Protocol netlink.RouteProtocol = 0xb0

// ipv6DefaultMetric is the metric the kernel gives IPv6 routes added without one.
const ipv6DefaultMetric = 1024

// Route is a route to another node's pod CIDR.
type Route struct {
	Dst *net.IPNet
	Gw  net.IP
	// LinkIndex is the output device; 0 lets the kernel find it from Gw.
	LinkIndex int
}

func (r Route) String() string {
	s := fmt.Sprintf("%v via %s", r.Dst, r.Gw)
	if r.LinkIndex != 0 {
		s += fmt.Sprintf(" dev ifindex %d", r.LinkIndex)
	}
	return s
}

// EndpointRoute is a host route to a local pod.
type EndpointRoute struct {
	IP        net.IP
	LinkIndex int
}

// SyncNodeRoutes makes Lumen's node routes equal to desired, IPv4 and IPv6:
// it adds missing routes, replaces those whose gateway or device changed and
// deletes Lumen's node routes that are no longer desired. Endpoint routes and
// routes of other owners are left alone. Invalid or conflicting routes are
// reported in the error; the others are still synced.
func SyncNodeRoutes(h *netlink.Handle, desired []Route) error {
	if h == nil {
		return errors.New("routing: netlink handle is nil")
	}
	var errs []error
	want := make([]Route, 0, len(desired))
	seen := map[string]Route{}
	for _, r := range desired {
		n, err := validateRoute(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		k := n.Dst.String()
		if prev, dup := seen[k]; dup {
			if !prev.Gw.Equal(n.Gw) || prev.LinkIndex != n.LinkIndex {
				errs = append(errs, fmt.Errorf("routing: route %s conflicts with desired route %s", n, prev))
			}
			continue
		}
		seen[k] = n
		want = append(want, n)
	}

	main, err := listMain(h)
	if err != nil {
		return err
	}
	var owned []netlink.Route
	for _, r := range main {
		if isNodeRoute(r) {
			owned = append(owned, r)
		}
	}
	// An owned route survives if it is exactly desired, or is replaced in
	// place (same destination and metric) by a desired route.
	keep := make([]bool, len(owned))
	for _, d := range want {
		metric := defaultMetric(d.Dst)
		exact := false
		for i, o := range owned {
			if o.Dst.String() == d.Dst.String() && o.Priority == metric && matches(o, d) {
				keep[i], exact = true, true
			}
		}
		if exact {
			continue
		}
		if c := conflict(main, d.Dst, metric); c != nil {
			errs = append(errs, fmt.Errorf("routing: not installing %s: a route to %s with protocol %s is in the way", d, d.Dst, c.Protocol))
			continue
		}
		nr := &netlink.Route{
			Dst:       d.Dst,
			Gw:        d.Gw,
			LinkIndex: d.LinkIndex,
			Protocol:  Protocol,
			Table:     unix.RT_TABLE_MAIN,
		}
		if err := h.RouteReplace(nr); err != nil {
			errs = append(errs, fmt.Errorf("routing: installing %s: %w", d, err))
			continue
		}
		slog.Debug("Installed node route", "subsys", "routing", "route", d.String())
		for i, o := range owned {
			if o.Dst.String() == d.Dst.String() && o.Priority == metric {
				keep[i] = true // replaced in place
			}
		}
	}
	for i, o := range owned {
		if keep[i] {
			continue
		}
		if err := h.RouteDel(&o); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("routing: deleting stale route %s via %s: %w", o.Dst, o.Gw, err))
			continue
		}
		slog.Debug("Deleted node route", "subsys", "routing", "dst", o.Dst.String(), "gw", o.Gw.String())
	}
	return errors.Join(errs...)
}

// NodeRoutes returns Lumen's node routes as installed in the kernel.
func NodeRoutes(h *netlink.Handle) ([]Route, error) {
	if h == nil {
		return nil, errors.New("routing: netlink handle is nil")
	}
	main, err := listMain(h)
	if err != nil {
		return nil, err
	}
	var out []Route
	for _, r := range main {
		if isNodeRoute(r) {
			out = append(out, Route{Dst: r.Dst, Gw: r.Gw, LinkIndex: r.LinkIndex})
		}
	}
	return out, nil
}

// EnsureEndpointRoute makes sure the pod IP is routed to its host-side veth
// with a scope-link /32 or /128 route. A Lumen route to the IP via another
// device is replaced.
func EnsureEndpointRoute(h *netlink.Handle, podIP net.IP, hostIfIndex int) error {
	dst, err := validateEndpoint(h, podIP, hostIfIndex)
	if err != nil {
		return err
	}
	if _, err := h.LinkByIndex(hostIfIndex); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("routing: endpoint route to %s: host link index %d not found", podIP, hostIfIndex)
		}
		return fmt.Errorf("routing: endpoint route to %s: looking up link index %d: %w", podIP, hostIfIndex, err)
	}
	main, err := listMain(h)
	if err != nil {
		return err
	}
	metric := defaultMetric(dst)
	for _, r := range main {
		if isEndpointRoute(r) && r.Dst.String() == dst.String() && r.LinkIndex == hostIfIndex && r.Priority == metric {
			return nil
		}
	}
	if c := conflict(main, dst, metric); c != nil {
		return fmt.Errorf("routing: not installing endpoint route to %s: a route to %s with protocol %s is in the way", podIP, dst, c.Protocol)
	}
	r := &netlink.Route{
		Dst:       dst,
		LinkIndex: hostIfIndex,
		Scope:     netlink.SCOPE_LINK,
		Protocol:  Protocol,
		Table:     unix.RT_TABLE_MAIN,
	}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("routing: installing endpoint route to %s dev ifindex %d: %w", podIP, hostIfIndex, err)
	}
	return nil
}

// DeleteEndpointRoute removes Lumen's host route to the pod IP. With
// hostIfIndex 0 it removes it whatever the device; otherwise only a route via
// that device (so deleting an old endpoint spares a new one with the same
// IP). A missing route is not an error.
func DeleteEndpointRoute(h *netlink.Handle, podIP net.IP, hostIfIndex int) error {
	if hostIfIndex < 0 {
		return fmt.Errorf("routing: endpoint route to %s: host link index %d is negative", podIP, hostIfIndex)
	}
	dst, err := validateEndpoint(h, podIP, 1)
	if err != nil {
		return err
	}
	main, err := listMain(h)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range main {
		if !isEndpointRoute(r) || r.Dst.String() != dst.String() {
			continue
		}
		if hostIfIndex != 0 && r.LinkIndex != hostIfIndex {
			continue
		}
		if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("routing: deleting endpoint route to %s dev ifindex %d: %w", podIP, r.LinkIndex, err))
		}
	}
	return errors.Join(errs...)
}

// EndpointRoutes returns Lumen's endpoint routes, e.g. to collect those of
// endpoints that no longer exist after a restart.
func EndpointRoutes(h *netlink.Handle) ([]EndpointRoute, error) {
	if h == nil {
		return nil, errors.New("routing: netlink handle is nil")
	}
	main, err := listMain(h)
	if err != nil {
		return nil, err
	}
	var out []EndpointRoute
	for _, r := range main {
		if isEndpointRoute(r) {
			out = append(out, EndpointRoute{IP: r.Dst.IP, LinkIndex: r.LinkIndex})
		}
	}
	return out, nil
}

func isNodeRoute(r netlink.Route) bool {
	return r.Protocol == Protocol && (r.Gw != nil || len(r.MultiPath) > 0)
}

func isEndpointRoute(r netlink.Route) bool {
	if r.Protocol != Protocol || r.Gw != nil || len(r.MultiPath) > 0 || r.Dst == nil {
		return false
	}
	ones, bits := r.Dst.Mask.Size()
	return ones == bits
}

// matches reports whether the installed route o is the desired route d.
func matches(o netlink.Route, d Route) bool {
	return len(o.MultiPath) == 0 && o.Gw.Equal(d.Gw) && (d.LinkIndex == 0 || o.LinkIndex == d.LinkIndex)
}

// conflict returns a route of another owner that RouteReplace would
// overwrite: same destination and metric in the main table.
func conflict(main []netlink.Route, dst *net.IPNet, metric int) *netlink.Route {
	for i, r := range main {
		if r.Protocol != Protocol && r.Dst != nil && r.Dst.String() == dst.String() && r.Priority == metric && r.Tos == 0 {
			return &main[i]
		}
	}
	return nil
}

// defaultMetric is the metric the kernel reports for a route added without one.
func defaultMetric(dst *net.IPNet) int {
	if dst.IP.To4() != nil {
		return 0
	}
	return ipv6DefaultMetric
}

// listMain returns the IPv4 and IPv6 unicast routes of the main table.
func listMain(h *netlink.Handle) ([]netlink.Route, error) {
	var out []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		var rs []netlink.Route
		var err error
		for range 5 { // a dump interrupted by changes is partial: redo it
			rs, err = h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
			if !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("routing: listing routes: %w", err)
		}
		for _, r := range rs {
			if r.Type == unix.RTN_UNICAST && r.Dst != nil {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// validateRoute checks a desired node route and normalises it (IPv4 as 4
// bytes, canonical prefix).
func validateRoute(r Route) (Route, error) {
	if r.Dst == nil {
		return Route{}, fmt.Errorf("routing: route via %s: destination is nil", r.Gw)
	}
	dst, err := canonical(r.Dst)
	if err != nil {
		return Route{}, fmt.Errorf("routing: route via %s: %w", r.Gw, err)
	}
	if ones, _ := dst.Mask.Size(); ones == 0 {
		return Route{}, fmt.Errorf("routing: route %s: refusing a default route as a pod CIDR route", r)
	}
	gw, err := unicast(r.Gw)
	if err != nil {
		return Route{}, fmt.Errorf("routing: route to %s: gateway %w", dst, err)
	}
	if (gw.To4() != nil) != (dst.IP.To4() != nil) {
		return Route{}, fmt.Errorf("routing: route to %s: gateway %s is of the other IP family", dst, gw)
	}
	if r.LinkIndex < 0 {
		return Route{}, fmt.Errorf("routing: route %s: link index %d is negative", r, r.LinkIndex)
	}
	return Route{Dst: dst, Gw: gw, LinkIndex: r.LinkIndex}, nil
}

func validateEndpoint(h *netlink.Handle, podIP net.IP, hostIfIndex int) (*net.IPNet, error) {
	if h == nil {
		return nil, errors.New("routing: netlink handle is nil")
	}
	ip, err := unicast(podIP)
	if err != nil {
		return nil, fmt.Errorf("routing: endpoint route: pod IP %w", err)
	}
	if hostIfIndex <= 0 {
		return nil, fmt.Errorf("routing: endpoint route to %s: host link index %d is not a valid ifindex", ip, hostIfIndex)
	}
	bits := 8 * len(ip)
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, nil
}

// unicast validates a unicast address, returning IPv4 as 4 bytes.
func unicast(ip net.IP) (net.IP, error) {
	switch {
	case ip == nil:
		return nil, errors.New("is nil")
	case len(ip) != net.IPv4len && len(ip) != net.IPv6len:
		return nil, fmt.Errorf("%q has invalid length %d", []byte(ip), len(ip))
	case ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback() || ip.Equal(net.IPv4bcast):
		return nil, fmt.Errorf("%s is not a unicast address", ip)
	}
	if v4 := ip.To4(); v4 != nil {
		return slices.Clone(v4), nil
	}
	return slices.Clone(ip), nil
}

// canonical checks a prefix: valid mask, no host bits.
func canonical(n *net.IPNet) (*net.IPNet, error) {
	ip := n.IP
	if v4 := ip.To4(); v4 != nil {
		if len(n.Mask) != net.IPv4len {
			return nil, fmt.Errorf("destination %s: IPv4 address with a %d-byte mask", n, len(n.Mask))
		}
		ip = v4
	}
	ones, bits := n.Mask.Size()
	if bits == 0 || bits != 8*len(ip) {
		return nil, fmt.Errorf("destination %s has an invalid mask", n)
	}
	if !ip.Mask(n.Mask).Equal(ip) {
		return nil, fmt.Errorf("destination %s has host bits set (did you mean %s/%d?)", n, ip.Mask(n.Mask), ones)
	}
	return &net.IPNet{IP: slices.Clone(ip), Mask: net.CIDRMask(ones, bits)}, nil
}
