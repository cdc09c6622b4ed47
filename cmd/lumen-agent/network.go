package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/lumen-net/lumen/internal/neighbor"
	"github.com/lumen-net/lumen/internal/node"
	"github.com/lumen-net/lumen/internal/tunnel"
)

// TODO: switch the routes to internal/routing when it lands.

const (
	tunnelName = tunnel.DefaultVXLANName
	routeProto = netlink.RouteProtocol(0xb0) // marks the routes Lumen owns
	familyAll  = netlink.FAMILY_ALL
)

// network applies the node's routes, neighbours and tunnel device in the
// agent's network namespace.
type network struct {
	h   *netlink.Handle
	log *slog.Logger
	mu  sync.Mutex
}

func newNetwork(log *slog.Logger) (*network, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return &network{h: h, log: log}, nil
}

// ensureVXLAN creates the overlay device for an underlay of mtu and
// returns its ifindex and the MTU pods must use.
func (n *network) ensureVXLAN(underlayMTU int) (int, int, error) {
	mtu, err := tunnel.OverlayMTU(underlayMTU, false)
	if err != nil {
		return 0, 0, err
	}
	vx, err := tunnel.EnsureVXLAN(n.h, tunnelName, tunnel.DefaultVXLANPort, mtu)
	if err != nil {
		return 0, 0, err
	}
	return vx.Attrs().Index, mtu, nil
}

func (n *network) deleteVXLAN() error { return tunnel.DeleteVXLAN(n.h, tunnelName) }

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
	return n.h.RouteReplace(hostRoute(ip, ifindex))
}

func (n *network) delEndpointRoute(ip netip.Addr, ifindex int) error {
	// The route vanishes with the veth anyway: a missing route is fine.
	_ = n.h.RouteDel(hostRoute(ip, ifindex))
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
	have, err := n.h.RouteListFiltered(familyAll, &netlink.Route{Protocol: routeProto}, netlink.RT_FILTER_PROTOCOL)
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
			_ = n.h.RouteDel(&r)
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
		if err := n.h.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", r.Dst, r.Gw, err))
		}
	}
	return errors.Join(errs...)
}

// SyncNeighbors keeps managed neighbour entries for the next hops, on the
// device the kernel routes each of them through.
func (n *network) SyncNeighbors(hops []netip.Addr) error {
	var errs []error
	var want []neighbor.Entry
	for _, h := range hops {
		rs, err := n.h.RouteGet(h.AsSlice())
		if err != nil || len(rs) == 0 {
			errs = append(errs, fmt.Errorf("no route to next hop %s: %v", h, err))
			continue
		}
		want = append(want, neighbor.Entry{LinkIndex: rs[0].LinkIndex, IP: h.AsSlice()})
	}
	return errors.Join(append(errs, neighbor.Sync(n.h, want))...)
}
