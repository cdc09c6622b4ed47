package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/lumen-net/lumen/internal/neighbor"
	"github.com/lumen-net/lumen/internal/node"
	"github.com/lumen-net/lumen/internal/routing"
	"github.com/lumen-net/lumen/internal/tunnel"
)

const tunnelName = tunnel.DefaultVXLANName

// network applies the node's routes, neighbours and tunnel device in the
// agent's network namespace.
type network struct {
	h   *netlink.Handle
	log *slog.Logger
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

func (n *network) addEndpointRoute(ip netip.Addr, ifindex int) error {
	return routing.EnsureEndpointRoute(n.h, ip.AsSlice(), ifindex)
}

func (n *network) delEndpointRoute(ip netip.Addr, ifindex int) error {
	return routing.DeleteEndpointRoute(n.h, ip.AsSlice(), ifindex)
}

// SyncRoutes makes Lumen's routes to other nodes' pod CIDRs equal to routes.
func (n *network) SyncRoutes(routes []node.Route) error {
	want := make([]routing.Route, 0, len(routes))
	for _, r := range routes {
		want = append(want, routing.Route{Dst: prefixNet(r.Dst), Gw: r.Gw.AsSlice()})
	}
	return routing.SyncNodeRoutes(n.h, want)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
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
