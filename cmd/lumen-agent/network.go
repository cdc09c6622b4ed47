package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/lumen-net/lumen/internal/node"
)

// TODO(helper): switch to internal/{routing,neighbor,tunnel} when they land.

const (
	tunnelName  = "lumen_vxlan"
	tunnelPort  = 8472
	routeProto  = netlink.RouteProtocol(0xb0) // marks the routes Lumen owns
	familyAll   = netlink.FAMILY_ALL
	managedFlag = netlink.NTF_EXT_MANAGED
)

// network applies the node's routes, neighbours and tunnel device.
type network struct {
	log *slog.Logger
	mu  sync.Mutex
}

func newNetwork(log *slog.Logger) *network { return &network{log: log} }

func (n *network) ensureVXLAN(mtu int) (int, error) {
	if l, err := netlink.LinkByName(tunnelName); err == nil {
		if vx, ok := l.(*netlink.Vxlan); ok && vx.FlowBased && vx.Port == tunnelPort {
			if err := netlink.LinkSetUp(l); err != nil {
				return 0, err
			}
			return l.Attrs().Index, nil
		}
		if err := netlink.LinkDel(l); err != nil {
			return 0, fmt.Errorf("replacing %s: %w", tunnelName, err)
		}
	}
	vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: tunnelName, MTU: mtu - 50}, FlowBased: true, Port: tunnelPort}
	if err := netlink.LinkAdd(vx); err != nil {
		return 0, fmt.Errorf("creating %s: %w", tunnelName, err)
	}
	l, err := netlink.LinkByName(tunnelName)
	if err != nil {
		return 0, err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

func (n *network) deleteVXLAN() error {
	l, err := netlink.LinkByName(tunnelName)
	if err != nil {
		return nil
	}
	return netlink.LinkDel(l)
}

func hostRoute(ip netip.Addr, ifindex int) *netlink.Route {
	bits := 32
	if ip.Is6() {
		bits = 128
	}
	return &netlink.Route{
		LinkIndex: ifindex, Scope: netlink.SCOPE_LINK, Protocol: routeProto,
		Dst: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, bits)},
	}
}

func (n *network) addEndpointRoute(ip netip.Addr, ifindex int) error {
	return netlink.RouteReplace(hostRoute(ip, ifindex))
}

func (n *network) delEndpointRoute(ip netip.Addr, ifindex int) error {
	// The route vanishes with the veth anyway: a missing route is fine.
	_ = netlink.RouteDel(hostRoute(ip, ifindex))
	return nil
}

// SyncRoutes makes Lumen's gateway routes equal to routes.
func (n *network) SyncRoutes(routes []node.Route) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	want := map[string]node.Route{}
	for _, r := range routes {
		want[r.Dst.String()] = r
	}
	have, err := netlink.RouteListFiltered(familyAll, &netlink.Route{Protocol: routeProto}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return err
	}
	for _, r := range have {
		if r.Gw == nil || r.Dst == nil {
			continue // endpoint routes
		}
		p, _ := netip.ParsePrefix(r.Dst.String())
		w, ok := want[p.String()]
		if ok && net.IP(w.Gw.AsSlice()).Equal(r.Gw) {
			delete(want, p.String())
			continue
		}
		if !ok {
			_ = netlink.RouteDel(&r)
		}
	}
	var errs []error
	for _, r := range want {
		bits := 32
		if r.Dst.Addr().Is6() {
			bits = 128
		}
		rt := &netlink.Route{
			Dst:      &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), bits)},
			Gw:       r.Gw.AsSlice(),
			Protocol: routeProto,
		}
		if err := netlink.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", r.Dst, r.Gw, err))
		}
	}
	return errors.Join(errs...)
}

// SyncNeighbors keeps managed neighbour entries for the next hops.
func (n *network) SyncNeighbors(hops []netip.Addr) error {
	var errs []error
	for _, h := range hops {
		rs, err := netlink.RouteGet(h.AsSlice())
		if err != nil || len(rs) == 0 {
			errs = append(errs, fmt.Errorf("no route to next hop %s: %v", h, err))
			continue
		}
		family := netlink.FAMILY_V4
		if h.Is6() {
			family = netlink.FAMILY_V6
		}
		ne := &netlink.Neigh{
			LinkIndex: rs[0].LinkIndex, Family: family, IP: h.AsSlice(),
			State: netlink.NUD_NONE, Flags: netlink.NTF_EXT_LEARNED, FlagsExt: managedFlag,
		}
		if err := netlink.NeighSet(ne); err != nil {
			errs = append(errs, fmt.Errorf("managed neighbour %s: %w", h, err))
		}
	}
	return errors.Join(errs...)
}
